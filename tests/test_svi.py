"""SVI (``carpool.fit(..., sampler=carpool.SviSettings())``): recovery, minibatching, save /
load, errors.

Sizes are small (linear model, a few IDM drivers) so the file stays well under a minute on
two cores; the accuracy against NUTS at realistic sizes is measured by
``benchmarks/svi_vs_nuts.py`` (see ``docs/svi.md``).
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import carpool
from carpool.testing import simulate_drivers, simulate_linear_groups

LINEAR = dict(num_groups=30, num_obs_per_group=20, intercept_mean=1.0, intercept_sd=0.5,
              slope_mean=-0.5, slope_sd=0.3, noise_sd=0.5)


@pytest.fixture(scope="module")
def linear_data():
    return simulate_linear_groups(rng_seed=11, **LINEAR)


@pytest.fixture(scope="module")
def linear_svi(linear_data):
    data, _ = linear_data
    # 3,000 steps: this fit is the reference of the minibatch test; at 1,500 the slope's
    # population mean was still 0.29-0.44 NUTS sds from NUTS's, at 3,000 within 0.2
    return carpool.fit(data, "linear", pooling=carpool.PoolingConfig(correlated=False),
                       sampler=carpool.SviSettings(num_steps=3000, draws=400, seed=1),
                       warn=False)


@pytest.fixture(scope="module")
def idm_svi():
    df, truth = simulate_drivers(4, duration_s=12.0, rng_seed=2)
    return carpool.fit(df, "idm", sampler=carpool.SviSettings(num_steps=300, draws=200),
                       warn=False), truth


def test_recovers_the_population_mean(linear_svi):
    # 30 groups: the population mean's posterior sd is about sd_between / sqrt(30) (~0.09
    # for the intercept); the truth must lie within 3 posterior sds (a 0.3% miss for an
    # exact posterior; SVI's sds are if anything too small, which makes the test harder)
    post = linear_svi.idata.posterior
    mean = post["population"].mean(("chain", "draw")).values
    sd = post["population"].std(("chain", "draw")).values
    z = (mean - np.array([LINEAR["intercept_mean"], LINEAR["slope_mean"]])) / sd
    assert np.all(np.abs(z) < 3), z
    # and tau is of the right size (true 0.5, 0.3): within a factor of 2
    tau = post["tau"].mean(("chain", "draw")).values
    assert np.all((tau > 0.5 * np.array([0.5, 0.3])) & (tau < 2 * np.array([0.5, 0.3]))), tau


def test_group_intervals_cover_the_truth(linear_svi, linear_data):
    # 60 group parameters, 90% intervals: an exact posterior covers ~54 (binomial sd 2.3);
    # fewer than 45 (4 sds short) means the approximation is far too narrow
    _, truth = linear_data
    th = linear_svi.theta_draws()
    lo, hi = np.quantile(th, [0.05, 0.95], axis=0)
    covered = ((truth.values >= lo) & (truth.values <= hi)).sum()
    assert covered >= 45, covered


def test_minibatches_agree_with_full_batch(linear_data, linear_svi):
    # batches of 10 of the 30 groups: the same optimum in expectation; the population means
    # must agree within 0.5 posterior sd (the minibatch noise of the final iterate at this
    # learning-rate decay is ~0.1-0.2 sd, measured over seeds)
    data, _ = linear_data
    mini = carpool.fit(data, "linear", pooling=carpool.PoolingConfig(correlated=False),
                       sampler=carpool.SviSettings(num_steps=3000, batch_size=10, draws=400,
                                                   seed=2), warn=False)
    assert mini.idata["svi_loss"].attrs["batch_size"] == 10
    full = linear_svi.idata.posterior["population"]
    sd = full.std(("chain", "draw")).values
    diff = (mini.idata.posterior["population"].mean(("chain", "draw")).values
            - full.mean(("chain", "draw")).values)
    assert np.all(np.abs(diff) < 0.5 * sd), diff / sd


@pytest.mark.slow  # two more compilations (~60 s); the modes' model code is shared
@pytest.mark.parametrize("pooling", ["pooled", "unpooled"])
def test_pooled_and_unpooled(linear_data, pooling):
    data, truth = linear_data
    f = carpool.fit(data, "linear", pooling=pooling, warn=False,
                    sampler=carpool.SviSettings(num_steps=800, draws=200, batch_size=15))
    th = f.idata.posterior["theta"]
    expected_dims = ("chain", "draw", "parameter") if pooling == "pooled" else \
        ("chain", "draw", "group", "parameter")
    assert th.dims == expected_dims
    if pooling == "pooled":  # the shared value sits near the mean of the groups
        assert np.all(np.abs(th.mean(("chain", "draw")).values - truth.values.mean(0)) < 0.3)


def test_fit_is_marked_approximate_and_round_trips(idm_svi, tmp_path):
    fit, truth = idm_svi
    assert fit.is_approximate and fit.method == "svi"
    assert "sample_stats" not in fit.idata.groups()
    assert fit.diagnostics["note"] == "approximate fit: no R-hat/ESS"
    assert np.isnan(fit.diagnostics["max_rhat"])
    table = fit.summary()
    assert table["r_hat"].isna().all() and table["ess_bulk"].isna().all()
    assert set(table.kind) >= {"population", "population_scale", "group", "noise"}
    assert fit.idata.posterior["theta"].shape[-2:] == (4, 5)
    path = fit.save(tmp_path / "svi.nc")
    back = carpool.load(path)
    assert back.is_approximate and back.settings["guide"] == "structured"
    np.testing.assert_array_equal(back.idata.posterior["theta"].values,
                                  fit.idata.posterior["theta"].values)
    np.testing.assert_array_equal(back.idata["svi_loss"]["loss"].values,
                                  fit.idata["svi_loss"]["loss"].values)
    assert back.diagnostics["final_loss"] == pytest.approx(fit.diagnostics["final_loss"])


@pytest.mark.parametrize(("kwargs", "message"), [
    (lambda: {"sampler": "svi"}, "sampler must be NutsSettings or SviSettings"),
    (lambda: {"sampler": carpool.SviSettings(guide="full")}, "unknown guide 'full'"),
    (lambda: {"sampler": carpool.SviSettings(batch_size=0)},
     "batch_size must be a positive integer"),
    (lambda: {"sampler": carpool.SviSettings(learning_rate=-1.0)},
     "learning_rate must be positive"),
    (lambda: {"sampler": carpool.SviSettings(), "model_options": {"residual": "ar1"}},
     "ar1 residuals need NUTS"),
])
def test_bad_options_raise_one_line(kwargs, message):
    df, _ = simulate_drivers(2, duration_s=4.0, rng_seed=0)
    with pytest.raises(ValueError, match=message) as info:
        carpool.fit(df, "idm", warn=False, **kwargs())
    assert "\n" not in str(info.value)


def test_cli_svi_options_need_method_svi(tmp_path):
    from carpool.cli import app

    df, _ = simulate_drivers(2, duration_s=4.0, rng_seed=0)
    csv = tmp_path / "drivers.csv"
    df.to_csv(csv, index=False)
    r = CliRunner().invoke(app, ["fit", str(csv), "--out", str(tmp_path / "f.nc"),
                                 "--steps", "10", "--guide", "meanfield"])
    assert r.exit_code == 2 and "--steps, --guide apply to --method svi only" in r.output


def test_cli_fit_with_svi(tmp_path, idm_svi):
    from carpool.cli import app

    df, _ = simulate_drivers(3, duration_s=8.0, rng_seed=4)
    csv = tmp_path / "drivers.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "fit.nc"
    runner = CliRunner()
    r = runner.invoke(app, ["fit", str(csv), "--out", str(out), "--method", "svi",
                            "--steps", "100", "--draws", "50", "--no-progress"],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "approximate fit: no R-hat/ESS" in r.output
    assert carpool.load(out).is_approximate
    r = runner.invoke(app, ["summary", str(out)], catch_exceptions=False)
    assert r.exit_code == 0 and "approximate fit" in r.output
