r"""Linear (string) stability of a car-following model at a homogeneous equilibrium.

Linearise the follower's acceleration ``f(v, s, v_l)`` at the equilibrium
``(v_e, s_e, v_e)``, with partial derivatives ``f_s`` (1/s^2, gap), ``f_v`` (1/s, own speed)
and ``f_l`` (1/s, leader speed), all by automatic differentiation of the model, so every
registered model works.

*String stability* of an infinite platoon: a speed oscillation of the leader with angular
frequency ``w`` reaches the follower multiplied by
``G(iw) = (f_s + f_l iw) / (-w^2 - f_v iw + f_s)``; ``|G| <= 1`` for every ``w`` iff

.. math::  f_v^2 - f_l^2 - 2 f_s \ge 0 .

(For the optimal-velocity model, ``f = kappa (V(s) - v)``, this is Bando's ``V'(s) <= kappa / 2``;
it is Treiber & Kesting's criterion written with the leader's speed instead of the approach
rate.)

*Ring of N vehicles*: the perturbation modes ``x_i ~ exp(lambda t + i theta i)``,
``theta = 2 pi k / N`` (``k = 1 .. N - 1``) satisfy
``lambda^2 - (f_v + f_l z) lambda - f_s (z - 1) = 0`` with ``z = exp(i theta)``; the ring is
linearly unstable when a root has a positive real part, and the largest real part (1/s) is
the growth rate of the fastest-growing wave. Both criteria are for continuous time; the
simulations' ballistic steps of 0.1 s follow them closely (tested).

References
----------
M. Treiber, A. Kesting, *Traffic Flow Dynamics*, Springer (2013), Ch. 15.
M. Bando et al., "Dynamical model of traffic congestion and numerical simulation",
Phys. Rev. E 51, 1035 (1995).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from carpool.carfollowing.model import CarFollowingModel, as_model
from carpool.carfollowing.rollout import equilibrium_speed
from carpool.errors import InputError

__all__ = ["LinearStability", "linear_stability"]


class LinearStability(NamedTuple):
    """Result of :func:`linear_stability`; floats.

    Attributes
    ----------
    speed
        Equilibrium speed ``v_e`` at the given gap, m/s.
    gap
        The gap, m.
    f_gap, f_speed, f_leader
        Partial derivatives of the acceleration: 1/s^2, 1/s, 1/s.
    margin
        ``f_speed^2 - f_leader^2 - 2 f_gap`` (1/s^2): ``>= 0`` means string stable.
    is_string_stable
        The platoon criterion ``margin >= 0``.
    ring_growth_rate
        Largest real part (1/s) of the ring's perturbation modes, ``nan`` unless
        ``num_vehicles`` was given; ``> 0`` means the ring's equilibrium is unstable.
    """

    speed: float
    gap: float
    f_gap: float
    f_speed: float
    f_leader: float
    margin: float
    is_string_stable: bool
    ring_growth_rate: float


def linear_stability(
    model: CarFollowingModel | str,
    params: Mapping[str, ArrayLike],
    gap: float,
    *,
    num_vehicles: int | None = None,
) -> LinearStability:
    """String stability of identical vehicles at the equilibrium with bumper-to-bumper
    ``gap`` (m), and optionally the growth rate on a ring of ``num_vehicles``.

    Parameters
    ----------
    model
        A :class:`~carpool.carfollowing.CarFollowingModel` or a registered name.
    params
        Natural-unit scalar parameters (one driver type).
    gap
        Equilibrium gap, m, ``> 0``.
    num_vehicles
        Number of vehicles on the ring, ``>= 2``, for ``ring_growth_rate``.

    Examples
    --------
    >>> ls = linear_stability("idm", dict(v0=30.0, s0=2.0, T=1.0, a=0.3, b=3.0), 20.0,
    ...                       num_vehicles=22)
    >>> ls.is_string_stable, ls.ring_growth_rate > 0
    (False, True)
    """
    model = as_model(model)
    model.check_params(params)
    p = {n: jnp.asarray(params[n], jnp.float32) for n in model.parameter_names}
    if any(v.ndim for v in p.values()):
        raise InputError("linear_stability takes scalar parameters (one driver type)")
    gap = float(gap)
    if not gap > 0:
        raise InputError(f"gap must be positive, got {gap}")
    speed, f_speed, f_gap, f_leader = (float(x) for x in
                                       _linearise(model, p, jnp.asarray(gap, jnp.float32)))
    margin = f_speed**2 - f_leader**2 - 2.0 * f_gap
    growth = float("nan")
    if num_vehicles is not None:
        if int(num_vehicles) < 2:
            raise InputError(f"num_vehicles must be >= 2, got {num_vehicles}")
        k = np.arange(1, int(num_vehicles))
        z = np.exp(2j * np.pi * k / int(num_vehicles))
        # lambda^2 - (f_v + f_l z) lambda - f_s (z - 1) = 0
        bq = -(f_speed + f_leader * z)
        cq = -f_gap * (z - 1.0)
        disc = np.sqrt(bq * bq - 4.0 * cq + 0j)
        roots = np.concatenate([(-bq + disc) / 2.0, (-bq - disc) / 2.0])
        growth = float(roots.real.max())
    return LinearStability(speed, gap, f_gap, f_speed, f_leader, float(margin),
                           bool(margin >= 0), growth)


@partial(jax.jit, static_argnums=0)
def _linearise(model: CarFollowingModel, params: dict[str, jax.Array], gap: jax.Array
               ) -> tuple[jax.Array, ...]:
    """Equilibrium speed at ``gap`` and the partial derivatives of the acceleration there
    (compiled once per model: eager autodiff costs about half a second per call)."""
    speed = equilibrium_speed(model, params, gap)

    def acc(state: jax.Array) -> jax.Array:
        return model.acceleration(params, state[0], state[1], state[2])

    f_speed, f_gap, f_leader = jax.grad(acc)(jnp.stack([speed, gap, speed]))
    return speed, f_speed, f_gap, f_leader
