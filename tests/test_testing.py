"""Tests of the synthetic data generators (carpool.testing).

Statistical checks use a fixed seed and z-scores: with ``n`` i.i.d. standard normals the
sample mean has standard error ``1 / sqrt(n)`` and the sample variance ``sqrt(2 / n)``; we
require ``|z| < 4`` (a false alarm has probability about 6e-5 per check for a correct
generator).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import carpool.carfollowing as cf
from carpool.testing import simulate_drivers, simulate_linear_groups

Z_MAX = 4.0


@pytest.fixture(scope="module")
def idm_data():
    return simulate_drivers(20, rng_seed=7)


def test_format_and_truth_table(idm_data):
    df, truth = idm_data
    assert list(df.columns) == ["driver", "time", "speed", "gap", "leader_speed"]
    assert len(df) == 20 * 201  # 40 s at 0.2 s, both ends included
    assert df["driver"].map(type).eq(str).all()
    assert df[["time", "speed", "gap", "leader_speed"]].dtypes.eq(np.float64).all()
    assert (df["speed"] >= 0).all() and (df["gap"] > 0).all()
    assert (df["leader_speed"] >= 0).all() and (df["leader_speed"] <= 16.0).all()
    assert truth.index.name == "driver" and list(truth.index) == sorted(df["driver"].unique())
    assert list(truth.columns) == cf.IDM.parameter_names
    # the leaders make the followers brake, accelerate and queue
    accel = df.groupby("driver")["speed"].diff() / 0.2
    assert accel.min() < -1.0 and accel.max() > 0.5
    assert (df["gap"] < 5.0).any()


def test_matches_the_trajectory_schema(idm_data):
    schema = pytest.importorskip("carpool.data.schema")
    df, _ = idm_data
    checked = schema.validate_trajectories(df)
    pd.testing.assert_frame_equal(checked, df)


def test_reproducible_with_the_same_seed():
    # (3 drivers, 10 s) as in the docstring example: the compiled simulator is reused
    a, truth_a = simulate_drivers(3, duration_s=10.0, rng_seed=11)
    b, truth_b = simulate_drivers(3, duration_s=10.0, rng_seed=11)
    c, truth_c = simulate_drivers(3, duration_s=10.0, rng_seed=12)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(truth_a, truth_b)
    assert not np.allclose(truth_a.to_numpy(), truth_c.to_numpy())


def test_one_step_residuals_have_the_stated_sd(idm_data):
    df, truth = idm_data
    noise_sd, dt = 0.1, 0.2  # the defaults
    wide = {c: df.pivot(index="driver", columns="time", values=c).to_numpy()
            for c in ("speed", "gap", "leader_speed")}
    params = {n: jnp.asarray(truth[n].to_numpy()[:, None], jnp.float32) for n in truth.columns}
    v, s, vl = (jnp.asarray(wide[c][:, :-1], jnp.float32) for c in ("speed", "gap",
                                                                     "leader_speed"))
    acc = np.asarray(cf.IDM.acceleration(params, v, s, vl), np.float64)
    next_speed = wide["speed"][:, 1:]
    z = (next_speed - wide["speed"][:, :-1] - acc * dt) / (noise_sd * dt)
    z = z[next_speed > 0]  # steps clipped at 0 are not Gaussian (documented)
    n = z.size
    assert n > 0.95 * 20 * 200
    assert abs(z.mean()) * np.sqrt(n) < Z_MAX
    assert abs(z.var() - 1.0) / np.sqrt(2.0 / n) < Z_MAX
    # and independent across steps: lag-1 autocorrelation has standard error 1 / sqrt(n)
    zz = ((next_speed - wide["speed"][:, :-1] - acc * dt) / (noise_sd * dt))
    ok = (next_speed[:, 1:] > 0) & (next_speed[:, :-1] > 0)
    lag1 = np.mean((zz[:, 1:] * zz[:, :-1])[ok])
    assert abs(lag1) * np.sqrt(ok.sum()) < Z_MAX


def test_population_mean_sd_and_classes():
    df, truth = simulate_drivers(
        3, duration_s=10.0, population_mean={"v0": 25.0}, population_sd_log=0.0,
        classes={"car": {}, "truck": {"T": 2.0, "a": 0.8}}, rng_seed=3,
    )
    assert list(df.columns)[-1] == "class" and set(df["class"]) == {"car", "truck"}
    assert list(truth["class"]) == ["car", "truck", "car"]
    expected_car = {**cf.IDM.reference_params(), "v0": 25.0}
    for driver, row in truth.iterrows():
        expected = {**expected_car, **({"T": 2.0, "a": 0.8} if row["class"] == "truck" else {})}
        for name, value in expected.items():
            assert row[name] == pytest.approx(value), (driver, name)
        assert (df.loc[df["driver"] == driver, "class"] == row["class"]).all()


def test_population_sd_log_is_applied():
    # log(theta_i / mean) ~ N(0, sd^2): with 200 draws the sample sd has standard error
    # about sd / sqrt(2 * 200) (normal approximation).
    _, truth = simulate_drivers(200, duration_s=1.0, population_sd_log={"T": 0.3},
                                rng_seed=5)
    log_ratio = np.log(truth["T"] / cf.IDM.reference_params()["T"])
    assert abs(log_ratio.std() - 0.3) / (0.3 / np.sqrt(400)) < Z_MAX
    log_ratio = np.log(truth["a"] / cf.IDM.reference_params()["a"])  # default 0.15
    assert abs(log_ratio.std() - 0.15) / (0.15 / np.sqrt(400)) < Z_MAX


@pytest.mark.parametrize("model", ["gipps", "fvdm"])
def test_other_models_simulate(model):
    df, truth = simulate_drivers(5, model=model, duration_s=20.0, rng_seed=2)
    assert list(truth.columns) == cf.get_model(model).parameter_names
    assert (df["gap"] > 0).all() and (df["speed"] >= 0).all()


def test_simulate_drivers_errors():
    with pytest.raises(KeyError, match="unknown parameters"):
        simulate_drivers(2, population_mean={"vmax": 30.0})
    with pytest.raises(KeyError, match="unknown car-following model"):
        simulate_drivers(2, model="nope")
    with pytest.raises(ValueError, match="num_drivers"):
        simulate_drivers(0)


def test_linear_groups_truth_and_noise():
    data, truth = simulate_linear_groups(400, [30] * 400, intercept_mean=1.0, intercept_sd=0.5,
                                         slope_mean=-0.5, slope_sd=0.3, correlation=0.6,
                                         noise_sd=0.5, rng_seed=1)
    assert list(data.columns) == ["group", "x", "y"] and len(data) == 12000
    assert truth.index.name == "group" and list(truth.columns) == ["intercept", "slope"]
    # population moments of the 400 groups (z-scores with standard errors sd / sqrt(400) and,
    # for the correlation, Fisher's 1 / sqrt(400 - 3))
    assert abs(truth["intercept"].mean() - 1.0) / (0.5 / 20) < Z_MAX
    assert abs(truth["slope"].mean() + 0.5) / (0.3 / 20) < Z_MAX
    r = np.corrcoef(truth["intercept"], truth["slope"])[0, 1]
    assert abs(np.arctanh(r) - np.arctanh(0.6)) * np.sqrt(397) < Z_MAX
    # residuals from the true lines have sd 0.5 (sample-variance z-score)
    joined = data.join(truth, on="group")
    resid = (joined["y"] - joined["intercept"] - joined["slope"] * joined["x"]) / 0.5
    assert abs(resid.var() - 1.0) / np.sqrt(2 / len(resid)) < Z_MAX


def test_linear_groups_reproducible_and_unbalanced():
    a = simulate_linear_groups(3, [2, 5, 0], rng_seed=4)
    b = simulate_linear_groups(3, [2, 5, 0], rng_seed=4)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert a[0].groupby("group").size().to_dict() == {"g00": 2, "g01": 5}
    assert len(a[1]) == 3
    with pytest.raises(ValueError, match="entries"):
        simulate_linear_groups(3, [2, 5])


def test_docstring_examples_run():
    import doctest

    import carpool.testing

    result = doctest.testmod(carpool.testing)
    assert result.attempted > 0 and result.failed == 0
