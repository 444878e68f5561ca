"""Execute the report notebooks in place and render them to build/report/ as HTML that reads offline.

    python tools/build_report.py               # execute every notebook, then render
    python tools/build_report.py report/02-smoothgrad.ipynb   # execute just this one, render all
    python tools/build_report.py --no-execute  # render the committed outputs only
    python tools/build_report.py --strip-only  # only drop volatile metadata from the notebooks (no run, no render)

The HTML typesets maths with a local copy of MathJax (from the PyPI package
jupyter-server-mathjax, which ships the STIX-Web fonts only, so the pages ask for those) and embeds every figure, so
build/report/ works without a network connection. Every page has links to the index and to the previous and next
notebook; links between notebooks (``02-smoothgrad.ipynb#section`` in the markdown, which works on GitHub and Colab)
point at the rendered pages and their headings. A page opens with the notebook's title: the Colab install cell
shows as a one-line note, and cells that print the machine's details (``# NBVAL_IGNORE_OUTPUT``: timings, versions)
are left out.

Executed notebooks are saved without volatile metadata (per-cell execution timestamps and the like) and with each
cell's consecutive stream outputs merged (the kernel splits a cell's printout where it happens to flush). A notebook
whose results came out the same as its file's (every cell's source and outputs, after that merge, apart from the
outputs of the machine's cells: timings, versions) is not rewritten, so `make report` on an unchanged library leaves
`git status` clean; one whose results changed is written whole, with this run's timings.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
# The MathJax of jupyter-server-mathjax ships only the STIX-Web fonts, while its configuration asks for the TeX fonts:
# the page would fall back on whatever fonts the reader's system has (upright variables, a tilde floating above M).
MATHJAX_FONTS = '{"HTML-CSS": {webFont: "STIX-Web", availableFonts: [], preferredFont: null, imageFont: null}}'
BADGE_TAG, INSTALL_TAG = "colab-badge", "colab-install"
INSTALL_NOTE = "*On Google Colab, a code cell here installs `smoothgrad-lib`; elsewhere it does nothing.*"
# Cells whose output is the machine's, not the notebook's (timings, versions, the device): nbval ignores their output,
# and the rendered page leaves them out.
MACHINE_MARK = "# NBVAL_IGNORE_OUTPUT"
ANSWER_PROMPT = "**Your answer:** *(double-click to write)*"
ANSWER_NOTE = "**Your answer:** *(write it in your copy of the notebook: double-click this cell in Jupyter or Colab)*"
# Metadata that changes on every run or with the editor's view state, not with the notebook's content.
VOLATILE_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled", "papermill")
VOLATILE_NOTEBOOK_METADATA = ("widgets", "papermill")


@dataclasses.dataclass(frozen=True)
class Notebook:
    """What the index page, the README's reading-order table and run times, and the notebook's opening box say about
    a notebook: the one source of each (tests/test_docs.py keeps the others equal to it)."""

    title: str
    shows: str
    wall_seconds: int  # to execute it once on a 2-core CPU without a GPU (0: not measured; README says how measured)

    @property
    def run_time(self) -> str:
        """``wall_seconds`` in words, to the half minute: what the README, the index and the opening box say."""
        if not self.wall_seconds:
            return "not measured"
        if self.wall_seconds < 60:
            return "under a minute"
        whole, half = divmod(round(self.wall_seconds / 30), 2)
        return f"about {whole}{'½' if half else ''} minutes"

    @property
    def runs_in(self) -> str:
        """How the notebook's opening box begins its "Runs in" row (the rest of the row is the notebook's own)."""
        return f"| **Runs in** | {self.run_time} on two CPU cores ({self.wall_seconds} s)"


NOTEBOOKS = {
    "01-vanilla-gradient": Notebook(
        "01 · Vanilla Gradient",
        "the gradient of a class logit as a map; why it is speckled: jumps along a line through input space (a "
        "refinement test), ReLU units that flip, and why that is not the same as spatial speckle",
        28,
    ),
    "02-smoothgrad": Notebook(
        "02 · SmoothGrad",
        "the method; stability to the input (one noisy gradient with common noise, the averaging's rate, independent "
        "seeds) vs Monte-Carlo noise; smoothness by lag-1 autocorrelation; the noise × N grid with the model's "
        "accuracy on the noisy copies; the four aggregates' reliability, checked on a null; localisation on shapes "
        "with known evidence (rank-based, with CIs); noise conventions (PAIR vs Captum)",
        56,
    ),
    "03-taylor-and-variance": Notebook(
        "03 · Taylor and variance",
        "the theory tested: bias against σ (σ² for smooth nets, √(kinks crossed) for ReLU), what the 1/N law does and "
        "does not explain, per-pixel signal-to-noise, E|G| vs |E G| vs |∇g(x)|, reference-free convergence; error "
        "bars and the N a target error needs, antithetic pairs, Stein's lemma, Softplus_β",
        93,
    ),
    "04-evaluation": Notebook(
        "04 · Evaluation",
        "do the maps explain the model? Cascading and label randomisation beside each map's own noise floor, "
        "deletion/insertion/AOPC with an on-manifold and a black baseline, localisation against known evidence masks, "
        "for twelve maps with paired CIs and Holm-adjusted primary contrasts; SmoothGrad against the vanilla "
        "gradient, a blurred vanilla map, Captum's methods and a random map",
        123,
    ),
    "05-robustness": Notebook(
        "05 · Robustness and retraining",
        "what SmoothGrad is for, measured like for like (one representation, the same noise at both ends) and "
        "each test on a null first: max-sensitivity and local Lipschitz (common vs independent noise), infidelity "
        "against its no-information floor, RemOve And Retrain with background and mean fills beside each map's "
        "shape recall (a stored grid and one cell live), class sensitivity, with LRP beside vanilla, SmoothGrad, a "
        "blurred vanilla map, Integrated Gradients and Grad-CAM",
        135,
    ),
    "06-statistics-appendix": Notebook(
        "06 · Appendix: the statistics",
        "each statistical tool of 01–05 once, run first where the answer is known: t-interval coverage, the "
        "percentile bootstrap's narrowness at small n, paired differences, Holm's adjustment, split-half reliability "
        "and Spearman–Brown (with the |map| null), disattenuation, the jackknife, mask AUC as a rank statistic, "
        "log-log slopes with CIs (and what shared draws do to them)",
        13,
    ),
    "07-your-own-model": Notebook(
        "07 · Your own model",
        "the comparison of 04 on your model and your folder of images with one command, `smoothgrad evaluate` (the "
        "twin and 32 shapes images stand in): every map kept, deletion/insertion/AOPC with the random map's null "
        "first, the randomisation check beside each map's noise floor, Holm-adjusted SmoothGrad contrasts; resuming, "
        "torchrun, and what to change for your own model and data",
        16,
    ),
}
NAV_STYLE = """<style>
  nav.report-nav { display: flex; justify-content: space-between; gap: 1rem; padding: 0.6rem 0; margin: 0 0 1rem;
                   border-bottom: 1px solid #ddd; font: 0.95rem system-ui, sans-serif; }
  nav.report-nav.bottom { border-bottom: none; border-top: 1px solid #ddd; margin: 2rem 0 0; }
  nav.report-nav a { color: var(--jp-content-link-color, #1976d2); text-decoration: none; }
  nav.report-nav span { min-width: 12rem; }
  nav.report-nav span:last-child { text-align: right; }
</style>
"""


def github_slug(heading: str) -> str:
    """The anchor GitHub (and this builder) gives a markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def heading_ids(page: str) -> dict[str, str]:
    """For each heading of a rendered page: its GitHub anchor -> the id nbconvert gave it."""
    ids = {}
    for found in re.finditer(r'<h[1-6] id="([^"]+)">(.*?)<a class="anchor-link"', page, re.S):
        text = html.unescape(re.sub(r"<[^>]+>", "", found.group(2)))
        ids.setdefault(github_slug(text), found.group(1))
    return ids


def link_pages(page: str, stem: str, pages: dict[str, str]) -> str:
    """Point relative links to notebooks (``02-smoothgrad.ipynb#4-what-the-noise-does``) at their rendered pages and
    at the heading ids nbconvert generates there; a link to a missing notebook or heading stops the build."""

    def rewrite(found: re.Match) -> str:
        target, fragment = found.group(2), found.group(3) or ""
        if target not in pages:
            sys.exit(f"{stem}: link to {target}.ipynb, which is not a notebook in report/")
        if fragment:
            ids = heading_ids(pages[target])
            anchor = html.unescape(fragment[1:])
            if anchor in ids:
                fragment = "#" + ids[anchor]
            elif anchor not in ids.values():
                sys.exit(f"{stem}: link to {target}.ipynb{fragment}, a heading that notebook does not have")
        return f'{found.group(1)}"{target}.html{fragment}"'

    return re.sub(r'(<a\s[^>]*href=)"(?:\./)?([\w.-]+)\.ipynb(#[^"]*)?"', rewrite, page)


def navigation(stem: str, stems: list[str], where: str) -> str:
    """Links to the previous notebook, the index and the next notebook."""
    at = stems.index(stem)

    def link(other: str, before: str = "", after: str = "") -> str:
        title = NOTEBOOKS[other].title if other in NOTEBOOKS else other
        return f'<a href="{other}.html">{before}{html.escape(title)}{after}</a>'

    previous = link(stems[at - 1], before="← ") if at > 0 else ""
    following = link(stems[at + 1], after=" →") if at + 1 < len(stems) else ""
    return (
        f'<nav class="report-nav {where}" aria-label="report"><span>{previous}</span>'
        f'<a href="index.html">Contents</a><span>{following}</span></nav>'
    )


def strip_volatile(notebook: nbformat.NotebookNode) -> bool:
    """Remove ``VOLATILE_*_METADATA`` from ``notebook`` in place; returns whether anything was removed."""
    found = [notebook.metadata.pop(key) for key in VOLATILE_NOTEBOOK_METADATA if key in notebook.metadata]
    for cell in notebook.cells:
        found += [cell.metadata.pop(key) for key in VOLATILE_CELL_METADATA if key in cell.metadata]
    return bool(found)


def merge_streams(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Merge each code cell's consecutive stream outputs of the same name (stdout, stderr) into one, in place; returns
    ``notebook``. The text is unchanged: only where the kernel happened to flush it is."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        merged: list = []
        for output in cell.outputs:
            if (
                output.output_type == "stream"
                and merged
                and merged[-1].output_type == "stream"
                and merged[-1].name == output.name
            ):
                merged[-1].text += output.text
            else:
                merged.append(output)
        cell.outputs = merged
    return notebook


def is_machines(cell: nbformat.NotebookNode) -> bool:
    """A code cell whose output is the machine's, not the notebook's (``MACHINE_MARK``)."""
    return cell.cell_type == "code" and cell.source.startswith(MACHINE_MARK)


def results(notebook: nbformat.NotebookNode) -> list:
    """What a re-run must reproduce for the file to stay as it is: each cell's type, source, tags and (apart from the
    machine's cells) outputs, with streams merged and without volatile metadata."""
    notebook = merge_streams(nbformat.from_dict(copy.deepcopy(notebook)))
    strip_volatile(notebook)
    return [
        (cell.cell_type, cell.source, cell.metadata, cell.get("execution_count"))
        + ((None,) if is_machines(cell) else (cell.get("outputs"),))
        for cell in notebook.cells
    ]


def save(notebook: nbformat.NotebookNode, path: Path) -> bool:
    """Write the executed ``notebook`` to ``path`` without volatile metadata and with streams merged, unless the
    file there holds the same ``results``; returns whether it wrote."""
    strip_volatile(merge_streams(notebook))
    if path.exists() and results(nbformat.read(path, as_version=4)) == results(notebook):
        return False
    nbformat.write(notebook, path)
    return True


def execute(path: Path, timeout: int) -> tuple[float, bool]:
    """Run every cell of ``path`` top to bottom in a fresh kernel and ``save`` it: seconds taken, whether the file
    was rewritten."""
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
    return time.perf_counter() - start, save(notebook, path)


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


def for_reading(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``notebook`` as the rendered page shows it: the Colab badge as a text link (its image lives on a server), the
    install cell as a one-line note, no cells marked ``MACHINE_MARK``, and "Your answer" prompts that say where to
    answer. Changes ``notebook`` in place and returns it."""
    cells = []
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if BADGE_TAG in tags:
            link = re.search(r"\]\((https://colab[^)]+)\)\s*$", cell.source)
            cell.source = f"[Open this notebook in Google Colab]({link.group(1)})" if link else ""
        elif INSTALL_TAG in tags:
            cell = nbformat.v4.new_markdown_cell(INSTALL_NOTE)
        elif is_machines(cell):
            continue
        elif cell.cell_type == "markdown" and cell.source.strip() == ANSWER_PROMPT:
            cell.source = ANSWER_NOTE
        cells.append(cell)
    notebook.cells = cells
    return notebook


def render(path: Path) -> str:
    """The notebook ``path`` as one HTML page, before the links between pages are added."""
    notebook = for_reading(nbformat.read(path, as_version=4))
    exporter = HTMLExporter(template_name="lab", mathjax_url=f"mathjax/MathJax.js?config={MATHJAX_CONFIG}")
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": path.stem}})
    # require.js (from a CDN) only serves interactive widgets, which the report has none of.
    body = re.sub(r'<script src="https://[^"]*require(\.min)?\.js"></script>\s*', "", body)
    loader = '<script src="mathjax/MathJax.js'
    if loader not in body:
        sys.exit(f"{path.name}: the page does not load the local MathJax (nbconvert's template changed?)")
    # Settings in window.MathJax before MathJax.js loads are its configuration, merged with the config file's.
    return body.replace(loader, f"<script>window.MathJax = {MATHJAX_FONTS};</script>\n{loader}", 1)


def describe(path: Path) -> Notebook:
    """What the index says about the notebook ``path``: ``NOTEBOOKS``, or its own title and first bold line."""
    if path.stem in NOTEBOOKS:
        return NOTEBOOKS[path.stem]
    title, summary = title_and_summary(nbformat.read(path, as_version=4))
    return Notebook(title, summary, 0)


def write_pages(out: Path, pages: dict[str, str]) -> None:
    """Write every page with its navigation, and links between notebooks pointing at the rendered pages."""
    stems = list(pages)
    for stem, page in pages.items():
        page = link_pages(page, stem, pages)
        top = navigation(stem, stems, "top")
        page = re.sub(r"(<body[^>]*>\s*<main>)", lambda found, top=top: found.group(1) + top, page, count=1)
        page = page.replace("</main>", navigation(stem, stems, "bottom") + "</main>", 1)
        page = page.replace("</head>", NAV_STYLE + "</head>", 1)
        if page.count('class="report-nav') != 2:
            sys.exit(f"{stem}: could not place the navigation (nbconvert's template changed?)")
        (out / f"{stem}.html").write_text(page, encoding="utf-8")


def write_index(out: Path, notebooks: list[Path]) -> None:
    items = "\n".join(
        f'    <li><a href="{html.escape(p.stem)}.html">{html.escape(d.title)}</a><br>'
        f"<span>{html.escape(d.shows[:1].upper() + d.shows[1:])}.</span><br>"
        f"<small>Run time on a 2-core CPU: {d.run_time}.</small></li>"
        for p, d in ((p, describe(p)) for p in notebooks)
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
    li {{ margin-bottom: 1rem; }} span {{ color: #555; }} small {{ color: #777; }}
  </style>
</head>
<body>
  <h1>SmoothGrad, explained and measured</h1>
  <p>Gradient saliency for image classifiers: Vanilla Gradient, SmoothGrad, and the Taylor and
  variance arguments behind it, each claim backed by a number the notebook computes. Read in order:</p>
  <ol>
{items}
  </ol>
  <p><small>Run times are for executing each notebook once on a 2-core CPU without a GPU (the README says how they
  were measured); the notebooks use a CUDA GPU by themselves when there is one.</small></p>
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
            seconds, written = execute(path, args.timeout)
            saved = "results changed, saved" if written else "same results, file left as it was"
            print(f"  done in {seconds:.0f} s ({saved})", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    mathjax = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(mathjax, args.out / "mathjax", dirs_exist_ok=True)
    pages = {path.stem: render(path) for path in notebooks}
    write_pages(args.out, pages)
    shown = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out
    for stem in pages:
        print(f"rendered {shown}/{stem}.html", flush=True)
    write_index(args.out, notebooks)
    print(f"report: {args.out / 'index.html'}")


if __name__ == "__main__":
    main()
