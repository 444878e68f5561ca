"""The rendered report reads offline and is navigable: maths typeset by the local MathJax in the fonts it ships (no
fallback glyphs), figures loaded (headless Chromium), every page linked to the index and its neighbours, links between
notebooks pointing at rendered pages and headings that exist."""

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
STEMS = sorted(p.stem for p in (ROOT / "report").glob("*.ipynb"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
    "--virtual-time-budget=20000",
]
# Appended to a copy of a page: when everything has loaded and MathJax is done, record what we check. MathJax sets a
# character that its fonts in use lack in its `undefinedFamily` (STIXGeneral, 'Arial Unicode MS', serif), that is in
# whatever the reader's system has: those glyphs are the fallbacks.
PROBE = """
<script>
window.addEventListener("load", function () {
  function report() {
    var images = Array.from(document.images);
    var output = window.MathJax && MathJax.OutputJax && MathJax.OutputJax["HTML-CSS"];
    var fallback = Array.from(document.querySelectorAll(".MathJax span")).filter(function (e) {
      return /STIXGeneral|Arial Unicode/.test(e.style.fontFamily);
    });
    var result = {
      images: images.length,
      loaded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
      typeset: document.querySelectorAll(".MathJax_CHTML, .MathJax, mjx-container").length,
      errors: document.querySelectorAll(".MathJax_Error, merror").length,
      fontInUse: output ? output.fontInUse || null : null,
      fallbackGlyphs: fallback.length,
      fallbackSample: fallback.slice(0, 8).map(function (e) { return e.textContent; }).join(" "),
      fontsLoaded: Array.from(document.fonts).filter(function (f) { return f.status === "loaded"; })
        .map(function (f) { return f.family; }),
      external: Array.from(document.querySelectorAll("script[src], link[href][rel=stylesheet]"))
        .map(function (e) { return e.src || e.href; }).filter(function (u) { return /^https?:/.test(u); })
    };
    var out = document.createElement("pre"); out.id = "probe"; out.textContent = JSON.stringify(result);
    document.body.appendChild(out);
  }
  if (window.MathJax && MathJax.Hub) { MathJax.Hub.Queue(report); } else { report(); }
});
</script>
"""
# Appended to a copy of a page for a close-up: once MathJax is done, show only the paragraph holding the first formula
# whose TeX contains TEX and the rest of its cell, enlarged, with that formula outlined in red.
CLOSE_UP = """
<script>
window.addEventListener("load", function () {
  MathJax.Hub.Queue(function () {
    var jax = MathJax.Hub.getAllJax().filter(function (j) { return j.originalText.indexOf(TEX) >= 0; })[0];
    var frame = document.getElementById(jax.inputID + "-Frame");
    var cell = frame.closest(".jp-Cell");
    document.querySelectorAll(".jp-Cell, nav").forEach(function (e) { if (e !== cell) { e.style.display = "none"; } });
    document.body.style.zoom = 1.6;
    frame.style.outline = "2px solid rgb(255, 0, 0)";
    var block = frame;
    while (!block.parentNode.classList.contains("jp-RenderedMarkdown")) { block = block.parentNode; }
    for (var e = block.previousElementSibling; e; e = e.previousElementSibling) { e.style.display = "none"; }
  });
});
</script>
"""

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs headless Chromium: run `make browser` (as root; .ci/run does) or `sudo apt-get install chromium`",
)


@pytest.fixture(scope="module")
def report_dir():
    out = BUILD / "report"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_report.py"), "--no-execute", "--out", str(out)], check=True
    )
    return out


def _with_script(page: Path, tmp_name: str, script: str) -> Path:
    copy = page.with_name(tmp_name)
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    return copy


def _probe(page: Path, tmp_name: str) -> dict:
    copy = _with_script(page, tmp_name, PROBE)
    try:
        dom = subprocess.run(
            [CHROMIUM, *FLAGS, "--dump-dom", copy.as_uri()], capture_output=True, text=True, timeout=120
        ).stdout
    finally:
        copy.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, "the page never finished loading"
    return json.loads(html.unescape(found.group(1)))


def _screenshot(page: Path, shot: Path, size: str, script: str = "") -> None:
    copy = _with_script(page, f"_shot_{page.name}", script) if script else page
    try:
        shot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [CHROMIUM, *FLAGS, f"--window-size={size}", f"--screenshot={shot}", copy.as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )
    finally:
        if script:
            copy.unlink()


