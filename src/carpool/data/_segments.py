"""Splitting follower series into car-following segments (private helpers for the readers).

A *segment* is a maximal run of consecutive samples of one follower with the same leader
and lane. Readers split wherever the leader or lane changes or samples are missing, then
drop segments that are too short.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from carpool.errors import InputError

logger = logging.getLogger("carpool.data")


def drop_nonpositive_gaps(out: pd.DataFrame, source: str, gap_formula: str) -> pd.DataFrame:
    """Rows of ``out`` whose ``gap`` is positive; logs how many were dropped and why."""
    bad = ~(out["gap"].to_numpy() > 0)
    if bad.any():
        logger.warning("%s: dropped %d sample(s) whose gap (%s) is not positive", source,
                       int(bad.sum()), gap_formula)
        out = out.loc[~bad]
    return out


def label_segments(
    df: pd.DataFrame, *, follower: str, tick: str, keys: Sequence[str] = ()
) -> np.ndarray:
    """1-based segment number of each row within its follower.

    ``df`` must be sorted by ``follower`` then ``tick`` (integer sample counter). A new
    segment starts where ``tick`` does not advance by exactly one or any of ``keys``
    (leader id, lane) changes.
    """
    if len(df) == 0:
        return np.zeros(0, dtype=int)
    who = df[follower].to_numpy()
    new_follower = np.r_[True, who[1:] != who[:-1]]
    ticks = df[tick].to_numpy()
    new = new_follower | np.r_[True, np.diff(ticks) != 1]
    for key in keys:
        values = df[key].to_numpy()
        new |= np.r_[True, values[1:] != values[:-1]]
    run = np.cumsum(new)
    first_run_of_follower = run[np.flatnonzero(new_follower)]
    follower_index = np.cumsum(new_follower) - 1
    return run - first_run_of_follower[follower_index] + 1


def segment_driver_ids(base: pd.Series, segment: np.ndarray) -> np.ndarray:
    """Driver ids: ``base`` for a follower with one segment, ``"<base>-<k>"`` otherwise.

    ``k`` counts every segment of the follower (before any is dropped), so the id of a
    segment does not depend on filtering options.
    """
    base = base.astype(str).to_numpy()
    num = pd.Series(segment).groupby(base).transform("max").to_numpy()
    suffix = np.where(num > 1, np.char.add("-", segment.astype(str)), "")
    return np.char.add(base.astype(str), suffix).astype(object)


def keep_long_segments(
    df: pd.DataFrame,
    *,
    driver: str = "driver",
    time: str = "time",
    min_duration_s: float = 0.0,
    min_observations: int = 1,
    source: str = "",
) -> pd.DataFrame:
    """Drop segments (drivers) shorter than ``min_duration_s`` (s) or ``min_observations`` rows.

    The duration of a segment is its last minus its first time stamp.
    """
    if len(df) == 0:
        return df
    grouped = df.groupby(driver, sort=False)[time]
    count = grouped.transform("size").to_numpy()
    span = (grouped.transform("max") - grouped.transform("min")).to_numpy()
    keep = (count >= max(1, min_observations)) & (span >= min_duration_s - 1e-9)
    num_dropped = df.loc[~keep, driver].nunique()
    if num_dropped:
        logger.info(
            "%s: dropped %d segment(s) shorter than %g s or %d samples",
            source or "trajectories",
            num_dropped,
            min_duration_s,
            min_observations,
        )
    return df.loc[keep].reset_index(drop=True)


def downsample_factor(native_hz: float, target_hz: float | None, fmt: str) -> int:
    """Integer factor ``k`` so that keeping every ``k``-th sample gives ``target_hz``."""
    if target_hz is None:
        return 1
    if not target_hz > 0:
        raise InputError(f"target_hz must be positive, got {target_hz}")
    ratio = native_hz / target_hz
    k = int(round(ratio))
    if k < 1 or abs(ratio - k) > 1e-6 * ratio:
        raise InputError(
            f"{fmt}: target_hz={target_hz:g} Hz must divide the native rate {native_hz:g} Hz"
            " by a whole number"
        )
    return k
