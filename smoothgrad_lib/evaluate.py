"""Your model on your images: every method's map of each image of a folder, its faithfulness, the model-randomisation
sanity check and the declared SmoothGrad contrasts, written to a folder (``python -m smoothgrad_lib evaluate``).

    python -m smoothgrad_lib evaluate --model MODEL --images DIR --out OUT [options]
    torchrun --nproc_per_node 4 -m smoothgrad_lib evaluate --model MODEL --images DIR --out OUT [options]

``MODEL`` is a registry name (``models.MODELS``), a TorchScript file (``torch.jit.save``), or
``package.module:factory``, a function that returns an ``nn.Module`` (``--weights`` then loads a state dict into
it with ``weights_only=True``).
A model of your own gets ``Normalize(--mean, --std)`` as its first layer, so that it takes images in [0, 1] and the
gradients, and SmoothGrad's sigma, are in pixel units of [0, 1] images; it must return logits (batch, classes).

Each image file of ``DIR`` (and its sub-folders) is read as ``explain`` reads one (``images.read_image``), fitted to
``--size`` and explained for its class in the ``--labels`` CSV (columns ``image,label``; the label a class index or
name) or, without one, for the class the model predicts. Each method's map is ``max_c |a_c|`` of its attribution
(``maps.saliency_map(a, normalize=None)``, (H, W)), and every score below is of that one representation:

* deletion and insertion AUC (``faithfulness.deletion_curve``, ``insertion_curve``, ``curve_auc``; ``--steps``
  steps, pixels replaced by, or revealed over, the ``--baseline`` image): the area under the target's softmax
  probability, deletion smaller-is-better, insertion larger-is-better;
* AOPC (``faithfulness.aopc``, Samek et al., 2017) of the deletion curve, most relevant first (MoRF, larger is
  better) and least relevant first (LeRF, the map negated: smaller is better);
* for the first ``--sanity`` images (by name): Spearman's rank correlation of the map with the map of the model
  whose every layer was re-initialised (``randomisation.randomize_layers``, the end of Adebayo et al.'s cascade), and
  its noise floor: with the map of the trained model drawn with other noise (1 for a deterministic method). A map
  that reflects the model falls well below its floor.

Randomness is per image: image ``name`` draws from seeds made of ``--seed`` and its name (``image_seed``), on the CPU
whatever the device (``noise_device="cpu"``), so a map does not depend on which process or device computes it, on
the order, or on a resumed run. The summary's contrasts are
declared here, before any data: SmoothGrad against the vanilla gradient and against the blurred vanilla map, on
deletion and on insertion AUC (those of them whose methods were run), paired Student-t intervals over images and
Holm's adjustment over the family (``stats.contrast_family``). The ``random`` map is the null: its scores are what
a map without information gets.

What ``OUT`` holds (all of it readable without this package):

* ``settings.json``: what decides the results; a run on an ``OUT`` with other settings stops (``--force`` deletes
  the old results first);
* ``maps/<image path>.npz``: ``numpy.load`` gives one float32 array (H, W) per method name;
* ``maps/<image path>.json``: the image's class and scores; written last, atomically: an image is done when it
  exists, and a rerun skips it (a killed run loses at most the image in flight; a rerun trusts what is done, so
  after changing an image file use a new ``OUT`` or ``--force``; other settings or another model, by the sha256 of
  its files, are refused);
* ``skipped.csv`` (images that could not be read, and why), ``read_warnings.csv`` (images read with a warning, e.g.
  float values clipped to [0, 1], upsampling, a colour image averaged for a 1-channel model), ``per_image.csv`` (one
  row per image and method; ``probability`` is the explained class's),
  ``summary.csv`` (per method and score: mean, 95% t-interval, n), ``contrasts.csv``, ``unavailable.csv`` (methods
  that cannot run on this model, and why), ``summary.md`` with ``figure.png``, ``run.json`` (settings, code
  version, command line, processes and times; ``sessions`` keeps each session's times when a run was resumed) and
  ``ranks/rank-<k>.json`` (the images process k explained in the last session, and its seconds per stage).

Under ``torchrun`` every process loads the model, takes its share of the images not yet done through
``torch.utils.data.DistributedSampler`` (CUDA: the GPU of its ``LOCAL_RANK``) and writes their files; process 0 checks
the inputs first, and summarises once all are done. Processes coordinate over gloo.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib
import io
import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from tqdm import tqdm

from .faithfulness import aopc, curve_auc, deletion_curve, insertion_curve
from .images import read_image
from .maps import saliency_map
from .methods import REGISTRY as METHODS
from .methods import all_attributions
from .metrics import rank_correlation
from .models import MODELS, LoadedModel, Normalize, load_model, resolve_device
from .noise import seeded_generator
from .plotting import image_grid
from .provenance import code_version
from .randomisation import randomize_layers
from .saliency import default_batch_size
from .stats import contrast_family, format_p, mean_ci
from .twins import sha256

PROG = "evaluate"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp")
BASELINES = {"blur": "blur", "mean": "mean", "black": 0.0}
# Where Grad-CAM looks in the registry's models (a model of your own: its last Conv2d, or --gradcam-layer).
GRADCAM_LAYERS = {
    "efficientnet-lite0": "1._bn1",
    "resnet18": "1.layer4",
    "resnet50": "1.layer4",
    "vgg16": "1.features.29",
}
SCORES = ("deletion_auc", "insertion_auc", "aopc_morf", "aopc_lerf")
BETTER = {"deletion_auc": "smaller", "insertion_auc": "larger", "aopc_morf": "larger", "aopc_lerf": "smaller"}
SANITY_SCORES = ("randomised_rho", "floor_rho")
# The declared family: (score, SmoothGrad's reference); positive differences mean SmoothGrad is better.
CONTRASTS = tuple((score, ref) for score in ("deletion_auc", "insertion_auc") for ref in ("vanilla", "blurred_vanilla"))
SMOOTHGRAD = "smoothgrad"
SANITY_CHECK = "model randomisation check"
SCRIPTED = (
    "a TorchScript model takes no forward or backward hooks and cannot be re-initialised layer by layer; give it as "
    "package.module:factory with --weights for this. "
)
FIGURE_IMAGES = 4


class CommandError(Exception):
    """A problem with the command's input, reported as one line (before any long work where it can be).

    ``process_only``: met by this process alone (under torchrun), so it prints it whatever its rank."""

    def __init__(self, message: str, process_only: bool = False) -> None:
        super().__init__(message)
        self.process_only = process_only


@dataclass
class Setup:
    """What every process needs: the model, its input, the methods that run on it, and the settings."""

    model: nn.Module
    categories: tuple[str, ...]
    channels: int
    size: int
    gradcam_layer: str
    methods: tuple[str, ...]
    unavailable: dict[str, str]
    device: torch.device
    settings: dict[str, object]
    randomised: nn.Module | None = None
    batch_size: int | None = None  # inputs per forward pass (None: the library's default); halved on out-of-memory
    sanity_names: frozenset[str] = frozenset()  # the images of the randomisation check
    labels: dict[str, int] = field(default_factory=dict)


def run(args: argparse.Namespace) -> int:
    """Carry out ``smoothgrad evaluate`` (its options: ``cli``): exit status 0, or 2 after a one-line error."""
    rank, world = _start_processes()
    try:
        with warnings.catch_warnings():  # the caller's warning filters are restored afterwards
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")  # Captum's Guided Backprop
            warnings.filterwarnings("ignore", message="Internal batch size cannot be less")  # and its IG
            return _evaluate(args, rank, world)
    except CommandError as error:
        if rank == 0 or error.process_only:  # an error every process met is printed once
            where = f" (process {rank + 1} of {world})" if world > 1 else ""
            print(f"{PROG}: error{where}: {error}", file=sys.stderr)
        return 2
    finally:
        if world > 1:
            dist.destroy_process_group()


def _evaluate(args: argparse.Namespace, rank: int, world: int) -> int:
    started = time.perf_counter()
    setup, problem = None, None
    try:
        setup = _setup(args, rank, world)
    except CommandError as error:
        problem = str(error)
    _agree(problem, world)  # every process stops if one could not set up
    assert setup is not None
    plan: list[object] = [None, None]
    if rank == 0:
        try:
            plan = [None, _prepare_out(args, setup)]
        except CommandError as error:
            plan = [str(error), None]
    if world > 1:
        dist.broadcast_object_list(plan, src=0)
    if plan[0] is not None:
        raise CommandError(str(plan[0]))
    names, pending, setup.sanity_names = plan[1]  # type: ignore[misc]
    setup.labels = _read_labels(args.labels, names, setup.categories) if args.labels else {}
    mine = _share(pending, rank, world)
    try:
        seconds = _explain_images(args, setup, names, mine, rank, world)
    except CommandError as error:
        raise CommandError(str(error), process_only=True) from None
    (args.out / "ranks").mkdir(exist_ok=True)
    _write_json(args.out / "ranks" / f"rank-{rank}.json", {"images": len(mine), "seconds": seconds})
    if world > 1:
        dist.barrier()
    if rank == 0:
        done = summarise(args.out, wall=time.perf_counter() - started, processes=world, command=args.command_line)
        if not done["images"]:
            raise CommandError(f"no image of {str(args.images)!r} could be read: {args.out / 'skipped.csv'} says why.")
        counts = [
            _count(done["images"], "image") + " explained",
            f"{done['skipped']} skipped",
            f"{done['read_warnings']} read with a warning",
            f"{len(done['unavailable'])} unavailable (unavailable.csv)",
        ]
        written = args.out / ("per_image.csv" if args.maps_only else "summary.md")
        print(f"{PROG}: {', '.join(counts)}; {written} written")
    return 0


def _start_processes() -> tuple[int, int]:
    """(rank, world size): torchrun's when its variables are set (gloo process group), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(days=1))
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _agree(problem: str | None, world: int) -> None:
    """Raise ``CommandError`` on every process when any process met a problem (the first one's text)."""
    problems = [problem]
    if world > 1:
        problems = [None] * world
        dist.all_gather_object(problems, problem)
    first = next((p for p in problems if p is not None), None)
    if first is not None:
        raise CommandError(first)


