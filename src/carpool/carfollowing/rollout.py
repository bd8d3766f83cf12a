"""Closed-loop rollouts behind a recorded leader, and equilibrium (steady-state) relations.

Integration scheme (:func:`follow_leader`). Time ``t_k = k dt``, ``k = 0 .. T-1``. At each
step the follower's acceleration ``acc_k = f(v_k, s_k, v_leader_k) + noise_k`` is held
constant over ``[t_k, t_k + dt)`` (the *ballistic* scheme recommended by Treiber &
Kanagaraj 2015 over plain Euler):

- ``v_{k+1} = max(0, v_k + acc_k dt)``;
- the follower advances ``(v_k + v_{k+1}) dt / 2``, or ``-v_k^2 / (2 acc_k)`` when it comes to
  a stop within the step (it does not reverse);
- the leader, whose speed is linear between samples, advances
  ``(v_leader_k + v_leader_{k+1}) dt / 2``; the gap changes by the difference.

The speed update is exactly the one-step observation model
``v(t + dt) = v(t) + acc(t) dt + eps`` of the calibration (with ``eps = noise dt``), except
where the speed is clipped at 0.

Collision rule. A gap that would fall below ``min_gap`` (default 0.01 m) is floored at
``min_gap`` and the step is flagged in ``Rollout.is_collision``; the simulation carries on
(with the IDM the follower then brakes at once to a stop).

References
----------
M. Treiber, V. Kanagaraj, "Comparing numerical integration schemes for time-continuous
car-following models", Physica A 419, 183-195 (2015).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from carpool.carfollowing.model import CarFollowingModel, as_model
from carpool.errors import InputError

__all__ = ["Rollout", "equilibrium_gap", "equilibrium_speed", "follow_leader"]


class Rollout(NamedTuple):
    """Result of :func:`follow_leader`; every field has shape ``(T,)``.

    Attributes
    ----------
    speed
        Follower speed, m/s, ``>= 0``; ``speed[0]`` is the initial speed.
    gap
        Bumper-to-bumper gap, m, ``>= min_gap``; ``gap[0]`` is the initial gap.
    is_collision
        ``True`` where the unfloored gap fell below ``min_gap`` (a collision); use
        ``rollout.is_collision.any()`` for "did it crash".
    """

    speed: jax.Array
    gap: jax.Array
    is_collision: jax.Array


def follow_leader(
    model: CarFollowingModel | str,
    params: Mapping[str, ArrayLike],
    leader_speed: ArrayLike,
    init_gap: ArrayLike,
    init_speed: ArrayLike,
    dt: float,
    *,
    noise: ArrayLike | None = None,
    min_gap: float = 0.01,
) -> Rollout:
    """Simulate a follower behind a leader with a given speed profile.

    Pure and jit/vmap-friendly: vmap over parameter draws with, e.g.,
    ``jax.vmap(lambda p: follow_leader(IDM, p, leader, 20.0, 10.0, 0.1))(draws)`` where
    ``draws`` maps names to arrays of shape ``(num_draws,)``.

    Parameters
    ----------
    model
        A :class:`CarFollowingModel` or a registered model name.
    params
        Natural-unit parameters of the model, scalars (one follower).
    leader_speed
        Leader speed at ``t_k = k dt``, m/s, shape ``(T,)``, ``T >= 2``.
    init_gap
        Gap at ``t_0``, m, scalar.
    init_speed
        Follower speed at ``t_0``, m/s, scalar, ``>= 0``.
    dt
        Time step, s.
    noise
        Optional acceleration noise added at steps ``k = 0 .. T-2``, m/s^2, shape
        ``(T - 1,)``; ``None`` for a deterministic rollout.
    min_gap
        Gap floor, m, ``> 0``, see the collision rule in the module docstring.

    Returns
    -------
    Rollout
        ``speed``, ``gap`` and ``is_collision``, each of shape ``(T,)``.
    """
    model = as_model(model)
    model.check_params(params)
    leader_speed = jnp.asarray(leader_speed)
    if leader_speed.ndim != 1 or leader_speed.shape[0] < 2:
        raise InputError(
            f"leader_speed must have shape (T,) with T >= 2, got {leader_speed.shape}"
        )
    num_steps = leader_speed.shape[0] - 1
    dtype = jnp.result_type(leader_speed.dtype, float)
    leader_speed = leader_speed.astype(dtype)
    if noise is None:
        noise = jnp.zeros(num_steps, dtype)
    else:
        noise = jnp.asarray(noise, dtype)
        if noise.shape != (num_steps,):
            raise InputError(
                f"noise must have shape (T - 1,) = ({num_steps},), got {noise.shape}"
            )
    if not min_gap > 0:
        raise InputError(f"min_gap must be positive, got {min_gap}")

    def step(carry, inputs):
        speed, gap = carry
        leader_now, leader_next, eps = inputs
        acc = model.acceleration(params, speed, gap, leader_now) + eps
        raw_speed = speed + acc * dt
        is_stopping = raw_speed < 0
        next_speed = jnp.maximum(raw_speed, 0.0)
        stop_acc = jnp.where(is_stopping, acc, -1.0)  # < 0 wherever it is used
        travelled = jnp.where(
            is_stopping, -jnp.square(speed) / (2.0 * stop_acc), 0.5 * (speed + next_speed) * dt
        )
        raw_gap = gap + 0.5 * (leader_now + leader_next) * dt - travelled
        is_collision = raw_gap < min_gap
        next_gap = jnp.maximum(raw_gap, min_gap)
        next_speed = next_speed.astype(dtype)
        next_gap = next_gap.astype(dtype)
        return (next_speed, next_gap), (next_speed, next_gap, is_collision)

    init_speed = jnp.asarray(init_speed, dtype)
    init_gap = jnp.asarray(init_gap, dtype)
    _, (speeds, gaps, collisions) = jax.lax.scan(
        step, (init_speed, init_gap), (leader_speed[:-1], leader_speed[1:], noise)
    )
    return Rollout(
        speed=jnp.concatenate([init_speed[None], speeds]),
        gap=jnp.concatenate([jnp.maximum(init_gap, min_gap)[None], gaps]),
        is_collision=jnp.concatenate([(init_gap < min_gap)[None], collisions]),
    )


def _broadcast_shape(params: Mapping[str, ArrayLike], state: jax.Array) -> tuple[int, ...]:
    return jnp.broadcast_shapes(state.shape, *(jnp.shape(v) for v in params.values()))


def equilibrium_speed(
    model: CarFollowingModel | str,
    params: Mapping[str, ArrayLike],
    gap: ArrayLike,
    *,
    max_speed: float = 80.0,
    num_iter: int = 50,
) -> jax.Array:
    """Steady-state speed ``v_e(s)``: the speed with zero acceleration behind a leader at
    the same speed, by bisection on ``[0, max_speed]``.

    Works for any model whose steady-state acceleration ``f(v, s, v)`` decreases through 0
    once in ``v`` (IDM, Gipps, OVM, FVDM). Differentiable only through the final midpoint,
    i.e. gradients with respect to ``params`` are zero; use closed forms for gradients.

    Parameters
    ----------
    model
        A :class:`CarFollowingModel` or a registered model name.
    params
        Natural-unit parameters, broadcastable against ``gap``.
    gap
        Bumper-to-bumper gap, m.
    max_speed
        Upper end of the bracket, m/s; returned where the acceleration is still positive
        there.
    num_iter
        Bisection steps (50 halve the bracket below float32 resolution).

    Returns
    -------
    jax.Array
        Equilibrium speed, m/s, broadcast shape of ``params`` and ``gap``; 0 where even a
        standing follower would brake (e.g. ``gap <= s0`` for the IDM).
    """
    model = as_model(model)
    model.check_params(params)
    return _equilibrium_speed(model, float(max_speed), int(num_iter), dict(params), gap)


# Jitted per (model, bracket, iterations): equilibria are often evaluated in Python loops
# (initial conditions, plots), where eager dispatch of the bisection would dominate.
@partial(jax.jit, static_argnums=(0, 1, 2))
def _equilibrium_speed(
    model: CarFollowingModel,
    max_speed: float,
    num_iter: int,
    params: dict[str, ArrayLike],
    gap: ArrayLike,
) -> jax.Array:
    gap = jnp.asarray(gap, jnp.result_type(float))
    shape = _broadcast_shape(params, gap)

    def body(_, bracket):
        low, high = bracket
        mid = 0.5 * (low + high)
        is_below = model.acceleration(params, mid, gap, mid) > 0
        return jnp.where(is_below, mid, low), jnp.where(is_below, high, mid)

    low = jnp.zeros(shape, gap.dtype)
    high = jnp.full(shape, max_speed, gap.dtype)
    low, high = jax.lax.fori_loop(0, num_iter, body, (low, high))
    return 0.5 * (low + high)


def equilibrium_gap(
    model: CarFollowingModel | str,
    params: Mapping[str, ArrayLike],
    speed: ArrayLike,
    *,
    min_gap: float = 1e-3,
    max_gap: float = 1e4,
    num_iter: int = 60,
) -> jax.Array:
    """Steady-state gap ``s_e(v)``: the gap with zero acceleration behind a leader at the
    same speed ``v``, by bisection in ``log(gap)`` on ``[min_gap, max_gap]``.

    Works for any model whose steady-state acceleration ``f(v, s, v)`` increases through 0
    once in ``s``; it returns the boundary between gaps with ``f <= 0`` and ``f > 0`` (for
    the Gipps model at standstill, where every gap up to ``s0`` has ``f = 0``, that is
    ``s0``). For the IDM the closed form
    :func:`carpool.carfollowing.idm.idm_equilibrium_gap` is exact and differentiable.

    Parameters
    ----------
    model
        A :class:`CarFollowingModel` or a registered model name.
    params
        Natural-unit parameters, broadcastable against ``speed``.
    speed
        Common speed of follower and leader, m/s, ``>= 0``.
    min_gap, max_gap
        Bracket, m.
    num_iter
        Bisection steps.

    Returns
    -------
    jax.Array
        Equilibrium gap, m, broadcast shape; ``inf`` where the acceleration is not positive
        even at ``max_gap`` (no equilibrium, e.g. ``speed >= v0`` for the IDM), ``min_gap``
        where it is positive already at ``min_gap``.
    """
    model = as_model(model)
    model.check_params(params)
    return _equilibrium_gap(model, float(min_gap), float(max_gap), int(num_iter), dict(params),
                            speed)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _equilibrium_gap(
    model: CarFollowingModel,
    min_gap: float,
    max_gap: float,
    num_iter: int,
    params: dict[str, ArrayLike],
    speed: ArrayLike,
) -> jax.Array:
    speed = jnp.asarray(speed, jnp.result_type(float))
    shape = _broadcast_shape(params, speed)

    def acceleration(log_gap):
        return model.acceleration(params, speed, jnp.exp(log_gap), speed)

    def body(_, bracket):
        low, high = bracket
        mid = 0.5 * (low + high)
        is_below = acceleration(mid) <= 0
        return jnp.where(is_below, mid, low), jnp.where(is_below, high, mid)

    low = jnp.full(shape, jnp.log(min_gap), speed.dtype)
    high = jnp.full(shape, jnp.log(max_gap), speed.dtype)
    has_equilibrium = acceleration(high) > 0
    low, high = jax.lax.fori_loop(0, num_iter, body, (low, high))
    return jnp.where(has_equilibrium, jnp.exp(0.5 * (low + high)), jnp.inf)
