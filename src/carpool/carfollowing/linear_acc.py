r"""A linear constant-time-gap controller: the standard model of commercial ACC systems.

.. math::

    \dot v = k_\text{gap}\,(s - s_0 - T v) + k_\text{speed}\,(v_\text{leader} - v),

with gap ``s`` bumper to bumper (m), speeds in m/s, desired standstill gap ``s0`` (m), time
gap ``T`` (s), gap gain ``k_gap`` (1/s^2) and speed gain ``k_speed`` (1/s). This is the ACC
model of Milanes & Shladover (2014), whose experimentally fitted gains were
``k_gap = 0.23 1/s^2`` and ``k_speed = 0.07 1/s``, and the linear form used to calibrate
commercial ACC vehicles (e.g. Gunter et al. 2021). Data from ACC-driven vehicles (the bundled
USDOT platoon, OpenACC) are close to linear: the IDM's anticipation term, which makes human
drivers brake early when closing in, is nearly absent, and the IDM's comfortable deceleration
``b`` then runs off to implausible values (measured on the bundled platoon: b > 50 m/s^2 for
two of four vehicles). This model's parameters are all identified by such data.

Every parameter is log-transformed around the references ``k_gap = 0.23 1/s^2``,
``k_speed = 0.2 1/s``, ``s0 = 2 m``, ``T = 1.2 s``. The latent priors are not part of the
physics: the default ones (:data:`carpool.models.carfollowing.DEFAULT_LATENT_PRIOR_SD`) cover
:data:`LINEAR_ACC_PLAUSIBLE_RANGES` with their central 95% intervals (our weakly informative
choice, not published priors).

References
----------
V. Milanes, S. E. Shladover, "Modeling cooperative and autonomous adaptive cruise control
dynamic responses using experimental data", Transportation Research Part C 48, 285 (2014).
G. Gunter et al., "Are commercially implemented adaptive cruise control systems string
stable?", IEEE Transactions on Intelligent Transportation Systems 22, 6992 (2021).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from carpool.carfollowing.model import CarFollowingModel, LinearForm, register_model
from carpool.parameters import Parameter, ParameterTable

__all__ = ["LINEAR_ACC", "LINEAR_ACC_FEATURES", "LINEAR_ACC_PLAUSIBLE_RANGES",
           "linear_acc_acceleration", "linear_acc_coefficients", "linear_acc_features"]

#: Plausible ranges (natural units) of the parameters; the default latent priors' 95%
#: intervals cover them.
LINEAR_ACC_PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "k_gap": (0.04, 1.2),
    "k_speed": (0.03, 1.4),
    "s0": (1.0, 5.0),
    "T": (0.6, 2.5),
}


def linear_acc_acceleration(
    params: Mapping[str, ArrayLike],
    speed: ArrayLike,
    gap: ArrayLike,
    leader_speed: ArrayLike,
    constants: Mapping[str, float],
) -> jax.Array:
    """Acceleration (m/s^2) of the linear constant-time-gap controller; element-wise."""
    del constants
    spacing_error = gap - params["s0"] - params["T"] * speed
    return params["k_gap"] * spacing_error + params["k_speed"] * (leader_speed - speed)


#: Names of :func:`linear_acc_features`.
LINEAR_ACC_FEATURES = ("s", "v", "dv_leader", "1")


def linear_acc_features(speed: ArrayLike, gap: ArrayLike, leader_speed: ArrayLike,
                        constants: Mapping[str, float]) -> np.ndarray:
    """The state's features (..., 4): gap (m), speed, leader speed minus speed (m/s) and 1;
    NumPy float64, data only."""
    del constants
    v = np.asarray(speed, dtype=float)
    s = np.asarray(gap, dtype=float)
    dv = np.asarray(leader_speed, dtype=float) - v
    return np.stack(np.broadcast_arrays(s, v, dv, np.ones_like(v)), axis=-1)


def linear_acc_coefficients(params: Mapping[str, ArrayLike], constants: Mapping[str, float]
                            ) -> jax.Array:
    """The coefficients (..., 4) of :func:`linear_acc_features`: ``k_gap``,
    ``-k_gap T``, ``k_speed``, ``-k_gap s0``."""
    del constants
    k_gap, k_speed = jnp.asarray(params["k_gap"]), jnp.asarray(params["k_speed"])
    terms = (k_gap, -k_gap * jnp.asarray(params["T"]), k_speed,
             -k_gap * jnp.asarray(params["s0"]))
    return jnp.stack(jnp.broadcast_arrays(*terms), axis=-1)


LINEAR_ACC = CarFollowingModel(
    name="linear_acc",
    parameters=ParameterTable([
        Parameter("k_gap", "1/s^2", "log", 0.23,
                  description="gap gain; 0.23 1/s^2 (Milanes & Shladover 2014)"),
        Parameter("k_speed", "1/s", "log", 0.2,
                  description="speed-difference gain; 0.07 1/s in Milanes & Shladover "
                  "(2014), larger in later calibrations of commercial ACC"),
        Parameter("s0", "m", "log", 2.0, description="standstill gap"),
        Parameter("T", "s", "log", 1.2,
                  description="time gap; commercial ACC settings span about 1-2 s"),
    ]),
    acceleration_fn=linear_acc_acceleration,
    description="Linear constant-time-gap ACC controller (Milanes & Shladover 2014)",
    reference="V. Milanes, S. E. Shladover, Transportation Research Part C 48, 285 (2014)",
    plausible_ranges=LINEAR_ACC_PLAUSIBLE_RANGES,
    linear_form=LinearForm(linear_acc_features, linear_acc_coefficients, LINEAR_ACC_FEATURES),
)

register_model(LINEAR_ACC)
