"""Scores of simulated draws against a record: RMSE, CRPS, interval coverage (NumPy).

``draws`` has shape ``(D, n)`` (D simulations, n time points), ``observed`` ``(n,)``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["coverage", "crps_ensemble", "rmse"]


def rmse(draws: ArrayLike, observed: ArrayLike) -> float:
    """Root mean squared error of the point prediction (the mean over draws), in the
    units of ``observed``."""
    d, y = np.asarray(draws, float), np.asarray(observed, float)
    return float(np.sqrt(np.mean(np.square(d.mean(axis=0) - y))))


def crps_ensemble(draws: ArrayLike, observed: ArrayLike) -> np.ndarray:
    """Empirical continuous ranked probability score of each point, shape ``(n,)``.

    ``CRPS = E|X - y| - E|X - X'| / 2`` over the D draws (the plain empirical version,
    ``1 / D^2`` in the second term), computed from sorted draws in ``O(D log D)``. Lower is
    better; in the units of ``observed``; equals the absolute error for one draw.

    Examples
    --------
    >>> float(crps_ensemble([[0.0], [1.0]], [0.0])[0])
    0.25
    """
    d = np.sort(np.asarray(draws, float), axis=0)
    y = np.asarray(observed, float)
    num = d.shape[0]
    first = np.mean(np.abs(d - y[None]), axis=0)
    weights = (2.0 * np.arange(1, num + 1) - num - 1.0)[:, None]
    spread = 2.0 * np.sum(weights * d, axis=0) / num**2  # E|X - X'|
    return first - 0.5 * spread


def coverage(draws: ArrayLike, observed: ArrayLike, level: float = 0.9) -> float:
    """Share of observed points inside the central ``level`` band of the draws."""
    d, y = np.asarray(draws, float), np.asarray(observed, float)
    lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return float(np.mean((y >= lo) & (y <= hi)))
