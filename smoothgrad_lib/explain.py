"""explain IMAGE: the top-5 classes, a SmoothGrad map with its Monte-Carlo error, and one figure.

The figure shows the image, the SmoothGrad map (the estimate's largest
magnitude over colour channels, max_c |mean_c|), the map over the greyed
image, and the map's relative error: at each pixel stderr / |mean| of the
channel shown, clipped to [0, 1] (1: the error is at least the value). The
printed relative error is the whole estimate's ||stderr|| / ||mean|| over all
channels and pixels, the quantity --tolerance controls.

Problems with the input (a missing or unreadable file, an unknown model or
class, bad numbers, an online-only model while offline) end the command with
a one-line message on stderr and exit status 2.

example: python -m smoothgrad_lib.explain chelsea --tolerance 0.05 --out chelsea.png
"""

from __future__ import annotations

import argparse
import difflib
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .aggregates import AGGREGATES
from .images import PHOTOS, load_image
from .maps import saliency_map
from .models import DEFAULT_MODEL, MODELS, LoadedModel, default_device, load_model
from .noise import DEFAULT_NOISE_LEVEL
from .noise import seeded_generator as generator
from .plotting import overlay, to_numpy_image
from .precision import float32_precision
from .saliency import smoothgrad_estimate

PROG = "explain"
DEFAULT_N_SAMPLES = 50
# With --tolerance the first block has this many gradients (the library's note: >= 20 keeps the bias of
# stopping at the first estimate below the tolerance small); more follow until the tolerance is met.
PILOT_SAMPLES = 20
DEFAULT_MAX_SAMPLES = 1000
TOP_K = 5
UNITS = {
    "abs": "logit per unit of pixel intensity",
    "raw": "logit per unit of pixel intensity",
    "square": "(logit per unit of pixel intensity)²",
    "vargrad": "(logit per unit of pixel intensity)²",
}


class CommandError(Exception):
    """A problem with the command's input: reported as one line on stderr with exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``explain`` arguments on ``parser`` (a parser or a subcommand's parser)."""
    parser.add_argument("image", help=f"an image file (JPEG, PNG, ...) or a bundled photo: {', '.join(PHOTOS)}")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"one of {', '.join(MODELS)} (default: %(default)s)")
    parser.add_argument(
        "--target", help="class to explain: an index or a name (case-insensitive); default: the predicted class"
    )
    parser.add_argument(
        "--aggregate", default="abs", choices=AGGREGATES, help="how noisy gradients are combined (default: %(default)s)"
    )
    parser.add_argument(
        "--noise-level",
        type=float,
        default=DEFAULT_NOISE_LEVEL,
        help="noise sigma as a fraction of the image's value range (default: %(default)s)",
    )
    parser.add_argument(
        "--n-samples",
        type=int,
        metavar="N",
        help=f"number of noisy gradients (default: {DEFAULT_N_SAMPLES}; not with --tolerance)",
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
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default: %(default)s)")
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
    parser = argparse.ArgumentParser(
        prog=f"python -m smoothgrad_lib.{PROG}",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _explain(args: argparse.Namespace) -> None:
    n_samples, tolerance, max_samples = _sample_counts(args)
    if not (args.noise_level >= 0 and math.isfinite(args.noise_level)):
        raise CommandError(f"--noise-level must be a finite number >= 0 (e.g. 0.15), got {args.noise_level}.")
    out = _output_path(args.out, args.image)
    device = _device(args.device)
    try:
        loaded = load_model(args.model, device=device)
    except (ValueError, RuntimeError) as error:  # unknown name; torchvision weights while offline
        raise CommandError(_one_line(error)) from None
    try:
        x = load_image(args.image, size=loaded.input_size).to(device)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(_one_line(error)) from None
    target = None if args.target is None else class_index(args.target, loaded.categories)

    probabilities = _probabilities(loaded, x)
    top = probabilities.topk(min(TOP_K, len(probabilities)))
    print(f"image: {args.image} ({x.shape[2]}x{x.shape[1]} px), model: {loaded.name} on {device}")
    print(f"top-{len(top.indices)} classes:")
    for rank, (p, k) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True), 1):
        print(f"  {rank}. {loaded.categories[k]} (class {k}): p = {p:.3f}")
    if target is None:
        target = int(top.indices[0])
    how = "predicted" if target == int(top.indices[0]) else f"p = {probabilities[target]:.3f}"
    print(f"explaining class {target} '{loaded.categories[target]}' ({how})")

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
            generator=generator(args.seed, device),
            progress=True,
        )
    for warning in caught:
        print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
    error = relative_error(estimate.mean, estimate.stderr)
    error_text = f"{error:.3g}" if estimate.n_samples >= 2 else "n/a (needs N >= 2)"
    goal = f" (tolerance {tolerance})" if tolerance is not None else ""
    print(
        f"SmoothGrad ({args.aggregate}, noise level {args.noise_level}): N = {estimate.n_samples} gradients, "
        f"relative error ||stderr||/||mean|| = {error_text}{goal}"
    )
    title = (
        f"{loaded.name}: class {target} '{loaded.categories[target]}', SmoothGrad {args.aggregate}, "
        f"noise level {args.noise_level}, N = {estimate.n_samples}, relative error {error_text}"
    )
    fig = figure(x, estimate.mean, estimate.stderr, args.aggregate, title)
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


