r"""The Optimal Velocity Model (OVM) and the Full Velocity Difference Model (FVDM).

.. math::

    \dot v = \kappa\,[V_\text{opt}(s) - v] + \lambda\,(v_\text{leader} - v),

with ``lambda = 0`` for the OVM [B1995]_ and ``lambda > 0`` for the FVDM [JWZ2001]_, gap
``s`` bumper to bumper (m), speeds in m/s, sensitivities ``kappa`` and ``lambda`` in 1/s.

Optimal-velocity function. The tanh shape of Bando et al. (1995), written with positive,
interpretable parameters:

.. math::

    V_\text{opt}(s) = v_0\,\frac{\tanh((s - s_c)/w) + \tanh((s_c - s_0)/w)}
                               {1 + \tanh((s_c - s_0)/w)},

with desired (free) speed ``v0 = V_opt(inf)`` (m/s), jam gap ``s0`` where ``V_opt(s0) = 0``
(m), inflection gap ``s_c`` (m) and width ``w`` (m). It is exactly the Helbing & Tilch
(1998) form ``V1 + V2 tanh(C1 s - C2)`` with ``v0 = V1 + V2``, ``s_c = C2 / C1``,
``w = 1 / C1`` and ``s0 = s_c - w artanh(V1 / V2)``. Below ``s0`` the optimal velocity is
negative: the follower brakes and, as speeds are clipped at 0 in rollouts, stands. (With
``s0 = 0`` it is Bando et al.'s original normalisation, whose jam gap of 0 m makes
standing queues collide under the slightest noise.)

Reference values are the Helbing & Tilch (1998) fit to car-following data, used by Jiang,
Wu & Zhu (2001): ``V1 = 6.75 m/s``, ``V2 = 7.91 m/s``, ``C1 = 0.13 1/m``, ``C2 = 1.57`` with
headway measured front-to-front minus a 5 m vehicle length, i.e. ``v0 = 14.66 m/s``,
``s_c = 12.08 m``, ``w = 7.69 m``, ``s0 = 2.32 m``; ``kappa = 0.85 1/s`` for the OVM
(Helbing & Tilch 1998)
and ``kappa = 0.41 1/s``, ``lambda = 0.5 1/s`` for the FVDM (Jiang, Wu & Zhu 2001). Note the
urban-scale ``v0``: motorway data need a larger desired speed, which the plausible range
allows. Every parameter is log-transformed. The latent priors are not part of the physics:
the default ones (:data:`carpool.models.carfollowing.DEFAULT_LATENT_PRIOR_SD`) cover the
ranges in :data:`OVM_PLAUSIBLE_RANGES` / :data:`FVDM_PLAUSIBLE_RANGES` with their central
95% intervals (our weakly informative choice around the published values, not published
priors).

References
----------
.. [B1995] M. Bando, K. Hasebe, A. Nakayama, A. Shibata, Y. Sugiyama, "Dynamical model of
   traffic congestion and numerical simulation", Phys. Rev. E 51, 1035 (1995).
.. [HT1998] D. Helbing, B. Tilch, "Generalized force model of traffic dynamics",
   Phys. Rev. E 58, 133 (1998).
.. [JWZ2001] R. Jiang, Q. Wu, Z. Zhu, "Full velocity difference model for a car-following
   theory", Phys. Rev. E 64, 017101 (2001).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from carpool.carfollowing.model import CarFollowingModel, register_model
from carpool.parameters import Parameter, ParameterTable

__all__ = [
    "FVDM",
    "FVDM_PLAUSIBLE_RANGES",
    "OVM",
    "OVM_PLAUSIBLE_RANGES",
    "fvdm_acceleration",
    "optimal_velocity",
    "ovm_acceleration",
]

#: Plausible ranges (natural units) of the OVM parameters; the default latent priors' 95%
#: intervals cover them.
OVM_PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "kappa": (0.2, 2.0),
    "v0": (8.0, 40.0),
    "s0": (1.0, 5.0),
    "s_c": (5.0, 25.0),
    "w": (3.0, 20.0),
}

#: Plausible ranges (natural units) of the FVDM parameters; the default latent priors'
#: 95% intervals cover them.
FVDM_PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "kappa": (0.1, 2.0),
    "lam": (0.1, 1.5),
    "v0": (8.0, 40.0),
    "s0": (1.0, 5.0),
    "s_c": (5.0, 25.0),
    "w": (3.0, 20.0),
}


def optimal_velocity(params: Mapping[str, ArrayLike], gap: ArrayLike) -> jax.Array:
    """Optimal velocity ``V_opt(s)`` (m/s) of the module docstring.

    Parameters
    ----------
    params
        ``v0`` (m/s), ``s0`` (m), ``s_c`` (m), ``w`` (m), natural units, broadcastable
        against ``gap``.
    gap
        Bumper-to-bumper gap, m.

    Returns
    -------
    jax.Array
        Speed in m/s, increasing through 0 at ``gap = s0`` to ``v0`` as ``gap -> inf``.
    """
    offset = jnp.tanh((params["s_c"] - params["s0"]) / params["w"])
    shape = jnp.tanh((jnp.asarray(gap) - params["s_c"]) / params["w"])
    return params["v0"] * (shape + offset) / (1.0 + offset)


def ovm_acceleration(
    params: Mapping[str, ArrayLike],
    speed: ArrayLike,
    gap: ArrayLike,
    leader_speed: ArrayLike,
    constants: Mapping[str, float],
) -> jax.Array:
    """OVM acceleration ``kappa (V_opt(s) - v)`` (m/s^2); ``leader_speed`` is unused.

    Parameters
    ----------
    params
        ``kappa`` (1/s), ``v0`` (m/s), ``s0`` (m), ``s_c`` (m), ``w`` (m), natural units.
    speed, gap, leader_speed
        Follower speed (m/s), bumper-to-bumper gap (m), leader speed (m/s).
    constants
        Unused.

    Returns
    -------
    jax.Array
        Acceleration, m/s^2, broadcast shape of parameters and state.
    """
    # 0 * leader_speed keeps the output shape the broadcast of the whole state.
    speed = jnp.asarray(speed)
    return params["kappa"] * (optimal_velocity(params, gap) - speed) + 0.0 * jnp.asarray(
        leader_speed
    )


def fvdm_acceleration(
    params: Mapping[str, ArrayLike],
    speed: ArrayLike,
    gap: ArrayLike,
    leader_speed: ArrayLike,
    constants: Mapping[str, float],
) -> jax.Array:
    """FVDM acceleration ``kappa (V_opt(s) - v) + lam (v_leader - v)`` (m/s^2).

    Parameters
    ----------
    params
        ``kappa`` (1/s), ``lam`` (1/s, the speed-difference sensitivity lambda), ``v0``
        (m/s), ``s0`` (m), ``s_c`` (m), ``w`` (m), natural units.
    speed, gap, leader_speed
        Follower speed (m/s), bumper-to-bumper gap (m), leader speed (m/s).
    constants
        Unused.

    Returns
    -------
    jax.Array
        Acceleration, m/s^2, broadcast shape of parameters and state.
    """
    speed = jnp.asarray(speed)
    return params["kappa"] * (optimal_velocity(params, gap) - speed) + params["lam"] * (
        jnp.asarray(leader_speed) - speed
    )


def _parameter(name: str, unit: str, reference: float, text: str) -> Parameter:
    return Parameter(name, unit, transform="log", reference=reference, description=text)


_V_OPT_PARAMETERS = [
    _parameter("v0", "m/s", 14.66,
               "desired (free) speed V1 + V2 of Helbing & Tilch (1998): 6.75 + 7.91 m/s"),
    _parameter("s0", "m", 2.32,
               "jam gap, V_opt(s0) = 0; C2 / C1 - artanh(V1 / V2) / C1 of Helbing & Tilch "
               "(1998)"),
    _parameter("s_c", "m", 12.08,
               "inflection gap C2 / C1 of Helbing & Tilch (1998): 1.57 / 0.13 1/m"),
    _parameter("w", "m", 7.69,
               "width of the tanh step 1 / C1 of Helbing & Tilch (1998): 1 / 0.13 1/m"),
]

OVM = CarFollowingModel(
    name="ovm",
    parameters=ParameterTable(
        [
            _parameter("kappa", "1/s", 0.85,
                       "sensitivity (inverse relaxation time); 0.85 1/s, Helbing & Tilch "
                       "(1998) for the OVM"),
            *_V_OPT_PARAMETERS,
        ]
    ),
    acceleration_fn=ovm_acceleration,
    constants={},
    description=(
        "Optimal Velocity Model kappa (V_opt(s) - v) with the Bando tanh optimal velocity "
        "in the Helbing & Tilch (1998) form, V_opt(s0) = 0, V_opt(inf) = v0, reference "
        "values from their fit. Plausible ranges: "
        + ", ".join(f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in OVM_PLAUSIBLE_RANGES.items())
    ),
    reference=(
        "M. Bando et al., Phys. Rev. E 51, 1035 (1995); "
        "D. Helbing, B. Tilch, Phys. Rev. E 58, 133 (1998)"
    ),
    plausible_ranges=OVM_PLAUSIBLE_RANGES,
)

FVDM = CarFollowingModel(
    name="fvdm",
    parameters=ParameterTable(
        [
            _parameter("kappa", "1/s", 0.41,
                       "sensitivity to the optimal velocity; 0.41 1/s, Jiang, Wu & Zhu "
                       "(2001)"),
            _parameter("lam", "1/s", 0.5,
                       "sensitivity to the speed difference (lambda); 0.5 1/s, Jiang, Wu & "
                       "Zhu (2001)"),
            *_V_OPT_PARAMETERS,
        ]
    ),
    acceleration_fn=fvdm_acceleration,
    constants={},
    description=(
        "Full Velocity Difference Model kappa (V_opt(s) - v) + lam (v_leader - v), same "
        "optimal velocity as 'ovm'; kappa and lam from Jiang, Wu & Zhu (2001). Plausible "
        "ranges: "
        + ", ".join(f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in FVDM_PLAUSIBLE_RANGES.items())
    ),
    reference=(
        "R. Jiang, Q. Wu, Z. Zhu, Phys. Rev. E 64, 017101 (2001); "
        "M. Bando et al., Phys. Rev. E 51, 1035 (1995)"
    ),
    plausible_ranges=FVDM_PLAUSIBLE_RANGES,
)

register_model(OVM)
register_model(FVDM)
