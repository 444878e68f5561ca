"""Command line: smoothgrad COMMAND [options] (or python -m smoothgrad_lib COMMAND); COMMAND --help gives its full help.

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


def _add_roar(commands: argparse._SubParsersAction) -> None:
    from . import roar

    parser = commands.add_parser(
        "roar",
        help="RemOve And Retrain on the shapes data: retrain the twin on images without each map's top pixels (hours)",
        description=roar.__doc__.split("\n\n")[0] + " Writes the grid's accuracies, timings, code version and "
        "command line as JSON. The default grid retrains the twin (7 methods x 3 fractions x 2 fills + 1) x 3 seeds "
        "times.",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="the JSON file to write (e.g. smoothgrad_lib/results/roar-mean.json)"
    )
    parser.add_argument("--methods", nargs="+", default=list(roar.ROAR_METHODS), help="names of all_attributions")
    parser.add_argument("--fractions", nargs="+", type=float, default=list(roar.ROAR_FRACTIONS), help="k, in (0, 1]")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(roar.ROAR_SEEDS), help="retraining seeds")
    parser.add_argument(
        "--fills", nargs="+", choices=roar.FILLS, default=list(roar.FILLS), help="what replaces a pixel"
    )
    parser.add_argument("--n-train", type=int, help="training images (default: the twin's recipe)")
    parser.add_argument("--n-test", type=int, default=2000, help="test images (default: 2000)")
    parser.add_argument("--epochs", type=int, help="passes over the training images (default: the twin's recipe)")
    parser.add_argument("--n-samples", type=int, default=10, help="SmoothGrad's noisy copies per map (default: 10)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_roar)


def _roar(args: argparse.Namespace) -> None:
    import json
    import sys

    from . import roar

    result = roar.roar(
        args.methods,
        args.fractions,
        args.seeds,
        args.fills,
        n_train=args.n_train,
        n_test=args.n_test,
        epochs=args.epochs,
        n_samples=args.n_samples,
        progress=not args.no_progress,
    )
    report = roar.roar_report(result, ["python", "-m", "smoothgrad_lib", *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


def _add_grade(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "grade",
        help="grade submitted exercise notebooks into a CSV (and feedback files)",
        description="Grade students' notebooks against the teacher versions: each answer runs in a fresh process, "
        "in a temporary folder, with its time limit, on the public and hidden cases of its check; written answers "
        "become manual rows with their rubric. One CSV row per student and exercise. Exit 0 once every submission "
        "is graded, 2 for unreadable input. docs/teaching.md says what it defends against.",
    )
    parser.add_argument(
        "submissions",
        nargs="+",
        type=Path,
        metavar="SUBMISSION",
        help="a notebook, or a folder of notebooks; the student id is the file's stem",
    )
    parser.add_argument("--out", type=Path, required=True, help="the CSV file to write (e.g. grades.csv)")
    parser.add_argument("--feedback", type=Path, help="a folder for one Markdown feedback file per student")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per exercise (default: 60)")
    parser.add_argument("--key", type=Path, help="the teacher notebooks (default: report/ of this repository)")
    parser.add_argument("--seed", type=int, help="seed of the hidden cases (default: a new one, printed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_grade)


def _grade(args: argparse.Namespace) -> int:
    from . import grading

    return grading.main(
        args.submissions,
        args.out,
        key=args.key,
        feedback=args.feedback,
        timeout=args.timeout,
        seed=args.seed,
        progress=not args.no_progress,
    )


COMMANDS = (_add_train_shapes, _add_explain, _add_roar, _add_grade)


def main(argv: list[str] | None = None) -> int:
    """The ``smoothgrad`` console script (``[project.scripts]``) and ``python -m smoothgrad_lib``: exit status."""
    parser = argparse.ArgumentParser(prog="smoothgrad", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.run(args) or 0
