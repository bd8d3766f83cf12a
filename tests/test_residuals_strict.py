"""The residual maths against known answers: exact multivariate normal densities, stationary
autocovariances, conditional Gaussian moments. Pure JAX (strict rank promotion: the module
name contains "strict")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import toeplitz
from scipy.stats import multivariate_normal

from carpool.residuals import (
    AR,
    GP,
    IID,
    ar_autocovariance,
    ar_conditional,
    ar_forward,
    gp_conditional,
    gp_forward,
    gp_sliding_conditional,
    pacf_to_phi,
    parse_residual,
    residual_from_dict,
    se_covariance,
)


@pytest.fixture(autouse=True)
def x64():
    """Double precision for exact comparisons, in this module only (a context manager, so
    other test modules in the same worker keep JAX's default float32)."""
    with jax.enable_x64(True):
        yield


def _loglik(mean, sd, r):
    return float(np.sum(-0.5 * ((r - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)))


def test_pacf_to_phi_known_values():
    # AR(1): phi = kappa; AR(2): phi_2 = kappa_2, phi_1 = kappa_1 (1 - kappa_2)
    np.testing.assert_allclose(pacf_to_phi(jnp.array([0.7])), [0.7])
    np.testing.assert_allclose(pacf_to_phi(jnp.array([0.5, 0.3])), [0.5 * 0.7, 0.3])


@pytest.mark.parametrize("kappa", [[0.6], [0.9, -0.4], [0.5, 0.3, -0.2, 0.1]])
def test_stationary_for_any_pacf(kappa):
    # every pacf in (-1, 1)^p gives a stationary AR: all roots of the AR polynomial lie
    # outside the unit circle
    phi = np.asarray(pacf_to_phi(jnp.asarray(kappa)))
    roots = np.roots(np.r_[-phi[::-1], 1.0])
    assert np.all(np.abs(roots) > 1.0)


@pytest.mark.parametrize("kappa", [[0.8], [0.9, -0.4], [0.5, 0.3, -0.2, 0.1]])
def test_ar_likelihood_is_the_exact_mvn(kappa, rng):
    kappa = jnp.asarray(kappa)
    T, sigma = 12, 0.3
    gamma = np.asarray(ar_autocovariance(kappa, sigma, T))
    cov = toeplitz(gamma)
    r = rng.multivariate_normal(np.zeros(T), cov, size=3)  # three drivers
    mean, sd = ar_conditional(jnp.asarray(r), kappa, sigma)
    for g in range(3):
        exact = multivariate_normal(np.zeros(T), cov).logpdf(r[g])
        assert _loglik(np.asarray(mean[g]), np.asarray(sd[g]), r[g]) == pytest.approx(exact,
                                                                                    rel=1e-9)


def test_ar_autocovariance_matches_simulation(rng):
    # ar_forward from a stationary start: sample autocovariances within 4 Monte Carlo sd
    kappa = jnp.asarray([0.8, -0.3])
    sigma = 0.5
    white = jnp.asarray(rng.standard_normal((400, 4000)))
    r = np.asarray(ar_forward(white, jnp.broadcast_to(kappa, (4000, 2)), sigma,
                              jnp.zeros((4000, 2)), 0))
    gamma = np.asarray(ar_autocovariance(kappa, sigma, 3))
    for lag in range(3):
        # at the series' first steps (exact stationary start), across 4000 series
        prod = r[0] * r[lag]
        assert abs(prod.mean() - gamma[lag]) < 4 * prod.std() / np.sqrt(prod.size)


def test_ar_per_driver_coefficients(rng):
    r = jnp.asarray(rng.standard_normal((2, 6)))
    kappa = jnp.asarray([[0.5, 0.1], [-0.3, 0.2]])
    mean, sd = ar_conditional(r, kappa, 1.0)
    for g in range(2):
        m1, s1 = ar_conditional(r[g : g + 1], kappa[g], 1.0)
        np.testing.assert_allclose(mean[g], m1[0])
        np.testing.assert_allclose(sd[g], s1[0])


def test_ar_forward_conditions_on_history(rng):
    # with p known lags the next draw has mean phi . lags and sd sigma
    kappa = jnp.asarray([0.6, 0.2])
    phi = np.asarray(pacf_to_phi(kappa))
    history = jnp.asarray([[0.4, -1.0]])  # r_{t-2}, r_{t-1}
    white = jnp.asarray(rng.standard_normal((1, 20000)))
    out = np.asarray(ar_forward(white, jnp.broadcast_to(kappa, (20000, 2)), 0.2,
                                jnp.broadcast_to(history, (20000, 2)), 2))
    expected = phi[0] * -1.0 + phi[1] * 0.4
    assert abs(out.mean() - expected) < 4 * 0.2 / np.sqrt(20000)
    assert out.std() == pytest.approx(0.2, rel=0.03)


@pytest.mark.parametrize("window", [4, 7, 100])
def test_gp_likelihood_is_blockwise_mvn(window, rng):
    T, dt, ell, scale, sigma = 10, 0.2, 0.6, 0.5, 0.1
    r = rng.standard_normal((2, T))
    mean, sd = gp_conditional(jnp.asarray(r), dt, ell, scale, sigma, window)
    exact = 0.0
    for g in range(2):
        for start in range(0, T, window):
            block = r[g, start : start + window]
            cov = np.asarray(se_covariance(len(block), dt, ell, scale, sigma))
            exact += multivariate_normal(np.zeros(len(block)), cov).logpdf(block)
    assert _loglik(np.asarray(mean), np.asarray(sd), r) == pytest.approx(exact, rel=1e-8)


def test_gp_per_driver_time_steps_match_shared(rng):
    r = jnp.asarray(rng.standard_normal((3, 9)))
    shared = gp_conditional(r, 0.1, 0.5, 0.4, 0.2, 5)
    per = gp_conditional(r, jnp.full((3,), 0.1), 0.5, 0.4, 0.2, 5)
    np.testing.assert_allclose(shared[0], per[0], rtol=1e-10)
    np.testing.assert_allclose(shared[1], per[1], rtol=1e-10)


@pytest.mark.parametrize("num_known", [0, 2, 5])
def test_gp_forward_is_the_conditional_gaussian(num_known, rng):
    H, k, dt = 5, 3, 0.2
    ell, scale, sigma = jnp.asarray([0.7]), jnp.asarray([0.5]), jnp.asarray([0.1])
    history = rng.standard_normal(H)
    num = 40000
    white = jnp.asarray(rng.standard_normal((k, 1, num)))
    out = np.asarray(gp_forward(white, dt, ell, scale, sigma,
                                jnp.broadcast_to(jnp.asarray(history), (1, num, H)),
                                num_known))[:, 0, :]
    cov = np.asarray(se_covariance(H + k, dt, 0.7, 0.5, 0.1))
    known = list(range(H - num_known, H))
    fut = list(range(H, H + k))
    if known:
        A = cov[np.ix_(fut, known)] @ np.linalg.inv(cov[np.ix_(known, known)])
        mean = A @ history[known]
        cond = cov[np.ix_(fut, fut)] - A @ cov[np.ix_(known, fut)]
    else:
        mean, cond = np.zeros(k), cov[np.ix_(fut, fut)]
    se = np.sqrt(np.diag(cond) / num)
    assert np.all(np.abs(out.mean(axis=1) - mean) < 4 * se)
    np.testing.assert_allclose(np.cov(out), cond, atol=0.02 * cond.max())


def test_parse_and_round_trip():
    assert parse_residual("iid") == IID()
    assert parse_residual("ar3") == AR(3)
    assert parse_residual("AR(2)", ar_pooling="driver") == AR(2, "driver")
    assert parse_residual(None, ar=4) == AR(4)
    assert parse_residual("gp", gp_window_s=None) == GP(None)
    for process in (IID(), AR(2, "class"), GP(10.0)):
        assert residual_from_dict(process.to_dict()) == process
    with pytest.raises(ValueError, match="unknown residual 'ma1'"):
        parse_residual("ma1")
    with pytest.raises(ValueError, match="AR order"):
        parse_residual("ar9")
    with pytest.raises(ValueError, match="unknown AR pooling"):
        parse_residual("ar1", ar_pooling="site")
    with pytest.raises(ValueError, match="GP window"):
        GP(-1.0)


def test_gp_sliding_with_full_history_is_the_exact_series_mvn(rng):
    T, dt, ell, scale, sigma = 12, 0.2, 0.8, 0.5, 0.1
    cov = np.asarray(se_covariance(T, dt, ell, scale, sigma))
    r = rng.multivariate_normal(np.zeros(T), cov, size=2)
    mean, sd = gp_sliding_conditional(jnp.asarray(r), dt, ell, scale, sigma, T - 1)
    exact = sum(multivariate_normal(np.zeros(T), cov).logpdf(r[g]) for g in range(2))
    assert _loglik(np.asarray(mean), np.asarray(sd), r) == pytest.approx(exact, rel=1e-9)


def test_gp_sliding_conditions_on_the_last_m(rng):
    # for t >= m the term is the exact Gaussian conditional on the m predecessors
    T, m, dt, ell, scale, sigma = 15, 4, 0.2, 0.6, 0.5, 0.1
    r = rng.standard_normal((1, T))
    mean, sd = gp_sliding_conditional(jnp.asarray(r), dt, ell, scale, sigma, m)
    cov = np.asarray(se_covariance(m + 1, dt, ell, scale, sigma))
    A = cov[m, :m] @ np.linalg.inv(cov[:m, :m])
    for t in range(m, T):
        assert float(mean[0, t]) == pytest.approx(A @ r[0, t - m:t], rel=1e-9)
        assert float(sd[0, t]) == pytest.approx(
            np.sqrt(cov[m, m] - A @ cov[:m, m]), rel=1e-9)


def test_gp_sliding_simulation_has_the_kernel_covariance(rng):
    m, T, num = 30, 6, 20000
    gp = GP(window_s=None)
    white = jnp.asarray(rng.standard_normal((num, T)))
    params = {"lengthscale": 0.5, "scale": 0.4}
    r = np.asarray(GP(method="sliding").simulate(white, params, 0.1, (0.2, m)))
    cov = np.asarray(se_covariance(T, 0.2, 0.5, 0.4, 0.1))
    np.testing.assert_allclose(np.cov(r.T), cov, atol=0.01)
    assert gp.method == "sliding"
