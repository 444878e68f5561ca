"""The README's Python examples, executed as a reader would paste them (so they cannot rot)."""

import ast
import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torchvision.models
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


def _run(block: str, namespace: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), namespace)
    return out.getvalue()


def test_readme_has_the_three_examples():
    assert len(BLOCKS) == 3
    assert "load_model()" in BLOCKS[0] and "smoothgrad_estimate" in BLOCKS[1] and "resnet50" in BLOCKS[2]


def test_quick_start_and_estimate_examples_print_what_their_comments_say():
    namespace: dict = {}
    printed = _run(BLOCKS[0], namespace)
    commented = re.search(r"print\(loaded\.top_k\(x, k=3\)\)\s+# \[(\[.*?), \.\.\.\]\]", BLOCKS[0])[1]
    expected = ast.literal_eval(commented + "]")  # the classes and probabilities the comment shows
    top = [(name, round(p, 3)) for name, p in ast.literal_eval(printed)[0]]
    assert top[: len(expected)] == expected, (top, expected)
    assert tuple(namespace["g"].shape) == (3, 224, 224) and tuple(namespace["m"].shape) == (224, 224)
    assert 0 <= float(namespace["m"].min()) and float(namespace["m"].max()) <= 1

    n_samples, relative_error = _run(BLOCKS[1], namespace).split()
    assert int(n_samples) > 50 and float(relative_error) <= 0.05


def test_own_model_example_runs_offline_with_random_weights(tmp_path, monkeypatch):
    resnet50 = torchvision.models.resnet50
    monkeypatch.setattr(torchvision.models, "resnet50", lambda weights=None: resnet50(weights=None))
    pixels = np.random.default_rng(0).integers(0, 256, size=(180, 240, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "my_photo.jpg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    _run(BLOCKS[2], namespace)
    assert namespace["m"].ndim == 2 and not namespace["m"].isnan().any()


@pytest.mark.parametrize("block", range(len(BLOCKS)))
def test_examples_use_only_public_names(block):
    assert not re.search(r"\b_\w+\(", BLOCKS[block])
