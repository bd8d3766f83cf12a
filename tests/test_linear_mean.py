"""The linear form of the IDM and the projected Gaussian log density built on it.

The fits score an i.i.d. Gaussian car-following likelihood from each driver's projected
statistics (:mod:`carpool.pooling.linear_mean`) instead of its observations; these tests
check each identity the shortcut rests on, in float64 where the identity is exact (so
the tolerance is rounding, ~1e-12 relative) and the guard that falls back where a model's
linear form is wrong.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carpool.carfollowing import get_model
from carpool.carfollowing.idm import IDM_FEATURES, idm_acceleration
from carpool.models.registry import get_spec
from carpool.parameters import Parameter
from carpool.pooling.likelihoods import Gaussian
from carpool.pooling.linear_mean import LinearMean, projected_statistics
from carpool.pooling.model import build_model
from carpool.pooling.spec import Hyperpriors, PoolingConfig
from carpool.priors import HalfNormal, Normal
from carpool.testing import simulate_drivers


def _states(rng, n):
    speed = rng.uniform(0.0, 35.0, n)
    speed[:5] = 0.0  # standing
    gap = rng.uniform(0.5, 120.0, n)
    gap[5:8] = [1e-6, 1e-3, 0.01]  # below and at the gap floor
    leader = speed + rng.normal(0.0, 4.0, n)  # closing in and falling behind
    return speed, gap, leader


def test_idm_features_times_coefficients_is_the_acceleration():
    rng = np.random.default_rng(0)
    speed, gap, leader = _states(rng, 2000)
    params = {"v0": rng.uniform(8.0, 45.0, 2000), "s0": rng.uniform(0.5, 5.0, 2000),
              "T": rng.uniform(0.5, 3.0, 2000), "a": rng.uniform(0.3, 4.0, 2000),
              "b": rng.uniform(0.5, 4.0, 2000)}
    model = get_model("idm")
    with jax.enable_x64(True):
        exact = np.asarray(idm_acceleration(params, speed, gap, leader, model.constants))
        features = model.acceleration_features(speed, gap, leader)
        linear = np.sum(features * np.asarray(model.acceleration_coefficients(params)), -1)
    assert features.shape == (2000, len(IDM_FEATURES))
    np.testing.assert_allclose(linear, exact, rtol=1e-10, atol=1e-10 * np.abs(exact).max())


def test_linear_acc_features_times_coefficients_is_the_acceleration():
    rng = np.random.default_rng(2)
    speed, gap, leader = _states(rng, 500)
    params = {"k_gap": rng.uniform(0.04, 1.2, 500), "k_speed": rng.uniform(0.03, 1.4, 500),
              "s0": rng.uniform(1.0, 5.0, 500), "T": rng.uniform(0.6, 2.5, 500)}
    model = get_model("linear_acc")
    with jax.enable_x64(True):
        exact = np.asarray(model.acceleration(params, speed, gap, leader))
        linear = np.sum(model.acceleration_features(speed, gap, leader)
                        * np.asarray(model.acceleration_coefficients(params)), -1)
    np.testing.assert_allclose(linear, exact, rtol=1e-10, atol=1e-10 * np.abs(exact).max())
    # and the fits use it (the spec's linear mean agrees with its mean_fn on the data)
    df, _ = simulate_drivers(3, duration_s=10.0, rng_seed=5)
    spec = get_spec("linear_acc")
    config = PoolingConfig(pooling="hierarchical", hyperpriors=Hyperpriors.default_for(3))
    assert build_model(spec, spec.prepare(df), config).arrays["projected"] is not None


def test_fixing_keeps_and_freeing_a_constant_drops_the_linear_form():
    idm = get_model("idm")
    fixed = idm.fix(v0=33.0)
    assert fixed.linear_form is idm.linear_form
    rng = np.random.default_rng(1)
    speed, gap, leader = _states(rng, 50)
    p = {"s0": 2.0, "T": 1.4, "a": 1.2, "b": 1.8}
    with jax.enable_x64(True):
        exact = np.asarray(fixed.acceleration(p, speed, gap, leader))
        linear = fixed.acceleration_features(speed, gap, leader) @ np.asarray(
            fixed.acceleration_coefficients(p))
    np.testing.assert_allclose(linear, exact, rtol=1e-10, atol=1e-9)
    # the exponent becomes a parameter: the features depended on it
    freed = idm.free(Parameter("delta", "-", "log", 4.0, Normal(0.0, 0.2), "exponent"))
    assert freed.linear_form is None
    with pytest.raises(ValueError, match="no linear form"):
        freed.acceleration_features(speed, gap, leader)


def test_projected_statistics_reproduce_every_sum_of_squares():
    rng = np.random.default_rng(2)
    n, K, G = 300, 5, 4
    design = rng.normal(size=(n, K)) * np.logspace(-3, 3, K)  # badly scaled columns
    residual = rng.normal(size=n)
    groups = rng.integers(0, G, n)
    groups[groups == 3] = 2  # group 3 has no rows at all
    groups[:3] = 1  # and one group is short: 3 rows of group 0 (< K)
    groups[groups == 0] = 1
    groups[[10, 20, 30]] = 0
    R, c, rss = projected_statistics(residual, design, groups, G)
    assert R.shape == (G, K, K) and c.shape == (G, K)
    assert np.allclose(np.tril(R[1], -1), 0.0)
    for _ in range(5):
        beta = rng.normal(size=(G, K)) * np.logspace(3, -3, K)
        direct = np.sum((residual - np.sum(design * beta[groups], -1)) ** 2)
        projected = rss + np.sum((c - np.einsum("gkl,gl->gk", R, beta)) ** 2)
        np.testing.assert_allclose(projected, direct, rtol=1e-10)


@pytest.mark.parametrize("lower", [None, 0.0])
def test_projected_gaussian_equals_the_sum_of_log_prob(lower):
    rng = np.random.default_rng(3)
    n, K, G = 400, 3, 5
    groups = np.sort(rng.integers(0, G, n))
    design = rng.normal(size=(n, K))
    offset = rng.normal(0.5, 0.3, n)
    beta = rng.normal(size=(G, K)) * 0.3
    dt = rng.uniform(0.1, 0.4, n)
    mean = offset + np.sum(design * beta[groups], -1)
    y = mean + dt * rng.normal(0.0, 0.5, n)
    if lower is not None:
        y = np.maximum(y, lower)
        assert np.sum(y <= lower) > 5
    lik = Gaussian(HalfNormal(1.0), scale_covariate="dt", lower=lower)
    terms = lik.projected_terms(y, None, {"dt": dt}, offset, design, groups, G)
    with jax.enable_x64(True):
        for sigma in (0.3, 0.8):
            for shift in (0.0, 0.2):
                b = jnp.asarray(beta + shift)
                m = offset + np.sum(design * np.asarray(b)[groups], -1)
                exact = jnp.sum(lik.log_prob(jnp.asarray(y), jnp.asarray(m),
                                             {"sigma": sigma}, {"dt": jnp.asarray(dt)}))
                got = lik.projected_log_prob(jax.tree_util.tree_map(jnp.asarray, terms), b,
                                             {"sigma": jnp.asarray(sigma)})
                np.testing.assert_allclose(float(got), float(exact), rtol=1e-10)


def test_a_wrong_linear_form_warns_and_is_not_used():
    # the guard: a spec whose linear mean disagrees with mean_fn is scored per observation
    df, _ = simulate_drivers(3, duration_s=10.0, rng_seed=5)
    spec = get_spec("idm")
    good = spec.linear_mean
    wrong = dataclasses.replace(spec, linear_mean=LinearMean(
        good.offset, good.design, lambda p: good.coefficients(p) * 1.01))
    data = spec.prepare(df)
    config = PoolingConfig(pooling="hierarchical", hyperpriors=Hyperpriors.default_for(3))
    assert build_model(spec, data, config).arrays["projected"] is not None
    with pytest.warns(UserWarning, match="linear form of the mean differs"):
        built = build_model(wrong, data, config)
    assert built.arrays["projected"] is None and built.arrays["terms"] is not None


def test_dynamic_residuals_do_not_use_the_projection():
    df, _ = simulate_drivers(2, duration_s=10.0, rng_seed=6)
    spec = get_spec("idm", residual="ar1")
    config = PoolingConfig(pooling="hierarchical", hyperpriors=Hyperpriors.default_for(2))
    assert build_model(spec, spec.prepare(df), config).arrays["projected"] is None


def test_a_users_linear_mean_gives_the_same_potential():
    # a ModelSpec of one's own (docs/pooling.md): intercept + slope x with a LinearMean;
    # the sampled potential must be the per-observation one at any point. float32 sums of
    # ~300 terms of size ~1-100: 1e-4 relative leaves room for the reordering
    from numpyro.infer.util import initialize_model, potential_energy

    from carpool.parameters import ParameterTable
    from carpool.pooling.grouped import GroupedData
    from carpool.pooling.spec import ModelSpec

    rng = np.random.default_rng(7)
    G, n = 6, 300
    group = rng.integers(0, G, n)
    x = rng.normal(size=n)
    y = 1.0 + 0.3 * group + (0.5 + 0.1 * group) * x + rng.normal(0.0, 0.4, n)
    table = ParameterTable([Parameter("intercept", "y", "identity", 0.0, Normal(0, 5)),
                            Parameter("slope", "y per x", "identity", 0.0, Normal(0, 5))])
    linear = LinearMean(offset=lambda c: np.zeros_like(c["x"]),
                        design=lambda c: np.stack([np.ones_like(c["x"]), c["x"]], -1),
                        coefficients=lambda p: jnp.stack([p["intercept"], p["slope"]], -1))
    spec = ModelSpec("line", table, lambda p, c: p["intercept"] + p["slope"] * c["x"], ("x",),
                     likelihood=Gaussian(HalfNormal(1.0)), linear_mean=linear)
    import pandas as pd

    df = pd.DataFrame({"g": [f"g{k}" for k in group], "x": x, "y": y})
    data = GroupedData.from_frame(df, y="y", group="g", covariates=["x"])
    config = PoolingConfig(pooling="hierarchical", hyperpriors=Hyperpriors.default_for(G))
    built = build_model(spec, data, config)
    assert built.arrays["projected"] is not None
    plain = build_model(dataclasses.replace(spec, linear_mean=None), data, config)
    assert plain.arrays["projected"] is None
    info = initialize_model(jax.random.PRNGKey(0), built.model,
                            model_kwargs={"observed": True, "arrays": built.arrays})
    for shift in (0.0, 0.4):
        point = jax.tree_util.tree_map(lambda v, s=shift: v + s, info.param_info.z)
        a = potential_energy(built.model, (), {"observed": True, "arrays": built.arrays},
                             point)
        b = potential_energy(plain.model, (), {"observed": True, "arrays": plain.arrays},
                             point)
        np.testing.assert_allclose(float(a), float(b), rtol=1e-4)
