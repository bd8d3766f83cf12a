"""A ring road of heterogeneous drivers (Sugiyama et al. 2008): do stop-and-go waves emerge?

Set-up. ``N`` vehicles of length ``vehicle_length_m`` (default 5 m) on a circular road of
``length_m`` metres. Vehicle ``i`` follows vehicle ``i + 1`` (vehicle ``N - 1`` follows vehicle
0); its bumper-to-bumper gap is the distance along the ring to its leader's rear. All start
evenly spaced (front-to-front spacing ``L / N``, gap ``L / N - vehicle_length_m``) at one
common speed: by default the equilibrium speed at that gap of a driver with the
element-wise median of the vehicles' parameters (for identical vehicles, the exact
homogeneous equilibrium). An optional perturbation moves vehicle 0 ``perturbation_m``
metres back, shortening its follower's gap by as much.

Dynamics. One :func:`jax.lax.scan` over time with all vehicles vectorised, using the
ballistic scheme of :func:`carpool.carfollowing.follow_leader`: the acceleration
``acc_i = f(v_i, s_i, v_{i+1}) + noise_i`` is held over the step, ``v <- max(0, v + acc dt)``,
a vehicle that stops within the step does not reverse, and each gap changes by the leader's
travel minus the follower's. Gaps are carried as state (not recomputed from positions), so
they keep full precision however far the vehicles drive.

Collision rule (that of :func:`~carpool.carfollowing.follow_leader`, made consistent for a
ring): a gap that would fall below ``min_gap`` (0.01 m) is floored there and the step is
flagged; the colliding vehicle is held back by the overlap and leaves the step no faster
than the leader it ran into (a perfectly inelastic collision), and the simulation carries
on. Behind a recorded leader the follower's speed only matters to itself, but on a ring it
is the next vehicle's leader speed: a crashed vehicle that kept its speed while held back
would feed a fictitious speed to its follower, and collisions then drive the ring to ever
higher speeds. Only a chain collision of three vehicles within one step leaves the middle
gap slightly short. Speeds are never negative.

Statistics (:func:`ring_statistics`) are computed after a warm-up (default the first half of
the simulated time): the standard deviation of speed over vehicles and time, the share of
vehicle-time stopped (speed below 0.1 m/s), the wave speed
(:func:`~carpool.simulate.waves.wave_speed`), the growth of the speed spread across
vehicles from the first to the last tenth of the simulation (> 1: perturbations grow, the
empirical sign of string instability), and the linear criteria of
:func:`~carpool.simulate.stability.linear_stability` for the median driver at the ring's
even gap.

References
----------
Y. Sugiyama et al., "Traffic jams without bottlenecks - experimental evidence for the
physical mechanism of the formation of a jam", New J. Phys. 10, 033001 (2008): 22 vehicles
on a 230 m circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.typing import ArrayLike

from carpool.carfollowing.model import CarFollowingModel, as_model
from carpool.carfollowing.rollout import equilibrium_speed
from carpool.errors import InputError
from carpool.simulate._fit import carfollowing_model, sigma_draws
from carpool.simulate.noise import NoiseFn, iid_noise, white_noise
from carpool.simulate.stability import linear_stability
from carpool.simulate.waves import wave_speed

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["RingResult", "RingTrajectory", "collision_events", "ring", "ring_statistics",
           "simulate_ring"]

#: Default vehicle length, m (a passenger car; Sugiyama et al. used cars of about 4-5 m).
VEHICLE_LENGTH_M = 5.0
#: Collision events closing at this speed or faster (m/s) count as hard collisions.
HARD_COLLISION_M_S = 1.0
#: Speeds below this count as stopped, m/s.
STOP_SPEED_M_S = 0.1
DRIVERS = ("population", "observed")


class RingTrajectory(NamedTuple):
    """Result of :func:`simulate_ring`; every field has shape ``(num_steps + 1, N)``.

    Attributes
    ----------
    position
        Position of each vehicle's front bumper along the ring, m, in ``[0, L)``.
    speed
        Speed, m/s, ``>= 0``.
    gap
        Bumper-to-bumper gap to the leader (vehicle ``i + 1``), m, ``>= min_gap``.
    is_collision
        ``True`` where the gap was floored (see the collision rule).
    """

    position: jax.Array
    speed: jax.Array
    gap: jax.Array
    is_collision: jax.Array


def check_ring(num_vehicles: int, length_m: float, vehicle_length_m: float,
               perturbation_m: float = 0.0, min_gap: float = 0.01) -> float:
    """Validate a ring's geometry; returns the initial even gap, m."""
    if int(num_vehicles) != num_vehicles or num_vehicles < 2:
        raise InputError(f"a ring needs at least 2 vehicles, got {num_vehicles}")
    if not length_m > 0:
        raise InputError(f"the ring length must be positive, got {length_m:g} m")
    if not vehicle_length_m >= 0:
        raise InputError(f"the vehicle length must be >= 0, got {vehicle_length_m:g} m")
    if not min_gap > 0:
        raise InputError(f"min_gap must be positive, got {min_gap}")
    gap = length_m / num_vehicles - vehicle_length_m
    if gap - abs(perturbation_m) <= min_gap:
        most = int(np.ceil(length_m / (vehicle_length_m + min_gap + abs(perturbation_m)))) - 1
        raise InputError(
            f"too many vehicles for the ring: {num_vehicles} vehicles of {vehicle_length_m:g} m "
            f"on {length_m:g} m leave a gap of {gap:.2f} m"
            + (f" (less the {abs(perturbation_m):g} m perturbation)" if perturbation_m else "")
            + f"; use at most {max(most, 1)} vehicles or a longer ring")
    return float(gap)


