r"""The Gipps (1981) safe-distance car-following model, in acceleration form.

Gipps' model gives the speed a driver adopts one reaction time ``tau`` later as the smaller
of a free-acceleration and a safe-braking speed [G1981]_:

.. math::

    v_a &= v + 2.5\, a \tau \left(1 - \frac{v}{V}\right)\sqrt{0.025 + \frac{v}{V}}, \\
    v_b &= -b\tau + \sqrt{b^2\tau^2
           + b\left[2 (s - s_0) - v\tau + \frac{v_\text{leader}^2}{\hat b}\right]}, \\
    \dot v &= \frac{\max(0, \min(v_a, v_b)) - v}{\tau}.

Conventions (Gipps writes decelerations as negative numbers; here they are positive
magnitudes):

- ``s`` is the bumper-to-bumper gap (m); Gipps' "effective size" of the leader (vehicle
  length plus a margin) enters as ``s0``, the margin kept at standstill, so that
  ``x_leader - size_leader - x = s - s0``;
- the ``- v tau`` term is Gipps' additional safety margin of half a reaction time;
- the acceleration form ``(v(t + tau) - v) / tau`` reproduces Gipps' update exactly when the
  simulation step equals ``tau``; with another step it is the continuous-time relaxation
  towards Gipps' target speed;
- the target speed is clipped at 0 (no reversing), so the strongest deceleration is
  ``v / tau``;
- when the square-root argument is negative (the leader cannot be avoided even with
  braking at ``b``) the root is taken as 0, i.e. ``v_b = -b tau`` and the target speed
  is 0; the root is gradient-safe.

Calibrated versus fixed. ``a``, ``b``, ``V``, ``s0`` and ``tau`` are calibrated. The
driver's estimate ``b_hat`` of the leader's deceleration is a constant: it enters only
through ``b v_leader^2 / b_hat`` in the braking branch, where it trades off against ``b``
and ``s0`` and is poorly identified from ordinary car-following data. Its default
3.2 m/s^2 is Gipps' rule ``b_hat = max(3, (b + 3) / 2)`` evaluated at the reference
``b = 3.4 m/s^2``. To calibrate it, use ``GIPPS.free(GIPPS_B_HAT_PARAMETER)``.

Reference values are the means of Gipps' (1981) simulated driver population: ``a`` 1.7
m/s^2, ``b = 2a = 3.4`` m/s^2, ``V`` 20 m/s, effective size 6.5 m (``s0`` = 6.5 m minus a
4.5 m car = 2 m), ``tau = 2/3`` s. Every parameter is log-transformed. The plausible
ranges :data:`GIPPS_PLAUSIBLE_RANGES` are our rounded-outwards summary of calibrated Gipps
parameters in the literature (see e.g. the review of Ciuffo, Punzo & Montanino 2012). The
latent priors are not part of the physics: the default ones
(:data:`carpool.models.carfollowing.DEFAULT_LATENT_PRIOR_SD`) cover these ranges with their
central 95% intervals and are weakly informative, not published priors.

References
----------
.. [G1981] P. G. Gipps, "A behavioural car-following model for computer simulation",
   Transp. Res. B 15(2), 105-111 (1981).
.. [CPM2012] B. Ciuffo, V. Punzo, M. Montanino, "Thirty years of Gipps' car-following
   model: applications, developments, and new features", Transp. Res. Rec. 2315, 89-99
   (2012).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from carpool.carfollowing._numerics import safe_sqrt
from carpool.carfollowing.model import CarFollowingModel, register_model
from carpool.parameters import Parameter, ParameterTable

__all__ = [
    "GIPPS",
    "GIPPS_B_HAT_PARAMETER",
    "GIPPS_PLAUSIBLE_RANGES",
    "gipps_acceleration",
    "gipps_target_speed",
]

#: Plausible ranges (natural units) of the parameters; the default latent priors' 95%
#: intervals cover them.
GIPPS_PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "a": (0.8, 3.5),
    "b": (1.5, 7.0),
    "V": (10.0, 40.0),
    "s0": (1.0, 5.0),
    "tau": (0.3, 1.5),
}


def _get(name: str, params: Mapping[str, ArrayLike], constants: Mapping[str, float]):
    return params[name] if name in params else constants[name]


def gipps_target_speed(
    params: Mapping[str, ArrayLike],
    speed: ArrayLike,
    gap: ArrayLike,
    leader_speed: ArrayLike,
    constants: Mapping[str, float],
) -> jax.Array:
    """Gipps' speed one reaction time ahead, ``max(0, min(v_a, v_b))`` (m/s).

    Parameters are as for :func:`gipps_acceleration`.
    """
    speed = jnp.asarray(speed)
    leader_speed = jnp.asarray(leader_speed)
    a, b, V, s0, tau = (params[k] for k in ("a", "b", "V", "s0", "tau"))
    b_hat = _get("b_hat", params, constants)
    relative = jnp.maximum(speed, 0.0) / V
    free = speed + 2.5 * a * tau * (1.0 - relative) * jnp.sqrt(0.025 + relative)
    radicand = jnp.square(b * tau) + b * (
        2.0 * (jnp.asarray(gap) - s0) - speed * tau + jnp.square(leader_speed) / b_hat
    )
    braking = -b * tau + safe_sqrt(radicand)
    return jnp.maximum(jnp.minimum(free, braking), 0.0)


def gipps_acceleration(
    params: Mapping[str, ArrayLike],
    speed: ArrayLike,
    gap: ArrayLike,
    leader_speed: ArrayLike,
    constants: Mapping[str, float],
) -> jax.Array:
    """Gipps acceleration ``(target speed - v) / tau`` (m/s^2).

    Parameters
    ----------
    params
        ``a`` (m/s^2, maximum acceleration), ``b`` (m/s^2, maximum deceleration, positive),
        ``V`` (m/s, desired speed), ``s0`` (m, standstill margin), ``tau`` (s, reaction
        time), natural units, broadcastable against the state; optionally ``b_hat``.
    speed
        Follower speed, m/s, ``>= 0``.
    gap
        Bumper-to-bumper gap, m.
    leader_speed
        Leader speed, m/s.
    constants
        ``b_hat`` (m/s^2, positive), the assumed deceleration of the leader, unless it is
        calibrated and given in ``params``.

    Returns
    -------
    jax.Array
        Acceleration, m/s^2, broadcast shape.
    """
    target = gipps_target_speed(params, speed, gap, leader_speed, constants)
    return (target - jnp.asarray(speed)) / params["tau"]


def _parameter(name: str, unit: str, reference: float, text: str) -> Parameter:
    return Parameter(name, unit, transform="log", reference=reference, description=text)


#: The leader-deceleration estimate as a calibrated parameter, for ``GIPPS.free(...)``.
GIPPS_B_HAT_PARAMETER = _parameter(
    "b_hat", "m/s^2", 3.2,
    "estimate of the leader's maximum deceleration; 3.2 m/s^2 = Gipps' (1981) rule "
    "max(3, (b + 3) / 2) at b = 3.4",
)

GIPPS_PARAMETERS = ParameterTable(
    [
        _parameter("a", "m/s^2", 1.7,
                   "maximum acceleration; 1.7 m/s^2, population mean of Gipps (1981)"),
        _parameter("b", "m/s^2", 3.4,
                   "maximum deceleration (positive); 3.4 m/s^2 = 2a, Gipps (1981)"),
        _parameter("V", "m/s", 20.0,
                   "desired speed; 20 m/s, population mean of Gipps (1981)"),
        _parameter("s0", "m", 2.0,
                   "standstill margin (effective size minus length); 6.5 m effective "
                   "size of Gipps (1981) minus a 4.5 m car"),
        _parameter("tau", "s", 2.0 / 3.0,
                   "reaction time; 2/3 s, Gipps (1981)"),
    ]
)

GIPPS = CarFollowingModel(
    name="gipps",
    parameters=GIPPS_PARAMETERS,
    acceleration_fn=gipps_acceleration,
    constants={"b_hat": 3.2},
    description=(
        "Gipps (1981) safe-distance model in acceleration form (target speed - v) / tau, "
        "bumper-to-bumper gap with standstill margin s0, target speed clipped at 0, "
        "gradient-safe square root; b_hat fixed at 3.2 m/s^2 (free it with "
        "GIPPS.free(GIPPS_B_HAT_PARAMETER)). Plausible ranges: "
        + ", ".join(f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in GIPPS_PLAUSIBLE_RANGES.items())
    ),
    reference=(
        "P. G. Gipps, A behavioural car-following model for computer simulation, "
        "Transp. Res. B 15(2), 105-111 (1981)"
    ),
    plausible_ranges=GIPPS_PLAUSIBLE_RANGES,
)

register_model(GIPPS)
