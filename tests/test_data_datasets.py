"""Bundled example data and the public surface of carpool.data."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import carpool.data
from carpool.data import example_path, list_examples, load_example, validate_trajectories
from carpool.data.datasets import build_usdot_platoon

#: The original 10 Hz USDOT file, vendored with its attribution (tests/data/README.md).
SOURCE = Path(__file__).resolve().parent / "data" / "trajectories" / "usdot_acc_platoon_10hz.csv"


def test_list_and_path() -> None:
    assert list_examples() == ["ngsim-i80", "ngsim-i80-10hz", "usdot-platoon"]
    path = example_path("usdot-platoon")
    assert path.is_file() and path.suffix == ".csv"
    readme = path.with_name("README.md").read_text()
    for fact in (
        "usdot-fhwa-stol/To-21-426-multivariate-piecewise-linear-ACC-car-following-model",
        "11b7f2319fc55c8c680bde54dedc298f57eb0b1f",
        "AV model funtion/MPL Modeling methodology/data_example.csv",
        "CC0 1.0",
        "U.S. DOT FHWA",
    ):
        assert fact in readme
    with pytest.raises(ValueError, match="unknown example 'ngsim'.*usdot-platoon"):
        example_path("ngsim")


def test_ngsim_is_the_documented_file_with_its_attribution() -> None:
    path = example_path("ngsim-i80")
    assert path == example_path("ngsim-i80-10hz")
    readme = path.with_name("README.md").read_text()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == "f3a86f4395d6e5e298f033c45c6e2049c138f868e30e7a54b993e9030ad684b3"
    for fact in (digest, "U.S. DOT FHWA", "a work of the U.S. federal government",
                 "Shuoxuan/NGSIM_Cleaned_Dataset", "durraniu/R_workshop_materials_NGSIM_data",
                 "cc1d26429f15d150b7ee909b0d49bed1f17e3bd7"):
        assert fact in readme


def test_ngsim_at_5_hz_is_every_second_sample_of_each_driver() -> None:
    full = load_example("ngsim-i80-10hz")
    df = load_example()  # the default example: human drivers at 5 Hz
    pd.testing.assert_frame_equal(df, validate_trajectories(df))
    assert len(full) == 41159 and len(df) == 20598
    assert df["driver"].nunique() == full["driver"].nunique() == 76
    np.testing.assert_allclose(df.groupby("driver")["time"].diff().dropna(), 0.2, atol=1e-6)
    first = full.groupby("driver")["time"].min()
    np.testing.assert_allclose(df.groupby("driver")["time"].min(), first, atol=1e-9)
    merged = df.merge(full, on=["driver", "time"], suffixes=("", "_10hz"))
    assert len(merged) == len(df)
    np.testing.assert_array_equal(merged["speed"], merged["speed_10hz"])
    # congested human drivers: every one drops below 5 m/s; one truck
    assert (df.groupby("driver")["speed"].min() < 5.0).all()
    assert df.groupby("driver")["class"].first().value_counts().to_dict() == {"car": 75,
                                                                               "truck": 1}


def test_load_example_is_valid_carpool_data() -> None:
    df = load_example("usdot-platoon")
    pd.testing.assert_frame_equal(df, validate_trajectories(df))
    assert sorted(df["driver"].unique()) == ["veh2", "veh3", "veh4", "veh5"]
    assert (df.groupby("driver").size() == 9920).all()
    steps = df.groupby("driver")["time"].diff().dropna()
    np.testing.assert_allclose(steps, 0.2, atol=1e-9)
    assert df["gap"].min() > 2.0 and df["speed"].max() < 26.0


def test_load_example_subset() -> None:
    df = load_example("usdot-platoon", drivers=["veh3", "veh5"], max_duration_s=2.0)
    assert df["driver"].unique().tolist() == ["veh3", "veh5"]
    assert (df.groupby("driver").size() == 11).all()  # 1.0 s .. 3.0 s at 5 Hz
    with pytest.raises(ValueError, match="no driver"):
        load_example("usdot-platoon", drivers=["veh1"])


def test_bundled_file_is_reproducible_from_the_source() -> None:
    rebuilt = build_usdot_platoon(SOURCE)
    bundled = load_example("usdot-platoon")
    pd.testing.assert_frame_equal(rebuilt, bundled, check_exact=False, atol=1e-9, rtol=0)


def test_public_names() -> None:
    assert set(carpool.data.__all__) >= {
        "read_trajectories",
        "validate_trajectories",
        "one_step_pairs",
        "to_padded",
        "DataError",
        "load_example",
        "example_path",
        "list_examples",
    }
    assert issubclass(carpool.data.DataError, ValueError)


def test_import_is_light() -> None:
    src = Path(carpool.data.__file__).resolve().parents[2]
    code = (
        "import sys, carpool.data; "
        "heavy = [m for m in ('jax', 'numpyro', 'arviz', 'matplotlib') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(src), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"importing carpool.data loaded {result.stdout.strip()}"