def _share(pending: Sequence[int], rank: int, world: int) -> list[int]:
    """This process's part of the pending image indices: ``DistributedSampler``'s, in order, without the repeats it
    pads the last round with (an image is explained once)."""
    if world == 1:
        return list(pending)
    sampler = torch.utils.data.DistributedSampler(range(len(pending)), num_replicas=world, rank=rank, shuffle=False)
    positions = range(rank, sampler.total_size, world)  # where each of its indices sits in the padded list
    return [pending[i] for i, position in zip(sampler, positions, strict=True) if position < len(pending)]


# ---------------------------------------------------------------------------------------------- checks and set-up


def _setup(args: argparse.Namespace, rank: int, world: int) -> Setup:
    """Check the options, load the model and find the methods that run on it: everything before the images."""
    _check_options(args)
    device = _device(args.device, rank, world)
    loaded, source = _load(args, device)
    size = args.size or loaded.input_size
    probe = torch.rand(1, args.channels, size, size, generator=seeded_generator(args.seed)).to(device)
    n_classes, notes = _check_output(loaded.model, probe)
    if args.weights is None and ":" in args.model:
        notes.append("no --weights: the network has the weights its factory gives it (random, unless it loads some)")
    categories = _categories(args.classes or loaded.categories, n_classes)
    gradcam_layer = _gradcam_layer(args, loaded)
    methods, unavailable = _runnable(args, loaded.model, probe, gradcam_layer)
    settings = {
        "model": args.model,
        "classes": list(categories),
        "model_files": source,  # sha256 of the files the model came from (none for a registry model)
        "images": str(args.images.resolve()),
        "labels_sha256": _sha256(args.labels) if args.labels else None,
        "methods": list(methods),  # those that run on the model (unavailable.csv: the others)
        "size": size,
        "channels": args.channels,
        "mean": list(loaded.mean),
        "std": list(loaded.std),
        "fit": args.fit,
        "n_samples": args.n_samples,
        "noise_level": args.noise_level,
        "ig_steps": args.ig_steps,
        "gradcam_layer": gradcam_layer,
        "steps": args.steps,
        "baseline": args.baseline,
        "sanity": 0 if args.maps_only else args.sanity,
        "maps_only": args.maps_only,
        "seed": args.seed,
        "notes": notes,  # what you should know about the model (also printed)
    }
    if rank == 0:
        for note in notes:
            print(f"{PROG}: note: {note}.", file=sys.stderr)
    setup = Setup(loaded.model, categories, args.channels, size, gradcam_layer, methods, unavailable, device, settings)
    if settings["sanity"]:
        setup.randomised, problem = _randomised(loaded.model, args.seed)
        if problem:
            unavailable[SANITY_CHECK] = problem
    return setup


