r"""The Intelligent Driver Model (IDM).

.. math::

    \dot v = a \left[1 - \left(\frac{v}{v_0}\right)^\delta
             - \left(\frac{s^*(v, \Delta v)}{s}\right)^2\right], \qquad
    s^*(v, \Delta v) = s_0 + v T + \frac{v \, \Delta v}{2\sqrt{a b}}, \qquad
    \Delta v = v - v_\text{leader},

with speed ``v`` (m/s), bumper-to-bumper gap ``s`` (m) and approaching rate ``dv`` (m/s,
positive when closing in) [THH2000]_.

Desired-gap convention. This module uses the plain formula of the original paper and of
Zhang & Sun (2023), **without clipping** ``s*``. When the leader pulls away fast
(``dv`` strongly negative) ``s*`` can drop below ``s0`` or even below 0; the squared term
then still acts as a (small) brake when ``s* < 0``. Treiber & Kesting (2013, Ch. 11) and
their simulator instead use ``s* = s0 + max(0, vT + v dv / (2 sqrt(ab)))``. The two agree
whenever ``vT + v dv / (2 sqrt(ab)) >= 0``, i.e. unless the leader is faster than the
follower by more than ``2 T sqrt(ab)`` (about 4.7 m/s at the reference values), when only
a little of the follower's acceleration is at stake; register a variant model if you need
the clipped form.

Parameter references and ranges. Each parameter is log-transformed, ``natural =
reference * exp(z)``. The latent priors are not part of the physics: the default ones
(:data:`carpool.models.carfollowing.DEFAULT_LATENT_PRIOR_SD`) are chosen so that their
central 95% intervals cover the plausible ranges in :data:`IDM_PLAUSIBLE_RANGES`. Sources:
Treiber, Hennecke & Helbing (2000) and Treiber & Kesting (2013, Ch. 11), which give
typical values v0 = 120 km/h (motorway) or 54 km/h (city), T = 1.0-2.0 s, s0 = 2 m,
a = 0.8-2.5 m/s^2 and b = 1-2 m/s^2 (calibrations to trajectory data, e.g. Kesting &
Treiber 2008, spread somewhat wider, which the ranges below allow for).

References
----------
.. [THH2000] M. Treiber, A. Hennecke, D. Helbing, "Congested traffic states in empirical
   observations and microscopic simulations", Phys. Rev. E 62, 1805 (2000).
.. [TK2013] M. Treiber, A. Kesting, *Traffic Flow Dynamics*, Springer (2013), Ch. 11.
.. [KT2008] A. Kesting, M. Treiber, "Calibrating car-following models by using trajectory
   data", Transp. Res. Rec. 2088, 148-156 (2008).
.. [ZS2023] Y. Zhang, L. Sun, "Bayesian calibration of the Intelligent Driver Model",
   IEEE Trans. Intell. Transp. Syst. (2023).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from carpool.carfollowing._numerics import safe_power
from carpool.carfollowing.model import CarFollowingModel, LinearForm, register_model
from carpool.parameters import Parameter, ParameterTable

__all__ = [
    "IDM",
    "IDM_DELTA",
    "IDM_MIN_GAP",
    "IDM_PHYSICAL_RANGES",
    "IDM_PLAUSIBLE_RANGES",
    "IDM_ZHANG_SUN_REFERENCE",
    "idm_acceleration",
    "idm_desired_gap",
    "idm_equilibrium_gap",
    "idm_features",
    "idm_coefficients",
]

#: Acceleration exponent delta (dimensionless), the standard value of [THH2000]_ / [TK2013]_.
IDM_DELTA = 4.0

#: Gaps below this (m) count as this gap in :func:`idm_acceleration`. The interaction term
#: ``(s*/s)^2`` overflows float32 for gaps near 1e-20 m (s* ~ 2 m), turning the acceleration
#: and the sampler's gradients into inf / NaN; at 1e-3 m it is already a braking of
#: ~6e6 m/s^2, so the floor changes no prediction that matters (tested: finite gradients at
#: gaps down to 1e-30 m and speeds 0-150 m/s).
IDM_MIN_GAP = 1e-3

#: Reference (normalisation) values of Zhang & Sun (2023): v0 m/s, s0 m, T s, a and b m/s^2.
IDM_ZHANG_SUN_REFERENCE: dict[str, float] = {
    "v0": 33.0,
    "s0": 2.0,
    "T": 1.6,
    "a": 1.5,
    "b": 1.67,
}

#: Plausible ranges (natural units) of the parameters; the default latent priors' 95%
#: intervals cover them.
IDM_PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "v0": (14.0, 45.0),  # 50 km/h city .. 160 km/h motorway
    "s0": (1.0, 5.0),
    "T": (0.7, 2.5),
    "a": (0.8, 2.5),
    "b": (1.0, 3.0),
}


#: Bounds (natural units) outside which an estimate is not that of a human driver: a desired
#: speed below 18 km/h or above 162 km/h, a jam gap below 0.3 m or above 10 m, a time gap
#: below 0.3 s or above 4 s, a maximum acceleration below 0.1 or above 4 m/s^2 (a sports
#: car's launch), a comfortable deceleration below 0.3 or above 6 m/s^2 (near an emergency
#: stop on dry asphalt, about 8-9 m/s^2). Wide around the typical values of Treiber &
#: Kesting (2013, Ch. 11) and of the highD calibrations in Zhang & Sun's reference notebooks
#: (v0 17-26 m/s, s0 3.2-3.8 m, T 0.96-1.17 s, a 1.05-1.46 m/s^2, b 1.5-2.4 m/s^2).
IDM_PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "v0": (5.0, 45.0),
    "s0": (0.3, 10.0),
    "T": (0.3, 4.0),
    "a": (0.1, 4.0),
    "b": (0.3, 6.0),
}


def idm_desired_gap(
    params: Mapping[str, ArrayLike], speed: ArrayLike, leader_speed: ArrayLike
) -> jax.Array:
    """Desired dynamical gap ``s* = s0 + v T + v (v - v_leader) / (2 sqrt(a b))`` (m).

    Parameters
    ----------
    params
        ``s0`` (m), ``T`` (s), ``a``, ``b`` (m/s^2), natural units, broadcastable.
    speed, leader_speed
        Follower and leader speed, m/s.

    Returns
    -------
    jax.Array
        ``s*`` in metres, unclipped (see the module docstring).
    """
    speed = jnp.asarray(speed)
    approach = speed - jnp.asarray(leader_speed)
    return (
        params["s0"]
        + speed * params["T"]
        + speed * approach / (2.0 * jnp.sqrt(params["a"] * params["b"]))
    )


def idm_acceleration(
    params: Mapping[str, ArrayLike],
    speed: ArrayLike,
    gap: ArrayLike,
    leader_speed: ArrayLike,
    constants: Mapping[str, float],
) -> jax.Array:
    """IDM acceleration (m/s^2); the :data:`~carpool.carfollowing.model.AccelerationFn`.

    Parameters
    ----------
    params
        ``v0`` (m/s), ``s0`` (m), ``T`` (s), ``a`` (m/s^2), ``b`` (m/s^2), natural units;
        scalars or arrays broadcastable against the state.
    speed
        Follower speed, m/s (negative values are treated as 0 in the free-road term).
    gap
        Bumper-to-bumper gap, m, ``> 0``; values below :data:`IDM_MIN_GAP` count as it.
    leader_speed
        Leader speed, m/s.
    constants
        ``delta``, the acceleration exponent (dimensionless).

    Returns
    -------
    jax.Array
        Acceleration, m/s^2, broadcast shape.
    """
    speed = jnp.asarray(speed)
    free = safe_power(speed / params["v0"], constants["delta"])
    gap = jnp.maximum(jnp.asarray(gap), IDM_MIN_GAP)
    interaction = jnp.square(idm_desired_gap(params, speed, leader_speed) / gap)
    return params["a"] * (1.0 - free - interaction)


#: The IDM's acceleration as features of the state times functions of the parameters
#: (:func:`idm_features`, :func:`idm_coefficients`): with ``c = 1 / (2 sqrt(ab))``,
#: ``(s0 + vT + v dv c)^2`` expands into six products.
IDM_FEATURES = ("1", "v^delta", "1/s^2", "v^2/s^2", "v^2 dv^2/s^2", "v/s^2", "v dv/s^2",
                "v^2 dv/s^2")


def idm_features(speed: ArrayLike, gap: ArrayLike, leader_speed: ArrayLike,
                 constants: Mapping[str, float]) -> np.ndarray:
    """The state's features (..., 8) of the IDM acceleration (:data:`IDM_FEATURES`), NumPy
    float64: data only, computed once per fit (never traced). Speed is clipped at 0 in the
    free-road feature and the gap floored at :data:`IDM_MIN_GAP`, as in
    :func:`idm_acceleration`."""
    v = np.asarray(speed, dtype=float)
    s = np.maximum(np.asarray(gap, dtype=float), IDM_MIN_GAP)
    dv = v - np.asarray(leader_speed, dtype=float)
    inv = 1.0 / (s * s)
    v2 = v * v
    free = np.maximum(v, 0.0) ** constants["delta"]
    return np.stack(np.broadcast_arrays(
        np.ones_like(v), free, inv, v2 * inv, v2 * dv * dv * inv, v * inv, v * dv * inv,
        v2 * dv * inv), axis=-1)


def idm_coefficients(params: Mapping[str, ArrayLike], constants: Mapping[str, float]
                     ) -> jax.Array:
    """The coefficients (..., 8) of :func:`idm_features` for natural-unit ``params`` (``v0``
    m/s, ``s0`` m, ``T`` s, ``a``, ``b`` m/s^2; any common shape): ``idm_acceleration =
    idm_features @ idm_coefficients`` exactly."""
    a, b = jnp.asarray(params["a"]), jnp.asarray(params["b"])
    s0, T = jnp.asarray(params["s0"]), jnp.asarray(params["T"])
    root = jnp.sqrt(a / b)  # a c = sqrt(a / b) / 2
    terms = (a, -a * jnp.asarray(params["v0"]) ** -constants["delta"], -a * s0 * s0,
             -a * T * T, -0.25 / b, -2.0 * a * s0 * T, -s0 * root, -T * root)
    return jnp.stack(jnp.broadcast_arrays(*terms), axis=-1)


def idm_equilibrium_gap(
    params: Mapping[str, ArrayLike], speed: ArrayLike, *, delta: float = IDM_DELTA
) -> jax.Array:
    """Closed-form IDM equilibrium gap ``s_e(v) = (s0 + v T) / sqrt(1 - (v / v0)^delta)``.

    The gap (m) at which a driver following a leader at the same constant speed ``v`` has
    zero acceleration.

    Parameters
    ----------
    params
        ``v0`` (m/s), ``s0`` (m), ``T`` (s), natural units, broadcastable against ``speed``.
    speed
        Common speed of follower and leader, m/s, ``>= 0``.
    delta
        Acceleration exponent.

    Returns
    -------
    jax.Array
        Equilibrium gap, m; ``inf`` where ``speed >= v0`` (no equilibrium).
    """
    speed = jnp.asarray(speed)
    free = 1.0 - safe_power(speed / params["v0"], delta)
    has_equilibrium = free > 0
    denominator = jnp.sqrt(jnp.where(has_equilibrium, free, 1.0))
    gap = (params["s0"] + speed * params["T"]) / denominator
    return jnp.where(has_equilibrium, gap, jnp.inf)


def _log_parameter(name: str, unit: str, reference: float, description: str) -> Parameter:
    return Parameter(name, unit, transform="log", reference=reference,
                     description=description)


IDM_PARAMETERS = ParameterTable(
    [
        _log_parameter(
            "v0", "m/s", 30.0,
            "desired speed; 30 m/s (108 km/h) motorway reference, between the 120 km/h "
            "motorway and 54 km/h city values of Treiber & Kesting (2013, Ch. 11); "
            "weakly identified in congested data",
        ),
        _log_parameter(
            "s0", "m", 2.0,
            "minimum (jam) gap; 2 m, Treiber, Hennecke & Helbing (2000), "
            "Treiber & Kesting (2013)",
        ),
        _log_parameter(
            "T", "s", 1.5,
            "safe time gap; 1.5 s, inside 1.0-2.0 s of Treiber & Kesting (2013) and near "
            "1.6 s of Treiber, Hennecke & Helbing (2000)",
        ),
        _log_parameter(
            "a", "m/s^2", 1.5,
            "maximum acceleration; 1.5 m/s^2, inside 0.8-2.5 m/s^2 of Treiber & Kesting "
            "(2013), as in Zhang & Sun (2023)",
        ),
        _log_parameter(
            "b", "m/s^2", 1.67,
            "comfortable deceleration; 1.67 m/s^2, Treiber, Hennecke & Helbing (2000), "
            "inside 1-2 m/s^2 of Treiber & Kesting (2013)",
        ),
    ]
)

IDM = CarFollowingModel(
    name="idm",
    parameters=IDM_PARAMETERS,
    acceleration_fn=idm_acceleration,
    constants={"delta": IDM_DELTA},
    description=(
        "Intelligent Driver Model, plain (unclipped) desired gap s* = s0 + vT + v dv/"
        "(2 sqrt(ab)), delta = 4. Plausible ranges from Treiber & Kesting (2013) and "
        "trajectory calibrations (Kesting & Treiber 2008): " + ", ".join(
            f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in IDM_PLAUSIBLE_RANGES.items()
        )
    ),
    reference=(
        "M. Treiber, A. Hennecke, D. Helbing, Phys. Rev. E 62, 1805 (2000); "
        "M. Treiber, A. Kesting, Traffic Flow Dynamics, Springer (2013), Ch. 11"
    ),
    plausible_ranges=IDM_PLAUSIBLE_RANGES,
    physical_ranges=IDM_PHYSICAL_RANGES,
    linear_form=LinearForm(idm_features, idm_coefficients, IDM_FEATURES),
)

register_model(IDM)
