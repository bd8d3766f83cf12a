"""The automatic centring: its pooled MAP, the data-based population scale and the rule."""

import numpy as np
import pytest

from carpool.inference.run import resolve_spec
from carpool.pooling.centring import (
    CENTRE_BELOW,
    MIN_IDENTIFYING_GROUPS,
    TAU_FLOOR,
    centring_by_kappa,
    choose_centring,
    pooled_map_with_residual,
    population_scale,
)
from carpool.pooling.spec import PoolingConfig
from carpool.testing import simulate_drivers


def test_pooled_map_survives_the_reference_noise_prior():
    # The reference's noise prior Exponential(1e4) has its median at 7e-5 m/s^2, ~1,000x
    # below the simulated 0.1 m/s^2 noise; BFGS from there threw v0's latent to 83 and the
    # centring's eigendecomposition then failed (LinAlgError) before any sampling.
    df, _ = simulate_drivers(6, duration_s=6.0, rng_seed=1, classes=["car", "truck"])
    spec = resolve_spec("idm", priors="zhang-sun-2023")
    z, noise, _ = pooled_map_with_residual(spec, spec.prepare(df))
    assert np.all(np.isfinite(z)) and np.all(np.abs(z) < 10.0)  # latent prior Normal(0, 1)
    # the pooled noise estimate is of the data's order (0.1 m/s^2 simulated plus the
    # pooled model's misfit across 6 heterogeneous drivers), not the prior's 1e-4
    assert 0.05 < noise["sigma"] < 0.5


# --- the data-based population scale and the rule ------------------------------------------


def _gaussian_groups(rng, tau, num_groups=60, silent=0.3, loc=0.0, scale=0.5):
    """Conjugate Gaussian groups: theta_g ~ N(0, tau), a measurement with information c_g,
    the regularised estimate under the latent prior N(loc, scale) and diagonal information.
    A share ``silent`` of the groups carries (almost) no information."""
    P = len(tau)
    theta = rng.standard_normal((num_groups, P)) * tau
    c = rng.uniform(25.0, 400.0, size=(num_groups, P))  # data sd 0.05-0.2
    c[: int(silent * num_groups)] = 1e-3
    y = theta + rng.standard_normal((num_groups, P)) / np.sqrt(c)
    lam = 1.0 / scale**2
    zhat = (c * y + lam * loc) / (c + lam)
    A = np.einsum("gp,pq->gpq", c, np.eye(P))
    return zhat, A, theta


def test_population_scale_recovers_tau_despite_silent_groups():
    tau = np.array([0.1, 0.3, 0.6])
    scale = np.full(3, 0.5)
    errors = []
    for seed in range(5):
        zhat, A, theta = _gaussian_groups(np.random.default_rng(seed), tau)
        est = population_scale(zhat, A, np.zeros(3), scale, np.full(3, 0.337))
        # against the sample sd of the 42 informative groups' true values, so the test
        # measures the estimator, not the draw of the groups
        truth = theta[18:].std(axis=0, ddof=1)
        errors.append(np.log(est / truth))
        # the silent groups sit at the prior centre: their raw spread is biased low
        assert np.all(zhat[:18].std(axis=0) < 0.05)
    # moment estimate of tau^2 from k = 42 groups with measurement sd 0.05-0.2: relative
    # standard error of tau about sqrt(2 / 41) / 2 (1 + s^2 / tau^2), ~25% for tau = 0.1 and
    # ~12% for 0.6; allow 2.5 standard errors per seed and the mean within 1
    errors = np.array(errors)
    assert np.all(np.abs(errors) < np.array([0.6, 0.35, 0.3])), errors
    assert np.all(np.abs(errors.mean(axis=0)) < np.array([0.25, 0.12, 0.12])), errors


def test_population_scale_falls_back_where_few_groups_identify():
    zhat, A, _ = _gaussian_groups(np.random.default_rng(0), np.array([0.3, 0.3]),
                                  num_groups=20, silent=0.6)  # 8 informative groups
    est = population_scale(zhat, A, np.zeros(2), np.full(2, 0.5), np.array([0.337, 0.2]))
    assert MIN_IDENTIFYING_GROUPS > 8
    np.testing.assert_array_equal(est, [0.337, 0.2])
    # no spread beyond the measurement error: the floor, not a negative or NaN tau
    zhat, A, _ = _gaussian_groups(np.random.default_rng(1), np.array([1e-6]), silent=0.0)
    assert population_scale(zhat, A, np.zeros(1), np.full(1, 0.5), np.array([0.3]))[0] \
        == TAU_FLOOR