def relative_error(mean: torch.Tensor, stderr: torch.Tensor) -> float:
    """``||stderr||_2 / ||mean||_2`` over all elements (NaN where the error is unknown, N < 2)."""
    return float(stderr.norm() / mean.norm())


def relative_error_map(mean: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """Relative error (H, W) of the map ``max_c |mean_c|`` of a (C, H, W) estimate, clipped to [0, 1].

    At each pixel, ``stderr_c* / |mean_c*|`` with ``c*`` the channel where
    ``|mean_c|`` is largest: the standard error of the displayed value over
    that value. 0 where both are 0 (every gradient agreed), 1 where the
    error is at least the value; NaN where the error is unknown (N < 2).
    """
    channel = mean.abs().argmax(0, keepdim=True)
    value, error = mean.gather(0, channel)[0].abs(), stderr.gather(0, channel)[0]
    ratio = torch.where(error == 0, torch.zeros_like(error), error / value)
    return ratio.clamp(0, 1)


def figure(image: torch.Tensor, mean: torch.Tensor, stderr: torch.Tensor, aggregate: str, title: str) -> Figure:
    """Four panels: the image (3, H, W), the map of ``mean`` (C, H, W), the overlay, and the relative error map."""
    raw_map = saliency_map(mean, reduce="max", normalize=None).cpu()
    unit_map = saliency_map(mean, reduce="max", normalize="minmax").cpu()
    error_map = relative_error_map(mean.cpu(), stderr.cpu())
    image = image.cpu()
    height, width = image.shape[1:]
    fig = Figure(figsize=(17, 4.6), layout="constrained")  # no pyplot: nothing global, no window
    axes = fig.subplots(1, 4)

    axes[0].imshow(to_numpy_image(image).clip(0, 1))
    axes[0].set_title("image")
    shown = axes[1].imshow(to_numpy_image(raw_map), cmap="inferno", vmin=0)
    axes[1].set_title(f"SmoothGrad ({aggregate}), max over channels")
    fig.colorbar(shown, ax=axes[1], shrink=0.85, label=UNITS[aggregate])
    axes[2].imshow(overlay(image, unit_map))
    axes[2].set_title("overlay on the greyed image")
    fig.colorbar(
        ScalarMappable(Normalize(0, 1), "inferno"), ax=axes[2], shrink=0.85, label="map, min-max normalised (1 = max)"
    )
    shown = axes[3].imshow(to_numpy_image(error_map), cmap="viridis", vmin=0, vmax=1)
    axes[3].set_title("relative error of the map")
    fig.colorbar(shown, ax=axes[3], shrink=0.85, label="stderr / |mean| (clipped to [0, 1])")
    if bool(error_map.isnan().all()):
        axes[3].text(width / 2, height / 2, "unknown: needs N ≥ 2", ha="center", va="center")
    for ax in axes:
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
    fig.suptitle(title)
    return fig


def _sample_counts(args: argparse.Namespace) -> tuple[int, float | None, int]:
    """(initial N, tolerance or None, max_samples) from the command line, checked."""
    if args.tolerance is None:
        if args.max_samples is not None:
            raise CommandError("--max-samples only applies with --tolerance.")
        n_samples = DEFAULT_N_SAMPLES if args.n_samples is None else args.n_samples
        if n_samples < 1:
            raise CommandError(f"--n-samples must be at least 1, got {n_samples}.")
        return n_samples, None, DEFAULT_MAX_SAMPLES
    if args.n_samples is not None:
        raise CommandError("give either --n-samples (a fixed N) or --tolerance (N chosen to reach it), not both.")
    if not 0 < args.tolerance < 1:
        raise CommandError(f"--tolerance must be a relative error in (0, 1), e.g. 0.05; got {args.tolerance}.")
    max_samples = DEFAULT_MAX_SAMPLES if args.max_samples is None else args.max_samples
    if max_samples < 2:
        raise CommandError(f"--max-samples must be at least 2 for an error estimate, got {max_samples}.")
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
    if name == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CommandError(f"--device {name!r} is not a device name: use auto, cpu, cuda, cuda:N or mps.") from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(device.type, False):
        raise CommandError(f"--device {name!r} is not available on this machine: use auto or cpu.")
    return device


def _probabilities(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Softmax class probabilities (K,) of the clean image x (C, H, W), in full float32 like the gradients."""
    with torch.no_grad(), float32_precision():
        return loaded.model(x[None]).softmax(1)[0].cpu()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
