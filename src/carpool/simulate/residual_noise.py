"""Acceleration noise from a fit's AR / GP residual process, for the simulations.

A fitted dynamic residual is the model's account of the acceleration error: in a simulation
the same process drives the noise (the noise is exogenous: it does not depend on the
simulated states, so it is drawn before the simulation's scan).

- :func:`stationary_noise`: series started in the process's stationary distribution (a ring
  road; a whole-record follow simulation).
- :func:`conditional_noise`: windows restarted from the record carry the residual process
  forward from the *recorded* residuals just before each window (k-step-ahead prediction):
  AR(p) conditions on the last ``p`` recorded residuals, the GP on the last
  :data:`GP_HISTORY_STEPS` (at most; fewer at the start of the record).
- :func:`recorded_residuals`: the acceleration residuals of a record under parameter draws,
  ``(v_{t+1} - v_t) / dt - acc(theta; v_t, s_t, v_leader_t)``.

Both draw from the process's :meth:`~carpool.residuals.ResidualProcess.forward_noise`. The
GP is drawn in chunks of :data:`GP_HISTORY_STEPS` steps, each conditioned on the chunk
before it (exact for the joint of two neighbouring chunks; correlations beyond one chunk,
at most ``exp(-(50 dt)^2 / (2 l^2))``, are dropped: 1e-22 for 50 steps of 0.2 s and
l = 1 s).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from carpool.carfollowing.model import CarFollowingModel
from carpool.residuals.process import GP_HISTORY_STEPS

__all__ = ["GP_HISTORY_STEPS", "conditional_noise", "history_length", "recorded_residuals",
           "stationary_noise"]


def history_length(residual: Any, dt: float) -> int:
    """How many recorded residuals before a window the process conditions on."""
    return residual.history_steps(dt)


def recorded_residuals(model: CarFollowingModel, params: dict[str, jax.Array],
                       record: dict[str, np.ndarray], dt: float) -> np.ndarray:
    """Acceleration residuals of the record, m/s^2, shape (D, T - 1) for params (D,)."""
    speed = jnp.asarray(record["speed"])
    acc = jax.vmap(lambda p: model.acceleration(p, speed[:-1],
                                                jnp.asarray(record["gap"][:-1]),
                                                jnp.asarray(record["leader_speed"][:-1])))(
        params)
    return np.asarray((speed[1:] - speed[:-1])[None, :] / dt - acc)


def stationary_noise(residual: Any, white: np.ndarray, rparams: dict[str, np.ndarray],
                     sigma: np.ndarray, dt: float) -> np.ndarray:
    """Noise ``(steps, D, N)`` from the stationary process; ``white`` standard normals of
    that shape, ``rparams`` per draw (AR ``kappa`` (D, N, p); GP ``lengthscale``, ``scale``
    (D,)), ``sigma`` (D,)."""
    _, D, N = white.shape
    history = np.zeros((D, N, residual.history_steps(dt)), white.dtype)
    return residual.forward_noise(white, rparams, sigma, dt, history, np.zeros(N, int))


def conditional_noise(residual: Any, white: np.ndarray, rparams: dict[str, np.ndarray],
                      sigma: np.ndarray, dt: float, recorded: np.ndarray,
                      starts: np.ndarray) -> np.ndarray:
    """Noise ``(steps, D, W)`` of windows starting at record indices ``starts`` (W,), each
    carried forward from the recorded residuals ``recorded`` (D, T - 1) before its start.

    ``rparams``: AR ``kappa`` (D, p) (this driver's, per draw); GP ``lengthscale``,
    ``scale`` (D,). Windows longer than the GP history are continued chunk by chunk.
    """
    _, D, _ = white.shape
    H = residual.history_steps(dt)
    padded = np.concatenate([np.zeros((D, H), recorded.dtype), recorded], axis=1)
    history = np.stack([padded[:, s:s + H] for s in starts], axis=1)  # (D, W, H)
    known = np.minimum(np.asarray(starts), H)
    return residual.forward_noise(white, rparams, sigma, dt, history, known)
