"""Deprecated: ``smoothgrad_lib.evaluation`` re-exports names that moved to the modules named below; import them
from there. This module will be removed in the next release."""

from __future__ import annotations

import warnings

from .faithfulness import (
    BASELINE_BLUR_SIGMA as BLUR_SIGMA,
)
from .faithfulness import (
    DEFAULT_STEPS,
    aopc,
    blur,
    curve_auc,
    deletion_curve,
    insertion_curve,
)
from .metrics import dilate, mask_auc, pointing_game, rank_correlation, relevance_mass, relevance_rank, ssim
from .randomisation import ORDERS, randomize_layers

__all__ = [
    "BLUR_SIGMA",
    "DEFAULT_STEPS",
    "ORDERS",
    "aopc",
    "blur",
    "curve_auc",
    "deletion_curve",
    "dilate",
    "insertion_curve",
    "mask_auc",
    "pointing_game",
    "randomize_layers",
    "rank_correlation",
    "relevance_mass",
    "relevance_rank",
    "ssim",
]

warnings.warn(
    "smoothgrad_lib.evaluation is deprecated: import from smoothgrad_lib.faithfulness, metrics, randomisation instead.",
    DeprecationWarning,
    stacklevel=2,
)