def _check_options(args: argparse.Namespace) -> None:
    if not args.images.is_dir():
        raise CommandError(f"--images {str(args.images)!r} is not a folder: give the folder that holds the images.")
    unknown = [name for name in args.methods if name not in METHODS]
    if unknown:
        raise CommandError(f"unknown methods {unknown}: choose from {', '.join(METHODS)}.")
    for name, value, least in (
        ("--n-samples", args.n_samples, 1),
        ("--ig-steps", args.ig_steps, 1),
        ("--steps", args.steps, 2),  # one step would score every map alike
        ("--sanity", args.sanity, 0),
    ):
        if value < least:
            raise CommandError(f"{name} must be an integer >= {least}, got {value}.")
    if not 0 <= args.seed < 2**63:
        raise CommandError(f"--seed must be an integer in 0..{2**63 - 1}, got {args.seed}.")
    if args.size is not None and args.size < 8:
        raise CommandError(f"--size must be at least 8 pixels, got {args.size}.")
    if not (math.isfinite(args.noise_level) and args.noise_level > 0):
        raise CommandError(f"--noise-level must be a finite number > 0 (e.g. 0.15), got {args.noise_level}.")
    if args.labels is not None and not args.labels.is_file():
        raise CommandError(f"--labels {str(args.labels)!r} is not a file: give a CSV with columns image,label.")
    if args.weights is not None and ":" not in args.model:
        raise CommandError(
            "--weights is for a model given as package.module:factory; a registry model or a "
            "TorchScript file holds its own weights."
        )


def _device(name: str, rank: int, world: int) -> torch.device:
    """The device; under torchrun, CUDA means the GPU of this process's LOCAL_RANK."""
    try:
        device = resolve_device(name)
    except ValueError as error:
        raise CommandError(f"--device {_one_line(error)}") from None
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return device


def _load(args: argparse.Namespace, device: torch.device) -> tuple[LoadedModel, dict[str, str | None]]:
    """The model as a ``LoadedModel`` taking [0, 1] images, and the sha256 of the files it came from (none for a
    registry model)."""
    if args.model in MODELS:
        if args.mean or args.std:
            raise CommandError(f"{args.model!r} normalises its input itself: leave out --mean and --std.")
        try:
            loaded = load_model(args.model, device=device)
        except (ValueError, RuntimeError) as error:
            raise CommandError(_one_line(error)) from None
        return loaded, {}
    network, source = _user_network(args)
    mean = tuple(args.mean or (0.0,) * args.channels)
    std = tuple(args.std or (1.0,) * args.channels)
    if len(mean) != args.channels or len(std) != args.channels or min(std) <= 0:
        raise CommandError(f"--mean and --std need {args.channels} values each (one per channel), std > 0.")
    model = nn.Sequential(Normalize(mean, std), network) if args.mean or args.std else network
    return LoadedModel(args.model, model.to(device).eval(), (), args.size or 224, mean, std), source


def _user_network(args: argparse.Namespace) -> tuple[nn.Module, dict[str, str | None]]:
    """A TorchScript file, or ``package.module:factory()`` with ``--weights``; and the sha256 of the files it came
    from (the TorchScript file; the factory's module and the weights), so that a resumed run notices a change."""
    if ":" not in args.model:
        path = Path(args.model)
        if not path.is_file():
            raise CommandError(
                f"--model {args.model!r} is neither a registry name ({', '.join(MODELS)}), a "
                "TorchScript file, nor package.module:factory."
            )
        try:
            with warnings.catch_warnings():  # torch 2.9+ calls TorchScript deprecated; it still loads
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu"), {"model_sha256": _sha256(path)}
        except (RuntimeError, ValueError) as error:
            if _is_state_dict(path):
                raise CommandError(
                    f"{args.model!r} holds weights (a state dict), not a model: give the code that builds the "
                    f"network as --model package.module:factory and the file as --weights {args.model}."
                ) from None
            raise CommandError(
                f"could not load {args.model!r} as TorchScript ({_one_line(error)[:200]}); save it "
                "with torch.jit.save(torch.jit.script(model), path), or give package.module:factory "
                "and --weights."
            ) from None
    module_name, _, factory_name = args.model.partition(":")
    if os.getcwd() not in sys.path:  # the current folder, as for python -m (the console script leaves it out)
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, factory_name)
    except (ImportError, AttributeError) as error:
        raise CommandError(
            f"--model {args.model!r}: {_one_line(error)} (the module must be importable from the "
            "current folder or the environment)."
        ) from None
    except Exception as error:  # noqa: BLE001 - a syntax error or a failure while your module is imported
        raise CommandError(f"--model {args.model!r}: importing {module_name!r} failed: {_error(error)}") from None
    try:
        network = factory()
    except Exception as error:  # noqa: BLE001 - your code's failure, reported in one line
        raise CommandError(
            f"--model {args.model!r}: calling it failed: {type(error).__name__}: {_one_line(error)[:300]}"
        ) from None
    if not isinstance(network, nn.Module):
        raise CommandError(f"--model {args.model!r} returned {type(network).__name__}, not a torch.nn.Module.")
    code = _sha256(Path(module.__file__)) if getattr(module, "__file__", None) else None
    if args.weights is None:
        return network, {"model_code_sha256": code, "weights_sha256": None}
    try:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as error:  # noqa: BLE001 - unpickling, a missing file, mismatched keys: one line each
        raise CommandError(
            f"--weights {str(args.weights)!r} do not load into {args.model!r} ({_error(error, 200)}); save the "
            "weights with torch.save(model.state_dict(), path) (a checkpoint "
            "dict: save its state dict alone)."
        ) from None
    return network, {"model_code_sha256": code, "weights_sha256": _sha256(args.weights)}


