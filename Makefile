# make report : execute every notebook in report/ (offline default model) and render build/report/
# make test   : unit tests + nbval over the committed notebooks + the rendered-report check
# Both create or update .venv first (from requirements.lock), so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SCRATCH := $(CURDIR)/build/scratch

# Jupyter, matplotlib, IPython and torch write under $HOME: keep all of it in build/scratch.
RUN := HOME=$(SCRATCH)/home MPLCONFIGDIR=$(SCRATCH)/mpl TORCH_HOME=$(SCRATCH)/torch \
	JUPYTER_CONFIG_DIR=$(SCRATCH)/jupyter/config JUPYTER_DATA_DIR=$(SCRATCH)/jupyter/data \
	JUPYTER_RUNTIME_DIR=$(SCRATCH)/jupyter/runtime IPYTHONDIR=$(SCRATCH)/ipython \
	PYDEVD_DISABLE_FILE_VALIDATION=1 SMOOTHGRAD_SCRATCH=$(SCRATCH)

.PHONY: report test venv browser clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@echo "==> setting up $(VENV) from requirements.lock (first time: a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "ERROR: could not create $(VENV) with $(PYTHON); install python3-venv or set PYTHON=..."; exit 1; }
	$(PY) -m pip install --disable-pip-version-check --progress-bar off -r requirements.lock \
		|| { echo "ERROR: pip could not install requirements.lock (see above)"; exit 1; }
	$(PY) -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e . \
		|| { echo "ERROR: could not install smoothgrad_lib itself (see above)"; exit 1; }
	@touch $(STAMP)
	@echo "==> $(VENV) ready"

$(SCRATCH):
	@mkdir -p $(SCRATCH)/home $(SCRATCH)/mpl $(SCRATCH)/torch $(SCRATCH)/jupyter/config \
		$(SCRATCH)/jupyter/data $(SCRATCH)/jupyter/runtime $(SCRATCH)/ipython

report: $(STAMP) | $(SCRATCH)
	@echo "==> executing report/*.ipynb and rendering build/report/"
	$(RUN) $(PY) tools/build_report.py
	@echo "==> open build/report/index.html"

# Headless Chromium for the rendered-report test: installed with apt when missing and possible.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "==> installing Debian's chromium for the rendered-report test"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
				|| echo "WARNING: could not install chromium; the rendered-report test will be skipped"; \
		else \
			echo "NOTE: no chromium; the rendered-report test will be skipped (install it: sudo apt-get install chromium)"; \
		fi; }

test: $(STAMP) browser | $(SCRATCH)
	@echo "==> unit tests, nbval over report/, rendered report"
	$(RUN) $(PY) -m pytest

clean:
	rm -rf build
