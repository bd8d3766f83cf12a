"""Validation of the carpool trajectory format: one test per violation, mapping, resampling."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from carpool.data import DataError, validate_trajectories


def make_table(num_drivers: int = 2, n: int = 5, dt: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Valid table: drivers 'A0', 'A1', ... with ``n`` rows each, interleaved by time."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        for d in range(num_drivers):
            rows.append(
                {
                    "driver": f"A{d}",
                    "time": k * dt,
                    "speed": 10.0 + rng.uniform(0, 1),
                    "gap": 20.0 + rng.uniform(0, 1),
                    "leader_speed": 10.0 + rng.uniform(0, 1),
                }
            )
    return pd.DataFrame(rows)


def test_valid_table_is_sorted_copy_with_str_driver() -> None:
    raw = make_table()
    out = validate_trajectories(raw)
    assert list(out.columns) == ["driver", "time", "speed", "gap", "leader_speed"]
    assert out["driver"].tolist() == ["A0"] * 5 + ["A1"] * 5
    assert out.groupby("driver")["time"].apply(lambda t: t.is_monotonic_increasing).all()
    assert out is not raw and len(raw) == 10  # input untouched
    np.testing.assert_allclose(
        out.loc[out.driver == "A1", "gap"], raw.loc[raw.driver == "A1", "gap"]
    )


def test_integer_driver_ids_become_strings_and_extra_columns_are_dropped() -> None:
    raw = make_table().assign(driver=lambda d: d["driver"].str[1:].astype(int), lane=1)
    out = validate_trajectories(raw)
    assert set(out["driver"]) == {"0", "1"}
    assert all(isinstance(d, str) for d in out["driver"])
    assert "lane" not in out.columns


def test_class_column_is_kept() -> None:
    raw = make_table().assign(**{"class": lambda d: np.where(d.driver == "A0", "car", "truck")})
    out = validate_trajectories(raw)
    assert out.groupby("driver")["class"].first().to_dict() == {"A0": "car", "A1": "truck"}


# --- one test per violation -------------------------------------------------------------


def test_missing_required_column_is_named_and_present_columns_listed() -> None:
    raw = make_table().drop(columns="gap")
    with pytest.raises(DataError, match=r"missing required column 'gap'") as info:
        validate_trajectories(raw)
    message = str(info.value)
    assert "leader_speed" in message and "\n" not in message


def test_empty_table() -> None:
    raw = make_table().iloc[:0]
    with pytest.raises(DataError, match="empty"):
        validate_trajectories(raw)


def test_non_numeric_string_names_column_and_first_bad_row() -> None:
    raw = make_table().astype({"speed": object})
    raw.loc[3, "speed"] = "fast"
    raw.loc[7, "speed"] = "faster"
    with pytest.raises(DataError, match=r"row 3 \(0-based\), driver 'A1'.*'speed'.*'fast'"):
        validate_trajectories(raw)


def test_numeric_strings_are_accepted() -> None:
    raw = make_table().astype({"gap": str})
    out = validate_trajectories(raw)
    assert out["gap"].dtype == np.float64


@pytest.mark.parametrize("column", ["time", "speed", "gap", "leader_speed"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_in_numeric_column(column: str, value: float) -> None:
    raw = make_table()
    raw.loc[4, column] = value
    with pytest.raises(DataError, match=rf"row 4 \(0-based\), driver 'A0': {column} is"):
        validate_trajectories(raw)


@pytest.mark.parametrize("column", ["speed", "leader_speed"])
def test_negative_speed(column: str) -> None:
    raw = make_table()
    raw.loc[5, column] = -0.5
    with pytest.raises(DataError, match=rf"row 5 \(0-based\), driver 'A1': {column} -0.5 m/s"):
        validate_trajectories(raw)


def test_zero_speed_is_allowed() -> None:
    raw = make_table().assign(speed=0.0, leader_speed=0.0)
    assert (validate_trajectories(raw)["speed"] == 0).all()


@pytest.mark.parametrize("gap", [0.0, -0.4])
def test_gap_not_positive(gap: float) -> None:
    raw = make_table()
    raw.loc[7, "gap"] = gap
    pattern = rf"row 7 \(0-based\), driver 'A1': gap {gap:g} m is not positive"
    with pytest.raises(DataError, match=pattern):
        validate_trajectories(raw)


def test_duplicated_time_stamp_within_driver() -> None:
    raw = make_table()
    raw.loc[6, "time"] = raw.loc[4, "time"]  # both rows of driver A0
    with pytest.raises(DataError, match=r"row 6 \(0-based\), driver 'A0': duplicated time") as e:
        validate_trajectories(raw)
    assert "row 4" in str(e.value)


def test_same_time_in_two_drivers_is_fine() -> None:
    out = validate_trajectories(make_table())
    assert len(out) == 10


def test_non_uniform_time_step_names_expected_and_found_step() -> None:
    raw = make_table(num_drivers=1, n=6)
    raw.loc[4:, "time"] += 0.05  # step 3 -> 4 is 0.15 s instead of 0.1 s
    with pytest.raises(DataError) as info:
        validate_trajectories(raw)
    message = str(info.value)
    assert "row 4 (0-based), driver 'A0'" in message
    assert "non-uniform time step" in message
    assert "expected 0.1 s" in message and "found 0.15 s" in message


def test_tiny_float_jitter_is_uniform() -> None:
    raw = make_table(num_drivers=1, n=50)
    raw["time"] = 1000.0 + np.cumsum(np.full(50, 0.1))  # accumulated rounding error
    assert len(validate_trajectories(raw)) == 50


def test_driver_too_short() -> None:
    raw = make_table(num_drivers=2, n=5)
    raw = raw.drop(index=raw.index[(raw.driver == "A1") & (raw.time > 0.15)])
    with pytest.raises(DataError, match=r"driver 'A1': driver is too short: 2 observation"):
        validate_trajectories(raw)


def test_class_not_constant_within_driver() -> None:
    raw = make_table().assign(**{"class": "car"})
    raw.loc[9, "class"] = "truck"
    with pytest.raises(DataError, match=r"row 9 \(0-based\), driver 'A1': class changes"):
        validate_trajectories(raw)


def test_single_observation_per_driver() -> None:
    raw = make_table(num_drivers=3, n=1)
    with pytest.raises(DataError, match="too short: 1 observation"):
        validate_trajectories(raw)
    out = validate_trajectories(raw, min_observations=1)
    assert out["driver"].tolist() == ["A0", "A1", "A2"]


def test_row_is_position_in_unsorted_input() -> None:
    raw = make_table().sample(frac=1.0, random_state=1).reset_index(drop=True)
    position = int(np.flatnonzero(raw["driver"].eq("A1").to_numpy())[2])
    raw.loc[position, "gap"] = -1.0
    with pytest.raises(DataError, match=rf"row {position} \(0-based\), driver 'A1'"):
        validate_trajectories(raw)


def test_every_message_is_one_line() -> None:
    raw = make_table()
    raw.loc[0, "gap"] = -1.0
    with pytest.raises(DataError) as info:
        validate_trajectories(raw)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


# --- column mapping and resampling ------------------------------------------------------


def test_column_mapping() -> None:
    raw = make_table().rename(
        columns={"driver": "id", "time": "t", "speed": "v", "leader_speed": "v_lead"}
    )
    out = validate_trajectories(
        raw, columns={"id": "driver", "t": "time", "v": "speed", "v_lead": "leader_speed"}
    )
    assert list(out.columns) == ["driver", "time", "speed", "gap", "leader_speed"]
    assert len(out) == 10


def test_column_mapping_in_the_wrong_direction_gets_a_hint() -> None:
    raw = make_table().rename(columns={"speed": "v"})
    with pytest.raises(DataError, match=re.escape("{'v': 'speed'}")):
        validate_trajectories(raw, columns={"speed": "v"})


def test_resample_onto_median_step() -> None:
    raw = pd.DataFrame(
        {
            "driver": "B",
            "time": [0.0, 0.1, 0.2, 0.3, 0.5, 0.6],  # one missing sample at 0.4 s
            "speed": [1.0, 2.0, 3.0, 4.0, 6.0, 7.0],
            "gap": [10.0, 10.0, 10.0, 10.0, 12.0, 12.0],
            "leader_speed": 5.0,
        }
    )
    with pytest.raises(DataError, match="non-uniform"):
        validate_trajectories(raw)
    out = validate_trajectories(raw, resample=True)
    np.testing.assert_allclose(out["time"], np.arange(7) * 0.1, atol=1e-12)
    np.testing.assert_allclose(out["speed"], [1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_allclose(out["gap"], [10, 10, 10, 10, 11, 12, 12])
    np.testing.assert_allclose(out["leader_speed"], 5.0)


def test_resample_leaves_uniform_drivers_alone_and_keeps_order() -> None:
    good = make_table(num_drivers=2, n=5)
    bad = pd.DataFrame(
        {
            "driver": "A05",
            "time": [0.0, 0.2, 0.3, 0.4],
            "speed": 1.0,
            "gap": 2.0,
            "leader_speed": 1.0,
            "class": "car",
        }
    )
    raw = pd.concat([good.assign(**{"class": "car"}), bad], ignore_index=True)
    out = validate_trajectories(raw, resample=True)
    assert out["driver"].unique().tolist() == ["A0", "A05", "A1"]
    np.testing.assert_allclose(out.loc[out.driver == "A05", "time"], [0.0, 0.1, 0.2, 0.3, 0.4])
    pd.testing.assert_frame_equal(
        out.loc[out.driver == "A0"].reset_index(drop=True),
        validate_trajectories(raw.loc[raw.driver == "A0"]),
    )
    assert (out["class"] == "car").all()
