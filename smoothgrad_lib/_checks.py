"""The package's kernel of checks: one validator per concept, the target rule, and the clean forward pass.

Every public function of the package validates its arguments through these,
so that the same mistake gets the same message everywhere. The module is
private to the package (its file name starts with ``_``), its names are public
within it: other modules import them by these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import torch
from torch import nn

from .precision import float32_precision

TargetType: TypeAlias = int | Sequence[int] | torch.Tensor | None
"""None (each image's predicted class), one int for every image, or one class index per image."""


def as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Validate ``x`` and return it as (B, C, H, W), with whether it was a single image."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, C, H, W) or (C, H, W), got {type(x).__name__}.")
    if x.is_complex():
        raise TypeError(f"x must be a real floating-point tensor, got {x.dtype}: take x.real or x.abs() first.")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}: convert it, e.g. x.float() / 255.")
    if x.ndim not in (3, 4):
        raise ValueError(f"x must have shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}.")
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}).")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf values: clean the input before explaining it.")
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def check_images(x: torch.Tensor) -> None:
    """``x`` must be a float batch (B, C, H, W) (the functions that need a batch axis)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        raise ValueError("x must be a float tensor of shape (B, C, H, W); add a batch axis for one image: x[None].")


def check_image(x: torch.Tensor) -> None:
    """``x`` must be one float image (C, H, W) (the probes along a line or around one point)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be one float image (C, H, W), got {shape}.")


def check_model(model: nn.Module, x: torch.Tensor | None = None) -> None:
    """``model`` must be an ``nn.Module`` in eval mode (every submodule), called where gradients can be taken; with
    ``x``, the images must be on a device, and in a floating dtype, of the model's parameters and buffers, with
    channels first (checked against the first convolution).

    Checked before any forward pass, so that a CPU image given to a CUDA or MPS model, a float64 image given to a
    float32 model, or a call inside ``torch.inference_mode()`` gets one message with the fix instead of an error
    from inside autograd.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if any(module.training for module in model.modules()):
        raise ValueError(
            "model is in training mode (dropout and batch-norm statistics would make the "
            "gradients random and couple the images of a batch): call model.eval() first."
        )
    if torch.is_inference_mode_enabled():
        raise ValueError(
            "called inside torch.inference_mode(), where no gradient can be taken: call it outside that block "
            "(torch.no_grad() around the call is fine; the library turns gradients on where it needs them)."
        )
    if x is None:
        return
    if isinstance(x, torch.Tensor) and x.is_inference():
        raise ValueError("x was made inside torch.inference_mode(): pass a copy made outside it, x.clone().")
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
        return  # as_batch says what is wrong with x itself
    _check_device_and_dtype(model, x)
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and x.shape[-3] != conv.in_channels and x.shape[-1] == conv.in_channels:
        order = "(2, 0, 1)" if x.ndim == 3 else "(0, 3, 1, 2)"
        raise ValueError(
            f"x has shape {tuple(x.shape)}: channels last, as images are stored (H, W, C), but the model's first "
            f"convolution takes {conv.in_channels} channels first: x = x.permute{order}."
        )


def _check_device_and_dtype(model: nn.Module, x: torch.Tensor) -> None:
    """x must be on a device that holds the model's parameters and buffers, in one of their floating dtypes."""
    tensors = [*model.parameters(), *model.buffers()]
    devices = {t.device for t in tensors}
    if devices and x.device not in devices:
        (where, *others) = sorted(map(str, devices))
        move = f"x = x.to({where!r}) (for a loaded model: x.to(loaded.device))" if not others else "move x there"
        raise ValueError(
            f"x is on {x.device} but the model is on {', '.join([where, *others])}: move the images first, {move}; "
            "a torch.Generator must be on that device too."
        )
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    if dtypes and x.is_floating_point() and x.dtype not in dtypes:
        (dtype, *others) = sorted(dtypes, key=str)
        convert = "x.float()" if dtype == torch.float32 else f"x.to({dtype})"
        raise TypeError(
            f"x is {x.dtype} but the model's weights are {', '.join(map(str, [dtype, *others]))}: convert the "
            f"images first, x = {convert}."
        )


