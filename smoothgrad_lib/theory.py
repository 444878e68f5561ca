"""Deprecated: ``smoothgrad_lib.theory`` re-exports names that moved to the modules named below; import them
from there. This module will be removed in the next release."""

from __future__ import annotations

import warnings

from .montecarlo import mean_norm, pairwise_error, pixel_snr, running_norm, split_half_correlation, variance_against_n
from .probes import gate_flips, taylor_bias
from .stats import loglog_slope

__all__ = [
    "gate_flips",
    "loglog_slope",
    "mean_norm",
    "pairwise_error",
    "pixel_snr",
    "running_norm",
    "split_half_correlation",
    "taylor_bias",
    "variance_against_n",
]

warnings.warn(
    "smoothgrad_lib.theory is deprecated: import from smoothgrad_lib.montecarlo, probes, stats instead.",
    DeprecationWarning,
    stacklevel=2,
)
