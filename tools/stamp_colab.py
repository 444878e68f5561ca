"""Stamp every notebook in report/ with its "Open in Colab" badge and a guarded install cell.

One source for where the package lives: pyproject.toml's ``[project.urls] Repository`` (a GitHub URL) and its
``version``. The install cell pins the commit whose library code produced the committed outputs: by default the
newest commit that changed ``smoothgrad_lib/`` or ``pyproject.toml`` (so stamp *after* committing library changes).
It also records a digest of the notebooks' committed outputs beside the version: when outputs change, the version
must be bumped before stamping (the tool refuses otherwise), so that a Colab user's "Run all" reinstalls.

    python tools/stamp_colab.py                      # after changing the library, the outputs or the URL
    python tools/stamp_colab.py --url https://github.com/OWNER/REPO   # re-point every link (writes pyproject too)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "report"
BADGE_TAG, INSTALL_TAG = "colab-badge", "colab-install"
LIBRARY_PATHS = ("smoothgrad_lib", "pyproject.toml", "setup.py")  # as in setup.py
STAMP = re.compile(r'^VERSION = "(?P<version>[^"]+)"  # outputs (?P<digest>[0-9a-f]{12})$', re.MULTILINE)


def project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]


def repository_url() -> str:
    return project()["urls"]["Repository"].rstrip("/")


def library_commit() -> str:
    """The newest commit that changed the library or pyproject.toml: the code behind the committed outputs."""
    command = ["git", "log", "-1", "--format=%H", "--", *LIBRARY_PATHS]
    return subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def outputs_digest(notebooks: list[Path]) -> str:
    """A digest of the text outputs nbval compares (code cells without NBVAL_IGNORE_OUTPUT / NBVAL_SKIP)."""
    digest = hashlib.sha256()
    for path in notebooks:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code" or "NBVAL_IGNORE_OUTPUT" in cell.source or "NBVAL_SKIP" in cell.source:
                continue
            for output in cell.outputs:
                text = output.get("text") or output.get("data", {}).get("text/plain", "")
                digest.update(json.dumps([path.name, output.output_type, text]).encode())
    return digest.hexdigest()[:12]


def badge_source(url: str, notebook: Path) -> str:
    github_path = url.split("github.com/", 1)[1]
    link = f"https://colab.research.google.com/github/{github_path}/blob/main/report/{notebook.name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def install_source(url: str, ref: str, version: str, digest: str) -> str:
    return f'''# On Google Colab, install smoothgrad-lib as it was when this notebook ran; elsewhere, do nothing.
import sys

REPOSITORY = "{url}"
REF = "{ref}"
VERSION = "{version}"  # outputs {digest}

if "google.colab" in sys.modules:
    import json
    import subprocess
    from importlib.metadata import PackageNotFoundError, distribution
    from pathlib import Path

    def installed():
        """(version, commit) of the installed smoothgrad-lib, or None. The commit is the one pip installed from git,
        or for a wheel installed from a file (no commit in direct_url.json) the one `make wheel` wrote into it."""
        try:
            found = distribution("smoothgrad-lib")
        except PackageNotFoundError:
            return None
        origin = json.loads(found.read_text("direct_url.json") or "{{}}")
        built = Path(found.locate_file("smoothgrad_lib/BUILD_COMMIT"))
        commit = origin.get("vcs_info", {{}}).get("commit_id")
        if commit is None and built.is_file():
            commit = built.read_text().strip()
        return found.version, commit

    if installed() != (VERSION, REF):
        requirement = f"smoothgrad-lib @ git+{{REPOSITORY}}@{{REF}}"
        wheel = f"smoothgrad_lib-{{VERSION}}-py3-none-any.whl"
        for options in (["--force-reinstall", "--no-deps"], []):  # this commit, then whatever it needs
            command = [sys.executable, "-m", "pip", "install", "-q", *options, requirement]
            pip = subprocess.run(command, capture_output=True, text=True)
            if pip.returncode:
                print(pip.stderr[-2000:], file=sys.stderr)
                raise RuntimeError(
                    f"Could not install {{requirement}} (offline, or the repository moved): in a clone of the "
                    f"repository at commit {{REF[:12]}}, run `make wheel`, upload dist/{{wheel}} to this session, "
                    f"run `%pip install {{wheel}}` and then Run all again."
                ) from None
    print("smoothgrad-lib {{}} (commit {{}})".format(*installed()))'''


def stamp(path: Path, badge: str, install: str) -> bool:
    """Put the badge and install cells first in ``path``, replacing old ones; returns whether the file changed."""
    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if not set(c.metadata.get("tags", [])) & {BADGE_TAG, INSTALL_TAG}]
    badge_cell = nbformat.v4.new_markdown_cell(badge, metadata={"tags": [BADGE_TAG]})
    old_install = next((c for c in notebook.cells if INSTALL_TAG in c.metadata.get("tags", [])), None)
    install_cell = nbformat.v4.new_code_cell(install, metadata={"tags": [INSTALL_TAG]})
    if old_install is not None:
        install_cell.execution_count = old_install.execution_count  # nbval checks the count order, not the source
    new_cells = [badge_cell, install_cell, *cells]
    changed = [(c.cell_type, c.source) for c in new_cells] != [(c.cell_type, c.source) for c in notebook.cells]
    if changed:
        notebook.cells = new_cells
        nbformat.write(notebook, path)
    return changed


def stamped(path: Path) -> tuple[str, str] | None:
    """The (version, outputs digest) in ``path``'s install cell, if it has one."""
    cells = nbformat.read(path, as_version=4).cells
    match = next((STAMP.search(c.source) for c in cells if INSTALL_TAG in c.metadata.get("tags", [])), None)
    return (match["version"], match["digest"]) if match else None


def set_repository_url(url: str) -> None:
    pyproject = ROOT / "pyproject.toml"
    text, count = re.subn(r'(?m)^Repository = ".*"$', f'Repository = "{url}"', pyproject.read_text())
    if count != 1:
        raise SystemExit("pyproject.toml has no single 'Repository = ...' line under [project.urls]")
    pyproject.write_text(text)
    readme = ROOT / "README.md"
    readme.write_text(
        re.sub(r"colab\.research\.google\.com/github/[^/]+/[^/]+/", f"{_colab(url)}/", readme.read_text())
    )


def _colab(url: str) -> str:
    return "colab.research.google.com/github/" + url.split("github.com/", 1)[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="re-point the repository (pyproject.toml, README badges, every notebook)")
    parser.add_argument("--ref", help="pin this commit or tag instead of the newest commit of the library")
    args = parser.parse_args(argv)
    if args.url:
        if "github.com/" not in args.url:
            parser.error("--url must be a GitHub URL (Colab opens notebooks from GitHub)")
        set_repository_url(args.url.rstrip("/"))
    notebooks = sorted(REPORT.glob("*.ipynb"))
    version, digest = project()["version"], outputs_digest(notebooks)
    for path in notebooks:
        old = stamped(path)
        if old and old[1] != digest and old[0] == version:
            raise SystemExit(
                f"{path.name}: the committed outputs changed since version {version} was stamped; "
                "bump [project] version in pyproject.toml first, so that Colab users reinstall"
            )
    url, ref = repository_url(), args.ref or library_commit()
    for path in notebooks:
        changed = stamp(path, badge_source(url, path), install_source(url, ref, version, digest))
        print(f"{path.name}: {'stamped' if changed else 'up to date'} ({url} @ {ref[:12]}, version {version})")


if __name__ == "__main__":
    sys.exit(main())
