"""Command line: python -m smoothgrad_lib COMMAND [options]; COMMAND --help gives the command's full help.

Each command is one ``_add_<command>`` function that adds its parser and sets ``run``, the function that carries it
out; to add a command, write one and list it in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from . import explain
from .train import train_and_save
from .twins import TWINS, WEIGHTS


def _add_train_shapes(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train-shapes",
        help="retrain the shapes twins and their sha256 (deterministic; minutes on a CPU)",
        description="Retrain the shapes twins on the CPU with deterministic algorithms: the same machine gives the "
        "same files bit for bit. Weights are saved only if every twin passes its accuracy bar.",
    )
    parser.add_argument(
        "--twins", nargs="+", choices=list(TWINS), default=list(TWINS), help="which twins (default: all)"
    )
    parser.add_argument("--epochs", type=int, help="passes over the training images (default: each twin's recipe)")
    parser.add_argument("--n-train", type=int, help="training images (default: each twin's recipe)")
    parser.add_argument(
        "--n-held-out", type=int, default=2000, help="held-out images for the accuracy bar (default: 2000)"
    )
    parser.add_argument("--out", type=Path, help="folder for the weights and sha256.json (default: the package's)")
    parser.set_defaults(run=_train_shapes)


def _train_shapes(args: argparse.Namespace) -> None:
    torch.use_deterministic_algorithms(True)
    out = Path(str(WEIGHTS)) if args.out is None else args.out
    train_and_save(args.twins, out, n_train=args.n_train, epochs=args.epochs, n_held_out=args.n_held_out)


def _add_explain(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "explain",
        help=explain.SUMMARY,
        **explain.parser_options(),  # the same full help as python -m smoothgrad_lib.explain --help
    )
    explain.add_arguments(parser)
    parser.set_defaults(run=explain.run)


COMMANDS = (_add_train_shapes, _add_explain)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smoothgrad_lib", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.run(args) or 0
