"""Reader for highD recordings (``<rec>_tracks.csv`` with ``<rec>_tracksMeta.csv``).

highD column meanings used here (highD format documentation):

- ``frame``: frame number at the recording's ``frameRate`` (25 Hz);
- ``id``: track id; ``precedingId``: id of the preceding vehicle in the same lane, 0 if none;
- ``laneId``: lane; ``xVelocity``: longitudinal velocity (m/s), negative for vehicles
  driving in the -x direction, so speeds are ``|xVelocity|``;
- ``width``: the bounding box extent along x, i.e. the vehicle *length* (m);
  ``height`` is its width;
- ``dhw``: distance headway (m), 0 if there is no preceding vehicle. It is a headway
  between equivalent points of both vehicles (front to front), so the bumper-to-bumper
  gap is ``dhw`` minus the preceding vehicle's length.
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

_TRACK_COLUMNS = ("frame", "id", "xVelocity", "dhw", "precedingId", "laneId")


def read_highd(
    path: Path,
    *,
    columns: dict[str, str] | None = None,
    min_observations: int = 3,
    target_hz: float | None = 5.0,
    min_duration_s: float = 5.0,
    frame_rate: float | None = None,
    meta_path: str | Path | None = None,
) -> pd.DataFrame:
    """Leader-follower segments of one highD recording in the (unvalidated) long layout.

    Parameters
    ----------
    path
        The ``<rec>_tracks.csv`` file.
    columns
        Renaming of the tracks file's columns to highD names, applied first.
    min_observations
        Segments with fewer samples (after downsampling) are dropped.
    target_hz
        Output sampling rate (Hz); samples with ``frame % (frame_rate / target_hz) == 0``
        are kept. ``None`` keeps every frame.
    min_duration_s
        Segments shorter than this (s, last minus first time stamp) are dropped.
    frame_rate
        Frames per second; default: ``frameRate`` of the sibling ``<rec>_recordingMeta.csv``,
        else 25.
    meta_path
        The tracksMeta file; default: the sibling ``<rec>_tracksMeta.csv``. Without it,
        vehicle lengths come from the tracks' ``width`` and no ``class`` column is made.
    """
    recording = path.name[: -len("_tracks.csv")] if path.name.endswith("_tracks.csv") else path.stem
    tracks = pd.read_csv(path)
    if columns:
        tracks = tracks.rename(columns=columns)
    missing = [c for c in _TRACK_COLUMNS if c not in tracks.columns]
    if missing:
        raise DataError(
            f"{path.name}: not a highD tracks file, missing column(s) {missing};"
            f" columns are {list(map(str, tracks.columns))}"
        )
    if len(tracks) == 0:
        raise DataError(f"{path.name}: the file has a header but no data rows")

    meta = _read_meta(path, meta_path)
    if frame_rate is None:
        frame_rate = _recording_frame_rate(path)
    factor = downsample_factor(frame_rate, target_hz, path.name)

    if meta is not None:
        length_of = meta.set_index("id")["width"]
    elif "width" in tracks.columns:
        length_of = tracks.groupby("id")["width"].median()
    else:
        raise DataError(
            f"{path.name}: no vehicle lengths: neither a tracksMeta file nor a 'width' column"
        )

    speed_of = tracks[["frame", "id", "xVelocity"]].rename(
        columns={"id": "precedingId", "xVelocity": "leader_xVelocity"}
    )
    rows = tracks.loc[
        tracks["precedingId"] > 0, ["frame", "id", "xVelocity", "dhw", "precedingId", "laneId"]
    ]
    rows = rows.merge(speed_of, on=["frame", "precedingId"], how="inner")
    leader_length = rows["precedingId"].map(length_of).to_numpy(dtype=float)
    out = pd.DataFrame(
        {
            "id": rows["id"].to_numpy(),
            "frame": rows["frame"].to_numpy(dtype=np.int64),
            "precedingId": rows["precedingId"].to_numpy(),
            "laneId": rows["laneId"].to_numpy(),
            "speed": np.abs(rows["xVelocity"].to_numpy(dtype=float)),
            "gap": rows["dhw"].to_numpy(dtype=float) - leader_length,
            "leader_speed": np.abs(rows["leader_xVelocity"].to_numpy(dtype=float)),
        }
    )
    out = drop_nonpositive_gaps(out, path.name, "dhw - leader length")
    out = out.sort_values(["id", "frame"], kind="stable").reset_index(drop=True)
    segment = label_segments(out, follower="id", tick="frame", keys=("precedingId", "laneId"))
    out["driver"] = segment_driver_ids(recording + "-" + out["id"].astype(str), segment)
    out["time"] = out["frame"].to_numpy() / frame_rate
    keep = ["driver", "time", "speed", "gap", "leader_speed"]
    if meta is not None and "class" in meta.columns:
        out["class"] = out["id"].map(meta.set_index("id")["class"].astype(str).str.lower())
        keep.append("class")
    out = out.loc[out["frame"].to_numpy() % factor == 0].reset_index(drop=True)
    out = keep_long_segments(
        out,
        min_duration_s=min_duration_s,
        min_observations=min_observations,
        source=path.name,
    )
    return out[keep]


def _read_meta(path: Path, meta_path: str | Path | None) -> pd.DataFrame | None:
    if meta_path is None:
        sibling = path.with_name(path.name.replace("_tracks.csv", "_tracksMeta.csv"))
        if sibling == path or not sibling.exists():
            logger.info("%s: no tracksMeta file beside it; no vehicle classes", path.name)
            return None
        meta_path = sibling
    meta = pd.read_csv(meta_path)
    for column in ("id", "width"):
        if column not in meta.columns:
            raise DataError(f"{Path(meta_path).name}: tracksMeta file without column {column!r}")
    return meta


def _recording_frame_rate(path: Path) -> float:
    sibling = path.with_name(path.name.replace("_tracks.csv", "_recordingMeta.csv"))
    if sibling != path and sibling.exists():
        meta = pd.read_csv(sibling)
        if "frameRate" in meta.columns and len(meta):
            return float(meta["frameRate"].iat[0])
    return 25.0
