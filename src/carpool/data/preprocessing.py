"""Turning validated trajectory tables into model inputs: one-step pairs and padded arrays.

Both functions take a table in the carpool format (see :mod:`carpool.data.schema`), i.e.
the output of :func:`~carpool.data.validate_trajectories` or of a reader: sorted by driver
then time, with a uniform time step within each driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from carpool.data.schema import DataError

__all__ = ["PaddedTrajectories", "one_step_pairs", "to_padded"]


def one_step_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """Consecutive observation pairs ``(t, t + dt)`` of each driver, one row per pair.

    Parameters
    ----------
    df
        Trajectory table in the carpool format, sorted by driver then time (as returned by
        :func:`~carpool.data.validate_trajectories`).

    Returns
    -------
    pandas.DataFrame
        Columns ``driver, time, speed, gap, leader_speed, dt, next_speed, next_gap,
        next_leader_speed`` (+ ``class`` when present): the state at ``time`` (s, m/s, m,
        m/s), the step ``dt`` (s) to the driver's next observation and the follower speed
        (m/s), gap (m) and leader speed (m/s) there. Rows keep the
        input order; a driver with ``n`` rows gives ``n - 1`` pairs and no pair ever spans
        two drivers.

    Raises
    ------
    DataError
        If a required column is missing or time does not increase within a driver (the
        table was not validated).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"driver": ["a", "a", "b", "b"], "time": [0.0, 0.1, 0.0, 0.1],
    ...                    "speed": [1.0, 2.0, 3.0, 4.0], "gap": [5.0] * 4,
    ...                    "leader_speed": [1.0] * 4})
    >>> one_step_pairs(df)[["driver", "speed", "next_speed"]].to_numpy().tolist()
    [['a', 1.0, 2.0], ['b', 3.0, 4.0]]
    """
    _require(df, ("driver", "time", "speed", "gap", "leader_speed"))
    drivers = df["driver"].to_numpy()
    times = df["time"].to_numpy(dtype=float)
    same = drivers[:-1] == drivers[1:]
    first = np.flatnonzero(same)
    dt = times[first + 1] - times[first]
    if (dt <= 0).any():
        k = int(first[np.argmax(dt <= 0)])
        raise DataError(
            f"row {k + 1} (0-based), driver {drivers[k]!r}: time does not increase"
            f" ({times[k]:g} s -> {times[k + 1]:g} s); validate the table first"
        )
    columns = ["driver", "time", "speed", "gap", "leader_speed"]
    pairs = df.iloc[first][columns].reset_index(drop=True)
    pairs["dt"] = dt
    for column in ("speed", "gap", "leader_speed"):
        pairs[f"next_{column}"] = df[column].to_numpy(dtype=float)[first + 1]
    if "class" in df.columns:
        pairs["class"] = df["class"].to_numpy()[first]
    return pairs


class PaddedTrajectories(NamedTuple):
    """Per-driver series padded to a common length; unpacks as ``arrays, mask, driver_ids``.

    Attributes
    ----------
    arrays
        ``{column: float64 array of shape (num_drivers, max_len)}``; cells after a driver's
        last observation repeat its last value (never 0 or NaN).
    mask
        Bool array of shape ``(num_drivers, max_len)``, true where observed.
    driver_ids
        Driver ids in row order of the arrays (order of first appearance in the table).
    """

    arrays: dict[str, np.ndarray]
    mask: np.ndarray
    driver_ids: list[str]


def to_padded(
    df: pd.DataFrame,
    columns: str | Sequence[str] = ("time", "speed", "gap", "leader_speed"),
) -> PaddedTrajectories:
    """Stack each driver's series into ``(num_drivers, max_len)`` arrays with a mask.

    Parameters
    ----------
    df
        Table with a ``driver`` column and the requested numeric columns, rows of a driver
        contiguous and in time order (a validated table, or :func:`one_step_pairs` output).
    columns
        Numeric column name(s) to stack, in their table units (s, m/s, m).

    Returns
    -------
    PaddedTrajectories
        ``(arrays, mask, driver_ids)``. Padding repeats each driver's last valid value, so
        padded cells are finite and gaps stay positive: models may evaluate them freely
        (e.g. under ``jax.vmap``) as long as the mask removes them from the likelihood.

    Raises
    ------
    DataError
        If a column is missing or not numeric, the table is empty, or a driver's rows are
        not contiguous.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"driver": ["a", "a", "b"], "gap": [5.0, 6.0, 7.0]})
    >>> arrays, mask, ids = to_padded(df, "gap")
    >>> arrays["gap"].tolist(), mask.tolist(), ids
    ([[5.0, 6.0], [7.0, 7.0]], [[True, True], [True, False]], ['a', 'b'])
    """
    names = [columns] if isinstance(columns, str) else list(columns)
    _require(df, ["driver", *names])
    if len(df) == 0:
        raise DataError("cannot pad an empty trajectory table")
    drivers = df["driver"].astype(str).to_numpy()
    change = np.r_[True, drivers[1:] != drivers[:-1]]
    starts = np.flatnonzero(change)
    ids = [str(d) for d in drivers[starts]]
    if len(set(ids)) != len(ids):
        repeated = next(d for d in ids if ids.count(d) > 1)
        raise DataError(
            f"driver {repeated!r}: rows are not contiguous; sort by driver and time first"
        )
    lengths = np.diff(np.r_[starts, len(df)])
    num_drivers, max_len = len(starts), int(lengths.max())
    steps = np.arange(max_len)
    mask = steps[None, :] < lengths[:, None]
    # Index of the source row for every cell: padded cells point at the driver's last row.
    source = starts[:, None] + np.minimum(steps[None, :], lengths[:, None] - 1)
    arrays = {}
    for name in names:
        if not pd.api.types.is_numeric_dtype(df[name].dtype) or pd.api.types.is_bool_dtype(
            df[name].dtype
        ):
            raise DataError(f"column {name!r} is not numeric ({df[name].dtype}); cannot pad it")
        values = df[name].to_numpy(dtype=float, na_value=np.nan)
        arrays[name] = values[source].reshape(num_drivers, max_len)
    return PaddedTrajectories(arrays, mask, ids)


def _require(df: pd.DataFrame, names: Sequence[str]) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    for name in names:
        if name not in df.columns:
            raise DataError(
                f"missing column {name!r}; the table has columns {[str(c) for c in df.columns]}"
            )
