"""Readers for wide platoon files: the USDOT ACC platoon CSV and OpenACC CSVs.

Both formats hold one row per time step with ``Time`` (s), ``Speed<i>`` (m/s) of vehicle
``i`` and ``IVS<i>`` (m), the bumper-to-bumper inter-vehicle spacing between vehicle ``i``
and the next vehicle ``i + 1`` in the platoon order (vehicle 1 leads). Each available
triple ``(Speed<i>, Speed<i+1>, IVS<i>)`` is one leader-follower pair whose follower is
vehicle ``i + 1``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from carpool.data._segments import (
    downsample_factor,
    keep_long_segments,
    label_segments,
    logger,
    segment_driver_ids,
)
from carpool.data.schema import DataError

_SPEED = re.compile(r"^Speed(\d+)$")
_IVS = re.compile(r"^IVS(\d+)$")


def read_usdot(
    path: Path,
    *,
    columns: dict[str, str] | None = None,
    min_observations: int = 3,
    target_hz: float | None = None,
    max_fill_s: float = 0.5,
    min_duration_s: float = 0.0,
) -> pd.DataFrame:
    """USDOT FHWA platoon CSV (``Time, Speed1..N, IVS1..N-1``); drivers ``veh2..vehN``."""
    wide = pd.read_csv(path)
    if columns:
        wide = wide.rename(columns=columns)
    return platoon_to_long(
        wide,
        names=None,
        source=path.name,
        min_observations=min_observations,
        target_hz=target_hz,
        max_fill_s=max_fill_s,
        min_duration_s=min_duration_s,
    )


def read_openacc_metadata(path: Path) -> tuple[dict[str, list[str]], int]:
    """Metadata lines of an OpenACC CSV (``{key: values}``) and the 0-based header line."""
    metadata: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for number, fields in enumerate(csv.reader(handle)):
            if fields and fields[0].strip() == "Time":
                return metadata, number
            if fields:
                metadata[fields[0].strip()] = [f.strip() for f in fields[1:] if f.strip()]
            if number > 50:
                break
    raise DataError(f"{path.name}: no OpenACC header line starting with 'Time' was found")


def read_openacc(
    path: Path,
    *,
    columns: dict[str, str] | None = None,
    min_observations: int = 3,
    target_hz: float | None = None,
    max_fill_s: float = 0.5,
    min_duration_s: float = 0.0,
) -> pd.DataFrame:
    """OpenACC CSV: metadata lines, then ``Time, Speed<i>, ..., IVS<i>``.

    Driver ids are the vehicle names of the ``Vehicle_order`` metadata line (vehicle ``i``
    is its ``i``-th name) when they are unique and cover every follower, else ``veh<i>``.
    """
    metadata, header_line = read_openacc_metadata(path)
    wide = pd.read_csv(path, skiprows=header_line)
    if columns:
        wide = wide.rename(columns=columns)
    order = metadata.get("Vehicle_order", [])
    names = None
    if order and len(set(order)) == len(order):
        names = {i + 1: name for i, name in enumerate(order)}
    return platoon_to_long(
        wide,
        names=names,
        source=path.name,
        min_observations=min_observations,
        target_hz=target_hz,
        max_fill_s=max_fill_s,
        min_duration_s=min_duration_s,
    )


def platoon_to_long(
    wide: pd.DataFrame,
    *,
    names: dict[int, str] | None,
    source: str,
    min_observations: int,
    target_hz: float | None,
    max_fill_s: float,
    min_duration_s: float,
) -> pd.DataFrame:
    """Convert a wide platoon table to the (unvalidated) long carpool layout.

    Missing values (NaN) inside a pair's series are linearly interpolated over runs of at
    most ``max_fill_s`` seconds; longer runs split the follower's series into segments
    ``"<id>-1"``, ``"<id>-2"``, ...; leading and trailing missing values are dropped.
    """
    if "Time" not in wide.columns:
        raise DataError(f"{source}: no 'Time' column; columns are {list(map(str, wide.columns))}")
    if len(wide) == 0:
        raise DataError(f"{source}: the file has a header but no data rows")
    speeds = {int(m[1]): c for c in wide.columns if (m := _SPEED.match(str(c)))}
    gaps = {int(m[1]): c for c in wide.columns if (m := _IVS.match(str(c)))}
    if not gaps:
        raise DataError(
            f"{source}: no IVS<i> gap columns; columns are {list(map(str, wide.columns))}"
        )
    time = _numeric(wide["Time"], source)
    if not np.isfinite(time).all():
        row = int(np.argmax(~np.isfinite(time)))
        raise DataError(f"{source}: data row {row} (0-based): Time is not a finite number")
    steps = np.diff(time)
    if (steps <= 0).any():
        row = int(np.argmax(steps <= 0)) + 1
        raise DataError(
            f"{source}: data row {row} (0-based): Time {time[row]:g} s does not increase from"
            f" the previous row's {time[row - 1]:g} s (duplicated or unsorted time stamps)"
        )
    native_dt = float(np.median(steps)) if len(steps) else 1.0
    if not native_dt > 0:
        raise DataError(f"{source}: Time does not increase (median step {native_dt:g} s)")
    factor = downsample_factor(1.0 / native_dt, target_hz, source)
    tick = np.round(time / native_dt).astype(np.int64)
    max_fill = int(np.floor(max_fill_s / native_dt + 1e-9))

    use_names = names is not None and all(i + 1 in names for i in gaps)
    pieces = []
    for i, gap_column in sorted(gaps.items()):
        if i not in speeds or i + 1 not in speeds:
            logger.warning(
                "%s: %s has no matching Speed%d/Speed%d columns; pair skipped",
                source,
                gap_column,
                i,
                i + 1,
            )
            continue
        follower = names[i + 1] if use_names and names else f"veh{i + 1}"
        pair = pd.DataFrame(
            {
                "time": time,
                "tick": tick,
                "speed": _numeric(wide[speeds[i + 1]], source),
                "gap": _numeric(wide[gap_column], source),
                "leader_speed": _numeric(wide[speeds[i]], source),
            }
        )
        for name in ("speed", "gap", "leader_speed"):
            pair[name] = _fill_short_runs(pair[name], max_fill)
        pair = pair.dropna().reset_index(drop=True)
        pair["base"] = follower
        pieces.append(pair)
    if not pieces:
        raise DataError(f"{source}: no leader-follower pair with Speed<i>, Speed<i+1>, IVS<i>")
    long = pd.concat(pieces, ignore_index=True)
    long = long.sort_values(["base", "tick"], kind="stable").reset_index(drop=True)
    segment = label_segments(long, follower="base", tick="tick")
    long["driver"] = segment_driver_ids(long["base"], segment)
    long = long.loc[long["tick"].to_numpy() % factor == 0].reset_index(drop=True)
    long = keep_long_segments(
        long,
        min_duration_s=min_duration_s,
        min_observations=min_observations,
        source=source,
    )
    return long[["driver", "time", "speed", "gap", "leader_speed"]]


def _numeric(series: pd.Series, source: str) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna().to_numpy() & series.notna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"{source}: data row {row} (0-based): column {series.name!r} is not numeric:"
            f" found {series.iat[row]!r}"
        )
    return values.to_numpy(dtype=float, na_value=np.nan)


def _fill_short_runs(series: pd.Series, max_fill: int) -> pd.Series:
    """Linearly interpolate interior NaN runs of at most ``max_fill`` samples."""
    missing = series.isna().to_numpy()
    if max_fill < 1 or not missing.any():
        return series
    edges = np.diff(np.r_[0, missing.astype(np.int8), 0])
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    filled = series.interpolate(method="linear", limit_area="inside")
    for start, stop in zip(starts, stops, strict=True):
        if stop - start > max_fill:
            filled.iloc[start:stop] = np.nan
    return filled
