"""Float32 precision of CUDA convolutions and matrix products inside the library's own calls.

PyTorch lets cuDNN convolutions use TensorFloat-32 by default on Ampere and
later GPUs: inputs are rounded to a 10-bit mantissa (about 3 decimal digits)
before each multiply. That is fine for training but not for measuring
derivatives: it moves a network's input gradient visibly away from the CPU's
(the README gives the measured difference). ``float32_precision`` switches TF32 off (or,
with ``tf32=True``, on) for convolutions, RNNs and matrix products within a
``with`` block and restores the caller's settings afterwards, whatever they
were. It changes nothing on a CPU or Apple's MPS.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# torch >= 2.9 configures TF32 per operator with "ieee" / "tf32" strings; older versions with booleans.
_NEW_API = hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cudnn.conv, "fp32_precision")


@contextmanager
def float32_precision(tf32: bool = False) -> Iterator[None]:
    """Run the block with full IEEE float32 (``tf32=False``) or TF32 (``tf32=True``) on CUDA, then restore.

    Example::

        with float32_precision():          # gradients in full float32
            g = torch.autograd.grad(...)
    """
    if _NEW_API:
        settings = [torch.backends.cudnn.conv, torch.backends.cudnn.rnn, torch.backends.cuda.matmul]
        saved = [s.fp32_precision for s in settings]
        try:
            for s in settings:
                s.fp32_precision = "tf32" if tf32 else "ieee"
            yield
        finally:
            for s, value in zip(settings, saved, strict=True):
                s.fp32_precision = value
    else:  # pragma: no cover - torch < 2.9
        saved_flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        try:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_flags


def current_settings() -> tuple[str | bool, ...]:
    """The TF32 settings that ``float32_precision`` saves and restores (for tests and diagnostics)."""
    if _NEW_API:
        return (
            torch.backends.cudnn.conv.fp32_precision,
            torch.backends.cudnn.rnn.fp32_precision,
            torch.backends.cuda.matmul.fp32_precision,
        )
    return (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)  # pragma: no cover
