"""Reader for NGSIM US-101 / I-80 vehicle trajectory files.

Column meanings used here (NGSIM data dictionary): ``Vehicle_ID``; ``Frame_ID`` (10 Hz);
``v_Length`` (ft); ``v_Class`` (1 motorcycle, 2 auto, 3 truck); ``v_Vel`` (ft/s);
``Lane_ID``; ``Preceding`` (id of the lead vehicle in the same lane, 0 if none);
``Space_Headway`` (ft, front-centre of the vehicle to front-centre of the preceding one),
so the bumper-to-bumper gap is ``Space_Headway`` minus the leader's ``v_Length``.

Header names are matched case-insensitively (the data.transportation.gov release writes
``v_length`` and adds ``Location``); the original headerless, whitespace-separated text
files are read with the standard 18 column names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from carpool.data._segments import (
    downsample_factor,
    drop_nonpositive_gaps,
    keep_long_segments,
    label_segments,
    logger,
    segment_driver_ids,
)
from carpool.data.schema import DataError
from carpool.errors import InputError

FEET = 0.3048  # metres per foot
STANDARD_COLUMNS = (
    "Vehicle_ID", "Frame_ID", "Total_Frames", "Global_Time", "Local_X", "Local_Y",
    "Global_X", "Global_Y", "v_Length", "v_Width", "v_Class", "v_Vel", "v_Acc", "Lane_ID",
    "Preceding", "Following", "Space_Headway", "Time_Headway",
)  # fmt: skip
_NEEDED = ("vehicle_id", "frame_id", "v_length", "v_vel", "lane_id", "preceding", "space_headway")
_ALIASES = {"preceeding": "preceding"}  # both spellings occur in NGSIM releases
CLASS_NAMES = {1: "motorcycle", 2: "car", 3: "truck"}


def read_ngsim(
    path: Path,
    *,
    columns: dict[str, str] | None = None,
    min_observations: int = 3,
    target_hz: float | None = None,
    min_duration_s: float = 5.0,
    frame_rate: float = 10.0,
    length_unit: str = "ft",
) -> pd.DataFrame:
    """Leader-follower segments of an NGSIM trajectory file in the (unvalidated) long layout.

    Parameters
    ----------
    path
        CSV with a header, or the original headerless whitespace-separated text file.
    columns
        Renaming of the file's columns to NGSIM names, applied first.
    min_observations
        Segments with fewer samples (after downsampling) are dropped.
    target_hz
        Output sampling rate (Hz), a divisor of ``frame_rate``; ``None`` keeps every frame.
    min_duration_s
        Segments shorter than this (s) are dropped.
    frame_rate
        Frames per second of ``Frame_ID`` (10 for US-101 and I-80); time = Frame_ID / rate.
    length_unit
        ``"ft"`` (the NGSIM release: lengths in feet, speeds in ft/s) or ``"m"``.
    """
    if length_unit not in ("ft", "m"):
        raise InputError(f"length_unit must be 'ft' or 'm', got {length_unit!r}")
    scale = FEET if length_unit == "ft" else 1.0
    raw = _read_table(path)
    if columns:
        raw = raw.rename(columns=columns)
    lower = {}
    for column in raw.columns:
        key = str(column).strip().lower()
        lower[_ALIASES.get(key, key)] = column
    missing = [c for c in _NEEDED if c not in lower]
    if missing:
        raise DataError(
            f"{path.name}: not an NGSIM trajectory file, missing column(s) {missing};"
            f" columns are {list(map(str, raw.columns))}"
        )
    if len(raw) == 0:
        raise DataError(f"{path.name}: the file has a header but no data rows")
    factor = downsample_factor(frame_rate, target_hz, path.name)

    location = raw[lower["location"]].astype(str) if "location" in lower else None

    def number(name: str, dtype: type) -> np.ndarray:
        return _number(raw[lower[name]], path.name, dtype)

    table = pd.DataFrame(
        {
            "location": location if location is not None else "",
            "id": number("vehicle_id", np.int64),
            "frame": number("frame_id", np.int64),
            "length": number("v_length", float),
            "vel": number("v_vel", float),
            "lane": raw[lower["lane_id"]].to_numpy(),
            "preceding": number("preceding", np.int64),
            "headway": number("space_headway", float),
        }
    )
    if "v_class" in lower:
        table["class_code"] = raw[lower["v_class"]]
    keys = ["location", "id", "frame"]
    duplicated = table.duplicated(keys, keep=False)
    if duplicated.any():
        logger.warning(
            "%s: dropped %d rows whose (vehicle, frame) appears more than once",
            path.name,
            int(duplicated.sum()),
        )
        table = table.loc[~duplicated]
    leaders = table[["location", "id", "frame", "vel", "length"]].rename(
        columns={"id": "preceding", "vel": "leader_vel", "length": "leader_length"}
    )
    rows = table.loc[table["preceding"] > 0].merge(
        leaders, on=["location", "preceding", "frame"], how="inner"
    )
    out = pd.DataFrame(
        {
            "location": rows["location"].to_numpy(),
            "id": rows["id"].to_numpy(),
            "frame": rows["frame"].to_numpy(),
            "preceding": rows["preceding"].to_numpy(),
            "lane": rows["lane"].to_numpy(),
            "speed": rows["vel"].to_numpy() * scale,
            "gap": (rows["headway"].to_numpy() - rows["leader_length"].to_numpy()) * scale,
            "leader_speed": rows["leader_vel"].to_numpy() * scale,
        }
    )
    keep = ["driver", "time", "speed", "gap", "leader_speed"]
    if "class_code" in rows.columns:
        codes = rows["class_code"].to_numpy()
        out["class"] = [CLASS_NAMES.get(int(c), str(c)) for c in codes]
        keep.append("class")
    out = drop_nonpositive_gaps(out, path.name, "Space_Headway - leader v_Length")
    out = out.sort_values(["location", "id", "frame"], kind="stable").reset_index(drop=True)
    base = out["id"].astype(str)
    if location is not None:
        base = out["location"].astype(str) + "-" + base
    out["base"] = base
    segment = label_segments(out, follower="base", tick="frame", keys=("preceding", "lane"))
    out["driver"] = segment_driver_ids(out["base"], segment)
    out["time"] = out["frame"].to_numpy() / frame_rate
    out = out.loc[out["frame"].to_numpy() % factor == 0].reset_index(drop=True)
    out = keep_long_segments(
        out,
        min_duration_s=min_duration_s,
        min_observations=min_observations,
        source=path.name,
    )
    return out[keep]


def _read_table(path: Path) -> pd.DataFrame:
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline()
    fields = first.replace(",", " ").split()
    is_header = any(_is_text(f) for f in fields)
    sep = "," if "," in first else r"\s+"
    if is_header:
        return pd.read_csv(path, sep=sep)
    if len(fields) != len(STANDARD_COLUMNS):
        raise DataError(
            f"{path.name}: headerless NGSIM file must have {len(STANDARD_COLUMNS)} columns,"
            f" found {len(fields)}"
        )
    return pd.read_csv(path, sep=sep, header=None, names=list(STANDARD_COLUMNS))


def _number(series: pd.Series, source: str, dtype: type) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"{source}: data row {row} (0-based): column {series.name!r} needs a number,"
            f" found {series.iat[row]!r}"
        )
    return values.to_numpy(dtype=dtype)


def _is_text(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return True
    return False
