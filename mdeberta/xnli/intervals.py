"""95% confidence intervals of accuracies, in closed form (no statistics package needed).

A run's accuracy on n pairs gets the Wilson score interval; a mean over seeds gets Student's t
interval. Both take numbers, numpy arrays or pandas tables alike (elementwise).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

Z95 = NormalDist().inv_cdf(0.975)
# Student's t at 0.975 for 1..30 degrees of freedom (two-sided 95%), from the standard tables.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def wilson(accuracy, pairs):
    """The Wilson score interval of a proportion (0..1) measured on ``pairs`` pairs, as (low, high).
    Unlike p +- z sqrt(p(1-p)/n) it stays within [0, 1] and keeps a width at 0 or n of n pairs
    right, where it ends at the proportion itself: exactly so here, whatever the rounding."""
    z2 = Z95 ** 2 / pairs
    centre = (accuracy + z2 / 2) / (1 + z2)
    half = Z95 * np.sqrt(accuracy * (1 - accuracy) / pairs + z2 / (4 * pairs)) / (1 + z2)
    return np.maximum(np.minimum(centre - half, accuracy), 0.0), np.minimum(np.maximum(centre + half, accuracy), 1.0)


def t95(dof: int) -> float:
    """Beyond 30 degrees of freedom, the value for 30: at most 4% wider than the limit, 1.960."""
    if dof < 1:
        raise ValueError("a t interval needs at least two values (one degree of freedom)")
    return T95[min(dof, len(T95)) - 1]


def mean_interval(mean, std, count: int):
    """The 95% interval of a mean of ``count`` values with sample standard deviation ``std``:
    mean +- t(count - 1) std / sqrt(count)."""
    half = t95(count - 1) * std / np.sqrt(count)
    return mean - half, mean + half
