"""The carpool trajectory format and its validation.

A carpool trajectory table is a long :class:`pandas.DataFrame` with one row per time step
per follower:

==================  =========  ===========================================================
column              unit       meaning
==================  =========  ===========================================================
``driver``          --         follower id (string, as in the source data)
``time``            s          time stamp; uniform step within each driver
``speed``           m/s        follower speed, >= 0
``gap``             m          bumper-to-bumper distance to the leader, > 0
``leader_speed``    m/s        leader speed, >= 0
``class``           --         optional vehicle class (``"car"``, ``"truck"``), constant
                               within a driver
==================  =========  ===========================================================

:func:`validate_trajectories` is the single gate into this format: every reader returns its
output, and every violation raises :class:`DataError` with one line that names the problem,
the driver and the row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from carpool.errors import InputError

__all__ = [
    "DataError",
    "REQUIRED_COLUMNS",
    "NUMERIC_COLUMNS",
    "OPTIONAL_COLUMNS",
    "validate_trajectories",
]

#: Columns every carpool trajectory table has, in output order.
REQUIRED_COLUMNS: tuple[str, ...] = ("driver", "time", "speed", "gap", "leader_speed")
#: The numeric columns among them, with their units.
NUMERIC_COLUMNS: dict[str, str] = {"time": "s", "speed": "m/s", "gap": "m", "leader_speed": "m/s"}
#: Optional columns kept when present.
OPTIONAL_COLUMNS: tuple[str, ...] = ("class",)

_TIME_STEP_RTOL = 1e-6

#: Largest plausible magnitude of each numeric column (its unit). Larger values are unit or
#: export errors (km/h or mm read as m/s or m, sentinels such as 1e300) and would overflow
#: the float32 arithmetic of the fits (3.4e38; the IDM raises speed to the 4th power).
MAX_ABS: dict[str, float] = {"time": 1e13, "speed": 150.0, "gap": 1e5, "leader_speed": 150.0}


class DataError(InputError):
    """Trajectory data that do not satisfy the carpool format.

    The message is one line naming the problem, the driver and the row.
    """


def _default_row_label(position: int) -> str:
    return f"row {position} (0-based)"


def validate_trajectories(
    df: pd.DataFrame,
    *,
    columns: Mapping[str, str] | None = None,
    min_observations: int = 3,
    resample: bool = False,
) -> pd.DataFrame:
    """Check a trajectory table and return a clean, sorted copy in the carpool format.

    Parameters
    ----------
    df
        Long table, one row per time step per follower, with the columns listed in the
        module docstring (after renaming by ``columns``). Other columns are dropped.
    columns
        Renaming applied first, ``{name in df: carpool name}`` as in
        :meth:`pandas.DataFrame.rename`, e.g. ``{"id": "driver", "v": "speed"}``.
    min_observations
        Fewest rows a driver may have (>= 1); shorter drivers raise "too short".
    resample
        If true, a driver whose time step is not uniform is linearly interpolated onto a
        uniform grid with its median step (s), starting at its first time stamp, instead of
        raising.

    Returns
    -------
    pandas.DataFrame
        New table with columns ``driver, time, speed, gap, leader_speed`` (+ ``class``),
        ``driver`` (and ``class``) as ``str``, numeric columns as ``float64``, sorted by
        driver then time, with a fresh ``RangeIndex``.

    Raises
    ------
    DataError
        On the first violation, with a one-line message such as
        ``"row 17 (0-based), driver 'A3': gap -0.4 m is not positive"``. Rows are 0-based
        positions in the input table (readers report file line numbers instead). Checked:
        missing columns, empty table, non-numeric values, NaN/inf, negative speeds,
        non-positive gaps, implausibly large values (:data:`MAX_ABS`: speeds above
        150 m/s, gaps above 100 km, times beyond 1e13 s), duplicated time stamps,
        drivers with fewer than ``min_observations`` rows, non-uniform time steps
        (unless ``resample``), and a ``class`` that changes within a driver.

    Notes
    -----
    A time step counts as uniform when every step of the driver is within
    ``1e-6 * max(1 s, median step)`` (plus float64 rounding of the time stamps) of its
    median step.

    Examples
    --------
    >>> import pandas as pd
    >>> raw = pd.DataFrame({"id": ["a"] * 3, "t": [0.0, 0.1, 0.2], "speed": [10.0] * 3,
    ...                     "gap": [20.0] * 3, "leader_speed": [10.0] * 3})
    >>> validate_trajectories(raw, columns={"id": "driver", "t": "time"}).shape
    (3, 5)
    """
    return validate_labelled(
        df,
        columns=columns,
        min_observations=min_observations,
        resample=resample,
        row_label=_default_row_label,
    )


def validate_labelled(
    df: pd.DataFrame,
    *,
    columns: Mapping[str, str] | None,
    min_observations: int,
    resample: bool,
    row_label: Callable[[int], str],
) -> pd.DataFrame:
    """:func:`validate_trajectories` naming rows with ``row_label(position)`` (for readers,
    which name file lines instead of table rows)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if int(min_observations) < 1:
        raise InputError(f"min_observations must be >= 1, got {min_observations}")

    table = _rename(df, columns)
    present = [str(c) for c in table.columns]
    for name in REQUIRED_COLUMNS:
        if name not in table.columns:
            raise DataError(
                f"missing required column {name!r}; the table has columns {present}"
                " (use columns={'<your name>': " + repr(name) + "} to map one)"
            )
    duplicated = [c for c in set(table.columns) if list(table.columns).count(c) > 1]
    if duplicated:
        raise DataError(f"column {sorted(map(str, duplicated))[0]!r} appears more than once")
    if len(table) == 0:
        raise DataError("the trajectory table is empty (no rows)")

    has_class = "class" in table.columns
    keep = list(REQUIRED_COLUMNS) + (["class"] if has_class else [])
    out = pd.DataFrame(index=pd.RangeIndex(len(table)))
    out["driver"] = _as_id_strings(table["driver"], "driver", row_label)
    drivers = out["driver"].to_numpy()

    def where(position: int) -> str:
        return f"{row_label(position)}, driver {drivers[position]!r}"

    for name, unit in NUMERIC_COLUMNS.items():
        values = _as_float(table[name], name, where)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where(i)}: {name} is {values[i]} (NaN/inf is not allowed, {unit})")
        out[name] = values
    for name in ("speed", "leader_speed"):
        bad = out[name].to_numpy() < 0
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where(i)}: {name} {out[name].iat[i]:g} m/s is negative")
    bad = out["gap"].to_numpy() <= 0
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{where(i)}: gap {out['gap'].iat[i]:g} m is not positive"
            " (gap is the bumper-to-bumper distance to the leader)"
        )
    for name, limit in MAX_ABS.items():
        bad = np.abs(out[name].to_numpy()) > limit
        if bad.any():
            i = int(np.argmax(bad))
            unit = NUMERIC_COLUMNS[name]
            raise DataError(
                f"{where(i)}: {name} {out[name].iat[i]:g} {unit} is implausibly large"
                f" (above {limit:g} {unit}); check the column's units"
            )
    if has_class:
        out["class"] = _as_id_strings(table["class"], "class", row_label, drivers)

    # Sort by driver then time, remembering each row's input position for messages.
    out["_row"] = np.arange(len(out))
    out = out.sort_values(["driver", "time"], kind="stable").reset_index(drop=True)
    positions = out["_row"].to_numpy()
    driver_sorted = out["driver"].to_numpy()
    time_sorted = out["time"].to_numpy()
    same_driver = driver_sorted[1:] == driver_sorted[:-1]

    dup = same_driver & (time_sorted[1:] == time_sorted[:-1])
    if dup.any():
        k = int(np.argmax(dup)) + 1
        first = int(min(positions[k - 1], positions[k]))
        second = int(max(positions[k - 1], positions[k]))
        raise DataError(
            f"{where(second)}: duplicated time stamp {time_sorted[k]:g} s"
            f" (already at {row_label(first)})"
        )

    starts = np.flatnonzero(np.r_[True, ~same_driver])
    stops = np.r_[starts[1:], len(out)]
    lengths = stops - starts
    short = lengths < min_observations
    if short.any():
        j = int(np.argmax(short))
        raise DataError(
            f"{where(int(positions[starts[j]]))}: driver is too short: {lengths[j]}"
            f" observation(s), need at least {min_observations}"
        )
    if has_class:
        cls = out["class"].to_numpy()
        changed = same_driver & (cls[1:] != cls[:-1])
        if changed.any():
            k = int(np.argmax(changed)) + 1
            raise DataError(
                f"{where(int(positions[k]))}: class changes within the driver"
                f" ({cls[k - 1]!r} -> {cls[k]!r}); a driver's class must be constant"
            )

    bad_drivers = _drivers_with_bad_steps(time_sorted, starts, stops)
    if len(bad_drivers) == 0:
        return out[keep]
    if not resample:
        start, stop = int(starts[bad_drivers[0]]), int(stops[bad_drivers[0]])
        times = time_sorted[start:stop]
        k, expected, found = _first_bad_step(times)
        raise DataError(
            f"{where(int(positions[start + k]))}: non-uniform time step: expected"
            f" {expected:g} s (the driver's median step), found {found:g} s"
            f" ({times[k - 1]:g} s -> {times[k]:g} s);"
            " pass resample=True to interpolate onto a uniform grid"
        )
    return _resample(out[keep], starts[bad_drivers], stops[bad_drivers])