def _links(page: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'<a\s[^>]*href="([^"]+)"', page)]


def test_index_lists_every_notebook_with_what_it_shows_and_its_run_time(report_dir):
    from tools.build_report import NOTEBOOKS

    index = (report_dir / "index.html").read_text()
    assert sorted(NOTEBOOKS) == STEMS, "tools/build_report.py's NOTEBOOKS must describe every notebook in report/"
    for stem, notebook in NOTEBOOKS.items():
        assert f'href="{stem}.html"' in index
        assert html.escape(notebook.shows[1:]) in index
        assert notebook.wall_seconds > 0, f"{stem}: no run time measured"
        assert f"Run time on a 2-core CPU: {notebook.run_time}." in index


def test_every_page_links_to_the_index_and_its_neighbours(report_dir):
    for at, stem in enumerate(STEMS):
        page = (report_dir / f"{stem}.html").read_text()
        navs = re.findall(r'<nav class="report-nav.*?</nav>', page, re.S)
        assert len(navs) == 2, stem  # one at the top, one at the bottom
        for nav in navs:
            expected = ["index.html"]
            expected += [f"{STEMS[at - 1]}.html"] if at > 0 else []
            expected += [f"{STEMS[at + 1]}.html"] if at + 1 < len(STEMS) else []
            assert sorted(_links(nav)) == sorted(expected), (stem, nav)


def test_links_between_notebooks_point_at_rendered_pages_and_existing_headings(report_dir):
    between = 0
    for stem in STEMS:
        page = (report_dir / f"{stem}.html").read_text()
        for href in _links(page):
            if re.match(r"^[a-z]+:", href):  # https:, data:, mailto:
                continue
            target, _, fragment = href.partition("#")
            assert not target.endswith(".ipynb"), f"{stem}: {href} still points at a notebook"
            linked = report_dir / target if target else report_dir / f"{stem}.html"
            assert linked.is_file(), f"{stem}: {href} points at no page"
            if fragment:
                assert f'id="{fragment}"' in linked.read_text(), f"{stem}: no heading {fragment!r} in {linked.name}"
        prose = re.sub(r'<nav class="report-nav.*?</nav>', "", page, flags=re.S)
        between += sum(href.partition("#")[0] in {f"{s}.html" for s in STEMS} for href in _links(prose))
    assert between >= 10, "the notebooks' cross-references ('notebook 02', 'notebook 01 §4') should be links"


@needs_chromium
def test_index_loads_nothing_from_the_network(report_dir):
    assert _probe(report_dir / "index.html", "_probe_index.html")["external"] == []


@needs_chromium
@pytest.mark.parametrize("stem", STEMS)
def test_notebook_page_typesets_maths_in_shipped_fonts_and_loads_figures_offline(report_dir, stem):
    page = report_dir / f"{stem}.html"
    result = _probe(page, f"_probe_{stem}.html")
    assert result["images"] >= 2 and result["loaded"] == result["images"], result
    assert result["typeset"] >= 5 and result["errors"] == 0, result
    assert result["external"] == [], result
    shipped = sorted(p.name for p in (report_dir / "mathjax" / "fonts" / "HTML-CSS").iterdir())
    assert result["fontInUse"] in shipped, f"MathJax uses the {result['fontInUse']} fonts, but ships only {shipped}"
    assert result["fallbackGlyphs"] == 0, (
        f"{result['fallbackGlyphs']} glyphs drawn in a system fallback font, e.g. {result['fallbackSample']}"
    )
    assert any(family.startswith(result["fontInUse"].split("-")[0]) for family in result["fontsLoaded"]), result


