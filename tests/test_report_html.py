"""The rendered report reads offline: maths typeset by the local MathJax, figures loaded (headless Chromium)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
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
# Appended to a copy of a page: when everything has loaded and MathJax is done, record what we check.
PROBE = """
<script>
window.addEventListener("load", function () {
  function report() {
    var images = Array.from(document.images);
    var result = {
      images: images.length,
      loaded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
      typeset: document.querySelectorAll(".MathJax_CHTML, .MathJax, mjx-container").length,
      errors: document.querySelectorAll(".MathJax_Error, merror").length,
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

pytestmark = pytest.mark.skipif(
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


def _probe(page: Path, tmp_name: str) -> dict:
    copy = page.with_name(tmp_name)
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        dom = subprocess.run(
            [CHROMIUM, *FLAGS, "--dump-dom", copy.as_uri()], capture_output=True, text=True, timeout=120
        ).stdout
    finally:
        copy.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, "the page never finished loading"
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_index_lists_every_notebook(report_dir):
    index = (report_dir / "index.html").read_text()
    for notebook in (ROOT / "report").glob("*.ipynb"):
        assert f'href="{notebook.stem}.html"' in index
    assert _probe(report_dir / "index.html", "_probe_index.html")["external"] == []


@pytest.mark.parametrize("stem", sorted(p.stem for p in (ROOT / "report").glob("*.ipynb")))
def test_notebook_page_typesets_maths_and_loads_figures_offline(report_dir, stem):
    page = report_dir / f"{stem}.html"
    result = _probe(page, f"_probe_{stem}.html")
    assert result["images"] >= 2 and result["loaded"] == result["images"], result
    assert result["typeset"] >= 5 and result["errors"] == 0, result
    assert result["external"] == [], result


def test_screenshot_of_the_first_notebook_page(report_dir):
    page = report_dir / f"{sorted(p.stem for p in (ROOT / 'report').glob('*.ipynb'))[0]}.html"
    shot = BUILD / "report-screenshot.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    with Image.open(shot) as image:  # the page rendered: the window's size, and text and figures on it, not blank
        assert image.size == (1200, 1600)
        pixels = np.asarray(image.convert("L"))
    assert 0.01 < (pixels < 200).mean() < 0.9 and len(np.unique(pixels)) > 64
