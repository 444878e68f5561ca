"""Training the twins: deterministic, blind to the caller's random state, gated, and driven by the command line."""

import json
import logging

import pytest
import torch

from smoothgrad_lib.cli import main
from smoothgrad_lib.train import train
from smoothgrad_lib.twins import load_twin, shipped_checksums, weights_name

QUICK = {"n_train": 100, "epochs": 1, "n_held_out": 100}


def test_training_leaves_the_global_random_state_alone_and_does_not_depend_on_it():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first, _ = train("relu", **QUICK)
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)  # another global state
    again, _ = train("relu", **QUICK)
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    other, _ = train("relu", **QUICK, seed=1)
    assert not torch.equal(first[0].weight, other[0].weight)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown shapes twin 'tanh'"):
        train("tanh")
    with pytest.raises(ValueError, match="need n_train, epochs and n_held_out >= 1, got n_train=0, epochs=1"):
        train("relu", n_train=0, epochs=1)
    with pytest.raises(ValueError, match="n_held_out=0"):
        train("relu", n_held_out=0)


def test_command_saves_nothing_when_a_twin_misses_its_bar(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="smoothgrad_lib.train")
    with pytest.raises(SystemExit, match=r"relu reached only 0\.\d{3} held-out accuracy \(< 0\.95\); nothing saved"):
        main(
            [
                "train-shapes",
                "--twins",
                "relu-permuted",
                "relu",
                "--epochs",
                "1",
                "--n-train",
                "200",
                "--n-held-out",
                "200",
                "--out",
                str(tmp_path),
            ]
        )
    assert list(tmp_path.iterdir()) == []
    assert "relu: epoch 1/1" in caplog.text and "held-out accuracy" in caplog.text


def test_command_saves_a_twin_without_a_bar_and_merges_its_checksum(tmp_path):
    (tmp_path / "sha256.json").write_text(json.dumps({"shapes-relu.pt": "kept"}))
    main(
        ["train-shapes", "--twins", "relu-permuted", "--epochs", "1", "--n-train", "200", "--n-held-out", "100"]
        + ["--out", str(tmp_path)]
    )
    saved = tmp_path / weights_name("relu-permuted")
    sums = json.loads((tmp_path / "sha256.json").read_text())
    assert sums["shapes-relu.pt"] == "kept" and sums[saved.name] != shipped_checksums()[saved.name]
    with pytest.raises(ValueError, match="checksum mismatch"):  # a retrained file is not the shipped one
        load_twin("relu-permuted", path=saved)


def test_command_line_lists_its_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "train-shapes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["no-such-command"])
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err
