"""Stamp every notebook in report/ with its "Open in Colab" badge and a guarded install cell.

The repository URL comes from one place, pyproject.toml's [project.urls] Repository.
Run after changing it, or after adding a notebook:  python tools/stamp_colab.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import tomllib

ROOT = Path(__file__).resolve().parents[1]
BADGE_TAG, INSTALL_TAG = "colab-badge", "colab-install"


def repository_url() -> str:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["urls"]["Repository"].rstrip("/")


def badge_source(url: str, notebook: Path) -> str:
    github_path = url.split("github.com/", 1)[1]
    link = f"https://colab.research.google.com/github/{github_path}/blob/main/report/{notebook.name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def install_source(url: str) -> str:
    return (
        "# On Google Colab, install smoothgrad_lib from the repository; anywhere else, do nothing.\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    subprocess.run(\n"
        f'        [sys.executable, "-m", "pip", "install", "-q", "smoothgrad-lib @ git+{url}"],\n'
        "        check=True,\n"
        "    )"
    )


def stamp(path: Path, url: str) -> bool:
    """Put the badge and install cells first in ``path``, replacing old ones; returns whether the file changed."""
    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if not set(c.metadata.get("tags", [])) & {BADGE_TAG, INSTALL_TAG}]
    badge = nbformat.v4.new_markdown_cell(badge_source(url, path), metadata={"tags": [BADGE_TAG]})
    old_install = next((c for c in notebook.cells if INSTALL_TAG in c.metadata.get("tags", [])), None)
    install = nbformat.v4.new_code_cell(install_source(url), metadata={"tags": [INSTALL_TAG]})
    if old_install is not None and old_install.source == install.source:
        install = old_install  # keep its execution count
    new_cells = [badge, install, *cells]
    changed = [(c.cell_type, c.source) for c in new_cells] != [(c.cell_type, c.source) for c in notebook.cells]
    if changed:
        notebook.cells = new_cells
        nbformat.write(notebook, path)
    return changed


def main() -> None:
    url = repository_url()
    for path in sorted((ROOT / "report").glob("*.ipynb")):
        print(f"{path.name}: {'stamped' if stamp(path, url) else 'up to date'}")


if __name__ == "__main__":
    sys.exit(main())
