# make report  : execute every notebook in report/ (offline default model) and render build/report/
# make test    : ruff (lint, format check), unit tests, nbval over the committed notebooks, the rendered-report check
# make quick   : ruff, unit tests and doctests of the library, no notebooks (for working on the library)
# make browser : install Debian's chromium for the rendered-report test (as root with apt-get; .ci/run calls it)
# make lock       : re-resolve requirements.lock from pyproject.toml for every platform (uv, keeps existing pins)
# make lockcheck  : check that requirements.lock installs on Linux x86-64/aarch64, macOS arm64 and Windows x86-64
# make exercises  : write the student versions exercises/*.ipynb from the teacher versions in report/
# make release    : write the students' release build/release/smoothgrad-exercises/ and .zip (no teacher material)
# make crosscheck : nbval over report/ under other thread counts and older CPU kernels (tools/crosscheck.sh)
# make wheel      : build dist/smoothgrad_lib-VERSION-py3-none-any.whl in seconds, without .venv (to upload to Colab)
# report and test create or update .venv first (from requirements.lock), so a fresh clone needs nothing else;
# neither installs system packages. In an environment you already have (conda env create -f environment.yml, then
# conda activate smoothgrad), `make test VENV=` and `make report VENV=` use its `python` and build no .venv
# (`PY=...` names another interpreter); they first check that it has what the commands import.

PYTHON ?= python3
VENV := .venv
VENV_STAMP := $(or $(strip $(VENV)),.venv)/.installed
ifeq ($(strip $(VENV)),)
PY ?= python
STAMP := in-place
else
PY := $(VENV)/bin/python
STAMP := $(VENV_STAMP)
endif

# Jupyter, matplotlib, IPython and torch write under $HOME: tools/scratch.py creates folders in build/scratch and
# prints the variables pointing there (the same list pytest's conftest.py uses). Expanded when a recipe runs.
RUN = $(shell $(PYTHON) tools/scratch.py)

.PHONY: report test quick venv in-place browser clean lock lockcheck crosscheck wheel exercises release

venv: $(VENV_STAMP)

# pip byte-compiles every file it installs unless told not to: a minute here, mostly torch's many modules that no
# command imports. Instead, the modules the notebooks and tests import are compiled once by importing them (with
# bytecode writing on, whatever the caller's PYTHONDONTWRITEBYTECODE); anything else compiles on first use.
WARM_IMPORTS := import smoothgrad_lib.methods, smoothgrad_lib.metrics, smoothgrad_lib.randomisation, smoothgrad_lib.probes, \
	smoothgrad_lib.montecarlo, smoothgrad_lib.smoothing, smoothgrad_lib.explain, \
	efficientnet_lite_pytorch, matplotlib.pyplot, sklearn.metrics, quantus, nbval.plugin, nbconvert, nbclient, ipykernel.kernelapp, pytest, yaml

$(VENV_STAMP): pyproject.toml requirements.lock
	@echo "==> setting up $(VENV) from requirements.lock (first time: a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "ERROR: could not create $(VENV) with $(PYTHON); install python3-venv or set PYTHON=..."; exit 1; }
	$(PY) -m pip install --disable-pip-version-check --progress-bar off --no-compile -r requirements.lock \
		|| { echo "ERROR: pip could not install requirements.lock (see above)"; exit 1; }
	$(PY) -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e . \
		|| { echo "ERROR: could not install smoothgrad_lib itself (see above)"; exit 1; }
	env -u PYTHONDONTWRITEBYTECODE $(PY) -c "$(WARM_IMPORTS)"
	@touch $(VENV_STAMP)
	@echo "==> $(VENV) ready"

# VENV= (empty): no .venv; the interpreter PY must already have the library and what the notebooks and tests import.
in-place:
	@echo "==> using $(PY) as it is (VENV= given: no .venv)"
	@$(PY) -c "$(WARM_IMPORTS)" || { echo "ERROR: $(PY) lacks a package the commands need (above). Create the \
environment with conda env create -f environment.yml, activate it, or run without VENV= to build .venv"; exit 1; }

report: $(STAMP)
	@echo "==> executing report/*.ipynb and rendering build/report/"
	$(RUN) $(PY) tools/build_report.py
	@echo "==> open build/report/index.html"

# Headless Chromium for the rendered-report test: installed with apt when missing and possible. Not part of
# `make test` (which only skips that test, saying how to install it); .ci/run calls it.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "==> installing Debian's chromium for the rendered-report test"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
				|| echo "WARNING: could not install chromium; the rendered-report test will be skipped"; \
		else \
			echo "NOTE: no chromium; the rendered-report test will be skipped (install it: sudo apt-get install chromium)"; \
		fi; }

# The student versions of the notebooks (solutions removed, outputs cleared), from report/ (the teacher versions).
exercises: $(STAMP)
	$(PY) tools/make_exercises.py

# What students get: the student versions (made afresh), the statistics appendix and a README; checked to hold no
# solution, answer key or link to a teacher version.
release: $(STAMP)
	$(PY) -m tools.make_release

test: $(STAMP)
	@echo "==> ruff, unit tests, nbval over report/, rendered report"
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(RUN) $(PY) -m pytest

# pyproject.toml's addopts turn nbval on for every pytest call; this run leaves it out and collects no notebook.
quick: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(RUN) $(PY) -m pytest -p no:nbval -o addopts="-ra --doctest-modules" tests smoothgrad_lib

# One lock for every platform: environment markers select the CUDA packages on Linux, pywinpty on Windows, and so
# on. The platforms and Pythons checked: the four of the README, and Python 3.11 (this project's floor) to 3.13
# (Colab runs 3.12). macOS wheels of torch need macOS 14 or newer. Needs the package index, so it is not a pytest.
LOCK_PLATFORMS := x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu aarch64-apple-darwin x86_64-pc-windows-msvc
LOCK_PYTHONS := 3.11 3.12 3.13

lock: $(STAMP)
	$(RUN) $(PY) -m uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--custom-compile-command "make lock" -o requirements.lock

lockcheck: $(STAMP)
	@for platform in $(LOCK_PLATFORMS); do for python in $(LOCK_PYTHONS); do \
		printf '%-28s Python %s: ' $$platform $$python; \
		out=$$($(RUN) MACOSX_DEPLOYMENT_TARGET=14.0 $(PY) -m uv pip install --dry-run --no-deps --only-binary :all: \
			--python-platform $$platform --python-version $$python --target build/lockcheck -r requirements.lock 2>&1) \
			&& echo "$$out" | grep '^Would install' || { echo "FAILED"; echo "$$out"; exit 1; }; \
		done; done

crosscheck: $(STAMP)
	PY=$(PY) tools/crosscheck.sh

# Needs only pip (and the package index for setuptools, unless PIP_NO_BUILD_ISOLATION=0): seconds, no .venv. The wheel
# records the library's commit (setup.py), which the notebooks' Colab install cell accepts in place of a git install.
wheel:
	$(PYTHON) -m pip wheel --disable-pip-version-check --no-deps --wheel-dir dist .

clean:
	rm -rf build dist
