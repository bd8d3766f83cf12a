"""Separate per-driver NUTS fits compiled once (carpool.inference.separate)."""

import numpy as np
import pytest

import carpool
from carpool.testing import simulate_drivers

SAMPLER = carpool.NutsSettings(chains=2, warmup=250, draws=250, seed=3)


@pytest.fixture(scope="module")
def drivers():
    return simulate_drivers(3, duration_s=24.0, rng_seed=5)


@pytest.fixture(scope="module")
def loop_fit(drivers):
    df, _ = drivers
    return carpool.fit_separately(df, "idm", sampler=SAMPLER)


def test_recovers_each_drivers_parameters_and_noise(drivers, loop_fit):
    _, truth = drivers
    post = loop_fit.idata.posterior
    theta = post["theta"].values.reshape(-1, 3, 5)
    # s0, T, a, b are identified by 120 steps of stop-and-go (v0 is not: congested data);
    # |z| < 4 over 12 checks fails with probability < 0.1% for a calibrated posterior,
    # while a wrong driver index or unit (e.g. theta of another driver) gives |z| >> 4
    z = (theta.mean(0)[:, 1:] - truth.to_numpy()[:, 1:]) / theta.std(0)[:, 1:]
    assert np.all(np.abs(z) < 4.0), z
    sigma = post["sigma"].values.reshape(-1, 3)
    assert np.all(np.abs(sigma.mean(0) - 0.1) < 4 * sigma.std(0))  # simulated 0.1 m/s^2
    d = loop_fit.diagnostics()
    # 2 x 250 draws: the weakly identified v0 alone reaches R-hat ~1.06; a stuck chain or a
    # chain of another driver gives >> 1.1
    assert d["max_rhat"] < 1.1 and d["divergences"] == 0


def test_vmap_strategy_gives_the_same_draws(drivers, loop_fit):
    # each driver's keys are folded from (seed, driver): batching must not change a draw
    df, _ = drivers
    vm = carpool.fit_separately(df, "idm", strategy="vmap", sampler=SAMPLER)
    np.testing.assert_allclose(vm.idata.posterior["theta"].values,
                               loop_fit.idata.posterior["theta"].values, rtol=1e-5)


def test_save_load_round_trip(tmp_path, loop_fit):
    path = loop_fit.save(tmp_path / "each.nc")
    back = carpool.load_separate(path)
    assert back.group_ids == loop_fit.group_ids
    np.testing.assert_array_equal(back.idata.posterior["theta"].values,
                                  loop_fit.idata.posterior["theta"].values)
    assert back.timing["strategy"] == "loop"
    assert "theta[d00, v0]" in back.summary().index


def test_bad_options_raise(drivers):
    df, _ = drivers
    with pytest.raises(ValueError, match="unknown strategy"):
        carpool.fit_separately(df, "idm", strategy="threads")
    with pytest.raises(ValueError, match="i.i.d. residuals only"):
        carpool.fit_separately(df, "idm", model_options={"residual": "ar1"})
    with pytest.raises(ValueError, match="draws must be positive"):
        carpool.fit_separately(df, "idm", sampler=carpool.NutsSettings(draws=0))
    with pytest.raises(ValueError, match="give NutsSettings"):
        carpool.fit_separately(df, "idm", sampler=carpool.SviSettings())


def test_drivers_per_call():
    # "vmap" takes VMAP_BATCH (64) drivers per call unless told, at most all of them,
    # rounded up to the devices; "loop" one per device; a batch size below 1 is named
    from carpool.inference.separate import VMAP_BATCH, drivers_per_call

    assert drivers_per_call("vmap", None, 1000, 2) == VMAP_BATCH == 64
    assert drivers_per_call("vmap", None, 3, 2) == 4  # 3 drivers -> one call of 2 x 2
    assert drivers_per_call("vmap", 5, 1000, 2) == 6
    assert drivers_per_call("loop", None, 1000, 2) == 2
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        drivers_per_call("vmap", 0, 10, 2)
