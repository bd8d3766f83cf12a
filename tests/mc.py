"""Monte Carlo aware comparisons (z-scores with MCSE, as BlackJAX's tests do)."""

from __future__ import annotations

import numpy as np


def mcse_mean(draws: np.ndarray) -> np.ndarray:
    """MCSE of the mean of ``draws`` shaped (chain, draw, *rest)."""
    import arviz as az
    import xarray as xr

    d = np.asarray(draws, dtype=float)
    flat = d.reshape(d.shape[:2] + (-1,))
    ds = xr.Dataset({"x": (("chain", "draw", "e"), flat)})
    return az.mcse(ds, method="mean")["x"].values.reshape(d.shape[2:])


def mcse_sd(draws: np.ndarray) -> np.ndarray:
    import arviz as az
    import xarray as xr

    d = np.asarray(draws, dtype=float)
    flat = d.reshape(d.shape[:2] + (-1,))
    ds = xr.Dataset({"x": (("chain", "draw", "e"), flat)})
    return az.mcse(ds, method="sd")["x"].values.reshape(d.shape[2:])


def z_means(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z-scores of the difference of posterior means of two (chain, draw, *rest) samples."""
    ma, mb = a.mean(axis=(0, 1)), b.mean(axis=(0, 1))
    return (ma - mb) / np.sqrt(mcse_mean(a) ** 2 + mcse_mean(b) ** 2)