@needs_chromium
def test_screenshots_of_a_page_and_a_formula_close_up(report_dir):
    """Writes build/report-screenshots/ for a person to look at, and checks that they show a page and a formula."""

    page = report_dir / f"{STEMS[0]}.html"
    shots = BUILD / "report-screenshots"
    _screenshot(page, shots / "page.png", "1200,1600")
    _screenshot(page, shots / "maths-close-up.png", "900,500", CLOSE_UP.replace("TEX", json.dumps(r"\tilde M")))

    grey = Image.open(shots / "page.png").convert("L")
    assert grey.size == (1200, 1600)
    ink = sum(grey.histogram()[:128]) / (grey.size[0] * grey.size[1])
    assert 0.005 < ink < 0.5, f"the page screenshot is {ink:.1%} dark pixels: blank, or not a page of text"

    close_up = Image.open(shots / "maths-close-up.png").convert("RGB")
    red = [
        (x, y)
        for x in range(close_up.size[0])
        for y in range(close_up.size[1])
        if close_up.getpixel((x, y))[0] > 200 and max(close_up.getpixel((x, y))[1:]) < 60
    ]
    assert len(red) > 200, "the formula's outline is not in the close-up: the page did not typeset or scroll"
    box = (
        min(x for x, _ in red) + 4,
        min(y for _, y in red) + 4,
        max(x for x, _ in red) - 4,
        max(y for _, y in red) - 4,
    )
    formula = close_up.crop(box).convert("L")
    dark = sum(formula.histogram()[:100]) / (formula.size[0] * formula.size[1])
    assert dark > 0.01, f"the outlined formula is {dark:.1%} dark pixels: nothing typeset in it"


def test_notebook_links_use_anchors_that_github_generates():
    """A link to another notebook's section works on GitHub (and the builder maps it to nbconvert's heading id)."""
    import nbformat

    from tools.build_report import github_slug

    slugs = {}
    for stem in STEMS:
        cells = nbformat.read(ROOT / "report" / f"{stem}.ipynb", as_version=4).cells
        headings = re.findall(r"^#+ (.+)$", "\n".join(c.source for c in cells if c.cell_type == "markdown"), re.M)
        slugs[f"{stem}.ipynb"] = {github_slug(h) for h in headings}
    for stem in STEMS:
        cells = nbformat.read(ROOT / "report" / f"{stem}.ipynb", as_version=4).cells
        for cell in cells:
            if cell.cell_type == "markdown":
                for target, fragment in re.findall(r"\]\(([\w.-]+\.ipynb)(?:#([^)]*))?\)", cell.source):
                    assert target in slugs, f"{stem}: link to {target}, not a notebook in report/"
                    assert not fragment or fragment in slugs[target], f"{stem}: {target} has no heading #{fragment}"


def test_the_builder_refuses_a_link_to_a_missing_heading():
    from tools.build_report import link_pages

    pages = {"a": '<h2 id="1.-Set-up">1. Set up<a class="anchor-link" href="#1.-Set-up">¶</a></h2>', "b": ""}
    assert link_pages('<a href="a.ipynb#1-set-up">', "b", pages) == '<a href="a.html#1.-Set-up">'
    assert link_pages('<a href="a.ipynb">', "b", pages) == '<a href="a.html">'
    with pytest.raises(SystemExit, match="does not have"):
        link_pages('<a href="a.ipynb#2-results">', "b", pages)
    with pytest.raises(SystemExit, match="not a notebook"):
        link_pages('<a href="c.ipynb">', "b", pages)


@pytest.mark.parametrize("stem", STEMS)
def test_a_page_opens_with_its_title_and_leaves_out_what_is_not_for_reading(report_dir, stem):
    """The title comes before any code; the Colab install cell is a one-line note; cells whose output is the
    machine's (timings, versions) are left out; "Your answer" prompts say where to answer."""
    from tools import build_report

    page = (report_dir / f"{stem}.html").read_text()
    body = page[page.index("<main>") :]  # the styles above name the cell classes too
    assert -1 < body.find("<h1") < body.find('class="jp-Cell jp-CodeCell'), f"{stem}: code before the title"
    assert "a code cell here installs" in body and "def installed" not in body and "REPOSITORY =" not in body
    cells = nbformat.read(ROOT / "report" / f"{stem}.ipynb", as_version=4).cells
    machine = [c for c in cells if c.cell_type == "code" and c.source.startswith(build_report.MACHINE_MARK)]
    printed = [o.text.splitlines()[0] for c in machine for o in c.outputs if o.get("text")]
    assert len(printed) == len(machine), f"{stem}: a machine cell without printed output"
    assert "NBVAL_IGNORE_OUTPUT" not in body
    assert not [line for line in printed if html.escape(line) in body]
    answers = sum(c.cell_type == "markdown" and c.source.strip() == build_report.ANSWER_PROMPT for c in cells)
    assert "double-click to write" not in body
    assert body.count("double-click this cell in Jupyter or Colab") == answers
