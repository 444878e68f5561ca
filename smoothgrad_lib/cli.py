"""Command line: smoothgrad COMMAND [options] (or python -m smoothgrad_lib COMMAND); COMMAND --help gives its full help.

Each command is one ``_add_<command>`` function that adds its parser and sets ``run``, the function that carries it
out; to add a command, write one and list it in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from . import explain
from .images import DEFAULT_FIT, FITS
from .models import MODELS
from .noise import DEFAULT_NOISE_LEVEL
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


EVALUATE_METHODS = ("vanilla", "smoothgrad", "grad_cam", "integrated_gradients", "blurred_vanilla", "random")


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="every method's map of a folder of images on your model, scored and summarised (resumable, torchrun)",
        description="Explain every image of a folder with each method on your model (a registry name, a "
        "TorchScript file, or package.module:factory with --weights), keep each map (.npz), and score them: "
        "deletion and insertion AUC, AOPC (MoRF, LeRF), the model-randomisation check with each map's noise floor, "
        "and the declared SmoothGrad contrasts with Holm's adjustment. Resumable (a rerun skips finished images); "
        "under torchrun each process takes its share. The module smoothgrad_lib.evaluate says what OUT holds.",
        epilog="Exit status: 0 once the summary is written; 2 for a problem with the input (one line, before any "
        "long work). Images that cannot be read are listed in OUT/skipped.csv.",
    )
    arg = parser.add_argument
    arg("--model", required=True, help=f"{', '.join(MODELS)}, a TorchScript file, or package.module:factory")
    arg("--images", type=Path, required=True, help="a folder of images (sub-folders included)")
    arg("--out", type=Path, required=True, help="the folder for the results (created)")
    arg("--weights", type=Path, help="a state dict (torch.save) for package.module:factory")
    arg(
        "--methods",
        nargs="+",
        type=str.lower,
        default=list(EVALUATE_METHODS),
        help=f"registry names (a wrong one lists them all; default: {' '.join(EVALUATE_METHODS)})",
    )
    arg("--labels", type=Path, help="CSV with columns image,label (default: explain the predicted class)")
    arg("--classes", nargs="+", help="your model's class names, in order (--labels may then use them)")
    arg("--size", type=int, help="input side in pixels (default: the registry model's, else 224)")
    arg("--mean", type=float, nargs="+", help="per-channel mean your model expects (default: none)")
    arg("--std", type=float, nargs="+", help="per-channel standard deviation your model expects (default: none)")
    arg("--channels", type=int, choices=(1, 3), default=3, help="1: greyscale input (default: 3)")
    arg("--fit", choices=FITS, default=DEFAULT_FIT, help="how an image becomes square (default: crop)")
    arg("--n-samples", type=int, default=10, help="SmoothGrad's noisy copies N (default: 10)")
    arg("--noise-level", type=float, default=DEFAULT_NOISE_LEVEL, help="sigma / image range (default: 0.15)")
    arg("--ig-steps", type=int, default=16, help="Integrated Gradients' points (default: 16)")
    arg("--gradcam-layer", help="the module Grad-CAM explains (default: the registry's, else the last Conv2d)")
    arg("--steps", type=int, default=16, help="deletion and insertion steps (default: 16)")
    arg("--baseline", choices=("blur", "mean", "black"), default="blur", help="what deletion puts in (default: blur)")
    arg("--sanity", type=int, default=16, help="images in the randomisation check (default: 16)")
    arg("--maps-only", action="store_true", help="maps only: no scores, no summary statistics")
    arg("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    arg("--seed", type=int, default=0, help="the seed of every random draw (default: 0)")
    arg("--force", action="store_true", help="delete another run's results in OUT first")
    arg("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from . import evaluate

    return evaluate.run(args)


COMMANDS = (_add_train_shapes, _add_explain, _add_roar, _add_grade, _add_evaluate)


def main(argv: list[str] | None = None) -> int:
    """The ``smoothgrad`` console script (``[project.scripts]``) and ``python -m smoothgrad_lib``: exit status."""
    parser = argparse.ArgumentParser(prog="smoothgrad", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(commands)
    args = parser.parse_args(argv)
    args.command_line = ["smoothgrad", *(sys.argv[1:] if argv is None else argv)]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.run(args) or 0
