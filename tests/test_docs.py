"""What a newcomer reads first is true: the README's notebook table and run times are those of the rendered index
(tools/build_report.py's NOTEBOOKS), its install line is the repository of pyproject, the photos it names are those
the notebooks load, and LICENSE and CITATION.cff agree with pyproject."""

import re
import tomllib
from pathlib import Path

import nbformat
import yaml

from tools.build_report import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_readme_table_says_what_the_index_says_about_each_notebook():
    rows = {
        re.search(r"\(report/([\w-]+)\.ipynb\)", row).group(1): row
        for row in re.findall(r"^\|.*\.ipynb.*$", README, re.M)
    }
    assert sorted(rows) == sorted(NOTEBOOKS)
    for stem, notebook in NOTEBOOKS.items():
        row = rows[stem].replace(r"\|", "|")
        assert f"[{notebook.title}](report/{stem}.ipynb)" in row
        assert f"| {notebook.shows} |" in row, f"README's row for {stem} differs from NOTEBOOKS[{stem!r}].shows"


def test_readme_gives_each_notebooks_run_time_on_a_2_core_cpu():
    sentence = re.search(r"Run times on a 2-core CPU.*?\n\n", README, re.S)
    assert sentence, "README: no 'Run times on a 2-core CPU ...' sentence"
    text = " ".join(sentence.group(0).split())
    for stem, notebook in NOTEBOOKS.items():
        assert f"{stem[:2]} {notebook.run_time}" in text, (stem, notebook.run_time, text)
    seconds = [str(notebook.wall_seconds) for notebook in NOTEBOOKS.values()]
    assert f"{', '.join(seconds[:-1])} and {seconds[-1]} s" in text, (
        "README: the measured seconds differ from NOTEBOOKS"
    )
    total = sum(notebook.wall_seconds for notebook in NOTEBOOKS.values())
    count = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][len(NOTEBOOKS)]
    costs = " ".join(re.search(r"\| `make report` \|.*", README).group(0).split())
    sum_text = f"({' + '.join(seconds)} = {total} s)"
    assert f"about {round(total / 60)} minutes: the {count} notebooks, one after another {sum_text}" in costs
    assert f"{count.capitalize()} Jupyter notebooks" in README


def test_each_notebooks_opening_box_gives_the_run_time_of_the_index():
    """The "Runs in" row of each notebook's opening box starts with what NOTEBOOKS says (the index and README too)."""
    for stem, notebook in NOTEBOOKS.items():
        cells = nbformat.read(ROOT / "report" / f"{stem}.ipynb", as_version=4).cells
        rows = [line for cell in cells[:4] for line in cell.source.splitlines() if line.startswith("| **Runs in** |")]
        assert len(rows) == 1, f"{stem}: no 'Runs in' row in the opening box"
        assert rows[0].startswith(notebook.runs_in), f"{stem}: {rows[0]!r} is not NOTEBOOKS's {notebook.runs_in!r}"


def test_readme_install_line_is_the_projects_repository():
    url = PROJECT["urls"]["Repository"]
    assert f"pip install git+{url}\n" in README


def test_readme_names_every_photo_the_notebooks_load():
    from smoothgrad_lib.images import IMAGENET_PHOTOS

    sources = [
        cell.source
        for path in sorted((ROOT / "report").glob("*.ipynb"))
        for cell in nbformat.read(path, as_version=4).cells
        if cell.cell_type == "code"
    ]
    assert sum("IMAGENET_PHOTOS" in source for source in sources) >= 4  # every notebook loads the photos by it
    assert not any(re.search(r'load_image\("(?!chelsea|coffee|rocket|camera)\w+"\)', s) for s in sources)
    said = re.search(r"The notebooks use (.*?), the four", README, re.S).group(1)
    assert set(re.findall(r"`(\w+)`", said)) == set(IMAGENET_PHOTOS) == {"chelsea", "coffee", "rocket", "camera"}


def test_license_is_mit_as_pyproject_says():
    assert PROJECT["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the smoothgrad-lib authors" in text


def test_citation_cff_parses_and_names_the_version_of_pyproject():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors"} <= set(cff)  # required by the CFF 1.2.0 schema
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])
    assert cff["version"] == PROJECT["version"]
    assert cff["license"] == PROJECT["license"]
    assert cff["repository-code"] == PROJECT["urls"]["Repository"]
