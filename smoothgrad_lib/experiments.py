"""Deprecated: ``smoothgrad_lib.experiments`` re-exports names that moved to the modules named below; import them
from there. This module will be removed in the next release."""

from __future__ import annotations

import warnings

from .aggregates import aggregate_samples
from .faithfulness import gaussian_blur
from .metrics import brightest_share, far_share, localisation, neighbour_difference
from .montecarlo import running_mean, samples_for_reliability
from .noise import seeded_generator as generator
from .probes import (
    GATES,
    accuracy,
    activation_gates,
    directional_slice,
    gate_fractions,
    gradients_at,
    increment_scaling,
    noisy_gradients_and_ranks,
    noisy_ranks,
)
from .stats import relative_change

__all__ = [
    "GATES",
    "accuracy",
    "activation_gates",
    "aggregate_samples",
    "brightest_share",
    "directional_slice",
    "far_share",
    "gate_fractions",
    "gaussian_blur",
    "generator",
    "gradients_at",
    "increment_scaling",
    "localisation",
    "neighbour_difference",
    "noisy_gradients_and_ranks",
    "noisy_ranks",
    "relative_change",
    "running_mean",
    "samples_for_reliability",
]

warnings.warn(
    "smoothgrad_lib.experiments is deprecated: import from smoothgrad_lib.aggregates, faithfulness, metrics, "
    "montecarlo, noise, probes or stats instead.",
    DeprecationWarning,
    stacklevel=2,
)
