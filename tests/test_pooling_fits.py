"""Statistical tests of the three pooling modes on simulated grouped data with known truth.

Tolerances: posterior means of two fits of the same posterior are compared by z-scores built
from their Monte Carlo standard errors (|z| < 4.5: with ~20 compared quantities the chance of a
false alarm is below 1e-4); where the two posteriors differ by design (tau small vs pooled) the
bound adds the size of that difference, stated at the assertion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mc import z_means

import carpool

Z_MAX = 4.5


def simulate_linear(rng, num_groups=8, n=30, mu=(1.0, 0.5), tau=(0.8, 0.3), sigma=0.5):
    a = mu[0] + tau[0] * rng.standard_normal(num_groups)
    b = mu[1] + tau[1] * rng.standard_normal(num_groups)
    g = np.repeat(np.arange(num_groups), n)
    x = rng.uniform(-2, 2, size=g.size)
    y = a[g] + b[g] * x + sigma * rng.standard_normal(g.size)
    df = pd.DataFrame({"group": [f"g{i}" for i in g], "x": x, "y": y})
    truth = np.stack([a, b], axis=1)
    return df, truth


def fit(df, pooling="hierarchical", **config):
    """A linear fit (2 chains of 400 + 600); ``config``: PoolingConfig fields."""
    sampler = carpool.NutsSettings(chains=2, warmup=400, draws=600, seed=1)
    return carpool.fit(df, "linear", pooling=carpool.PoolingConfig(pooling, **config),
                       sampler=sampler)


@pytest.fixture(scope="module")
def linear_data():
    return simulate_linear(np.random.default_rng(7))


@pytest.fixture(scope="module")
def hier_fit(linear_data):
    return fit(linear_data[0], pooling="hierarchical")


@pytest.fixture(scope="module")
def pooled_fit(linear_data):
    return fit(linear_data[0], pooling="pooled")


@pytest.fixture(scope="module")
def unpooled_fit(linear_data):
    return fit(linear_data[0], pooling="unpooled")


def coverage(f, truth, hdi_prob=0.94):
    s = f.summary(hdi_prob)
    g = s[s.kind == "group"]
    lo, hi = g.filter(like="hdi_").to_numpy().T
    t = truth.reshape(-1)  # groups in order, parameters (intercept, slope) within
    return np.mean((t >= lo) & (t <= hi))


def test_hierarchical_recovers_groups_and_population(linear_data, hier_fit):
    _, truth = linear_data
    # 16 group parameters inside their 94% intervals: expect ~15; P(<=12 | p=.94) ~ 1%
    assert coverage(hier_fit, truth) >= 13 / 16
    d = hier_fit.diagnostics
    assert d["divergences"] == 0 and d["max_rhat"] < 1.02
    pop = hier_fit.summary().query("kind == 'population'").set_index("parameter")
    # the population mean is estimated from 8 groups: the true mean is within 3 posterior sd
    assert abs(pop.loc["intercept", "mean"] - 1.0) < 3 * pop.loc["intercept", "sd"]
    assert abs(pop.loc["slope", "mean"] - 0.5) < 3 * pop.loc["slope", "sd"]
    corr = hier_fit.idata.posterior["corr"].values
    assert corr.shape[-2:] == (2, 2)
    np.testing.assert_allclose(corr[..., 0, 0], 1.0, atol=1e-5)


def test_unpooled_recovers_groups(linear_data, unpooled_fit):
    f = unpooled_fit
    assert coverage(f, linear_data[1]) >= 13 / 16
    assert f.idata.posterior["theta"].dims == ("chain", "draw", "group", "parameter")


def test_pooled_recovers_shared_parameters(rng):
    df, _ = simulate_linear(rng, tau=(1e-9, 1e-9))
    f = fit(df, pooling="pooled")
    pop = f.summary().set_index("parameter")
    # 240 observations with sd 0.5: posterior sd ~0.03; truth within 4 sd
    assert abs(pop.loc["intercept", "mean"] - 1.0) < 4 * pop.loc["intercept", "sd"]
    assert abs(pop.loc["slope", "mean"] - 0.5) < 4 * pop.loc["slope", "sd"]
    assert f.idata.posterior["theta"].dims == ("chain", "draw", "parameter")


def test_small_fixed_tau_reproduces_pooled(linear_data, pooled_fit):
    df = linear_data[0]
    pooled = pooled_fit
    dial = fit(df, pooling="hierarchical", tau=1e-3, correlated=False)
    assert dial.centring.choice == {"intercept": "noncentred", "slope": "noncentred"}
    pooled_theta = pooled.idata.posterior["theta"].values  # (c, d, P)
    for g in range(dial.data.num_groups):
        z = z_means(dial.idata.posterior["theta"].values[:, :, g, :], pooled_theta)
        # tau = 1e-3 lets groups move ~1e-3 from the shared value, far below the MCSE (~5e-3)
        assert np.all(np.abs(z) < Z_MAX), (g, z)


def test_large_fixed_tau_reproduces_unpooled(linear_data, unpooled_fit):
    df = linear_data[0]
    unpooled = unpooled_fit
    dial = fit(df, pooling="hierarchical", tau=100.0, correlated=False)
    # informative groups and a huge tau: the automatic rule must pick centred
    assert set(dial.centring.choice.values()) == {"centred"}
    a = dial.idata.posterior["theta"].values
    b = unpooled.idata.posterior["theta"].values
    # unpooled prior Normal(0, 5) vs a flat-ish population (tau = 100): with posterior sd
    # ~0.1 the prior moves a group mean by ~sd^2/25 = 4e-4, negligible against MCSE ~4e-3
    assert np.all(np.abs(z_means(a, b)) < Z_MAX)


def test_mixed_centring_matches_centred(linear_data, hier_fit):
    """The exact conditional factorisation of mixed centring under a full correlation.

    The slope goes first in centring order, so this also checks the permutation back."""
    df = linear_data[0]
    mixed = fit(df, pooling="hierarchical", param={"intercept": "centred",
                                                    "slope": "noncentred"})
    assert mixed.centring.choice == {"intercept": "centred", "slope": "noncentred"}
    nc = hier_fit
    # informative groups: the automatic rule picks centred for both (kappa well below 0.5)
    assert nc.centring.choice == {"intercept": "centred", "slope": "centred"}
    assert max(nc.centring.kappa.values()) < 0.3
    for var in ("theta", "mu", "tau", "corr"):
        a, b = mixed.idata.posterior[var].values, nc.idata.posterior[var].values
        z = z_means(a, b)
        z = z[np.isfinite(z)]  # the diagonal of corr is exactly 1 in both
        assert np.all(np.abs(z) < Z_MAX), (var, z)


def test_predictive_and_new_group(hier_fit):
    pp = carpool.posterior_predictive(hier_fit, num_draws=50, seed=3)
    assert pp.shape == (50, hier_fit.data.num_obs)
    # residual scatter of the predictive draws about the data matches sigma = 0.5 (+-20%)
    assert 0.4 < np.std(pp - hier_fit.data.y[None, :]) / np.sqrt(2) < 0.6
    new = carpool.new_group_params(hier_fit, 3, seed=0)
    assert new.shape == (hier_fit.idata.posterior.sizes["chain"] * 600, 3, 2)
    # a new group's intercept spreads like the population: sd ~ tau (0.8) plus uncertainty
    assert 0.4 < new[:, :, 0].std() < 2.0
    x = np.linspace(-2, 2, 50)
    y_new = carpool.predict_new_group(hier_fit, {"x": x}, num_draws=400, seed=1)
    assert y_new.shape == (400, 50)
    # a new county's predictive mean at x = 0 is the population intercept (truth 1.0), and
    # its spread includes the between-group sd (0.8) on top of sigma (0.5)
    at0 = y_new[:, 25]
    assert abs(np.mean(at0) - 1.0) < 0.6 and 0.7 < np.std(at0) < 2.0
    ll = carpool.pointwise_log_likelihood(hier_fit)
    assert ll.shape == (2, 600, hier_fit.data.num_obs) and np.all(np.isfinite(ll))


def test_unpooled_cannot_predict_new_group(unpooled_fit):
    f = unpooled_fit
    with pytest.raises(ValueError, match="no population"):
        carpool.new_group_params(f)


def test_save_load_roundtrip(tmp_path, hier_fit):
    path = hier_fit.save(tmp_path / "fit.nc")
    back = carpool.load(path)
    pd.testing.assert_frame_equal(back.summary(), hier_fit.summary())
    assert back.centring == hier_fit.centring
    assert back.config == hier_fit.config
    np.testing.assert_array_equal(back.data.y, hier_fit.data.y)
    # the loaded fit predicts identically
    np.testing.assert_allclose(carpool.posterior_predictive(back, num_draws=5, seed=1),
                               carpool.posterior_predictive(hier_fit, num_draws=5, seed=1))
    with pytest.raises(ValueError, match="not a carpool fit"):
        (tmp_path / "junk.nc").write_text("hello")
        carpool.load(tmp_path / "junk.nc")
    assert back.sampler == hier_fit.sampler == carpool.NutsSettings(
        chains=2, warmup=400, draws=600, seed=1, target_accept=0.95)


def test_settings_saved_under_older_names_load(tmp_path, hier_fit):
    """Files whose settings say num_chains / num_warmup / num_samples (NUTS) or num_draws
    (SVI) load under today's names."""
    import copy
    import json

    old = copy.deepcopy(hier_fit.idata)
    saved = json.loads(old.posterior.attrs["carpool_settings"])
    renamed = {"chains": "num_chains", "warmup": "num_warmup", "draws": "num_samples"}
    old.posterior.attrs["carpool_settings"] = json.dumps(
        {renamed.get(k, k): v for k, v in saved.items()})
    path = carpool.Fit(old, hier_fit.spec, hier_fit.config, hier_fit.data,
                       hier_fit.centring).save(tmp_path / "old.nc")
    back = carpool.load(path)
    assert back.sampler == hier_fit.sampler
    assert back.settings == hier_fit.settings
    again = carpool.refit(back, warn=False)  # the old file's settings refit as they were
    assert again.sampler == hier_fit.sampler

    svi = copy.deepcopy(hier_fit.idata)
    svi.posterior.attrs["carpool_method"] = "svi"
    svi.posterior.attrs["carpool_settings"] = json.dumps(
        {"method": "svi", "num_steps": 50, "num_draws": 30, "seed": 2})
    fit = carpool.Fit(svi, hier_fit.spec, hier_fit.config, hier_fit.data, hier_fit.centring)
    assert fit.sampler == carpool.SviSettings(num_steps=50, draws=30, seed=2)


