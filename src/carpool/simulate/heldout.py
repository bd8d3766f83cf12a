"""Held-out multi-step prediction: fit each driver's early record, predict the rest.

:func:`split_in_time` cuts every driver's record at the same fraction of its duration;
:func:`multistep_scores` simulates each driver behind its recorded leader over the held-out
part with :func:`~carpool.simulate.follow.follow`, restarting from the recorded state every
3 s and 5 s (k-step-ahead prediction; with AR / GP residuals the error process is carried
forward from the recorded residuals before each window), and pools the scores over all
drivers' held-out points: RMSE of speed (m/s) and gap (m) over the points, CRPS and 90%
coverage averaged over the points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from carpool.errors import InputError

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["multistep_scores", "split_in_time"]

_SQUARED = ("rmse_speed_m_s", "rmse_gap_m")
_AVERAGED = ("crps_speed_m_s", "crps_gap_m", "coverage_speed_90", "coverage_gap_90")


def split_in_time(table: pd.DataFrame, train_fraction: float = 0.7
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each driver's first ``train_fraction`` of its duration, and the rest.

    Parameters
    ----------
    table
        Trajectories (``driver, time, ...``).
    train_fraction
        In ``(0, 1)``.

    Returns
    -------
    train, test : pandas.DataFrame
        Rows with ``time - start < train_fraction * duration`` per driver, and the others.
    """
    if not 0.0 < train_fraction < 1.0:
        raise InputError(f"train_fraction must be in (0, 1), got {train_fraction}")
    by = table.groupby("driver")["time"]
    start, duration = by.transform("min"), by.transform("max") - by.transform("min")
    early = (table["time"] - start) < train_fraction * duration
    return (table[early].reset_index(drop=True), table[~early].reset_index(drop=True))


def multistep_scores(fit: Fit, test: pd.DataFrame, *, num_draws: int = 200, seed: int = 0,
                     as_new_driver: bool = False) -> pd.DataFrame:
    """Scores of k-step-ahead simulations over every driver of ``test``.

    Parameters
    ----------
    fit
        A car-following fit (any pooling, any residual).
    test
        The held-out trajectories (e.g. the second part of :func:`split_in_time`).
    num_draws
        Posterior draws simulated per driver.
    seed
        Seeds the draws and the noise.
    as_new_driver
        Simulate each driver as a new driver from the population (hierarchical fits).

    Returns
    -------
    pandas.DataFrame
        Index ``horizon`` (``"3 s"``, ``"5 s"``), columns ``rmse_speed_m_s``, ``rmse_gap_m``
        (over all held-out points), ``crps_speed_m_s``, ``crps_gap_m``,
        ``coverage_speed_90``, ``coverage_gap_90`` (point-weighted means) and
        ``num_points``.
    """
    from carpool.simulate.follow import follow

    per: dict[str, list[tuple[pd.Series, int]]] = {}
    for driver in pd.unique(test["driver"]):
        result = follow(fit, test, driver, num_draws=num_draws, seed=seed,
                        as_new_driver=as_new_driver)
        points = int((test["driver"] == driver).sum()) - 1
        for scope, row in result.metrics.iterrows():
            if scope != "whole":
                per.setdefault(str(scope), []).append((row, points))
    rows = {}
    for scope, items in per.items():
        w = np.array([n for _, n in items], dtype=float)
        out: dict[str, float] = {}
        for col in _SQUARED:
            v = np.array([m[col] for m, _ in items], dtype=float)
            out[col] = float(np.sqrt(np.sum(w * v**2) / w.sum()))
        for col in _AVERAGED:
            v = np.array([m[col] for m, _ in items], dtype=float)
            out[col] = float(np.sum(w * v) / w.sum())
        out["num_points"] = int(w.sum())
        rows[scope] = out
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("horizon")
