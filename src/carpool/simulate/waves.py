"""Traffic-wave statistics of simulated (or recorded) platoons: wave speed, speed spread.

Wave speed (:func:`wave_speed`). A disturbance passes from each leader to its follower: the
follower's speed series repeats its leader's about ``tau`` seconds later. ``tau`` is the lag
(``0 < tau <= max_lag_s``) that maximises the correlation of the follower's speed ``tau``
later with the leader's speed (Pearson, over the overlapping stretch of each pair,
covariances and variances summed over all leader-follower pairs), refined to a fraction of a step
by a parabola through the peak and its two neighbours. In those ``tau`` seconds the
disturbance moved from the leader to the follower's position ``tau`` later, on average
``v_mean tau - h_mean`` metres (``h_mean``: mean spacing, front to front, ``L / N`` on a
ring), so

    c = v_mean - h_mean / tau   (m/s; reported in km/h; negative = upstream).

For Newell's model (each follower repeats its leader's trajectory ``tau`` later and
``delta`` metres behind) this is exactly ``-delta / tau``, the wave speed of its triangular
fundamental diagram (tested). Without waves (speed spread below ``min_speed_std``, or no lag
with a positive correlation) the wave speed is undefined and ``nan`` is returned.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from carpool.errors import InputError

__all__ = ["wave_speed"]


def wave_speed(
    speed: ArrayLike,
    dt: float,
    mean_spacing_m: float,
    *,
    is_ring: bool = True,
    max_lag_s: float = 10.0,
    min_speed_std: float = 0.05,
) -> float:
    """Speed of the waves travelling through a platoon, km/h (negative = upstream).

    Parameters
    ----------
    speed
        Speeds, m/s, shape ``(T, N)``: time on axis 0; vehicle ``i``'s leader is ``i + 1``
        (and vehicle ``N - 1``'s leader is vehicle 0 when ``is_ring``).
    dt
        Time step, s.
    mean_spacing_m
        Mean front-to-front spacing (gap plus vehicle length), m; ``L / N`` on a ring.
    is_ring
        Whether vehicle ``N - 1`` follows vehicle 0.
    max_lag_s
        Longest leader-to-follower lag searched, s.
    min_speed_std
        Below this standard deviation of speed (m/s, over vehicles and time) there are no
        waves to measure and ``nan`` is returned.

    Returns
    -------
    float
        Wave speed in km/h, or ``nan``; see the module docstring for the method.
    """
    v = np.asarray(speed, dtype=float)
    if v.ndim != 2 or v.shape[0] < 3 or v.shape[1] < 2:
        raise InputError(f"speed must have shape (T, N) with T >= 3, N >= 2, got {v.shape}")
    if not (dt > 0 and mean_spacing_m > 0 and max_lag_s > 0):
        raise InputError("dt, mean_spacing_m and max_lag_s must be positive")
    if not np.isfinite(v).all() or v.std() < min_speed_std:
        return float("nan")
    x = v - v.mean(axis=0)
    if is_ring:
        follower, leader = x, np.roll(x, -1, axis=1)
    else:
        follower, leader = x[:, :-1], x[:, 1:]
    num_times = x.shape[0]
    max_lag = int(min(round(max_lag_s / dt), num_times - 3))
    corr = np.array([_lagged_correlation(follower[lag:], leader[: num_times - lag])
                     for lag in range(max_lag + 2)])
    k = 1 + int(np.argmax(corr[1 : max_lag + 1]))
    if not corr[k] > 0:
        return float("nan")
    left, mid, right = corr[k - 1], corr[k], corr[k + 1]
    curvature = left - 2.0 * mid + right
    shift = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
    tau = (k + float(np.clip(shift, -0.5, 0.5))) * dt
    c = v.mean() - mean_spacing_m / tau
    return float(3.6 * c)


def _lagged_correlation(follower: np.ndarray, leader: np.ndarray) -> float:
    """Pearson correlation of two (t, pairs) blocks, each pair de-meaned over the block,
    covariances and variances summed over pairs (edges do not bias the lag)."""
    a = follower - follower.mean(axis=0)
    b = leader - leader.mean(axis=0)
    denominator = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / denominator) if denominator > 0 else 0.0