def test_prior_predictive_shapes(linear_data):
    spec = carpool.get_spec("linear")
    data = spec.prepare(linear_data[0])
    out = carpool.prior_predictive(spec, data, carpool.PoolingConfig(), num_draws=20)
    assert out["obs"].shape == (20, data.num_obs)
    assert out["mu"].shape == (20, 2)


def test_bad_specs_raise_clear_errors(linear_data):
    df = linear_data[0]
    with pytest.raises(ValueError, match="unknown pooling"):
        carpool.fit(df, "linear", pooling="partial")
    with pytest.raises(ValueError, match="unknown model 'glm'"):
        carpool.fit(df, "glm")
    table = carpool.ParameterTable([carpool.Parameter("intercept"),
                                    carpool.Parameter("slope")])
    spec = carpool.ModelSpec("mine", table, lambda p, c: p["intercept"] + p["slope"] * c["x"],
                             ("x",))
    data = carpool.get_spec("linear").prepare(df)
    with pytest.raises(ValueError, match="without a prior"):
        carpool.fit(data, spec)


def test_partial_centring_matches_centred_diagonal(linear_data):
    """Per-group partial centring is an exact reparameterisation of the same posterior.

    Partial weights are chosen for a diagonal population with a fixed tau (or few groups);
    over many groups with a learned tau the choice is per parameter (a formula's ( || g))."""
    df = linear_data[0]
    from carpool.pooling.centring import choose_centring

    spec = carpool.get_spec("linear")
    learned = choose_centring(spec, spec.prepare(df), carpool.PoolingConfig(correlated=False))
    assert not learned.weights and set(learned.choice.values()) <= {"centred", "noncentred"}
    partial = fit(df, pooling="hierarchical", correlated=False, tau=(0.8, 0.3))
    assert partial.centring.weights, "a diagonal population gets per-group weights"
    w = np.array(list(partial.centring.weights.values()))
    assert np.all((w >= 0) & (w <= 1))
    centred = fit(df, pooling="hierarchical", correlated=False, tau=(0.8, 0.3),
                  param="centred")
    for var in ("theta", "mu"):
        z = z_means(partial.idata.posterior[var].values, centred.idata.posterior[var].values)
        assert np.all(np.abs(z) < Z_MAX), (var, z)
