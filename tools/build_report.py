"""Execute the report notebooks in place and render them to build/report/ as HTML that reads offline.

    python tools/build_report.py               # execute every notebook, then render
    python tools/build_report.py report/02-smoothgrad.ipynb   # execute just this one, render all
    python tools/build_report.py --no-execute  # render the committed outputs only
    python tools/build_report.py --strip-only  # only drop volatile metadata from the notebooks (no run, no render)

The HTML typesets maths with a local copy of MathJax (from the PyPI package
jupyter-server-mathjax) and embeds every figure, so build/report/ works
without a network connection. Executed notebooks are saved without volatile metadata (per-cell execution
timestamps and the like), so re-executing an unchanged notebook leaves its file unchanged apart from real output.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
import time
from pathlib import Path

import jupyter_server_mathjax
import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "report"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
BADGE_TAG = "colab-badge"
# Metadata that changes on every run or with the editor's view state, not with the notebook's content.
VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled", "papermill")
VOLATILE_NOTEBOOK_METADATA = ("widgets", "papermill")


def strip_volatile(notebook: nbformat.NotebookNode) -> bool:
    """Remove ``VOLATILE_*_METADATA`` from ``notebook`` in place; returns whether anything was removed."""
    found = [notebook.metadata.pop(key) for key in VOLATILE_NOTEBOOK_METADATA if key in notebook.metadata]
    for cell in notebook.cells:
        found += [cell.metadata.pop(key) for key in VOLATILE_CELL_METADATA if key in cell.metadata]
    return bool(found)


def execute(path: Path, timeout: int) -> float:
    """Run every cell of ``path`` top to bottom in a fresh kernel and save it with its outputs, without volatile
    metadata."""
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(REPORT)}},
    )
    client.execute()
    strip_volatile(notebook)
    nbformat.write(notebook, path)
    return time.perf_counter() - start


def strip(path: Path) -> bool:
    """Remove volatile metadata from the notebook file ``path``; returns whether the file changed."""
    notebook = nbformat.read(path, as_version=4)
    changed = strip_volatile(notebook)
    if changed:
        nbformat.write(notebook, path)
    return changed


def title_and_summary(notebook: nbformat.NotebookNode) -> tuple[str, str]:
    """The first '# ' heading and the first bold line after it, from the notebook's markdown."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("# "):
            lines = cell.source.splitlines()
            summary = next((line.strip("* ") for line in lines[1:] if line.startswith("**")), "")
            return lines[0][2:].strip(), summary
    return "Untitled", ""


def render(path: Path, out: Path) -> tuple[str, str]:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:  # the badge image lives on a server: offline, link with text instead
        if BADGE_TAG in cell.metadata.get("tags", []):
            link = re.search(r"\]\((https://colab[^)]+)\)\s*$", cell.source)
            cell.source = f"[Open this notebook in Google Colab]({link.group(1)})" if link else ""
    exporter = HTMLExporter(template_name="lab", mathjax_url=f"mathjax/MathJax.js?config={MATHJAX_CONFIG}")
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": path.stem}})
    # require.js (from a CDN) only serves interactive widgets, which the report has none of.
    body = re.sub(r'<script src="https://[^"]*require(\.min)?\.js"></script>\s*', "", body)
    (out / f"{path.stem}.html").write_text(body, encoding="utf-8")
    return title_and_summary(notebook)


def write_index(out: Path, entries: list[tuple[Path, str, str]]) -> None:
    items = "\n".join(
        f'    <li><a href="{html.escape(p.stem)}.html">{html.escape(title)}</a><br>'
        f"<span>{html.escape(summary)}</span></li>"
        for p, title, summary in entries
    )
    (out / "index.html").write_text(
        f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>SmoothGrad, explained and measured</title>
  <style>
    body {{ font-family: system-ui, sans-serif; max-width: 46rem; margin: 3rem auto; line-height: 1.5;
            padding: 0 1rem; }}
    li {{ margin-bottom: 1rem; }} span {{ color: #555; }}
  </style>
</head>
<body>
  <h1>SmoothGrad, explained and measured</h1>
  <p>Gradient saliency for image classifiers: Vanilla Gradient, SmoothGrad, and the Taylor and
  variance arguments behind it, each claim backed by a number the notebook computes. Read in order:</p>
  <ol>
{items}
  </ol>
</body>
</html>
""",
        encoding="utf-8",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to execute (default: all in report/)")
    parser.add_argument("--no-execute", action="store_true", help="render the committed outputs without running them")
    parser.add_argument(
        "--strip-only",
        action="store_true",
        help="remove volatile metadata from the notebooks, without running or rendering",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "report")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    args = parser.parse_args()
    # The kernel must be this interpreter's: put its folder first on PATH.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    notebooks = sorted(REPORT.glob("*.ipynb"))
    if not notebooks:
        sys.exit("no notebooks found in report/")
    if args.strip_only:
        for path in [p.resolve() for p in args.notebooks] or notebooks:
            print(f"{path.name}: {'stripped' if strip(path) else 'nothing volatile'}", flush=True)
        return
    if not args.no_execute:
        for path in [p.resolve() for p in args.notebooks] or notebooks:
            print(f"executing {path.relative_to(ROOT)} ...", flush=True)
            print(f"  done in {execute(path, args.timeout):.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    mathjax = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(mathjax, args.out / "mathjax", dirs_exist_ok=True)
    entries = []
    for path in notebooks:
        title, summary = render(path, args.out)
        entries.append((path, title, summary))
        print(
            f"rendered {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}/{path.stem}.html",
            flush=True,
        )
    write_index(args.out, entries)
    print(f"report: {args.out / 'index.html'}")


if __name__ == "__main__":
    main()
