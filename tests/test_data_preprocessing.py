"""one_step_pairs and to_padded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carpool.data import DataError, one_step_pairs, to_padded, validate_trajectories


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(42)
    lengths = {"a": 4, "b": 2, "c": 6}
    rows = []
    for driver, n in lengths.items():
        for k in range(n):
            rows.append(
                {
                    "driver": driver,
                    "time": 10.0 + 0.2 * k,
                    "speed": rng.uniform(5, 15),
                    "gap": rng.uniform(5, 30),
                    "leader_speed": rng.uniform(5, 15),
                    "class": "truck" if driver == "b" else "car",
                }
            )
    return validate_trajectories(pd.DataFrame(rows), min_observations=2)


def test_one_step_pairs_never_cross_drivers(table: pd.DataFrame) -> None:
    pairs = one_step_pairs(table)
    assert len(pairs) == (4 - 1) + (2 - 1) + (6 - 1)
    assert list(pairs.columns) == [
        "driver", "time", "speed", "gap", "leader_speed", "dt", "next_speed", "next_gap",
        "next_leader_speed", "class",
    ]  # fmt: skip
    for driver, group in table.groupby("driver"):
        got = pairs.loc[pairs.driver == driver]
        np.testing.assert_allclose(got["time"], group["time"].iloc[:-1])
        np.testing.assert_allclose(got["speed"], group["speed"].iloc[:-1])
        np.testing.assert_allclose(got["next_speed"], group["speed"].iloc[1:])
        np.testing.assert_allclose(got["gap"], group["gap"].iloc[:-1])
        np.testing.assert_allclose(got["next_gap"], group["gap"].iloc[1:])
        np.testing.assert_allclose(got["next_leader_speed"], group["leader_speed"].iloc[1:])
        np.testing.assert_allclose(got["dt"], 0.2)
    # the last observation of 'a' never pairs with the first of 'b'
    last_a = table.loc[table.driver == "a", "time"].max()
    assert last_a not in pairs.loc[pairs.driver == "a", "time"].to_numpy()
    assert pairs["driver"].tolist() == ["a"] * 3 + ["b"] + ["c"] * 5  # input order kept
    assert pairs.groupby("driver")["class"].first().to_dict() == {
        "a": "car", "b": "truck", "c": "car",
    }  # fmt: skip


def test_one_step_pairs_without_class_and_unvalidated_input() -> None:
    df = pd.DataFrame(
        {
            "driver": ["x", "x", "y"],
            "time": [0.0, 0.1, 0.0],
            "speed": [1.0, 2.0, 3.0],
            "gap": [4.0, 5.0, 6.0],
            "leader_speed": [1.0, 1.0, 1.0],
        }
    )
    pairs = one_step_pairs(df)
    assert "class" not in pairs.columns
    assert pairs[["speed", "next_speed", "dt"]].to_numpy().tolist() == [[1.0, 2.0, 0.1]]
    with pytest.raises(DataError, match="time does not increase"):
        one_step_pairs(df.iloc[[1, 0, 2]])
    with pytest.raises(DataError, match="missing column 'gap'"):
        one_step_pairs(df.drop(columns="gap"))


def test_to_padded_values_and_mask(table: pd.DataFrame) -> None:
    arrays, mask, driver_ids = to_padded(table, ["gap", "speed", "time"])
    assert driver_ids == ["a", "b", "c"]
    assert mask.shape == (3, 6) and mask.dtype == bool
    assert mask.sum(axis=1).tolist() == [4, 2, 6]
    assert mask[1].tolist() == [True, True, False, False, False, False]
    for name in ("gap", "speed", "time"):
        assert arrays[name].shape == (3, 6)
        assert np.isfinite(arrays[name]).all()
    gap_b = table.loc[table.driver == "b", "gap"].to_numpy()
    np.testing.assert_array_equal(arrays["gap"][1, :2], gap_b)
    # padding repeats the last valid value, never 0 or NaN
    np.testing.assert_array_equal(arrays["gap"][1, 2:], gap_b[-1])
    gap_a = table.loc[table.driver == "a", "gap"].to_numpy()
    np.testing.assert_array_equal(arrays["gap"][0], np.r_[gap_a, gap_a[-1], gap_a[-1]])
    assert (arrays["gap"] > 0).all()
    np.testing.assert_array_equal(
        arrays["speed"][2], table.loc[table.driver == "c", "speed"].to_numpy()
    )


def test_to_padded_single_column_and_pairs(table: pd.DataFrame) -> None:
    padded = to_padded(one_step_pairs(table), "dt")
    assert padded.mask.sum() == 9
    np.testing.assert_allclose(padded.arrays["dt"], 0.2)


def test_to_padded_rejects_bad_input(table: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="not numeric"):
        to_padded(table, "class")
    with pytest.raises(DataError, match="not contiguous"):
        to_padded(table.iloc[[0, 5, 1]], "gap")
    with pytest.raises(DataError, match="empty"):
        to_padded(table.iloc[:0], "gap")
