"""Batches with engine "separate": groups of one-driver units per task through
carpool.fit_separately (one compilation per worker), each driver saved to its own file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import carpool
from carpool.batch import FitRequest, Manifest, check_result, fit_batch, split_table
from carpool.cli import app
from carpool.inference.integrity import FitFileError
from carpool.inference.separate import SeparateFits
from carpool.testing import simulate_drivers

SAMPLER = carpool.NutsSettings(chains=2, warmup=60, draws=60, seed=4)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """Three simulated drivers plus one whose gap goes negative at one row."""
    df, _ = simulate_drivers(3, duration_s=10.0, rng_seed=8)
    bad = df[df["driver"] == df["driver"].iloc[0]].copy()
    bad["driver"] = "zz-bad"
    bad.loc[bad.index[4], "gap"] = -2.0
    return pd.concat([df, bad], ignore_index=True)


@pytest.fixture(scope="module")
def batch(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("separate")
    result = fit_batch(split_table(table, "driver"), "idm", out, pooling="unpooled",
                       executor=0, sampler=SAMPLER, engine="separate",
                       drivers_per_task=2)
    return result, out


def test_each_driver_is_saved_alone_and_a_bad_unit_fails_alone(batch, table):
    result, _ = batch
    assert result.failed.keys() == {"zz-bad"}
    error = result.failed["zz-bad"]
    assert "DataError" in error and "gap" in error and "\n" not in error
    good = sorted(set(table["driver"]) - {"zz-bad"})
    for driver in good:
        record = result.manifest.units[driver]
        assert record["status"] == "done" and record["groups"] == 1
        assert record["task_units"] == 2 and record["observations"] > 40
        fit = result.load(driver)
        assert isinstance(fit, SeparateFits) and fit.group_ids == (driver,)
    assert result.manifest.request["engine"] == "separate"


def test_a_drivers_draws_do_not_depend_on_its_task(batch, table):
    # keys are folded from (seed, driver id) and the series padded to the same multiple,
    # so the driver fitted in a group of two equals the driver fitted on its own
    result, _ = batch
    driver = sorted(set(table["driver"]) - {"zz-bad"})[-1]
    alone = carpool.fit_separately(table[table["driver"] == driver], "idm",
                                   pad_multiple=32, sampler=SAMPLER)
    np.testing.assert_allclose(result.load(driver).idata.posterior["theta"].values,
                               alone.idata.posterior["theta"].values, rtol=1e-6)


def test_resume_reuses_the_fits_and_refits_a_tampered_one(batch, table, tmp_path):
    result, out = batch
    driver = sorted(set(table["driver"]) - {"zz-bad"})[0]
    path = result.path(driver)
    fits = carpool.load_separate(path)
    fits.idata.posterior["theta"].values[0, 0, 0, 0] += 1.0  # an edit after saving
    tampered = tmp_path / "tampered.nc"
    fits.idata.to_netcdf(str(tampered))
    with pytest.raises(FitFileError, match="posterior draws"):
        carpool.load_separate(tampered)
    unit = next(u for u in split_table(table, "driver") if u.name == driver)
    request = FitRequest("idm", "unpooled", SAMPLER, engine="separate")
    assert check_result(path, unit, request) is None
    # the same driver fitted by engine "fit" is another request: never reused
    assert check_result(path, unit, FitRequest("idm", "unpooled", SAMPLER)) is not None
    tampered.replace(path)
    assert "unreadable" in check_result(path, unit, request)
    again = fit_batch(split_table(table, "driver"), "idm", out, pooling="unpooled",
                      executor=0, sampler=SAMPLER, engine="separate")
    units = again.manifest.units
    assert not units[driver]["reused"] and units[driver]["status"] == "done"
    assert sum(r["reused"] for r in units.values()) == 2  # the two untouched drivers
    assert carpool.load_separate(path).group_ids == (driver,)


def test_one_program_serves_every_task_of_a_worker(table):
    from carpool.inference import separate

    separate._PROGRAMS.clear()
    one = table[table["driver"] != "zz-bad"]
    for driver in sorted(set(one["driver"]))[:2]:
        carpool.fit_separately(one[one["driver"] == driver], "idm", pad_multiple=32,
                               sampler=carpool.NutsSettings(chains=1, warmup=5, draws=5))
    (program, _), = separate._PROGRAMS.values()
    assert program._cache_size() == 1  # the second driver reused the compiled sampler


def test_separate_requests_that_cannot_be_fitted_are_refused(table, tmp_path):
    units = split_table(table, "driver")
    with pytest.raises(ValueError, match="unpooled"):
        fit_batch(units, "idm", tmp_path, pooling="hierarchical", by="recording",
                  executor=0, engine="separate")
    with pytest.raises(ValueError, match="i.i.d. residuals only"):
        fit_batch(units, "idm", tmp_path, pooling="unpooled", executor=0,
                  engine="separate", model_options={"residual": "ar1"})
    with pytest.raises(ValueError, match="a level does not apply"):
        fit_batch(units, "idm", tmp_path, pooling="unpooled", executor=0,
                  engine="separate", level="class")
    with pytest.raises(ValueError, match="samples with NUTS"):
        fit_batch(units, "idm", tmp_path, pooling="unpooled", executor=0,
                  engine="separate", sampler=carpool.SviSettings())
    with pytest.raises(ValueError, match="unknown engine"):
        FitRequest("idm", "unpooled", engine="threads")


def test_cli_engine_separate(table, tmp_path):
    data = tmp_path / "d.csv"
    table[table["driver"] != "zz-bad"].to_csv(data, index=False)
    runner = CliRunner()
    args = ["batch", "fit", str(data), "--out", str(tmp_path / "o"), "--pooling", "unpooled",
            "--engine", "separate", "--chains", "1", "--warmup", "20", "--draws", "20",
            "--local-workers", "0", "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert {u["status"] for u in manifest["units"].values()} == {"done"}
    assert Manifest.read(tmp_path / "o" / "manifest.json").summary()["done"] == 3
    r = runner.invoke(app, [*args, "--level", "class"])
    assert r.exit_code == 2 and "--level" in r.output and "Traceback" not in r.output
