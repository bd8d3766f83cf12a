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

The GP is drawn in chunks of :data:`GP_HISTORY_STEPS` steps, each conditioned on the chunk
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
from carpool.residuals import ar_forward, gp_forward

__all__ = ["GP_HISTORY_STEPS", "conditional_noise", "history_length", "recorded_residuals",
           "stationary_noise"]

#: Most past steps a GP draw conditions on (and the chunk length of long GP series).
GP_HISTORY_STEPS = 50


def history_length(residual: Any, dt: float) -> int:
    """How many recorded residuals before a window the process conditions on."""
    if residual.kind == "ar":
        return int(residual.order)
    if residual.kind == "gp":
        return int(min(GP_HISTORY_STEPS, residual.window_steps(dt, 10**9)))
    return 0


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
    steps, D, N = white.shape
    if residual.kind == "ar":
        p = residual.order
        kappa = jnp.asarray(np.broadcast_to(rparams["kappa"], (D, N, p)), white.dtype)
        return np.asarray(ar_forward(jnp.asarray(white), kappa,
                                     jnp.asarray(sigma, white.dtype)[:, None],
                                     jnp.zeros((D, N, p), white.dtype), 0))
    H = history_length(residual, dt)
    args = (jnp.asarray(rparams["lengthscale"], white.dtype),
            jnp.asarray(rparams["scale"], white.dtype), jnp.asarray(sigma, white.dtype))
    num_chunks = -(-steps // H)
    w = np.concatenate([white, np.zeros((num_chunks * H - steps, D, N), white.dtype)])
    history = jnp.zeros((D, N, H), white.dtype)
    out = []
    for k in range(num_chunks):
        chunk = _gp_chunk(jnp.asarray(w[k * H:(k + 1) * H]), float(dt), *args, history,
                          0 if k == 0 else H)
        out.append(np.asarray(chunk))
        history = jnp.moveaxis(chunk, 0, -1)
    return np.concatenate(out)[:steps]


#: One compiled GP chunk per shape (dt and how much history is known are traced).
_gp_chunk = jax.jit(gp_forward)


def conditional_noise(residual: Any, white: np.ndarray, rparams: dict[str, np.ndarray],
                      sigma: np.ndarray, dt: float, recorded: np.ndarray,
                      starts: np.ndarray) -> np.ndarray:
    """Noise ``(steps, D, W)`` of windows starting at record indices ``starts`` (W,), each
    carried forward from the recorded residuals ``recorded`` (D, T - 1) before its start.

    ``rparams``: AR ``kappa`` (D, p) (this driver's, per draw); GP ``lengthscale``,
    ``scale`` (D,). Windows longer than the GP history are continued chunk by chunk.
    """
    steps, D, W = white.shape
    H = history_length(residual, dt)
    padded = np.concatenate([np.zeros((D, H), recorded.dtype), recorded], axis=1)
    history = np.stack([padded[:, s:s + H] for s in starts], axis=1)  # (D, W, H)
    known = np.minimum(np.asarray(starts), H)
    if residual.kind == "ar":
        kappa = np.broadcast_to(np.asarray(rparams["kappa"])[:, None, :],
                                (D, W, residual.order))
        return np.asarray(ar_forward(jnp.asarray(white), jnp.asarray(kappa, white.dtype),
                                     jnp.asarray(sigma, white.dtype)[:, None],
                                     jnp.asarray(history, white.dtype),
                                     jnp.asarray(known)[None, :]))
    args = (jnp.asarray(rparams["lengthscale"], white.dtype),
            jnp.asarray(rparams["scale"], white.dtype), jnp.asarray(sigma, white.dtype))
    out = np.zeros(white.shape, white.dtype)
    for n in np.unique(known):  # windows sharing how much history is known
        cols = np.flatnonzero(known == n)
        hist = jnp.asarray(history[:, cols, :], white.dtype)
        num_known = int(n)
        pieces = []
        for k in range(0, steps, H):
            w = np.zeros((H, D, cols.size), white.dtype)
            part = white[k:k + H][:, :, cols]
            w[:part.shape[0]] = part
            chunk = _gp_chunk(jnp.asarray(w), float(dt), *args, hist, num_known)
            pieces.append(np.asarray(chunk)[:part.shape[0]])
            hist, num_known = jnp.moveaxis(chunk, 0, -1), H
        out[:, :, cols] = np.concatenate(pieces)
    return out