def test_rule_uses_conditional_information():
    """v0 weakly identified and confounded with a (correlation -0.95): the conditional rule
    non-centres v0 only (a's conditional sd 0.35 sqrt(1 - 0.95^2) = 0.11, kappa 0.12 at
    tau 0.3); marginalising v0 (the previous Schur-complement rule) left a with sd 0.35,
    kappa 0.58, and non-centred it too."""
    G = 30
    sd = np.array([4.0, 0.35, 0.05])
    corr = np.array([[1.0, -0.95, 0.0], [-0.95, 1.0, 0.0], [0.0, 0.0, 1.0]])
    cov = corr * np.outer(sd, sd)
    A = np.broadcast_to(np.linalg.inv(cov), (G, 3, 3))
    tau = np.array([0.3, 0.3, 0.3])
    names = ["v0", "a", "T"]
    got = centring_by_kappa(A, tau, names, dict.fromkeys(names, "auto"))
    s2 = 1.0 / np.diagonal(A[0])  # conditional variances
    expected = s2 / (s2 + tau**2)
    np.testing.assert_allclose(list(got.kappa.values()), expected, rtol=1e-12)
    assert got.choice == {"v0": "noncentred", "a": "centred", "T": "centred"}
    assert got.kappa["a"] == pytest.approx(0.117, abs=1e-3)
    marginal_a = sd[1] ** 2  # a's variance with v0 marginalised
    assert marginal_a / (marginal_a + 0.3**2) > CENTRE_BELOW
    # an explicit choice is kept whatever kappa says
    forced = centring_by_kappa(A, tau, names, {"v0": "centred", "a": "auto", "T": "auto"})
    assert forced.choice["v0"] == "centred"


def test_simulated_drivers_tau_and_choice():
    """20 simulated IDM drivers (population sd of the log parameters 0.15): the data-based
    tau of the well-identified s0 and T is within 25% of the drivers' sample sd (a moment
    estimate from 20 groups has a relative standard error of ~16%; measured: s0 0.124 vs
    0.142, T 0.119 vs 0.118); the never-approached v0 falls back to the hyperprior and is
    the one non-centred parameter."""
    df, truth = simulate_drivers(20, duration_s=30.0, rng_seed=5)
    spec = resolve_spec("idm")
    data = spec.prepare(df)
    config = PoolingConfig(pooling="hierarchical")
    c = choose_centring(spec, data, config)
    sample_sd = np.log(truth[["s0", "T"]]).std(ddof=1)
    for p in ("s0", "T"):
        assert abs(np.log(c.tau_ref[p] / sample_sd[p])) < np.log(1.25), (p, c.tau_ref)
    hyperprior = config.with_defaults(spec, 20).hyperpriors.tau_prior("v0")
    assert c.tau_ref["v0"] == pytest.approx(hyperprior.median())
    assert c.choice == {"v0": "noncentred", "s0": "centred", "T": "centred", "a": "centred",
                        "b": "centred"}


def test_fixed_tau_is_kept():
    df, _ = simulate_drivers(12, duration_s=20.0, rng_seed=2)
    spec = resolve_spec("idm")
    c = choose_centring(spec, spec.prepare(df), PoolingConfig(pooling="hierarchical",
                                                             tau=0.05))
    assert c.tau_ref == dict.fromkeys(spec.parameters.names, 0.05)


@pytest.mark.slow  # ~5 s: the 76 real drivers
def test_ngsim_drivers_non_centre_v0_only():
    """On the 76 NGSIM drivers the hyperprior's tau (0.337) made all five parameters
    non-centred; the data's tau (s0, T, a, b: 0.52, 0.38, 0.49, 0.59, against posterior
    means 1.24, 0.69, 0.61, 1.13) non-centres v0 alone, which the fit pays back
    (benchmarks/centring_choice.py)."""
    import carpool

    spec = resolve_spec("idm")
    c = choose_centring(spec, spec.prepare(carpool.load_example("ngsim-i80")),
                        PoolingConfig(pooling="hierarchical"))
    assert c.choice == {"v0": "noncentred", "s0": "centred", "T": "centred", "a": "centred",
                        "b": "centred"}
    for p in ("s0", "T", "a", "b"):
        assert 0.337 < c.tau_ref[p] < 1.5, c.tau_ref
