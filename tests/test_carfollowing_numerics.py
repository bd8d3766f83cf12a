"""Numerical faults: the IDM and its one-step likelihood at near-zero gaps and speeds.

A NaN gradient anywhere in a driver's series stalls NUTS (every proposal diverges). The
gradients checked are those the sampler takes: with respect to the latent parameters, of
the acceleration and of the censored one-step log-likelihood (float32, JAX's default).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carpool.carfollowing.idm import IDM_MIN_GAP, IDM_PARAMETERS, idm_acceleration
from carpool.models.registry import get_spec

NAMES = IDM_PARAMETERS.names
GAPS = (1e-30, 1e-12, 1e-6, IDM_MIN_GAP, 0.5, 5.0)       # m
SPEEDS = (0.0, 1e-8, 0.1, 20.0, 150.0)                   # m/s (150: the schema's maximum)
LEADERS = (0.0, 40.0)                                    # m/s
LATENT = (-2.0, 0.0, 2.0)                                # latent z: reference * e^z


def _params(z: jax.Array) -> dict[str, jax.Array]:
    return dict(zip(NAMES, IDM_PARAMETERS.to_natural(z, axis=-1), strict=True))


@pytest.mark.parametrize("z0", LATENT)
def test_idm_acceleration_gradients_are_finite(z0):
    def acc(z, v, s, vl):
        return idm_acceleration(_params(z), v, s, vl, {"delta": 4.0})

    grad = jax.jit(jax.grad(acc))
    for v, s, vl in itertools.product(SPEEDS, GAPS, LEADERS):
        z = jnp.full((len(NAMES),), z0)
        value = acc(z, jnp.asarray(v), jnp.asarray(s), jnp.asarray(vl))
        g = grad(z, jnp.asarray(v), jnp.asarray(s), jnp.asarray(vl))
        assert np.isfinite(value), (v, s, vl, value)
        assert np.all(np.isfinite(g)), (v, s, vl, g)


def test_one_step_log_likelihood_gradients_are_finite():
    """The spec's mean and censored Gaussian likelihood: finite value and gradient in the
    latent parameters and sigma, next speed 0 (a stop, censored) or positive."""
    spec = get_spec("idm")
    lik = spec.likelihood
    v, s, vl = (jnp.asarray(np.array(x, dtype=np.float32)) for x in
                zip(*itertools.product(SPEEDS, GAPS, LEADERS), strict=True))
    covs = {"speed": v, "gap": s, "leader_speed": vl, "dt": jnp.full(v.shape, 0.2)}

    def log_lik(z, log_sigma, y):
        mean = spec.mean_fn(_params(z), covs)
        return lik.log_prob(y, mean, {"sigma": jnp.exp(log_sigma)}, covs).sum()

    grad = jax.jit(jax.grad(log_lik, argnums=(0, 1)))
    for z0, log_sigma, y in itertools.product(LATENT, (-3.0, 0.0), ("stop", "moving")):
        z = jnp.full((len(NAMES),), z0)
        ys = jnp.zeros_like(v) if y == "stop" else v + 0.5
        value = log_lik(z, jnp.asarray(log_sigma), ys)
        g_z, g_sigma = grad(z, jnp.asarray(log_sigma), ys)
        assert np.isfinite(value), (z0, log_sigma, y, value)
        assert np.all(np.isfinite(g_z)) and np.isfinite(g_sigma), (z0, log_sigma, y, g_z)


def test_floor_leaves_ordinary_gaps_alone():
    p = _params(jnp.zeros(len(NAMES)))
    for s in (0.01, 0.5, 20.0):
        a = idm_acceleration(p, jnp.asarray(5.0), jnp.asarray(s), jnp.asarray(5.0),
                             {"delta": 4.0})
        s_star = p["s0"] + 5.0 * p["T"]
        expected = p["a"] * (1 - (5.0 / p["v0"]) ** 4 - (s_star / s) ** 2)
        assert np.isclose(a, expected, rtol=1e-5), (s, a, expected)


def test_whole_exponent_power_matches_the_general_form():
    """safe_power's integer_pow path (the IDM's delta = 4) against the exp-log form: equal
    values and gradients, including 0 and negative bases (clamped to 0)."""
    from carpool.carfollowing._numerics import safe_power

    x = jnp.asarray([-1.0, 0.0, 1e-6, 0.3, 1.0, 2.5], dtype=jnp.float32)
    for exponent in (1, 2.0, 4.0):
        def general(x, e=float(exponent)):
            positive = x > 0
            return jnp.where(positive, jnp.power(jnp.where(positive, x, 1.0), e), 0.0)

        fast = jax.vmap(jax.grad(lambda x, e=exponent: safe_power(x, e)))(x)
        slow = jax.vmap(jax.grad(general))(x)
        np.testing.assert_allclose(safe_power(x, exponent), general(x), rtol=1e-6)
        np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-12)
    # a traced exponent still takes the general path (finite gradient in the exponent at 0)
    g = jax.grad(lambda e: safe_power(jnp.asarray([0.0, 0.5]), e).sum())(jnp.asarray(4.0))
    assert np.isfinite(g)


def test_censored_term_at_known_positions_equals_the_full_form():
    """The model scores its observations with the censored term evaluated only where they
    are censored (censored_positions); value and gradient equal the full where-form."""
    from carpool.pooling.likelihoods import censored_positions

    lik = get_spec("idm").likelihood
    rng = np.random.default_rng(3)
    y = np.maximum(rng.normal(1.0, 2.0, (6, 9)), 0.0).astype(np.float32)  # ~30% at 0
    mask = np.ones_like(y, dtype=bool)
    mask[4:, 6:] = False                      # padding: zeros there are not censored
    y[~mask] = 0.0
    positions, valid = censored_positions(y, mask, 0.0)
    n_censored = int(((y <= 0) & mask).sum())
    assert valid.sum() == n_censored and len(positions) >= max(8, n_censored)
    assert len(positions) & (len(positions) - 1) == 0  # a power of two
    covs = {"dt": jnp.full(y.shape, 0.2)}

    def total(mean, log_sigma, at):
        d = lik.distribution(mean, {"sigma": jnp.exp(log_sigma)}, covs, censored_at=at)
        return jnp.where(mask, d.log_prob(jnp.asarray(y)), 0.0)

    mean = jnp.asarray(rng.normal(0.5, 1.0, y.shape), dtype=jnp.float32)
    full = total(mean, 0.0, None)
    fast = total(mean, 0.0, (jnp.asarray(positions), jnp.asarray(valid)))
    np.testing.assert_allclose(fast, full, rtol=1e-6, atol=1e-6)
    g_full = jax.grad(lambda m, s: total(m, s, None).sum(), argnums=(0, 1))(mean, 0.0)
    g_fast = jax.grad(lambda m, s: total(m, s, (positions, valid)).sum(),
                      argnums=(0, 1))(mean, 0.0)
    for a, b in zip(g_fast, g_full, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