def simulate_ring(
    model: CarFollowingModel | str,
    params: Mapping[str, ArrayLike],
    *,
    length_m: float,
    num_steps: int,
    dt: float = 0.1,
    vehicle_length_m: float = VEHICLE_LENGTH_M,
    init_speed: float | None = None,
    perturbation_m: float = 0.0,
    noise: ArrayLike | None = None,
    min_gap: float = 0.01,
) -> RingTrajectory:
    """Simulate vehicles with given parameters on a ring road (pure, deterministic given
    ``noise``).

    Parameters
    ----------
    model
        A :class:`~carpool.carfollowing.CarFollowingModel` or a registered name.
    params
        ``{name: array of shape (N,)}``, natural units, one entry per vehicle (vehicle ``i``
        follows ``i + 1``); ``N >= 2``.
    length_m
        Ring length (circumference), m.
    num_steps
        Number of time steps of ``dt``.
    dt
        Time step, s.
    vehicle_length_m
        Vehicle length, m (gap = spacing minus this).
    init_speed
        Common initial speed, m/s; ``None`` for the equilibrium speed at the even gap of a
        driver with the element-wise median parameters.
    perturbation_m
        Vehicle 0 starts this far behind its even-spacing slot, m.
    noise
        Acceleration noise, m/s^2, shape ``(num_steps, N)`` (e.g. from a
        :data:`~carpool.simulate.noise.NoiseFn`); ``None`` for none.
    min_gap
        Gap floor, m (collision rule in the module docstring).

    Returns
    -------
    RingTrajectory
        Positions, speeds, gaps and collision flags, each ``(num_steps + 1, N)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> p = {k: jnp.full(22, v) for k, v in dict(v0=30.0, s0=2.0, T=1.5, a=1.5,
    ...                                          b=1.67).items()}
    >>> out = simulate_ring("idm", p, length_m=230.0, num_steps=100)
    >>> out.speed.shape, bool(jnp.allclose(out.speed, out.speed[0, 0], atol=1e-3))
    ((101, 22), True)
    """
    model = as_model(model)
    model.check_params(params)
    p = {n: jnp.asarray(params[n], jnp.result_type(float)) for n in model.parameter_names}
    shapes = {jnp.shape(v) for v in p.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise InputError(f"params must all have shape (N,), got {sorted(shapes)}")
    (num_vehicles,) = next(iter(shapes))
    num_steps = int(num_steps)
    if num_steps < 1:
        raise InputError(f"num_steps must be >= 1, got {num_steps}")
    if not dt > 0:
        raise InputError(f"dt must be positive, got {dt}")
    check_ring(num_vehicles, length_m, vehicle_length_m, perturbation_m, min_gap)
    dtype = jnp.result_type(float)
    if noise is None:
        noise = jnp.zeros((num_steps, num_vehicles), dtype)
    noise = jnp.asarray(noise, dtype)
    if noise.shape != (num_steps, num_vehicles):
        raise InputError(f"noise must have shape (num_steps, N) = ({num_steps}, "
                         f"{num_vehicles}), got {noise.shape}")
    speed0 = jnp.asarray(jnp.nan if init_speed is None else init_speed, dtype)
    return _ring_jit(model, *(jnp.asarray(x, dtype) for x in (dt, length_m, vehicle_length_m,
                                                              min_gap)),
                     p, speed0, jnp.asarray(perturbation_m, dtype), noise)


def _ring_core(model: CarFollowingModel, dt: jax.Array, length_m: jax.Array,
               vehicle_length_m: jax.Array, min_gap: jax.Array, params: dict[str, jax.Array],
               init_speed: jax.Array, perturbation_m: jax.Array, noise: jax.Array
               ) -> RingTrajectory:
    """The scan; ``init_speed`` NaN means the median driver's equilibrium speed. Only the
    model is static: other ring lengths and time steps reuse the compiled code."""
    dtype = noise.dtype
    num_vehicles = noise.shape[1]
    even_gap = length_m / num_vehicles - vehicle_length_m
    median = {n: jnp.median(v) for n, v in params.items()}
    v_eq = equilibrium_speed(model, median, jnp.asarray(even_gap, dtype))
    speed0 = jnp.where(jnp.isnan(init_speed), v_eq, init_speed)
    slot = jnp.arange(num_vehicles, dtype=dtype) * (length_m / num_vehicles)
    position0 = jnp.mod(slot.at[0].add(-perturbation_m), length_m)
    gap0 = jnp.full(num_vehicles, even_gap, dtype)
    gap0 = gap0.at[0].add(perturbation_m).at[-1].add(-perturbation_m)
    state0 = (position0, jnp.full(num_vehicles, speed0, dtype), gap0)

    def step(carry, eps):
        position, speed, gap = carry
        leader_speed = jnp.roll(speed, -1)
        acc = model.acceleration(params, speed, gap, leader_speed) + eps
        raw_speed = speed + acc * dt
        is_stopping = raw_speed < 0
        next_speed = jnp.maximum(raw_speed, 0.0)
        stop_acc = jnp.where(is_stopping, acc, -1.0)  # < 0 wherever it is used
        travelled = jnp.where(is_stopping, -jnp.square(speed) / (2.0 * stop_acc),
                              0.5 * (speed + next_speed) * dt)
        raw_gap = gap + jnp.roll(travelled, -1) - travelled
        is_collision = raw_gap < min_gap
        # held back by the overlap, and no faster than the leader it ran into
        travelled = travelled - jnp.where(is_collision, min_gap - raw_gap, 0.0)
        next_speed = jnp.where(is_collision,
                               jnp.minimum(next_speed, jnp.roll(next_speed, -1)), next_speed)
        next_gap = jnp.maximum(gap + jnp.roll(travelled, -1) - travelled, min_gap)
        next_position = jnp.mod(position + travelled, length_m)
        out = (next_position.astype(dtype), next_speed.astype(dtype), next_gap.astype(dtype))
        return out, (*out, is_collision)

    _, (position, speed, gap, collision) = jax.lax.scan(step, state0, noise)
    first = jnp.zeros((1, num_vehicles), bool)
    return RingTrajectory(
        position=jnp.concatenate([state0[0][None], position]),
        speed=jnp.concatenate([state0[1][None], speed]),
        gap=jnp.concatenate([state0[2][None], gap]),
        is_collision=jnp.concatenate([first, collision]),
    )


_ring_jit = jax.jit(_ring_core, static_argnums=0)


def _ring_residual_params(fit: Fit, drivers: str, draw_idx: np.ndarray, num_vehicles: int,
                          seed: int, pick: np.ndarray | None) -> dict[str, np.ndarray]:
    """Residual parameters per (draw, vehicle): AR ``kappa`` (D, N, p); GP (D,)."""
    from carpool.inference.dynamic import fitted_residual_params, new_residual_params

    if pick is not None:  # resampled fitted drivers keep their own coefficients
        rp = fitted_residual_params(fit, np.arange(fit.data.num_groups))
        return fit.spec.residual.group_params({k: v[draw_idx] for k, v in rp.items()}, pick)
    if fit.pooling == "pooled":
        rp = fitted_residual_params(fit, np.zeros(num_vehicles, dtype=int))
    else:
        rp = new_residual_params(fit, num_vehicles, seed=seed)
    return {k: v[draw_idx] for k, v in rp.items()}


@partial(jax.jit, static_argnums=(0, 1))
def _rings(model: CarFollowingModel, noise_fn: NoiseFn, geometry: tuple[jax.Array, ...],
           params: dict[str, jax.Array], init_speed: jax.Array, perturbation_m: jax.Array,
           sigma: jax.Array, white: jax.Array) -> RingTrajectory:
    """Independent rings, vmapped: params (D, N), init_speed and sigma (D,), white noise
    (num_steps, D, N) shaped by ``noise_fn``; ``geometry`` = (dt, length, vehicle length,
    min gap)."""
    eps = jnp.asarray(noise_fn(white, sigma[:, None]), white.dtype)
    eps = jnp.moveaxis(eps, 0, 1)  # (D, steps, N)
    core = partial(_ring_core, model, *geometry)
    return jax.vmap(core, in_axes=(0, 0, None, 0))(params, init_speed, perturbation_m, eps)


# -- statistics ---------------------------------------------------------------------------
def ring_statistics(
    speed: ArrayLike,
    gap: ArrayLike,
    *,
    dt: float,
    length_m: float,
    warmup_s: float | None = None,
    stop_speed_m_s: float = STOP_SPEED_M_S,
) -> dict[str, float]:
    """Summary statistics of one ring simulation (speeds and gaps ``(T, N)``).

    Parameters
    ----------
    speed, gap
        m/s and m, time on axis 0.
    dt
        Time step, s.
    length_m
        Ring length, m.
    warmup_s
        Statistics other than the growth use times after this, s; default half the
        simulated time.
    stop_speed_m_s
        Speeds below this count as stopped.

    Returns
    -------
    dict
        ``mean_speed_m_s``, ``speed_std_m_s`` (over vehicles and time), ``min_speed_m_s``,
        ``share_stopped`` (of vehicle-time), ``min_gap_m``, ``wave_speed_km_h`` (``nan``
        without waves), ``speed_spread_start_m_s`` / ``speed_spread_end_m_s`` (standard
        deviation across vehicles, averaged over the first / last tenth of the time) and
        ``spread_growth`` (their ratio; > 1 when perturbations grow).
    """
    v = np.asarray(speed, dtype=float)
    s = np.asarray(gap, dtype=float)
    num_times, num_vehicles = v.shape
    start = 0 if warmup_s is None and num_times < 4 else (
        num_times // 2 if warmup_s is None else min(int(round(warmup_s / dt)), num_times - 3))
    after = v[start:]
    tenth = max(num_times // 10, 1)
    spread = v.std(axis=1)
    spread_start = float(spread[1 : tenth + 1].mean()) if num_times > 1 else float(spread[0])
    spread_end = float(spread[-tenth:].mean())
    growth = spread_end / spread_start if spread_start > 1e-9 else (
        float("inf") if spread_end > 1e-6 else 1.0)
    return {
        "mean_speed_m_s": float(after.mean()),
        "speed_std_m_s": float(after.std()),
        "min_speed_m_s": float(after.min()),
        "share_stopped": float(np.mean(after < stop_speed_m_s)),
        "min_gap_m": float(s[start:].min()),
        "wave_speed_km_h": (wave_speed(after, dt, length_m / num_vehicles)
                            if after.shape[0] >= 3 else float("nan")),
        "speed_spread_start_m_s": spread_start,
        "speed_spread_end_m_s": spread_end,
        "spread_growth": float(growth),
    }


def collision_events(speed: ArrayLike, is_collision: ArrayLike
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Collision events of a ring simulation and their closing speeds.

    An *event* is a step whose gap was floored when the step before was not (a vehicle
    standing against its leader is one event however long it stands there). The *closing
    speed* (m/s) is the follower's speed minus its leader's at the start of that step.

    Parameters
    ----------
    speed, is_collision
        ``(T, N)`` arrays, time on axis 0, as in :class:`RingTrajectory`.

    Returns
    -------
    onset : numpy.ndarray
        ``(T, N)`` bool, ``True`` at each event's step end.
    closing_speed : numpy.ndarray
        ``(T, N)``, the closing speed at events, 0 elsewhere.
    """
    v = np.asarray(speed, dtype=float)
    hit = np.asarray(is_collision, dtype=bool)
    onset = np.zeros_like(hit)
    onset[1:] = hit[1:] & ~hit[:-1]
    closing = np.zeros_like(v)
    closing[1:] = np.where(onset[1:], v[:-1] - np.roll(v[:-1], -1, axis=1), 0.0)
    return onset, closing


# -- from a fit ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RingResult:
    """Ring-road simulations from a fit (:func:`ring`).

    Attributes
    ----------
    table
        Tidy table, one row per draw, vehicle and time: ``draw``, ``vehicle``, ``time`` (s),
        ``position`` (m along the ring, in ``[0, L)``), ``speed`` (m/s), ``gap`` (m),
        ``collision`` (bool: the gap was floored in the step that ended here).
    summary
        One row per draw (index ``draw``): the statistics of :func:`ring_statistics`, plus
        ``collisions`` (events, see :func:`collision_events`), ``hard_collisions`` (events
        with a closing speed of at least 1 m/s; the others are touches, typically a
        standing vehicle crept forward by the acceleration noise), ``max_closing_speed_m_s``,
        ``collision_steps`` (vehicle-steps with a floored gap), ``init_speed_m_s``,
        ``median_is_string_stable`` and ``median_ring_growth_rate_per_s`` (linear criteria
        for the median driver at the ring's even gap, see
        :func:`~carpool.simulate.stability.linear_stability`).
    vehicles
        Per draw and vehicle: ``draw``, ``vehicle``, ``driver`` (the resampled observed
        driver, or ``"new"`` for a population draw, ``"pooled"`` for a pooled fit),
        ``posterior_draw`` and each parameter (natural units) and ``sigma`` (m/s^2).
    settings
        The arguments: model, ring length, vehicle length, number of vehicles, dt,
        duration, drivers, noise, seed, perturbation.
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    vehicles: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    def stats(self) -> dict[str, float]:
        """The summary's medians over draws (a dict of floats)."""
        numeric = self.summary.astype(float)
        return {k: float(v) for k, v in numeric.median(axis=0).items()}

    def over_time(self) -> pd.DataFrame:
        """Per draw and time: ``mean_speed`` (m/s), ``speed_std`` (across vehicles, m/s)
        and ``share_stopped``."""
        t = self.table
        stopped = (t["speed"] < STOP_SPEED_M_S).rename("share_stopped")
        frame = pd.concat([t[["draw", "time", "speed"]], stopped], axis=1)
        grouped = frame.groupby(["draw", "time"])
        out = grouped["speed"].agg(mean_speed="mean", speed_std=lambda x: x.std(ddof=0))
        out["share_stopped"] = grouped["share_stopped"].mean()
        return out.reset_index()


def ring(
    fit: Fit,
    *,
    num_vehicles: int = 22,
    length_m: float = 230.0,
    duration_s: float = 300.0,
    dt: float = 0.1,
    drivers: str = "population",
    num_draws: int = 1,
    noise: bool = True,
    seed: int = 0,
    perturbation_m: float = 1.0,
    vehicle_length_m: float = VEHICLE_LENGTH_M,
    init_speed: float | None = None,
    warmup_s: float | None = None,
    noise_fn: NoiseFn = iid_noise,
    min_gap: float = 0.01,
) -> RingResult:
    """Simulate a Sugiyama-style ring road with drivers from a fitted car-following model.

    Each of ``num_draws`` independent rings uses one posterior draw (chosen at random): its
    vehicles' parameters are drawn from that draw's population distribution
    (``drivers="population"``: new drivers, :func:`carpool.new_group_params`) or are the
    draw's parameters of fitted drivers resampled with replacement
    (``drivers="observed"``); a pooled fit gives every vehicle the shared parameters. The
    acceleration noise is the fitted i.i.d. one (``sigma`` of that draw) when ``noise``.

    Parameters
    ----------
    fit
        A car-following fit.
    num_vehicles, length_m, vehicle_length_m
        Number of vehicles, ring length (m) and vehicle length (m); the even initial gap
        ``length_m / num_vehicles - vehicle_length_m`` must exceed ``min_gap``.
    duration_s, dt
        Simulated time and step, s.
    drivers
        ``"population"`` or ``"observed"``.
    num_draws
        Independent rings (posterior draws), vectorised.
    noise
        Add the fitted acceleration noise.
    seed
        Seeds the choice of draws, the new drivers, the resampling and the noise.
    perturbation_m
        Vehicle 0 starts this far behind its even slot, m (a small kick; 0 for none).
    init_speed
        Common initial speed, m/s; default the median driver's equilibrium speed.
    warmup_s
        Statistics skip this initial time, s (default half of ``duration_s``).
    noise_fn
        The noise process, see :mod:`carpool.simulate.noise` (only i.i.d. exists now).
    min_gap
        Gap floor of the collision rule, m.

    Returns
    -------
    RingResult

    Raises
    ------
    ValueError
        For a fit that is not a car-following model, an unknown ``drivers``, an unpooled fit
        with ``drivers="population"`` (it has no population), a non-positive length or
        duration, or too many vehicles for the ring.
    """
    setup = _ring_setup(fit, num_vehicles=num_vehicles, length_m=length_m,
                        duration_s=duration_s, dt=dt, drivers=drivers, num_draws=num_draws,
                        seed=seed, perturbation_m=perturbation_m,
                        vehicle_length_m=vehicle_length_m, min_gap=min_gap)
    model, rng, draw_idx, values, sigma = (setup.model, setup.rng, setup.draw_idx,
                                           setup.values, setup.sigma)
    num_draws, num_vehicles, num_steps = setup.num_draws, setup.num_vehicles, setup.num_steps
    names = model.parameter_names
    dtype = jnp.result_type(float)
    params = {n: jnp.asarray(values[..., j], dtype) for j, n in enumerate(names)}
    speed0 = jnp.full(num_draws, jnp.nan if init_speed is None else init_speed, dtype)
    shape = (num_steps, num_draws, num_vehicles)
    if noise and noise_fn is iid_noise and fit.spec.residual.is_dynamic:
        from carpool.simulate.residual_noise import stationary_noise

        rp = _ring_residual_params(fit, drivers, draw_idx, num_vehicles, seed,
                                   None if fit.pooling == "pooled" or drivers == "population"
                                   else setup.pick)
        white = stationary_noise(fit.spec.residual, white_noise(rng, shape), rp, sigma,
                                 float(dt))
        sigma_used = np.ones_like(sigma)  # the noise is drawn already: iid_noise(w, 1) = w
    elif noise:
        white, sigma_used = white_noise(rng, shape), sigma
    else:  # the same compiled simulation, with zero noise
        white, sigma_used, noise_fn = np.zeros(shape, np.float32), np.zeros_like(sigma), iid_noise
    geometry = tuple(jnp.asarray(x, dtype) for x in (dt, length_m, vehicle_length_m, min_gap))
    out = _rings(model, noise_fn, geometry, params, speed0, jnp.asarray(perturbation_m, dtype),
                 jnp.asarray(sigma_used, dtype), jnp.asarray(white, dtype))
    position, speed, gap, collision = (np.asarray(a) for a in out)
    return _ring_result(fit, setup, position, speed, gap, collision, warmup_s=warmup_s,
                        noise=bool(noise), seed=seed, perturbation_m=perturbation_m,
                        min_gap=min_gap, engine="jax")


@dataclass(frozen=True)
class _RingSetup:
    """What :func:`ring` and the SUMO engine's ring share: the validated arguments and each
    ring's vehicles. ``values`` (draws, N, P) natural parameters, ``source`` (draws, N) the
    drivers they came from, ``pick`` the resampled fitted drivers (``drivers="observed"``)."""

    model: CarFollowingModel
    num_draws: int
    num_vehicles: int
    num_steps: int
    dt: float
    length_m: float
    vehicle_length_m: float
    drivers: str
    rng: np.random.Generator
    draw_idx: np.ndarray
    values: np.ndarray
    source: np.ndarray
    pick: np.ndarray | None
    sigma: np.ndarray


def _ring_setup(fit: Fit, *, num_vehicles: int, length_m: float, duration_s: float, dt: float,
                drivers: str, num_draws: int, seed: int, perturbation_m: float,
                vehicle_length_m: float, min_gap: float) -> _RingSetup:
    """Validate :func:`ring`'s arguments and draw each ring's vehicles (the random numbers
    are drawn in the same order for every engine, so one seed gives the same vehicles)."""
    model = carfollowing_model(fit)
    if drivers not in DRIVERS:
        raise InputError(f"unknown drivers {drivers!r}; choose 'population' or 'observed'")
    if fit.pooling == "unpooled" and drivers == "population":
        raise InputError("an unpooled fit has no population distribution to draw new drivers "
                         "from; use drivers='observed' (resample the fitted drivers) or a "
                         "hierarchical fit")
    num_vehicles = int(num_vehicles)
    check_ring(num_vehicles, float(length_m), float(vehicle_length_m), float(perturbation_m),
               float(min_gap))
    if not (dt > 0 and duration_s >= dt):
        raise InputError(f"need dt > 0 and duration_s >= dt, got dt={dt:g} s, "
                         f"duration_s={duration_s:g} s")
    if int(num_draws) < 1:
        raise InputError(f"num_draws must be >= 1, got {num_draws}")
    num_draws = int(num_draws)
    num_steps = int(round(duration_s / dt))
    rng = np.random.default_rng(seed)
    theta = fit.theta_draws()
    num_posterior = theta.shape[0]
    draw_idx = rng.choice(num_posterior, num_draws, replace=num_draws > num_posterior)
    pick = None
    if fit.pooling == "pooled":
        values = np.repeat(theta[draw_idx][:, None, :], num_vehicles, axis=1)
        source = np.full((num_draws, num_vehicles), "pooled", dtype=object)
    elif drivers == "population":
        from carpool.inference.predict import new_group_params

        values = new_group_params(fit, num_vehicles, seed=seed, draws=draw_idx)
        source = np.full((num_draws, num_vehicles), "new", dtype=object)
    else:
        pick = rng.integers(theta.shape[1], size=(num_draws, num_vehicles))
        values = theta[draw_idx[:, None], pick]
        source = np.asarray(fit.group_ids, dtype=object)[pick]
    sigma = sigma_draws(fit)[draw_idx]
    return _RingSetup(model, num_draws, num_vehicles, num_steps, float(dt), float(length_m),
                      float(vehicle_length_m), drivers, rng, draw_idx, values, source, pick,
                      sigma)


def _ring_result(fit: Fit, setup: _RingSetup, position: np.ndarray, speed: np.ndarray,
                 gap: np.ndarray, collision: np.ndarray, *, warmup_s: float | None,
                 noise: bool, seed: int, perturbation_m: float, min_gap: float,
                 **extra_settings: Any) -> RingResult:
    """The :class:`RingResult` of simulated rings, arrays (draws, steps + 1, N)."""
    model, values, source = setup.model, setup.values, setup.source
    num_draws, num_vehicles, num_steps = setup.num_draws, setup.num_vehicles, setup.num_steps
    dt, length_m = setup.dt, setup.length_m
    names = model.parameter_names
    time = np.arange(num_steps + 1) * float(dt)
    table = pd.DataFrame({
        "draw": np.repeat(np.arange(num_draws), (num_steps + 1) * num_vehicles),
        "vehicle": np.tile(np.arange(num_vehicles), num_draws * (num_steps + 1)),
        "time": np.tile(np.repeat(time, num_vehicles), num_draws),
        "position": position.reshape(-1).astype(np.float64),
        "speed": speed.reshape(-1).astype(np.float64),
        "gap": gap.reshape(-1).astype(np.float64),
        "collision": collision.reshape(-1),
    })
    even_gap = float(length_m) / num_vehicles - setup.vehicle_length_m
    rows = []
    for d in range(num_draws):
        stats = ring_statistics(speed[d], gap[d], dt=float(dt), length_m=float(length_m),
                                warmup_s=warmup_s)
        median = {n: float(np.median(values[d, :, j])) for j, n in enumerate(names)}
        lin = linear_stability(model, median, even_gap, num_vehicles=num_vehicles)
        onset, closing = collision_events(speed[d], collision[d])
        rows.append({**stats, "collisions": int(onset.sum()),
                     "hard_collisions": int((closing >= HARD_COLLISION_M_S).sum()),
                     "max_closing_speed_m_s": float(closing.max()),
                     "collision_steps": int(collision[d].sum()),
                     "init_speed_m_s": float(speed[d, 0, 0]),
                     "median_is_string_stable": bool(lin.is_string_stable),
                     "median_ring_growth_rate_per_s": lin.ring_growth_rate})
    summary = pd.DataFrame(rows, index=pd.Index(np.arange(num_draws), name="draw"))
    vehicles = pd.DataFrame({
        "draw": np.repeat(np.arange(num_draws), num_vehicles),
        "vehicle": np.tile(np.arange(num_vehicles), num_draws),
        "driver": source.reshape(-1).astype(str),
        "posterior_draw": np.repeat(setup.draw_idx, num_vehicles),
        **{n: values[..., j].reshape(-1) for j, n in enumerate(names)},
        "sigma": np.repeat(setup.sigma, num_vehicles),
    })
    settings = {"model": model.name, "pooling": fit.pooling, "num_vehicles": num_vehicles,
                "length_m": float(length_m), "vehicle_length_m": setup.vehicle_length_m,
                "duration_s": float(num_steps * dt), "dt": float(dt),
                "drivers": setup.drivers, "num_draws": num_draws, "noise": bool(noise),
                "seed": int(seed), "perturbation_m": float(perturbation_m),
                "min_gap": float(min_gap),
                "warmup_s": float(num_steps * dt / 2 if warmup_s is None else warmup_s),
                **extra_settings}
    return RingResult(table, summary, vehicles, settings)