def _rename(df: pd.DataFrame, columns: Mapping[str, str] | None) -> pd.DataFrame:
    if not columns:
        return df
    present = [str(c) for c in df.columns]
    for source, target in columns.items():
        if source not in df.columns:
            hint = ""
            if target in df.columns and source in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
                hint = (
                    f"; the mapping goes {{name in the table: carpool name}},"
                    f" e.g. {{{target!r}: {source!r}}}"
                )
            raise DataError(
                f"column mapping names {source!r}, but the table has no such column"
                f" (columns: {present}){hint}"
            )
    return df.rename(columns=dict(columns))


def _as_id_strings(
    series: pd.Series,
    name: str,
    row_label: Callable[[int], str],
    drivers: np.ndarray | None = None,
) -> np.ndarray:
    """Convert an id column (driver or class) to an object array of ``str``."""
    missing = series.isna().to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        who = f", driver {drivers[i]!r}" if drivers is not None else ""
        raise DataError(f"{row_label(i)}{who}: {name} is missing")
    values = series.to_numpy()
    if pd.api.types.is_float_dtype(series.dtype) and np.all(np.mod(values, 1) == 0):
        values = values.astype(np.int64)
    return np.array([str(v) for v in values], dtype=object)


def _as_float(series: pd.Series, name: str, where: Callable[[int], str]) -> np.ndarray:
    """Numeric column as float64; non-numeric entries raise a DataError."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise DataError(
            f"column {name!r} holds booleans; expected numbers in {NUMERIC_COLUMNS[name]}"
        )
    if pd.api.types.is_numeric_dtype(dtype):
        return series.to_numpy(dtype=float, na_value=np.nan)
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna().to_numpy() & series.notna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{where(i)}: column {name!r} is not numeric: found {series.iat[i]!r}"
            f" (expected a number in {NUMERIC_COLUMNS[name]})"
        )
    return converted.to_numpy(dtype=float, na_value=np.nan)


def _time_step_tolerance(times: np.ndarray, step: float) -> float:
    scale = float(np.max(np.abs(times))) if len(times) else 0.0
    return _TIME_STEP_RTOL * max(1.0, abs(step)) + 8 * np.finfo(float).eps * scale


def _first_bad_step(times: np.ndarray) -> tuple[int, float, float]:
    """First index ``k`` whose step ``times[k] - times[k-1]`` differs from the median step.

    Returns ``(k, median step, found step)``; only called on a non-uniform series.
    """
    steps = np.diff(times)
    expected = float(np.median(steps))
    bad = np.abs(steps - expected) > _time_step_tolerance(times, expected)
    k = int(np.argmax(bad))
    return k + 1, expected, float(steps[k])


def _drivers_with_bad_steps(times: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Indices of the drivers (blocks ``starts[j]:stops[j]`` of sorted ``times``) whose
    time step is not uniform."""
    steps = np.diff(times)
    lengths = stops - starts
    driver_of_step = np.repeat(np.arange(len(starts)), lengths)[1:]
    within = np.ones(len(steps), dtype=bool)
    within[starts[1:] - 1] = False
    steps, driver_of_step = steps[within], driver_of_step[within]
    if len(steps) == 0:
        return np.array([], dtype=int)
    medians = pd.Series(steps).groupby(driver_of_step).median()
    median_of_step = medians.reindex(driver_of_step).to_numpy()
    scale = np.maximum.reduceat(np.abs(times), starts)[driver_of_step]
    tol = _TIME_STEP_RTOL * np.maximum(1.0, np.abs(median_of_step))
    tol = tol + 8 * np.finfo(float).eps * scale
    bad = np.abs(steps - median_of_step) > tol
    return np.unique(driver_of_step[bad])


def _resample(df: pd.DataFrame, starts: np.ndarray, stops: np.ndarray) -> pd.DataFrame:
    """Linearly interpolate the drivers in rows ``starts[j]:stops[j]`` of the sorted table
    onto ``t0 + k * step`` with their median step; other rows are kept as they are."""
    source = {name: df[name].to_numpy() for name in df.columns}
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in df.columns}
    previous = 0
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        for name in df.columns:
            pieces[name].append(source[name][previous:start])
        times = source["time"][start:stop]
        step = float(np.median(np.diff(times)))
        num = int(np.floor((times[-1] - times[0]) / step + 1e-6)) + 1
        grid = times[0] + step * np.arange(num)
        for name in df.columns:
            if name == "time":
                pieces[name].append(grid)
            elif name in NUMERIC_COLUMNS:
                pieces[name].append(np.interp(grid, times, source[name][start:stop]))
            else:  # driver, class: constant within the driver
                pieces[name].append(np.full(num, source[name][start], dtype=object))
        previous = stop
    for name in df.columns:
        pieces[name].append(source[name][previous:])
    return pd.DataFrame({name: np.concatenate(parts) for name, parts in pieces.items()})