def _is_state_dict(path: Path) -> bool:
    """Whether ``path`` is a ``torch.save``d dict of tensors (weights without the code of the network)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not loadable as weights: then it is no state dict
        return False
    return isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())


def _check_output(model: nn.Module, probe: torch.Tensor) -> tuple[int, list[str]]:
    """The number of classes K, after checking that the model maps (1, C, S, S) to logits (1, K); and a note if its
    outputs look like probabilities."""
    try:
        with torch.no_grad():
            logits = model(probe)
    except Exception as error:  # noqa: BLE001 - the model's own failure on the input, in one line
        raise CommandError(
            f"the model fails on a {tuple(probe.shape)} input: {_one_line(error)[:300]} (check --size and --channels)."
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != 1 or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise CommandError(
            f"the model's output for one {tuple(probe.shape)} image is {shape}, not logits "
            "(batch, classes) with 2 classes or more: evaluate explains classifiers."
        )
    if not bool(logits.isfinite().all()):
        raise CommandError("the model's output is NaN or infinite on a random image: check its weights.")
    notes = []
    if bool((logits >= 0).all()) and abs(float(logits.sum()) - 1) < 1e-4:
        notes.append(
            "the model's outputs look like probabilities (non-negative, summing to 1); evaluate takes them as logits "
            "and applies a softmax again, which flattens every curve: leave out the model's final softmax"
        )
    return int(logits.shape[1]), notes


def _categories(names: Sequence[str], n_classes: int) -> tuple[str, ...]:
    """The class names (``--classes``, or the registry's), or "0".."K-1" for a model of your own without them."""
    if not names:
        return tuple(map(str, range(n_classes)))
    if len(names) != n_classes:
        raise CommandError(f"--classes gives {len(names)} names but the model has {n_classes} classes.")
    return tuple(names)


def _gradcam_layer(args: argparse.Namespace, loaded: LoadedModel) -> str:
    """The module Grad-CAM explains: ``--gradcam-layer`` (a name of your network's ``named_modules()``; of the loaded
    model's for a registry model), the registry's, or the last Conv2d ("" if none)."""
    if args.gradcam_layer:
        wrapped = args.model not in MODELS and bool(args.mean or args.std)  # then Normalize is "0", your network "1"
        layer = f"1.{args.gradcam_layer}" if wrapped else args.gradcam_layer
        names = {name for name, _ in loaded.model.named_modules()}
        if layer not in names:
            convs = [name.removeprefix("1.") if wrapped else name for name in _convolutions(loaded.model)]
            raise CommandError(
                f"--gradcam-layer {args.gradcam_layer!r} is not a module of the model: use a name from "
                "model.named_modules() (Grad-CAM usually explains the last convolutional block; the model's "
                f"Conv2d layers: {', '.join(convs[-6:]) or 'none'})."
            )
        return layer
    if args.model in MODELS:
        return GRADCAM_LAYERS.get(args.model, "14")  # "14": the shapes twins' last ReLU
    convs = _convolutions(loaded.model)
    return convs[-1] if convs else ""


def _convolutions(model: nn.Module) -> list[str]:
    """The names of the model's Conv2d modules (a TorchScript model's too), in order."""
    return [name for name, m in model.named_modules() if getattr(m, "original_name", type(m).__name__) == "Conv2d"]


def _runnable(
    args: argparse.Namespace, model: nn.Module, probe: torch.Tensor, gradcam_layer: str
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The methods that run on the model (tried on the probe image with N and IG points cut to 2), and why each other
    one does not."""
    runs, unavailable = [], {}
    trial = argparse.Namespace(**vars(args) | {"n_samples": min(2, args.n_samples), "ig_steps": min(2, args.ig_steps)})
    for name in args.methods:
        if name == "grad_cam" and not gradcam_layer:
            unavailable[name] = "the model has no Conv2d layer; name one with --gradcam-layer"
            continue
        try:
            _attributions(trial, model, probe, None, (name,), gradcam_layer, args.seed)  # few passes: cheap
        except torch.cuda.OutOfMemoryError:  # it runs, in smaller batches (_halving_on_out_of_memory)
            runs.append(name)
        except Exception as error:  # noqa: BLE001 - any failure of a method on the model is reported, not raised
            if name == "grad_cam" and args.gradcam_layer and not _scripted(model):  # the layer you named: said now
                raise CommandError(
                    f"Grad-CAM fails on --gradcam-layer {args.gradcam_layer!r}: {_error(error)}"
                ) from None
            unavailable[name] = (SCRIPTED if _scripted(model) else "") + _error(error)
        else:
            runs.append(name)
    if not runs:
        raise CommandError(f"no method runs on this model: {unavailable}")
    return tuple(runs), unavailable


def _randomised(model: nn.Module, seed: int) -> tuple[nn.Module | None, str | None]:
    """The model with every layer re-initialised, or why there is none (e.g. a TorchScript model)."""
    if _scripted(model):
        return None, SCRIPTED.removesuffix(" ")
    try:  # the cascade's last model, every layer re-initialised; one copy at a time in memory
        ((_, randomised),) = deque(randomize_layers(model, generator=seeded_generator(seed)), maxlen=1)
    except (ValueError, RuntimeError, AttributeError, TypeError) as error:
        return None, _one_line(error)
    return randomised, None


def _scripted(model: nn.Module) -> bool:
    return any(isinstance(module, torch.jit.ScriptModule) for module in model.modules())


def _prepare_out(args: argparse.Namespace, setup: Setup) -> tuple[list[str], list[int], frozenset[str]]:
    """Process 0: check OUT against the settings (or clear it with --force), write them; the image names, the
    indices of those not done yet, and the names of the randomisation check's images."""
    out = args.out
    settings_path = out / "settings.json"
    for leftover in out.rglob(".*.tmp") if out.is_dir() else ():  # a write cut short by a kill
        leftover.unlink()
    old = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    if old is not None:
        changed = [key for key in setup.settings if old.get(key) != setup.settings[key]]
        if changed and not args.force:
            differences = "; ".join(
                f"{key}: {_short(old.get(key))} -> {_short(setup.settings[key])}" for key in changed[:4]
            )
            raise CommandError(
                f"--out {str(out)!r} holds another run's results ({differences}): give another "
                "--out, or --force to delete them and start again."
            )
        if changed:
            _clear(out)
            old = None
    elif out.exists() and any(out.iterdir()):
        raise CommandError(
            f"--out {str(out)!r} is a folder that holds other files and no evaluate run: give a new or empty folder."
        )
    names = list_images(args.images, leave_out=out)
    if not names:
        raise CommandError(f"--images {str(args.images)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    if args.labels:
        _read_labels(args.labels, names, setup.categories)  # its problems before any long work
    # The randomisation check's images: the first by name when the run began, kept when images are added later.
    sanity = old["sanity_images"] if old is not None else _first_readable(args.images, names, setup)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "ranks", ignore_errors=True)  # this run's processes write theirs anew
    _write_json(settings_path, setup.settings | {"sanity_images": sanity})
    _write_csv(out / "unavailable.csv", ["method", "reason"], sorted(setup.unavailable.items()))
    pending = [i for i, name in enumerate(names) if not _record_path(out, name).is_file()]
    return names, pending, frozenset(sanity)


def _first_readable(folder: Path, names: Sequence[str], setup: Setup) -> list[str]:
    """The first ``--sanity`` images by name that can be read (an unreadable one is skipped, not checked)."""
    readable: list[str] = []
    for name in names:
        if len(readable) == setup.settings["sanity"]:
            break
        with contextlib.suppress(FileNotFoundError, ValueError, OSError):
            _read(folder / name, setup)
            readable.append(name)
    return readable


def _clear(out: Path) -> None:
    """Delete what an evaluate run wrote to ``out`` (and nothing else)."""
    for name in ("maps", "ranks"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (
        "settings.json",
        "skipped.csv",
        "per_image.csv",
        "summary.csv",
        "contrasts.csv",
        "unavailable.csv",
        "read_warnings.csv",
        "summary.md",
        "figure.png",
        "run.json",
    ):
        (out / name).unlink(missing_ok=True)


def list_images(folder: Path, leave_out: Path | None = None) -> list[str]:
    """The image files under ``folder`` (by suffix, case-insensitive), as sorted POSIX paths relative to it; none
    under ``leave_out`` (an OUT inside the images' folder, whose figure is not an image to explain)."""
    skip = leave_out.resolve() if leave_out is not None else None
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and (skip is None or not path.resolve().is_relative_to(skip))
    )


def _read_labels(path: Path, names: Sequence[str], categories: Sequence[str]) -> dict[str, int]:
    """image name -> class index from the CSV (columns image,label), checked against the images and the classes."""
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
        reader = csv.reader(handle)
        header = [field.strip().lower() for field in next(reader, [])]
        if not {"image", "label"} <= set(header):
            raise CommandError(f"--labels {str(path)!r} needs a header row with columns image,label.")
        at = header.index("image"), header.index("label")
        rows = [tuple(row[i].strip() if i < len(row) else "" for i in at) for row in reader if any(row)]
    known, index = set(names), {name: i for i, name in enumerate(categories)}
    missing = [image for image, _ in rows if image not in known]
    if missing:
        raise CommandError(
            f"--labels names {_count(len(missing), 'image')} that are not in --images, e.g. {missing[:3]} "
            "(names are paths relative to the images folder)."
        )
    labels: dict[str, int] = {}
    unknown, conflicting = {}, []
    for image, label in rows:
        value = index.get(label, int(label) if label.lstrip("-").isdigit() else None)
        if value is None or not 0 <= value < len(categories):
            unknown.setdefault(label, image)
        elif labels.setdefault(image, value) != value:
            conflicting.append(image)
    if unknown:
        names = ", ".join(categories[:8]) + (", ..." if len(categories) > 8 else "")
        raise CommandError(
            f"--labels has {_count(len(unknown), 'unknown class')} {list(unknown)[:3]} (the first for "
            f"{next(iter(unknown.values()))!r}): "
            f"use a class index 0..{len(categories) - 1} or one of the model's class names ({names})."
        )
    if conflicting:
        raise CommandError(
            f"--labels gives {_count(len(conflicting), 'image')} two different labels, e.g. {conflicting[:3]}."
        )
    return labels


# ------------------------------------------------------------------------------------------------ the images


def image_seed(seed: int, name: str, purpose: str = "maps") -> int:
    """The seed of image ``name``'s draws for ``purpose``: 56 bits of sha256 of them, independent of order and process.

    Examples:
        >>> image_seed(0, "a.png") == image_seed(0, "a.png") != image_seed(1, "a.png")
        True
    """
    digest = hashlib.sha256(f"{seed}\0{name}\0{purpose}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def _explain_images(
    args: argparse.Namespace, setup: Setup, names: Sequence[str], mine: Sequence[int], rank: int, world: int
) -> dict[str, float]:
    """Explain and score this process's images, writing each one's files; seconds spent per stage."""
    seconds = {"read": 0.0, "maps": 0.0, "scores": 0.0, "sanity": 0.0, "write": 0.0}
    desc = f"images (process {rank + 1} of {world})" if world > 1 else "images"
    bar = tqdm(mine, desc=desc, unit="image", disable=args.no_progress or rank > 0, file=sys.stderr)  # one bar
    for index in bar:
        name = names[index]
        if _record_path(args.out, name).is_file():  # done by another process meanwhile
            continue
        tic = time.perf_counter()
        try:
            x, notes = _read(args.images / name, setup)
        except (FileNotFoundError, ValueError, OSError) as error:
            _write_json(_record_path(args.out, name).with_suffix(".skipped"), {"reason": _one_line(error)})
            continue
        seconds["read"] += time.perf_counter() - tic
        explain = partial(_explain_one, args, setup, name, x, seconds)
        record = _halving_on_out_of_memory(setup, x, explain) | ({"read_warnings": notes} if notes else {})
        tic = time.perf_counter()
        _write_image(args.out, name, record.pop("maps"), record)
        seconds["write"] += time.perf_counter() - tic
    return seconds


def _halving_on_out_of_memory(
    setup: Setup, x: torch.Tensor, work: Callable[[], dict[str, object]]
) -> dict[str, object]:
    """``work()``; when the device runs out of memory, again with half the inputs per forward pass (kept for the
    images after it), down to one. The batch size changes results by float rounding only."""
    while True:
        try:
            return work()
        except torch.cuda.OutOfMemoryError:
            current = setup.batch_size or default_batch_size(x)
            if current == 1:
                raise CommandError(
                    "out of memory with one input per forward pass: use a smaller --size, fewer --methods, or "
                    "another --device."
                ) from None
            setup.batch_size = current // 2
        if x.device.type == "cuda":  # outside the except block, whose traceback held the failed pass's tensors
            torch.cuda.empty_cache()


def _read(path: Path, setup: Setup) -> tuple[torch.Tensor, list[str]]:
    """The image as the model's input (1, C, S, S) on its device, and what was done to it that you should know."""
    picture = read_image(path, setup.size, setup.settings["fit"])  # type: ignore[arg-type]
    x, notes = picture.tensor, list(picture.warnings)
    if setup.channels == 1:
        if not (torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])):
            notes.append("a colour image, averaged over its channels for a 1-channel model")
        x = x.mean(0, keepdim=True)
    return x[None].to(setup.device), notes