def check_count(name: str, value: int, minimum: int = 1) -> None:
    """An int count (samples, pairs, steps) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")


def check_batch_size(batch_size: int | None) -> None:
    """None (the device's default) or an int >= 1."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}.")


def checked_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, checked to be logits (B, K)."""
    logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape (B, classes) = ({x.shape[0]}, K); got {shape}.")
    return logits


def resolve_target(
    target: TargetType, n_images: int, n_classes: int | None, predicted: torch.Tensor | None = None
) -> torch.Tensor:
    """Class index per image as a long tensor (B,), checked against ``n_images`` and the model's ``n_classes``.

    ``None`` takes the arg-max of the ``predicted`` logits (B, K); an int
    applies to every image; a sequence or tensor gives one class per image.
    ``n_classes=None`` skips the range check (done later, once the model's output is known).
    """
    device = predicted.device if predicted is not None else None
    if target is None:
        if predicted is None:
            raise ValueError("target=None needs the clean images' logits to pick the predicted classes.")
        return predicted.detach().argmax(1)
    if isinstance(target, bool):
        raise TypeError("target must be None, an int, or one int per image; got a bool.")
    if isinstance(target, int):
        classes = torch.full((n_images,), target, dtype=torch.long)
    else:
        classes = torch.as_tensor(target)
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices, got dtype {classes.dtype}.")
        classes = classes.reshape(-1).long()
        if classes.numel() != n_images:
            raise ValueError(
                f"target has {classes.numel()} entries but x holds {n_images} image(s): "
                "give one class per image, a single int, or None."
            )
    if n_classes is not None and classes.numel() and (classes.min() < 0 or classes.max() >= n_classes):
        raise ValueError(f"target {classes.tolist()} is outside the model's classes 0..{n_classes - 1}.")
    return classes.to(device) if device is not None else classes


def clean_forward(
    model: nn.Module, batch: torch.Tensor, need_logits: bool, tf32: bool = False
) -> tuple[torch.memory_format, torch.Tensor | None]:
    """The memory layout in which copies of ``batch`` go through ``model``, and the logits (B, K) of the clean images.

    Runs in full float32 on CUDA (``float32_precision(tf32)``), without a graph.
    The layout is channels_last (NHWC) for a convolutional model on the CPU,
    where oneDNN's NHWC kernels are faster (the README's benchmark table),
    provided the clean forward pass in it succeeds; it is the default layout
    on other devices, for models without ``nn.Conv2d``, and for a model that
    cannot take NHWC input (a ``.view`` of its feature maps raises). The
    layout changes each gradient by float rounding, which in a
    deep ReLU6 network can flip a gate that sits at its threshold and so move
    a single noisy gradient by a visible amount. Off the CPU the clean forward
    pass runs only when the targets are the predicted classes (``need_logits``).
    """
    with torch.no_grad(), float32_precision(tf32):
        if batch.device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
            try:
                return torch.channels_last, checked_logits(model, batch.contiguous(memory_format=torch.channels_last))
            except RuntimeError:
                pass
        logits = checked_logits(model, batch) if need_logits or batch.device.type == "cpu" else None
        return torch.contiguous_format, logits


def clean_classes(model: nn.Module, batch: torch.Tensor, target: TargetType, tf32: bool = False) -> torch.Tensor:
    """One class per image of ``batch`` (B,), on its device: ``target`` checked, or (None) the predicted classes.

    The clean forward pass runs in full float32 (``float32_precision``); with
    a given target it runs on the first image only, to learn the number of classes.
    """
    with torch.no_grad(), float32_precision(tf32):
        logits = checked_logits(model, batch if target is None else batch[:1])
    predicted = logits if target is None else None
    return resolve_target(target, batch.shape[0], logits.shape[1], predicted=predicted).to(batch.device)
