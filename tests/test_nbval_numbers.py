"""The comparison nbval uses for notebook outputs: text exact, numbers within one unit in the last printed digit."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.nbval_numbers import numbers_close, outputs_match

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("reference", "actual"),
    [
        ("0.0525", "0.0526"),
        ("1.00", "0.99"),
        ("0.0999", "0.100"),  # a rounding that crosses a decade
        ("0.100", "0.0999"),
        ("0.9", "0.901"),
        ("-0.016", "-0.015"),
        ("-0.00", "0.00"),
        ("+0.014", "+0.015"),
        ("1.2e-05", "1.3e-05"),
        ("1.2E+03", "1.1E+03"),
        ("373", "373"),
    ],
)
def test_numbers_within_one_unit_of_the_last_digit_match(reference, actual):
    assert numbers_close(reference, actual)
    assert outputs_match(f"value {reference} here", f"value {actual} here")


@pytest.mark.parametrize(
    ("reference", "actual"),
    [
        ("0.052", "0.055"),
        ("0.0525", "0.0527"),
        ("1.00", "0.98"),
        ("0.5", "-0.5"),
        ("1.2e-05", "1.2e-04"),
        ("0.523", "0"),  # a value that collapsed to a shorter literal is not excused by its coarseness
        ("0.873", "1"),
        ("0.200", "0.29"),
        ("1.5", "2"),
        ("373", "374"),  # integers (counts, N, class indices) are exact
        ("1.0", "1"),
    ],
)
def test_numbers_further_apart_do_not_match(reference, actual):
    assert not numbers_close(reference, actual)
    assert not outputs_match(f"value {reference} here", f"value {actual} here")


def test_confidence_intervals_and_percentages_compare_number_by_number():
    assert outputs_match("mean 0.173 [0.167, 0.180] (n = 12)", "mean 0.174 [0.166, 0.181] (n = 12)")
    assert not outputs_match("mean 0.173 [0.167, 0.180] (n = 12)", "mean 0.173 [0.167, 0.183] (n = 12)")
    assert outputs_match("5.88% of pixels", "5.89% of pixels")
    assert not outputs_match("5.88% of pixels", "5.88 % of pixels")  # the text between numbers is exact
    assert outputs_match("1.00/0.99", "0.99/1.00")


def test_integers_separators_and_unicode_minus_are_exact():
    assert not outputs_match("4/4 correct", "3/4 correct")
    assert not outputs_match("N = 463", "N = 464")
    assert not outputs_match("20,000 images", "20,001 images")
    assert not outputs_match("3,224,224", "3,224,225")
    assert not outputs_match("1,000", "1000")
    assert not outputs_match("\u22120.5", "-0.5")
    assert not outputs_match("\u22120.5", "\u22120.4")
    assert outputs_match("20,000 images at 0.125", "20,000 images at 0.126")


def test_numbers_inside_words_are_text():
    for reference, actual in [
        ("conv2d", "conv3d"),
        ("ResNet-18", "ResNet-17"),
        ("float32", "float31"),
        ("layer4.1", "layer4.2"),
        ("x-1", "x-2"),
        ("0.5x faster", "0.6x faster"),
        ("top1", "top2"),
    ]:
        assert not outputs_match(reference, actual), (reference, actual)
    assert outputs_match("ResNet-18 at 0.0525", "ResNet-18 at 0.0526")


def test_changed_words_lines_or_counts_of_numbers_fail():
    assert not outputs_match("Egyptian cat 0.394", "tiger cat 0.394")
    assert not outputs_match("a 0.1\nb 0.2\n", "a 0.1\nb 0.2\nc 0.3\n")
    assert not outputs_match("a 0.1 b", "a 0.1 0.2 b")
    assert not outputs_match("a 0.1\n", "a 0.1")
    assert not outputs_match("nan", "0.5")
    assert outputs_match("nan", "nan")


def _run_nbval(tmp_path: Path, committed: str, printed: str) -> subprocess.CompletedProcess:
    """nbval, with this project's plugin, over a one-cell notebook whose committed output is ``committed`` and
    whose code prints ``printed``."""
    cell = nbformat.v4.new_code_cell(f"print({printed!r})", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=committed + "\n")]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "one.ipynb"
    nbformat.write(notebook, path)
    command = [sys.executable, "-m", "pytest", "-p", "tests.nbval_numbers", "--nbval", "--nbval-current-env"]
    command += ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-c", "/dev/null", str(path)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_nbval_passes_a_last_digit_change_and_fails_a_larger_one_with_a_diff(tmp_path):
    passed = _run_nbval(tmp_path, "relative error 0.0525 [0.0510, 0.0540]", "relative error 0.0526 [0.0510, 0.0541]")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    failed = _run_nbval(tmp_path, "relative error 0.0525", "relative error 0.0528")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Cell outputs differ" in failed.stdout
    assert "0.0525" in failed.stdout and "0.0528" in failed.stdout