def _explain_one(
    args: argparse.Namespace, setup: Setup, name: str, x: torch.Tensor, seconds: dict[str, float]
) -> dict[str, object]:
    """One image's maps (method -> (H, W) float32 array) and record (class, scores)."""
    tic = time.perf_counter()
    with torch.no_grad():
        probabilities = setup.model(x).softmax(1)[0]
    predicted = int(probabilities.argmax())
    target = setup.labels.get(name, predicted)
    seed = image_seed(args.seed, name)
    attributions = _attributions(
        args, setup.model, x, target, setup.methods, setup.gradcam_layer, seed, setup.batch_size
    )
    maps = {method: saliency_map(a, normalize=None) for method, a in attributions.items()}
    seconds["maps"] += time.perf_counter() - tic
    record: dict[str, object] = {
        "image": name,
        "target": target,
        "target_from": "label" if name in setup.labels else "prediction",
        "predicted": predicted,
        "probability": float(probabilities[target]),
        "maps": {method: m[0].cpu().numpy().astype(np.float32) for method, m in maps.items()},
    }
    if args.maps_only:
        return record
    tic = time.perf_counter()
    record["scores"] = _scores(args, setup, name, x, target, maps)
    seconds["scores"] += time.perf_counter() - tic
    if name in setup.sanity_names and setup.randomised is not None:
        tic = time.perf_counter()
        record["sanity"] = _sanity(args, setup, name, x, target, maps)
        seconds["sanity"] += time.perf_counter() - tic
    return record


