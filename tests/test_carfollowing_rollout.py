"""Tests of the closed-loop rollouts and equilibrium relations (carpool.carfollowing.rollout).

Hand-computed values have their arithmetic in comments. Tolerances reflect float32 (JAX
default): about 1e-6 relative per operation, accumulated over at most a few hundred steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import carpool.carfollowing as cf
from carpool.parameters import Parameter, ParameterTable
from carpool.priors import Normal

IDM_REF = cf.IDM.reference_params()

# Compiled once per model and input shapes: much faster than eager dispatch in tests.
follow_leader = jax.jit(cf.follow_leader, static_argnums=0)

# A model with a calibrated constant acceleration, for exact kinematics checks.
CONSTANT = cf.CarFollowingModel(
    name="constant_acceleration",
    parameters=ParameterTable([Parameter("acc", "m/s^2", "identity", 0.0, Normal(0.0, 1.0))]),
    acceleration_fn=lambda p, v, s, vl, c: p["acc"] + 0.0 * (v + s + vl),
)


def test_ballistic_update_known_answers():
    # Not stopping: v = 10, acc = -1, dt = 0.5 -> v1 = 9.5; follower travels
    # (10 + 9.5) / 2 * 0.5 = 4.875 m, leader (10 + 10) / 2 * 0.5 = 5 m: gap 20 -> 20.125.
    out = follow_leader(CONSTANT, {"acc": -1.0}, jnp.array([10.0, 10.0]), 20.0, 10.0, 0.5)
    np.testing.assert_allclose(out.speed, [10.0, 9.5])
    np.testing.assert_allclose(out.gap, [20.0, 20.125])
    # Stopping inside the step: v = 1, acc = -10, dt = 1 -> stops after 0.1 s having
    # travelled 1^2 / (2 * 10) = 0.05 m (not (1 + 0) / 2 * 1 = 0.5 m); leader at rest.
    out = follow_leader(CONSTANT, {"acc": -10.0}, jnp.zeros(2), 3.0, 1.0, 1.0)
    np.testing.assert_allclose(out.speed, [1.0, 0.0])
    np.testing.assert_allclose(out.gap, [3.0, 2.95], rtol=1e-6)
    # Noise enters as acceleration: v1 = 10 + (-1 + 0.4) * 0.5 = 9.7
    out = follow_leader(CONSTANT, {"acc": -1.0}, jnp.array([10.0, 10.0]), 20.0, 10.0, 0.5,
                           noise=jnp.array([0.4]))
    np.testing.assert_allclose(out.speed, [10.0, 9.7], rtol=1e-6)


def test_follower_at_idm_equilibrium_stays_there():
    speed = 12.0
    gap = cf.idm_equilibrium_gap(IDM_REF, speed)
    out = follow_leader("idm", IDM_REF, jnp.full(301, speed), gap, speed, 0.2)  # 60 s
    np.testing.assert_allclose(out.speed, speed, atol=1e-3)
    np.testing.assert_allclose(out.gap, gap, atol=1e-2)
    assert not out.is_collision.any()


def test_speed_never_negative_and_collisions_are_flagged():
    # Leader brakes from 15 m/s to a stop at 3 m/s^2 and stays; strong negative noise.
    leader = jnp.clip(15.0 - 3.0 * 0.1 * jnp.arange(200), 0.0, None)
    noise = -3.0 * jnp.ones(199)
    out = follow_leader("idm", IDM_REF, leader, 30.0, 15.0, 0.1, noise=noise)
    assert (out.speed >= 0).all() and (out.speed[-50:] == 0).all()
    assert (out.gap > 0).all() and not out.is_collision.any()
    # Braking at only 1 m/s^2 from 10 m/s takes 50 m: 5 m behind a standing leader it
    # crashes after about 0.5 s (5 steps), and the flag stays on while it pushes on.
    crash = follow_leader(CONSTANT, {"acc": -1.0}, jnp.zeros(50), 5.0, 10.0, 0.1)
    assert not crash.is_collision[:5].any() and crash.is_collision[6:].all()
    assert (crash.gap >= 0.01).all() and (crash.speed >= 0).all()
    assert np.isfinite(crash.speed).all()


def test_vmap_over_parameter_draws_matches_single_rollouts():
    rng = np.random.default_rng(1)
    num_draws = 8
    draws = {k: jnp.asarray(v * np.exp(0.2 * rng.standard_normal(num_draws)), jnp.float32)
             for k, v in IDM_REF.items()}
    leader = jnp.asarray(8.0 + 3.0 * np.sin(np.arange(100) * 0.1 / 2.0), jnp.float32)

    def rollout(params):
        return follow_leader(cf.IDM, params, leader, 15.0, 8.0, 0.1)

    batched = jax.jit(jax.vmap(rollout))(draws)
    assert batched.speed.shape == batched.gap.shape == (num_draws, 100)
    for i in (0, num_draws - 1):
        single = rollout({k: v[i] for k, v in draws.items()})
        np.testing.assert_allclose(batched.speed[i], single.speed, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batched.gap[i], single.gap, rtol=1e-5, atol=1e-4)


def test_rollout_is_differentiable():
    leader = jnp.asarray(8.0 + 3.0 * np.sin(np.arange(50) * 0.1), jnp.float32)

    def final_gap(params):
        return follow_leader(cf.IDM, params, leader, 15.0, 8.0, 0.1).gap[-1]

    grads = jax.grad(final_gap)({k: jnp.asarray(v) for k, v in IDM_REF.items()})
    assert all(np.isfinite(g) for g in grads.values())
    assert grads["T"] > 0  # a longer time gap opens the gap


def test_rollout_input_errors():
    with pytest.raises(ValueError, match="shape"):
        cf.follow_leader("idm", IDM_REF, jnp.zeros(10), 5.0, 0.0, 0.1, noise=jnp.zeros(10))
    with pytest.raises(ValueError, match="T >= 2"):
        cf.follow_leader("idm", IDM_REF, jnp.zeros(1), 5.0, 0.0, 0.1)
    with pytest.raises(KeyError, match="missing"):
        cf.follow_leader("idm", {"v0": 30.0}, jnp.zeros(5), 5.0, 0.0, 0.1)


def test_idm_equilibrium_speed_inverts_the_equilibrium_gap():
    speeds = jnp.array([0.0, 2.0, 10.0, 20.0, 28.0])
    gaps = cf.idm_equilibrium_gap(IDM_REF, speeds)
    np.testing.assert_allclose(cf.equilibrium_speed("idm", IDM_REF, gaps), speeds, atol=2e-3)
    np.testing.assert_allclose(cf.equilibrium_gap("idm", IDM_REF, speeds), gaps, rtol=1e-4)
    # below the jam gap s0 = 2 m nobody moves; beyond v0 there is no equilibrium gap
    assert float(cf.equilibrium_speed("idm", IDM_REF, 1.5)) < 1e-4
    assert np.isinf(cf.equilibrium_gap("idm", IDM_REF, 31.0))
