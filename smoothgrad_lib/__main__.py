"""Command line: ``python -m smoothgrad_lib train-shapes`` retrains the two shapes twins and their checksums.

Deterministic (fixed seeds, deterministic algorithms); a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .shapes import ACTIVATIONS, CHECKSUMS, WEIGHTS_DIR, sha256, train, weights_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m smoothgrad_lib", description=__doc__)
    parser.add_argument("command", choices=["train-shapes"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for the weights and sha256.json")
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    trained = {}
    for activation in ACTIVATIONS:
        model, score = train(activation, args.n_train, args.epochs)
        if score < 0.95:
            raise SystemExit(f"{activation} reached only {score:.3f} held-out accuracy (< 0.95); nothing saved.")
        trained[activation] = model
    sums = {}
    for activation, model in trained.items():  # save only once both twins pass
        path = args.out / weights_path(activation).name
        torch.save(model.state_dict(), path)
        sums[path.name] = sha256(path)
        print(f"saved {path} ({path.stat().st_size / 1024:.0f} KiB), sha256 {sums[path.name]}", flush=True)
    (args.out / CHECKSUMS.name).write_text(json.dumps(sums, indent=2) + "\n")


if __name__ == "__main__":
    main()