def _attributions(
    args: argparse.Namespace,
    model: nn.Module,
    x: torch.Tensor,
    target: int | None,
    methods: Sequence[str],
    gradcam_layer: str,
    seed: int,
    batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """``all_attributions`` of the methods on x (1, C, S, S), keyed by the methods' registry names."""
    out = all_attributions(
        model,
        x,
        target,
        gradcam_layer=gradcam_layer,
        seed=seed,
        levels={args.noise_level: ("abs",)},
        n_samples=args.n_samples,
        ig_steps=args.ig_steps,
        methods=methods,
        batch_size=batch_size,
        noise_device="cpu",  # the same noise on every device: a run may resume on another
    )
    suffix = f"_abs_{args.noise_level:g}"
    return {name.removesuffix(suffix) if METHODS.get(name.removesuffix(suffix)) else name: a for name, a in out.items()}


def _scores(
    args: argparse.Namespace,
    setup: Setup,
    name: str,
    x: torch.Tensor,
    target: int,
    maps: Mapping[str, torch.Tensor],
) -> dict[str, dict[str, float]]:
    """Deletion and insertion AUC and AOPC (MoRF, LeRF) of each map: all maps' curves in one call per curve."""
    stacked = torch.cat(list(maps.values()))  # (M, H, W)
    images = x.expand(len(maps), -1, -1, -1)
    options = {"baseline": BASELINES[args.baseline], "steps": args.steps, "batch_size": setup.batch_size}

    def ties() -> torch.Generator:  # breaks ties in a map at random, drawn on the CPU as the noise is
        return seeded_generator(image_seed(args.seed, name, "ties"))

    deletion = deletion_curve(setup.model, images, stacked, target, generator=ties(), **options)
    insertion = insertion_curve(setup.model, images, stacked, target, generator=ties(), **options)
    least_first = deletion_curve(setup.model, images, -stacked, target, generator=ties(), **options)
    values = {
        "deletion_auc": curve_auc(deletion),
        "insertion_auc": curve_auc(insertion),
        "aopc_morf": aopc(deletion),
        "aopc_lerf": aopc(least_first),
    }
    return {method: {score: float(v[i]) for score, v in values.items()} for i, method in enumerate(maps)}


def _sanity(
    args: argparse.Namespace, setup: Setup, name: str, x: torch.Tensor, target: int, maps: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """Spearman of each map with the randomised model's map and with the trained model's map under other noise."""
    other = image_seed(args.seed, name, "sanity")
    batch = setup.batch_size
    again = _attributions(args, setup.model, x, target, setup.methods, setup.gradcam_layer, other, batch)
    random = _attributions(args, setup.randomised, x, target, setup.methods, setup.gradcam_layer, other, batch)
    return {
        method: {
            "randomised_rho": float(rank_correlation(saliency_map(random[method], normalize=None), m)[0]),
            "floor_rho": float(rank_correlation(saliency_map(again[method], normalize=None), m)[0]),
        }
        for method, m in maps.items()
    }


def _record_path(out: Path, name: str) -> Path:
    return out / "maps" / f"{name}.json"


def _write_image(out: Path, name: str, maps: Mapping[str, np.ndarray], record: Mapping[str, object]) -> None:
    """The maps (.npz), then the record (.json), each atomically: the record's presence means the image is done."""
    path = _record_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **maps)  # float32 maps barely compress; compressing would cost more time than the model
    _atomic_write(path.with_suffix(".npz"), buffer.getvalue())
    path.with_suffix(".skipped").unlink(missing_ok=True)
    _write_json(path, record)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _write_json(path: Path, value: object) -> None:
    """``value`` as standard JSON (NaN, a correlation of a constant map, written as null), atomically."""
    _atomic_write(path, (json.dumps(_nan_to_none(value), indent=1, allow_nan=False) + "\n").encode())


def _nan_to_none(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(item) for item in value]
    return value


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    _atomic_write(path, text.getvalue().encode())


# ------------------------------------------------------------------------------------------------ the summary


def read_records(out: Path) -> list[dict[str, object]]:
    """Every finished image's record in ``out``, by image name."""
    records = [json.loads(path.read_text()) for path in (out / "maps").rglob("*.json")]
    return sorted(records, key=lambda record: record["image"])


def summarise(
    out: Path, *, wall: float | None = None, processes: int = 1, command: Sequence[str] = ()
) -> dict[str, object]:
    """Write the CSV files, ``summary.md``, ``figure.png`` and ``run.json`` of ``out`` from its image records; returns
    what ``run.json`` holds."""
    settings = json.loads((out / "settings.json").read_text())
    listed = set(list_images(Path(settings["images"]), leave_out=out))  # an image deleted since it ran: left out
    records = [record for record in read_records(out) if record["image"] in listed]
    skipped = sorted(
        (path.relative_to(out / "maps").as_posix().removesuffix(".skipped"), json.loads(path.read_text())["reason"])
        for path in (out / "maps").rglob("*.skipped")
        if path.relative_to(out / "maps").as_posix().removesuffix(".skipped") in listed
    )
    _write_csv(out / "skipped.csv", ["image", "reason"], skipped)
    read_warnings = [(r["image"], warning) for r in records for warning in r.get("read_warnings", ())]
    _write_csv(out / "read_warnings.csv", ["image", "warning"], read_warnings)
    rows = _per_image_rows(records)
    _write_csv(out / "per_image.csv", list(rows[0]) if rows else ["image"], [list(r.values()) for r in rows])
    ranks = [json.loads(p.read_text()) for p in sorted((out / "ranks").glob("rank-*.json"))]
    stages = {stage: sum(r["seconds"][stage] for r in ranks) for stage in ranks[0]["seconds"]} if ranks else {}
    unavailable = _read_csv(out / "unavailable.csv")
    earlier = json.loads((out / "run.json").read_text()).get("sessions", []) if (out / "run.json").is_file() else []
    session = {"wall": wall, "stages": stages, "processes": processes}
    run_record = {
        "settings": settings,
        "code_version": code_version(),
        "command": " ".join(command),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "processes": processes,
        "images": len(records),
        "skipped": len(skipped),
        "read_warnings": len(read_warnings),
        "unavailable": dict(unavailable),
        "seconds": {"wall": wall, "stages": stages},  # this session's; stages: summed over the processes
        "sessions": [*earlier, session] if wall is not None else earlier,  # a resumed run's earlier times too
    }
    _write_json(out / "run.json", run_record)
    if settings["maps_only"] or not records:
        return run_record
    methods = [m for m in records[0]["scores"]]  # type: ignore[union-attr]
    summary = _summary_rows(records, methods)
    _write_csv(out / "summary.csv", list(summary[0]), [list(r.values()) for r in summary])
    contrasts = _contrast_rows(records, methods)
    _write_csv(
        out / "contrasts.csv", list(contrasts[0]) if contrasts else ["contrast"], [list(r.values()) for r in contrasts]
    )
    _figure(out, settings, _one_per_class(records)[:FIGURE_IMAGES], methods)
    page = _page(settings, run_record, summary, contrasts, skipped, unavailable, read_warnings)
    (out / "summary.md").write_text(page)
    return run_record


def _per_image_rows(records: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    rows = []
    for record in records:
        head = {key: record[key] for key in ("image", "target", "target_from", "predicted", "probability")}
        for method, scores in record.get("scores", {"": {}}).items():  # type: ignore[union-attr]
            sanity = record.get("sanity", {}).get(method, {})  # type: ignore[union-attr]
            rows.append(
                head
                | ({"method": method} if method else {})
                | scores
                | {s: sanity.get(s, "") for s in SANITY_SCORES if method}
            )
    return rows


def _summary_rows(records: Sequence[Mapping[str, object]], methods: Sequence[str]) -> list[dict[str, object]]:
    """Per method and score: the mean over images with its 95% t-interval (sanity: over the images checked)."""
    rows = []
    for method in methods:
        for score in (*SCORES, *SANITY_SCORES):
            source = "scores" if score in SCORES else "sanity"
            values = np.array([_number(r[source][method][score]) for r in records if source in r], dtype=float)
            defined = values[np.isfinite(values)]
            interval = mean_ci(defined) if len(defined) >= 2 else None
            rows.append(
                {
                    "method": method,
                    "score": score,
                    "better": BETTER.get(score, "lower than the floor" if score == "randomised_rho" else ""),
                    "mean": _rounded(
                        interval.estimate if interval else float(defined.mean()) if len(defined) else "nan"
                    ),
                    "low": _rounded(interval.low) if interval else "",
                    "high": _rounded(interval.high) if interval else "",
                    "n": len(defined),
                    "undefined": len(values) - len(defined),
                }
            )
    return rows


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _contrast_rows(records: Sequence[Mapping[str, object]], methods: Sequence[str]) -> list[dict[str, object]]:
    """The declared family (``CONTRASTS``) among the methods run: paired t-intervals, p and Holm's adjusted p."""
    pairs = {}
    for score, reference in CONTRASTS:
        if SMOOTHGRAD not in methods or reference not in methods:
            continue
        ours = np.array([_number(r["scores"][SMOOTHGRAD][score]) for r in records])  # type: ignore[index]
        theirs = np.array([_number(r["scores"][reference][score]) for r in records])  # type: ignore[index]
        keep = np.isfinite(ours) & np.isfinite(theirs)  # an undefined score leaves its image out of the pair
        ours, theirs = ours[keep], theirs[keep]
        if len(ours) < 2:
            continue
        pairs[(score, reference)] = (theirs, ours) if BETTER[score] == "smaller" else (ours, theirs)
    if not pairs:
        return []
    family = contrast_family(pairs)
    return [
        {
            "contrast": f"{SMOOTHGRAD} vs {reference}",
            "score": score,
            "difference": "reference - smoothgrad" if BETTER[score] == "smaller" else "smoothgrad - reference",
            "estimate": _rounded(c.interval.estimate),
            "low": _rounded(c.interval.low),
            "high": _rounded(c.interval.high),
            "n": c.interval.n,
            "p": _rounded(c.p),
            "p_holm": _rounded(c.adjusted),
            "outcome": {1: "smoothgrad better", -1: "smoothgrad worse", 0: "not distinguishable"}[c.outcome()],
        }
        for (score, reference), c in family.items()
    ]


def _rounded(value: float | str) -> float | str:
    return value if isinstance(value, str) else float(f"{value:.6g}")


def _one_per_class(records: Sequence[Mapping[str, object]]) -> list[Mapping[str, object]]:
    """The records, the first of each class explained first (by name), then the rest: the figure's rows."""
    firsts = list({record["target"]: record for record in reversed(records)}.values())[::-1]
    return sorted(firsts, key=lambda r: r["image"]) + [r for r in records if all(r is not f for f in firsts)]


def _figure(
    out: Path, settings: Mapping[str, object], records: Sequence[Mapping[str, object]], methods: Sequence[str]
) -> None:
    """``figure.png``: the images of ``records`` (one per class first) and each method's map, each scaled to its 99th
    percentile."""
    import matplotlib.pyplot as plt  # here: matplotlib loads in seconds and only process 0 draws

    panels, titles = [], []
    for record in records:
        name = str(record["image"])
        image = read_image(Path(str(settings["images"])) / name, int(settings["size"]), str(settings["fit"])).tensor
        if settings["channels"] == 1:  # what the model saw
            image = image.mean(0, keepdim=True).expand(3, -1, -1)
        maps = np.load(_record_path(out, name).with_suffix(".npz"))
        shown = [saliency_map(torch.from_numpy(maps[m])[None], normalize="percentile") for m in methods]
        panels.append([image, *shown])
        classes = settings["classes"]
        head = f"{record['target_from']} {classes[record['target']][:16]} (p {record['probability']:.2f})"
        if record["predicted"] != record["target"]:
            head += f"\npredicted {classes[record['predicted']][:16]}"
        titles.append([f"{name[:24]}\n{head}", *methods])
    fig = image_grid(panels, titles, colorbar="map / its 99th percentile (no unit)")
    fig.savefig(out / "figure.png", dpi=80, bbox_inches="tight")
    plt.close(fig)


def _page(
    settings: Mapping[str, object],
    run_record: Mapping[str, object],
    summary: Sequence[Mapping[str, object]],
    contrasts: Sequence[Mapping[str, object]],
    skipped: Sequence[tuple[str, str]],
    unavailable: Sequence[tuple[str, str]],
    read_warnings: Sequence[tuple[str, str]] = (),
) -> str:
    """``summary.md``: the settings, the scores with their intervals, the sanity check, the contrasts."""
    s = settings
    ran = set(s["methods"])  # type: ignore[arg-type]
    methods_used = [
        f"SmoothGrad: N = {s['n_samples']}, sigma = {s['noise_level']} x each image's range, mean |gradient|. "
        if SMOOTHGRAD in ran
        else "",
        f"Integrated Gradients: {s['ig_steps']} points from black. " if "integrated_gradients" in ran else "",
    ]
    lines = [
        f"# Saliency evaluation: {s['model']} on {_count(int(run_record['images']), 'image')}",  # type: ignore[arg-type]
        "",
        f"Images: `{s['images']}` ({run_record['images']} explained, {len(skipped)} skipped: `skipped.csv`; "
        f"{len(read_warnings)} read with a warning: `read_warnings.csv`). "
        f"Input {s['channels']}x{s['size']}x{s['size']} ({s['fit']}). Class explained: the label, else the prediction. "
        + "".join(methods_used)
        + f"Seed {s['seed']}.",
        *(f"\n**Note**: {note}." for note in s.get("notes", ())),  # type: ignore[union-attr]
        "",
        f"Every score is of the map max_c |a_c|. Deletion/insertion: {s['steps']} steps, baseline `{s['baseline']}`, "
        "area under the target's softmax probability. AOPC: mean drop of that probability along the deletion curve, "
        "most (MoRF) or least (LeRF) relevant pixels first. Means over images with 95% Student-t intervals (not cut "
        "at the scores' range, so with few or spread images an interval can pass 0 or 1); "
        "`random` is the null (a map without information).",
        "",
        "| method | deletion AUC (smaller better) | insertion AUC (larger better) | AOPC MoRF (larger) "
        "| AOPC LeRF (smaller) |",
        "|---|---|---|---|---|",
    ]
    by = {(r["method"], r["score"]): r for r in summary}
    methods = sorted(dict.fromkeys(r["method"] for r in summary), key=lambda m: m != "random")  # the null first
    n = next((r["n"] for r in summary if r["score"] == "deletion_auc"), 0)
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(_cell(by[(method, score)]) for score in SCORES) + " |")
    lines += ["", f"n = {_count(int(n), 'image')} per score."]
    if any(by[(m, "randomised_rho")]["n"] for m in methods):
        lines += [
            "",
            "## Sanity check: model randomisation",
            "",
            "Spearman correlation of each map with the map of the model whose every layer was re-initialised, beside "
            "its noise floor (the trained model's map under other noise; 1 for a deterministic method). A map that "
            "depends on what the model learnt falls well below its floor.",
            "",
            "| method | every layer random | noise floor | images (n) | constant maps (undefined, left out) |",
            "|---|---|---|---|---|",
        ]
        for method in methods:
            random, floor = by[(method, "randomised_rho")], by[(method, "floor_rho")]
            row = f"| {method} | {_cell(random)} | {_cell(floor)} | {random['n']} | {random['undefined']} |"
            lines.append(row)
        lines += ["", "Images: the first readable ones by name when the run began."]
    if contrasts:
        lines += [
            "",
            "## Declared contrasts",
            "",
            "Declared before any data: SmoothGrad against the vanilla gradient and the blurred vanilla map, on "
            "deletion and insertion AUC; paired Student-t intervals over images, signed so that positive means "
            'SmoothGrad is better; p-values adjusted by Holm over the family. "Not distinguishable" is not evidence '
            "that the maps are equally good.",
            "",
            "| contrast | score | difference [95% CI] | p | Holm p | outcome |",
            "|---|---|---|---|---|---|",
        ]
        for c in contrasts:
            lines.append(
                f"| {c['contrast']} | {c['score']} | {c['estimate']:+.3g} [{c['low']:+.3g}, "
                f"{c['high']:+.3g}] (n = {c['n']}) | {format_p(c['p'])} | {format_p(c['p_holm'])} | "
                f"{c['outcome']} |"
            )
    if unavailable:
        lines += ["", "## What cannot run on this model", ""]
        lines += [f"- {method}: {reason}" for method, reason in unavailable]
    if read_warnings:
        lines += ["", f"## {_count(len(read_warnings), 'image')} read with a warning (`read_warnings.csv`)", ""]
        lines += [f"- {image}: {warning}" for image, warning in read_warnings[:5]]
        lines += ["- ..."] if len(read_warnings) > 5 else []
    alt = "the first image of each class explained, then others by name, and each method's map"
    lines += ["", f"![{alt}](figure.png)", ""]
    version = run_record["code_version"]
    lines += [
        f"smoothgrad_lib {version['package']} ({version['git'] or 'no git'}), torch {run_record['torch']}, "  # type: ignore[index]
        f"{run_record['processes']} process(es)."
    ]
    return "\n".join(lines) + "\n"


def _cell(row: Mapping[str, object]) -> str:
    """A summary row as ``mean [low, high]``, three decimals (scores and correlations lie in [-1, 1])."""
    if row["low"] == "":
        return f"{float(row['mean']):.3f}" if row["n"] else "n/a"
    return f"{float(row['mean']):.3f} [{float(row['low']):.3f}, {float(row['high']):.3f}]"


def _read_csv(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [tuple(row) for row in list(csv.reader(handle))[1:]]  # type: ignore[misc]


def _count(n: int, noun: str) -> str:
    """``"1 image"``, ``"2 images"``."""
    return f"{n} {noun}{'' if n == 1 else ('es' if noun.endswith('ss') else 's')}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _sha256(path: Path) -> str:
    return sha256(Path(path).read_bytes())


def _one_line(error: BaseException) -> str:
    """The error's text on one line, without the terminal colour codes some libraries put in it."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())


def _error(error: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, cut at a word boundary after ``limit`` characters."""
    text = _one_line(error)
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(error).__name__}: {text}"
