"""Readers: carpool CSV/Parquet, highD and NGSIM (small files written here), OpenACC and USDOT
(the real files vendored in tests/data/trajectories), format detection and errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carpool.data import DataError, read_trajectories
from carpool.data.readers import detect_format

TRAJECTORIES = Path(__file__).resolve().parent / "data" / "trajectories"
FEET = 0.3048


def vendored_file(name: str) -> Path:
    """A vendored third-party trajectory file (tests/data/README.md)."""
    return TRAJECTORIES / name


# --- carpool format ---------------------------------------------------------------------


def carpool_table() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 6
    return pd.DataFrame(
        {
            "driver": ["007"] * n + ["B"] * n,
            "time": np.tile(np.arange(n) * 0.5, 2),
            "speed": rng.uniform(0, 20, 2 * n),
            "gap": rng.uniform(2, 40, 2 * n),
            "leader_speed": rng.uniform(0, 20, 2 * n),
        }
    )


def test_carpool_csv_roundtrip_keeps_driver_ids_as_text(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    carpool_table().to_csv(path, index=False)
    out = read_trajectories(path)
    assert sorted(out["driver"].unique()) == ["007", "B"]
    np.testing.assert_allclose(out["gap"], carpool_table()["gap"])


def test_carpool_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    carpool_table().to_parquet(path)
    assert detect_format(path) == "carpool"
    assert len(read_trajectories(path)) == 12


def test_carpool_csv_errors_name_the_file_line(tmp_path: Path) -> None:
    table = carpool_table()
    table.loc[3, "gap"] = -2.0
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    # data row 3 is line 5 of the file (line 1 is the header)
    with pytest.raises(DataError, match=r"line 5 of bad\.csv, driver '007': gap -2 m"):
        read_trajectories(path)


def test_carpool_csv_with_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "mapped.csv"
    carpool_table().rename(columns={"driver": "vehicle", "leader_speed": "v_lead"}).to_csv(
        path, index=False
    )
    out = read_trajectories(path, columns={"vehicle": "driver", "v_lead": "leader_speed"})
    assert sorted(out["driver"].unique()) == ["007", "B"]


def test_carpool_csv_wrong_column_type(tmp_path: Path) -> None:
    path = tmp_path / "text.csv"
    table = carpool_table().astype({"speed": object})
    table.loc[8, "speed"] = "n/a km/h"
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"line 10 of text\.csv, driver 'B'.*'speed'.*n/a"):
        read_trajectories(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_trajectories(path)
    with pytest.raises(DataError, match="empty"):
        read_trajectories(path, format="carpool")


def test_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("driver,time,speed,gap,leader_speed\n")
    with pytest.raises(DataError, match="no data rows"):
        read_trajectories(path)


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_trajectories(tmp_path / "nope.csv")


def test_unknown_format_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format 'csv'.*carpool.*usdot.*openacc.*highd"):
        read_trajectories(tmp_path / "x.csv", format="csv")


def test_unknown_reader_option(tmp_path: Path) -> None:
    path = write_ngsim(tmp_path)
    with pytest.raises(ValueError, match="unknown option 'hz' for format 'ngsim'.*target_hz"):
        read_trajectories(path, hz=5)


def test_undetectable_header(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match=r"cannot detect the format of 'other\.csv'"):
        read_trajectories(path)


# --- highD --------------------------------------------------------------------------------


def highd_row(frame: int, vid: int, lane: int, preceding: int, x_velocity: float, dhw: float,
              length: float) -> dict:  # fmt: skip
    return {
        "frame": frame, "id": vid, "x": 0.0, "y": 0.0, "width": length, "height": 2.0,
        "xVelocity": x_velocity, "yVelocity": 0.0, "xAcceleration": 0.0, "yAcceleration": 0.0,
        "frontSightDistance": 100.0, "backSightDistance": 100.0, "dhw": dhw,
        "thw": 0.0, "ttc": 0.0, "precedingXVelocity": 0.0, "precedingId": preceding,
        "followingId": 0, "laneId": lane,
    }  # fmt: skip


def write_highd(folder: Path, *, with_meta: bool = True) -> Path:
    """Recording 07 at 25 Hz, driving in -x (negative xVelocity).

    - vehicle 1: car, 4.5 m, lane 2, no leader, xVelocity -(20 + 0.001 frame), frames 1..300;
    - vehicle 3: car, 5.0 m, lane 2, frames 150..300 (no leader);
    - vehicle 2: truck, 12 m, lane 2, xVelocity -19, dhw 30 + 0.01 frame; leader 1 for
      frames 1..200 (7.8 s at 5 Hz: kept), leader 3 for frames 201..260 (2.2 s: dropped);
    - vehicle 4: car, 4.0 m, leader 1 throughout, lane 3 for frames 1..150 and lane 4 for
      151..300 (a lane change: two kept segments), xVelocity -18, dhw 50.
    """
    rows = []
    for f in range(1, 301):
        rows.append(highd_row(f, 1, 2, 0, -(20 + 0.001 * f), 0.0, 4.5))
        if f >= 150:
            rows.append(highd_row(f, 3, 2, 0, -21.0, 0.0, 5.0))
        if f <= 260:
            rows.append(highd_row(f, 2, 2, 1 if f <= 200 else 3, -19.0, 30 + 0.01 * f, 12.0))
        rows.append(highd_row(f, 4, 3 if f <= 150 else 4, 1, -18.0, 50.0, 4.0))
    tracks = pd.DataFrame(rows).sort_values(["id", "frame"])
    path = folder / "07_tracks.csv"
    tracks.to_csv(path, index=False)
    if with_meta:
        pd.DataFrame(
            {
                "id": [1, 2, 3, 4],
                "width": [4.5, 12.0, 5.0, 4.0],
                "height": [2.0, 2.5, 2.0, 1.9],
                "initialFrame": [1, 1, 150, 1],
                "finalFrame": [300, 260, 300, 300],
                "numFrames": [300, 260, 151, 300],
                "class": ["Car", "Truck", "Car", "Car"],
                "drivingDirection": [1, 1, 1, 1],
                "numLaneChanges": [0, 0, 0, 1],
            }
        ).to_csv(folder / "07_tracksMeta.csv", index=False)
        pd.DataFrame({"id": [7], "frameRate": [25], "speedLimit": [-1.0]}).to_csv(
            folder / "07_recordingMeta.csv", index=False
        )
    return path


def test_highd_segments_gaps_and_speeds(tmp_path: Path) -> None:
    path = write_highd(tmp_path)
    assert detect_format(path) == "highd"
    out = read_trajectories(path)
    assert sorted(out["driver"].unique()) == ["07-2-1", "07-4-1", "07-4-2"]
    follower = out.loc[out.driver == "07-2-1"]
    # 5 Hz: frames 5, 10, ..., 200 -> 40 samples, time = frame / 25
    assert len(follower) == 40
    np.testing.assert_allclose(follower["time"], np.arange(5, 201, 5) / 25)
    row = follower.loc[np.isclose(follower["time"], 10 / 25)].iloc[0]
    assert row["speed"] == pytest.approx(19.0)  # |xVelocity|
    assert row["leader_speed"] == pytest.approx(20.01)  # |-(20 + 0.001 * 10)|
    assert row["gap"] == pytest.approx(30.1 - 4.5)  # dhw minus the leader's length
    assert row["class"] == "truck"
    lane_split = out.loc[out.driver.str.startswith("07-4")]
    assert lane_split.groupby("driver")["time"].agg(["min", "max"]).to_numpy().tolist() == [
        pytest.approx([0.2, 6.0]),
        pytest.approx([6.2, 12.0]),
    ]
    np.testing.assert_allclose(lane_split["gap"], 50.0 - 4.5)
    assert set(lane_split["class"]) == {"car"}


def test_highd_options_native_rate_and_min_duration(tmp_path: Path) -> None:
    path = write_highd(tmp_path)
    out = read_trajectories(path, format="highd", target_hz=None, min_duration_s=2.0)
    assert "07-2-2" in set(out["driver"])  # the 2.4 s segment behind vehicle 3 is kept now
    second = out.loc[out.driver == "07-2-2"]
    assert len(second) == 60  # frames 201..260 at 25 Hz
    np.testing.assert_allclose(second["gap"], 30 + 0.01 * np.arange(201, 261) - 5.0)
    np.testing.assert_allclose(second["leader_speed"], 21.0)
    with pytest.raises(ValueError, match="must divide"):
        read_trajectories(path, target_hz=7.0)


def test_highd_without_meta_uses_track_lengths(tmp_path: Path) -> None:
    path = write_highd(tmp_path, with_meta=False)
    out = read_trajectories(path)
    assert "class" not in out.columns
    row = out.loc[out.driver == "07-2-1"].iloc[1]
    assert row["gap"] == pytest.approx(30.1 - 4.5)


def test_highd_drops_non_positive_gaps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_highd(tmp_path)
    tracks = pd.read_csv(path)
    tracks.loc[(tracks.id == 4) & (tracks.frame == 100), "dhw"] = 3.0  # shorter than 4.5 m
    tracks.to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="carpool.data"):
        out = read_trajectories(path)
    assert "not positive" in caplog.text
    assert (out["gap"] > 0).all()
    # vehicle 4 now has segments frames 1..99 (3.8 s at 5 Hz), 101..150 (2 s), 151..300:
    # only the third is at least 5 s long; ids count all segments
    assert out.loc[out.driver.str.startswith("07-4"), "driver"].unique().tolist() == ["07-4-3"]


def test_highd_meta_file_is_not_accepted(tmp_path: Path) -> None:
    write_highd(tmp_path)
    with pytest.raises(DataError, match="tracksMeta"):
        read_trajectories(tmp_path / "07_tracksMeta.csv")


# --- NGSIM --------------------------------------------------------------------------------

NGSIM_COLUMNS = [
    "Vehicle_ID", "Frame_ID", "Total_Frames", "Global_Time", "Local_X", "Local_Y",
    "Global_X", "Global_Y", "v_Length", "v_Width", "v_Class", "v_Vel", "v_Acc", "Lane_ID",
    "Preceding", "Following", "Space_Headway", "Time_Headway",
]  # fmt: skip


def ngsim_row(frame: int, vid: int, length: float, cls: int, vel: float, *, lane: int,
              preceding: int, headway: float) -> dict:  # fmt: skip
    return {
        "Vehicle_ID": vid, "Frame_ID": frame, "Total_Frames": 100, "Global_Time": frame * 100,
        "Local_X": 0.0, "Local_Y": 0.0, "Global_X": 0.0, "Global_Y": 0.0, "v_Length": length,
        "v_Width": 6.0, "v_Class": cls, "v_Vel": vel, "v_Acc": 0.0, "Lane_ID": lane,
        "Preceding": preceding, "Following": 0, "Space_Headway": headway, "Time_Headway": 0.0,
    }  # fmt: skip


def ngsim_rows() -> pd.DataFrame:
    """10 Hz, frames 100..199 (10 s), feet and ft/s.

    - vehicle 10: car (class 2), 15 ft, lane 2, 55 ft/s;
    - vehicle 12: car, 14 ft, lane 3, 52 ft/s;
    - vehicle 11: truck (class 3), 40 ft, 50 ft/s, Space_Headway 100 + 0.5 (frame - 100) ft;
      lane 2 behind 10 for frames 100..159 (6 s: kept), lane 3 behind 12 for 160..199
      (3.9 s: dropped by the default min_duration_s = 5).
    """
    rows = []
    for f in range(100, 200):
        rows.append(ngsim_row(f, 10, 15.0, 2, 55.0, lane=2, preceding=0, headway=0.0))
        rows.append(ngsim_row(f, 12, 14.0, 2, 52.0, lane=3, preceding=0, headway=0.0))
        before = f < 160
        rows.append(
            ngsim_row(
                f,
                11,
                40.0,
                3,
                50.0,
                lane=2 if before else 3,
                preceding=10 if before else 12,
                headway=100 + 0.5 * (f - 100),
            )
        )
    return pd.DataFrame(rows)[NGSIM_COLUMNS]


def write_ngsim(folder: Path) -> Path:
    path = folder / "trajectories-0750am-0805am.csv"
    ngsim_rows().to_csv(path, index=False)
    return path


def check_ngsim(out: pd.DataFrame, driver: str = "11-1") -> None:
    assert out["driver"].unique().tolist() == [driver]
    assert len(out) == 60
    np.testing.assert_allclose(out["time"], np.arange(100, 160) / 10)
    row = out.loc[np.isclose(out["time"], 12.0)].iloc[0]
    assert row["speed"] == pytest.approx(50 * FEET)  # 15.24 m/s
    assert row["leader_speed"] == pytest.approx(55 * FEET)  # 16.764 m/s
    # Space_Headway (front to front) minus the leader's length, feet -> metres
    assert row["gap"] == pytest.approx((100 + 0.5 * 20 - 15) * FEET)  # 28.956 m
    assert row["class"] == "truck"


def test_ngsim_csv(tmp_path: Path) -> None:
    path = write_ngsim(tmp_path)
    assert detect_format(path) == "ngsim"
    check_ngsim(read_trajectories(path))


def test_ngsim_headerless_text_file(tmp_path: Path) -> None:
    path = tmp_path / "trajectories-0400-0415.txt"
    ngsim_rows().to_csv(path, index=False, header=False, sep=" ")
    assert detect_format(path) == "ngsim"
    check_ngsim(read_trajectories(path))


def test_ngsim_data_gov_variant_with_location(tmp_path: Path) -> None:
    rows = ngsim_rows().rename(columns={"v_Length": "v_length", "Preceding": "Preceeding"})
    rows["Location"] = "us-101"
    path = tmp_path / "ngsim.csv"
    rows.to_csv(path, index=False)
    check_ngsim(read_trajectories(path, format="ngsim"), driver="us-101-11-1")


def test_ngsim_short_segment_kept_with_smaller_min_duration(tmp_path: Path) -> None:
    out = read_trajectories(write_ngsim(tmp_path), min_duration_s=3.0, target_hz=5.0)
    assert sorted(out["driver"].unique()) == ["11-1", "11-2"]
    second = out.loc[out.driver == "11-2"]
    np.testing.assert_allclose(second["time"], np.arange(160, 200, 2) / 10)
    np.testing.assert_allclose(second["gap"], (100 + 0.5 * (second["time"] * 10 - 100) - 14) * FEET)


# --- USDOT and OpenACC (real files) -----------------------------------------------------------


def test_usdot_platoon_file() -> None:
    path = vendored_file("usdot_acc_platoon_10hz.csv")
    assert detect_format(path) == "usdot"
    out = read_trajectories(path)
    assert sorted(out["driver"].unique()) == ["veh2", "veh3", "veh4", "veh5"]
    assert (out.groupby("driver").size() == 19840).all()
    first = out.loc[(out.driver == "veh3") & np.isclose(out.time, 1.0)].iloc[0]
    # first data line: Time 1, Speed2 0.007272727, Speed3 0.009090909, IVS2 2.612981674
    assert first["speed"] == pytest.approx(0.009090909)
    assert first["leader_speed"] == pytest.approx(0.007272727)
    assert first["gap"] == pytest.approx(2.612981674)


def test_openacc_part26_non_contiguous_vehicles() -> None:
    path = vendored_file("openacc_zalazone_short_setting_dynamic_part26.csv")
    assert detect_format(path) == "openacc"
    out = read_trajectories(path)
    # vehicles 1, 2, 5, 6, 7 with IVS1, IVS5, IVS6: followers 2 (BMW_I3), 6 (TESLA_MODEL3),
    # 7 (TESLA_MODELS); vehicle 5 follows the absent vehicle 4
    bases = {d.rsplit("-", 1)[0] if d.startswith("BMW_I3-") else d for d in out["driver"]}
    assert bases == {"BMW_I3", "TESLA_MODEL3", "TESLA_MODELS"}
    # BMW_I3's gap IVS1 is missing for 3.1 s and 6.1 s: split into two segments
    assert sorted(d for d in out["driver"].unique() if d.startswith("BMW")) == [
        "BMW_I3-1", "BMW_I3-2",
    ]  # fmt: skip
    first = out.loc[(out.driver == "TESLA_MODEL3") & np.isclose(out.time, 950.1)].iloc[0]
    # first data line: Speed5 8.405028659025835, Speed6 8.423264949379448, IVS5 13.378926976306
    assert first["speed"] == pytest.approx(8.423264949379448)
    assert first["leader_speed"] == pytest.approx(8.405028659025835)
    assert first["gap"] == pytest.approx(13.378926976306)
    assert len(out.loc[out.driver == "TESLA_MODELS"]) == 699


def test_openacc_part22_and_part7_driver_counts() -> None:
    part22 = read_trajectories(vendored_file("openacc_zalazone_short_setting_dynamic_part22.csv"))
    assert part22["driver"].nunique() == 8  # 9 vehicles, 8 pairs, no long holes
    part7 = read_trajectories(
        vendored_file("openacc_zalazone_mixed_dynamic_part7.csv"), max_fill_s=10.0
    )
    assert sorted(part7["driver"].unique()) == [
        "AUDI_E_TRON", "MERCEDES_GLE450", "TESLA_MODELS", "TESLA_MODELX", "TOYOTA_RAV4",
    ]  # fmt: skip


def test_openacc_downsampling() -> None:
    path = vendored_file("openacc_zalazone_short_setting_dynamic_part22.csv")
    out = read_trajectories(path, target_hz=5.0)
    steps = out.groupby("driver")["time"].diff().dropna()
    np.testing.assert_allclose(steps, 0.2, atol=1e-9)
