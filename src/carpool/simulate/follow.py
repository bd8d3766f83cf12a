"""Closed-loop simulation of one follower behind its recorded leader, over posterior draws.

For each of ``num_draws`` posterior draws, the follower starts from its recorded speed and
gap and is driven by the model (plus, optionally, the fitted acceleration noise) with
:func:`carpool.carfollowing.follow_leader`: the leader's speed comes from the record, the
follower's speed and gap are simulated (ballistic scheme, speeds never negative, gaps
floored at ``min_gap`` and flagged as collisions). Draws and windows are vectorised with
``jax.vmap`` over one :func:`jax.lax.scan`.

Horizons. A whole-trajectory simulation lets errors accumulate over minutes; the reference
(Zhang & Sun 2023) also scores multi-step predictions over short horizons. A window of ``h``
seconds restarts the simulation from the *recorded* state every ``h`` seconds (windows tile
the record: ``[0, h], [h, 2h], ...``, the last one cut at the record's end) and scores the
simulated points inside each window. :func:`follow` scores the whole trajectory and 3 s and
5 s windows.

Metrics per horizon (:attr:`FollowResult.metrics`), over every simulated time point (never
the recorded starting states): RMSE of the mean over draws, empirical CRPS over draws
(:func:`~carpool.simulate.scores.crps_ensemble`), the share of recorded values inside the
central 90% band of the draws, for speed (m/s) and gap (m), and the number of simulations
(draw x window) with a collision.

The simulated gap integrates the recorded leader speed, so errors of the record itself (a
gap that does not match the integrated speeds) appear as gap errors:
:attr:`FollowResult.record_gap_error_m` reports that floor (the RMSE between the recorded
gap and the gap rebuilt from the recorded speeds of both vehicles, whole trajectory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from carpool.carfollowing.model import CarFollowingModel
from carpool.carfollowing.rollout import Rollout, follow_leader
from carpool.errors import InputError
from carpool.simulate._fit import carfollowing_model, sigma_draws
from carpool.simulate.noise import NoiseFn, iid_noise, white_noise
from carpool.simulate.scores import coverage, crps_ensemble, rmse

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["FollowResult", "follow"]

#: Short horizons scored by default, s (as in the reference's multi-step evaluation).
WINDOWS_S = (3.0, 5.0)
#: Simulation engines: carpool's JAX engine, or Eclipse SUMO's IDM (carpool.simulate.sumo).
ENGINES = ("jax", "sumo")
METRIC_COLUMNS = ("horizon_s", "num_windows", "rmse_speed_m_s", "rmse_gap_m",
                  "crps_speed_m_s", "crps_gap_m", "coverage_speed_90", "coverage_gap_90",
                  "collisions", "num_simulations")


@dataclass(frozen=True)
class FollowResult:
    """Simulations of one follower behind its recorded leader (:func:`follow`).

    Attributes
    ----------
    driver
        The driver id.
    record
        The driver's record: ``time`` (s), ``speed`` (m/s), ``gap`` (m), ``leader_speed``
        (m/s).
    speed, gap, is_collision
        The main simulation (whole trajectory, or windows of ``horizon`` s), shape
        ``(num_draws, T)`` on the record's time grid; m/s, m, bool.
    metrics
        One row per horizon (index ``scope``: ``"whole"``, ``"3 s"``, ``"5 s"``, ...), columns
        ``horizon_s``, ``num_windows``, ``rmse_speed_m_s``, ``rmse_gap_m``,
        ``crps_speed_m_s``, ``crps_gap_m``, ``coverage_speed_90``, ``coverage_gap_90``,
        ``collisions``, ``num_simulations``.
    record_gap_error_m
        RMSE (m) between the recorded gap and the gap rebuilt from the recorded speeds: the
        part of the gap error that no follower model can remove.
    settings
        Model, pooling, where the parameters came from (``"driver"``, ``"population"`` or
        ``"pooled"``), number of draws, horizon, noise, parameter uncertainty, seed, dt.
    """

    driver: str
    record: pd.DataFrame
    speed: np.ndarray
    gap: np.ndarray
    is_collision: np.ndarray
    metrics: pd.DataFrame
    record_gap_error_m: float
    settings: dict[str, Any] = field(default_factory=dict)

    def bands(self, level: float = 0.9) -> pd.DataFrame:
        """Tidy table of the main simulation against the record, one row per time.

        Columns ``time``, ``leader_speed``, and for ``speed`` and ``gap`` each: the record,
        the median over draws and the central ``level`` band (``speed_lo``, ``speed_hi``,
        ...).
        """
        q = [(1 - level) / 2, 0.5, (1 + level) / 2]
        out = {"time": self.record["time"].to_numpy(),
               "leader_speed": self.record["leader_speed"].to_numpy()}
        for name, sims in (("speed", self.speed), ("gap", self.gap)):
            lo, med, hi = np.quantile(sims, q, axis=0)
            out[f"{name}_record"] = self.record[name].to_numpy()
            out[f"{name}_median"] = med
            out[f"{name}_lo"] = lo
            out[f"{name}_hi"] = hi
        return pd.DataFrame(out)


def follow(
    fit: Fit,
    data: pd.DataFrame,
    driver: str,
    *,
    num_draws: int = 200,
    horizon: float | None = None,
    windows: Sequence[float] = WINDOWS_S,
    noise: bool = True,
    parameter_uncertainty: bool = True,
    as_new_driver: bool = False,
    seed: int = 0,
    noise_fn: NoiseFn = iid_noise,
    min_gap: float = 0.01,
    engine: str = "jax",
) -> FollowResult:
    """Simulate ``driver`` behind its recorded leader with posterior parameters and score it.

    Parameters
    ----------
    fit
        A car-following fit.
    data
        A trajectory table (``driver, time, speed, gap, leader_speed``, as
        :func:`carpool.read_trajectories` returns); validated here.
    driver
        The driver to simulate. A fitted driver uses its own posterior parameters; a driver
        the fit has not seen (or any driver with ``as_new_driver``) gets a new driver's
        parameters from the population (hierarchical fits), or the shared ones (pooled).
    num_draws
        Posterior draws simulated (chosen without replacement when the posterior has enough).
    horizon
        ``None``: the main simulation runs over the whole record from its first state;
        seconds: it restarts from the recorded state every ``horizon`` s. Scored as well.
    windows
        Short horizons scored besides the whole trajectory, s.
    noise
        Add the fitted acceleration noise: i.i.d. with scale ``sigma`` of each draw, or,
        for a fit with AR / GP residuals, that process, carried forward in each window from
        the recorded residuals before the window (so a k-step-ahead prediction knows the
        current error), and started from stationarity where there is no record before.
    parameter_uncertainty
        ``False`` uses the posterior median parameters (and median ``sigma``) in every draw,
        so only the noise varies.
    as_new_driver
        Draw the parameters from the population even when the fit has this driver.
    seed
        Seeds the choice of draws, new drivers and the noise.
    noise_fn
        The noise process (see :mod:`carpool.simulate.noise`); the default with a dynamic
        residual fit uses the fitted process (see ``noise``).
    min_gap
        Gap floor of the collision rule, m.
    engine
        ``"jax"`` (carpool's engine, vectorised over draws and windows) or ``"sumo"``:
        Eclipse SUMO's IDM (:func:`carpool.simulate.sumo.sumo_follow_windows`; the optional
        extra ``carpool[sumo]``), every (draw, window) pair a leader and follower on a road
        of their own in one SUMO run per horizon; deterministic, so it needs
        ``noise=False``, and a fit of the IDM. Settings then hold ``sumo_version`` and
        ``sumo_capped_starts`` (followers started at ``v0`` because SUMO refuses a speed
        above it). See ``docs/sumo.md``.

    Returns
    -------
    FollowResult

    Raises
    ------
    ValueError
        For a fit that is not a car-following model, a driver missing from ``data``, a
        driver an unpooled fit has not seen, or non-positive ``num_draws`` / horizons.
    """
    from carpool.data import validate_trajectories

    model = carfollowing_model(fit)
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose 'jax' or 'sumo'")
    if engine == "sumo" and noise:
        raise InputError("SUMO's IDM is deterministic: the fitted acceleration noise has no "
                         "counterpart in SUMO; use noise=False (--no-noise) with the SUMO "
                         "engine")
    if engine == "sumo":  # before any drawing: a fit of another model stops here
        from carpool.simulate.sumo import idm_parameter_values

        idm_parameter_values(model, {n: np.ones(1) for n in model.parameter_names})
    if int(num_draws) < 1:
        raise InputError(f"num_draws must be >= 1, got {num_draws}")
    horizons = [] if horizon is None else [float(horizon)]
    horizons += [float(w) for w in windows]
    if any(not h > 0 for h in horizons):
        raise InputError(f"horizons must be positive seconds, got {horizons}")
    clean = validate_trajectories(data, min_observations=2)
    driver = str(driver)
    ids = list(pd.unique(clean["driver"]))
    if driver not in ids:
        shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
        raise InputError(f"unknown driver {driver!r}; the data have {len(ids)}: {shown}")
    rec = clean.loc[clean["driver"] == driver, ["time", "speed", "gap", "leader_speed"]]
    rec = rec.reset_index(drop=True)
    time = rec["time"].to_numpy(float)
    dt = float(np.median(np.diff(time)))

    rng = np.random.default_rng(seed)
    theta, source = _driver_theta(fit, driver, as_new_driver, seed)
    sigma = sigma_draws(fit)
    num_posterior = theta.shape[0]
    idx = rng.choice(num_posterior, int(num_draws), replace=int(num_draws) > num_posterior)
    if parameter_uncertainty:
        theta, sigma = theta[idx], sigma[idx]
    else:
        theta = np.repeat(np.median(theta, axis=0)[None], int(num_draws), axis=0)
        sigma = np.full(int(num_draws), np.median(sigma))
    residual_ctx = None
    if noise and noise_fn is iid_noise and fit.spec.residual.is_dynamic:
        rp = _driver_residual_params(fit, driver, source)
        rp = ({k: v[idx] for k, v in rp.items()} if parameter_uncertainty else
              {k: np.repeat(np.median(v, axis=0)[None], int(num_draws), axis=0)
               for k, v in rp.items()})
        residual_ctx = (fit.spec.residual, rp)
    if not noise:  # the same compiled simulation, with zero noise
        noise_fn, sigma = iid_noise, np.zeros_like(sigma)
    dtype = jnp.result_type(float)
    params = {n: jnp.asarray(theta[:, j], dtype) for j, n in enumerate(model.parameter_names)}

    record = {k: rec[k].to_numpy(float) for k in ("speed", "gap", "leader_speed")}
    runs: dict[int, tuple[np.ndarray, ...]] = {}
    num_points = len(time)
    capped: dict[int, int] = {}

    def run(horizon_s: float | None) -> tuple[np.ndarray, ...]:
        steps = num_points - 1 if horizon_s is None else max(int(round(horizon_s / dt)), 1)
        steps = min(steps, num_points - 1)
        if steps not in runs and engine == "sumo":
            from carpool.simulate.sumo import sumo_follow_windows

            *out, capped[steps] = sumo_follow_windows(
                model, {n: theta[:, j] for j, n in enumerate(model.parameter_names)},
                record, dt, steps, min_gap=float(min_gap))
            runs[steps] = tuple(out)
        elif steps not in runs:
            runs[steps] = _simulate(model, dt, float(min_gap), params, record, steps,
                                    noise_fn, jnp.asarray(sigma, dtype),
                                    np.random.default_rng([seed, steps]), residual_ctx)
        return runs[steps]

    rows = {}
    for label, h in [("whole", None)] + [(f"{w:g} s", w) for w in horizons]:
        if label in rows:
            continue
        speed, gap, collision, window_id = run(h)
        y_speed, y_gap = record["speed"][1:], record["gap"][1:]
        sim_speed, sim_gap = speed[:, 1:], gap[:, 1:]
        num_windows = int(window_id.max()) + 1
        crashed = sum(int(collision[:, 1:][:, window_id == j].any(axis=1).sum())
                      for j in range(num_windows))
        rows[label] = {
            "horizon_s": (num_points - 1) * dt if h is None else h,
            "num_windows": num_windows,
            "rmse_speed_m_s": rmse(sim_speed, y_speed),
            "rmse_gap_m": rmse(sim_gap, y_gap),
            "crps_speed_m_s": float(crps_ensemble(sim_speed, y_speed).mean()),
            "crps_gap_m": float(crps_ensemble(sim_gap, y_gap).mean()),
            "coverage_speed_90": coverage(sim_speed, y_speed),
            "coverage_gap_90": coverage(sim_gap, y_gap),
            "collisions": crashed,
            "num_simulations": num_windows * int(num_draws),
        }
    metrics = pd.DataFrame.from_dict(rows, orient="index")[list(METRIC_COLUMNS)]
    metrics.index.name = "scope"
    speed, gap, collision, _ = run(horizon)
    rebuilt = record["gap"][0] + np.concatenate(
        [[0.0], np.cumsum(0.5 * dt * (record["leader_speed"][1:] + record["leader_speed"][:-1]
                                      - record["speed"][1:] - record["speed"][:-1]))])
    gap_error = float(np.sqrt(np.mean(np.square(rebuilt - record["gap"]))))
    settings = {"model": model.name, "pooling": fit.pooling, "params_from": source,
                "residual": (fit.spec.residual.name if residual_ctx else
                             "iid" if noise else "none"),
                "num_draws": int(num_draws), "horizon_s": horizon, "noise": bool(noise),
                "parameter_uncertainty": bool(parameter_uncertainty), "seed": int(seed),
                "dt": dt, "min_gap": float(min_gap), "engine": engine}
    if engine == "sumo":
        from carpool._sumo import sumo_version

        settings.update(sumo_version=sumo_version(), sumo_capped_starts=sum(capped.values()))
    return FollowResult(driver, rec, speed, gap, collision, metrics, gap_error, settings)


def _driver_theta(fit: Fit, driver: str, as_new_driver: bool, seed: int
                  ) -> tuple[np.ndarray, str]:
    """Natural parameter draws (S, P) for ``driver`` and where they came from."""
    if fit.pooling == "pooled":
        return fit.theta_draws(), "pooled"
    if driver in fit.group_ids and not as_new_driver:
        return fit.theta_draws()[:, list(fit.group_ids).index(driver), :], "driver"
    if fit.pooling == "unpooled":
        why = "was not in" if driver not in fit.group_ids else "is simulated as new by"
        raise InputError(f"driver {driver!r} {why} the unpooled fit, and an unpooled fit has "
                         "no population to draw a new driver from; use a hierarchical or "
                         "pooled fit")
    from carpool.inference.predict import new_group_params

    return new_group_params(fit, 1, seed=seed)[:, 0, :], "population"


def _driver_residual_params(fit: Fit, driver: str, source: str) -> dict[str, np.ndarray]:
    """Residual parameters per posterior draw for ``driver``: AR ``kappa`` (S, p), GP
    ``lengthscale`` and ``scale`` (S,)."""
    from carpool.inference.dynamic import fitted_residual_params, new_residual_params

    if source == "driver":
        return fitted_residual_params(fit, list(fit.group_ids).index(driver))
    if source == "pooled":
        return fitted_residual_params(fit, 0)
    return fit.spec.residual.group_params(new_residual_params(fit, 1), 0)


def _simulate(model: CarFollowingModel, dt: float, min_gap: float, params: dict[str, jax.Array],
              record: dict[str, np.ndarray], steps: int, noise_fn: NoiseFn, sigma: jax.Array,
              rng: np.random.Generator, residual_ctx: tuple[Any, dict] | None = None
              ) -> tuple[np.ndarray, ...]:
    """Windows of ``steps`` restarted from the record; returns speed, gap, collision
    (D, T) on the record's grid and the window of each point (T - 1,). ``residual_ctx``
    (process, per-draw parameters) draws the noise from a fitted AR / GP residual carried
    forward from the recorded residuals before each window."""
    num_points = record["speed"].shape[0]
    num_windows = -(-(num_points - 1) // steps)
    starts = np.arange(num_windows) * steps
    leader = np.pad(record["leader_speed"], (0, num_windows * steps + 1 - num_points),
                    mode="edge")
    segments = np.stack([leader[s : s + steps + 1] for s in starts])
    num_draws = sigma.shape[0]
    shape = (steps, num_draws, num_windows)
    white = (np.zeros(shape, np.float32) if not np.any(np.asarray(sigma))
             else white_noise(rng, shape))
    if residual_ctx is not None:
        from carpool.simulate.residual_noise import conditional_noise, recorded_residuals

        process, rp = residual_ctx
        recorded = recorded_residuals(model, params, record, dt).astype(np.float32)
        white = conditional_noise(process, white, rp, np.asarray(sigma), dt, recorded, starts)
        noise_fn, sigma = iid_noise, jnp.ones_like(sigma)  # the noise is drawn already
    out = _windows(model, dt, min_gap, noise_fn, params, jnp.asarray(segments, sigma.dtype),
                   jnp.asarray(record["gap"][starts], sigma.dtype),
                   jnp.asarray(record["speed"][starts], sigma.dtype), sigma,
                   jnp.asarray(white, sigma.dtype))

    def assemble(sims: jax.Array, first: Any) -> np.ndarray:
        inner = np.asarray(sims)[:, :, 1:].reshape(num_draws, -1)[:, : num_points - 1]
        return np.concatenate([np.full((num_draws, 1), first, inner.dtype), inner], axis=1)

    window_id = np.repeat(np.arange(num_windows), steps)[: num_points - 1]
    return (assemble(out.speed, record["speed"][0]), assemble(out.gap, record["gap"][0]),
            assemble(out.is_collision, False), window_id)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _windows(model: CarFollowingModel, dt: float, min_gap: float, noise_fn: NoiseFn,
             params: dict[str, jax.Array], leader: jax.Array, gap0: jax.Array,
             speed0: jax.Array, sigma: jax.Array, white: jax.Array) -> Rollout:
    """follow_leader vmapped over windows (leader (W, n+1), gap0/speed0 (W,)) and draws
    (params and sigma (D,)); white noise (n, D, W) shaped by ``noise_fn``; fields
    (D, W, n+1)."""
    eps = jnp.asarray(noise_fn(white, sigma[:, None]), leader.dtype)
    eps = jnp.moveaxis(eps, 0, -1)  # (D, W, n)

    def one(p, lead, g0, v0, e):
        return follow_leader(model, p, lead, g0, v0, dt, noise=e, min_gap=min_gap)

    over_windows = jax.vmap(one, in_axes=(None, 0, 0, 0, 0))
    return jax.vmap(over_windows, in_axes=(0, None, None, None, 0))(params, leader, gap0,
                                                                   speed0, eps)
