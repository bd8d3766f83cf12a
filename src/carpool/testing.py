"""Synthetic data with known true parameters, for tests, examples and benchmarks.

- :func:`simulate_drivers`: car-following trajectories in the carpool trajectory format
  (see :mod:`carpool.data.schema`), one synthetic leader per driver, with the true
  per-driver parameters;
- :func:`simulate_linear_groups`: a varying-intercept / varying-slope linear regression
  (radon-style), the non-car client of the pooling layer.

All randomness comes from ``numpy.random.default_rng(rng_seed)``: the same arguments give
the same data, and no global random state is touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from carpool.carfollowing.model import CarFollowingModel, as_model
from carpool.carfollowing.rollout import Rollout, equilibrium_gap, follow_leader
from carpool.errors import InputError, UnknownNameError

__all__ = ["residual_noise", "simulate_drivers", "simulate_linear_groups",
           "synthetic_leader_speed"]

#: Leader speeds are clipped to [0, LEADER_MAX_SPEED] m/s (congested, stop-and-go traffic).
LEADER_MAX_SPEED = 16.0


def synthetic_leader_speed(
    rng: np.random.Generator, num_steps: int, dt: float, *, max_speed: float = LEADER_MAX_SPEED
) -> np.ndarray:
    """A smooth, varied stop-and-go leader speed profile (m/s), shape ``(num_steps,)``.

    A mean speed drawn from U(3, 10) m/s plus three sinusoids with amplitudes U(1.5, 4) m/s,
    periods U(15, 50) s and random phases, clipped to ``[0, max_speed]``: the leader brakes,
    accelerates and often stands still for a while, with accelerations mostly within
    +-1.5 m/s^2 (at most 3 * 4 * 2 pi / 15 = 5.0 m/s^2).

    Parameters
    ----------
    rng
        NumPy random generator (consumed).
    num_steps
        Number of samples, at times ``k dt``.
    dt
        Time step, s.
    max_speed
        Upper clip, m/s.
    """
    t = np.arange(num_steps) * dt
    mean = rng.uniform(3.0, 10.0)
    amplitude = rng.uniform(1.5, 4.0, size=3)
    period = rng.uniform(15.0, 50.0, size=3)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=3)
    waves = amplitude[:, None] * np.sin(2.0 * np.pi * t[None, :] / period[:, None]
                                        + phase[:, None])
    return np.clip(mean + waves.sum(axis=0), 0.0, max_speed)


def _per_parameter(
    value: Mapping[str, float] | float, names: Sequence[str], default: float, what: str
) -> dict[str, float]:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise UnknownNameError(f"{what}: unknown parameters {unknown}; the model has "
                                   f"{list(names)}")
        return {n: float(value.get(n, default)) for n in names}
    return dict.fromkeys(names, float(value))


def _class_means(
    classes: Mapping[str, Mapping[str, float]] | Sequence[str] | None,
    base: dict[str, float],
) -> dict[str | None, dict[str, float]]:
    if classes is None:
        return {None: base}
    if isinstance(classes, str):
        raise TypeError("classes must be a sequence of class names or a mapping, not a str")
    if not isinstance(classes, Mapping):
        classes = {str(c): {} for c in classes}
    if not classes:
        raise InputError("classes must not be empty")
    out: dict[str | None, dict[str, float]] = {}
    for name, overrides in classes.items():
        unknown = sorted(set(overrides) - set(base))
        if unknown:
            raise UnknownNameError(f"class {name!r}: unknown parameters {unknown}; have "
                                   f"{list(base)}")
        out[str(name)] = {**base, **{k: float(v) for k, v in overrides.items()}}
    return out


def simulate_drivers(
    num_drivers: int = 20,
    *,
    model: CarFollowingModel | str = "idm",
    duration_s: float = 40.0,
    dt: float = 0.2,
    population_mean: Mapping[str, float] | None = None,
    population_sd_log: Mapping[str, float] | float = 0.15,
    noise_sd: float = 0.1,
    rng_seed: int = 0,
    classes: Mapping[str, Mapping[str, float]] | Sequence[str] | None = None,
    ar: Sequence[float] | None = None,
    gp: tuple[float, float] | None = None,
    leader_speeds: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate heterogeneous drivers, each following its own synthetic leader.

    Generative process, per driver ``i``:

    1. true parameters ``theta_i[p] = mean[p] * exp(sd_log[p] * N(0, 1))`` (log-normal
       around the population mean, which may depend on the driver's class);
    2. a leader speed profile from :func:`synthetic_leader_speed` on the grid
       ``t_k = k dt``, ``k = 0 .. round(duration_s / dt)``;
    3. the follower starts at the leader's speed and at the model's equilibrium gap for that
       speed, then ``v_{k+1} = max(0, v_k + acc(v_k, s_k, v_leader_k) dt + noise_sd dt
       N(0, 1))`` and the gap follows from the speeds by the ballistic update of
       :func:`carpool.carfollowing.follow_leader`.

    So the one-step observation model ``v(t+dt) = v(t) + acc(t) dt + eps`` with
    ``eps ~ N(0, (noise_sd dt)^2)`` holds exactly, except in the rare steps where the speed
    was clipped at 0 (recognisable as ``speed == 0`` at ``t + dt``). Gaps and speeds are
    recorded without measurement error.

    With the default IDM population the leaders (0-16 m/s) make the follower brake,
    accelerate, stop and follow closely, which identifies ``s0``, ``T``, ``a`` and ``b``
    well; the desired speed ``v0`` (30 m/s) is never approached and is only weakly
    identified, as in real congested data.

    Parameters
    ----------
    num_drivers
        Number of drivers (followers), ``>= 1``.
    model
        A :class:`~carpool.carfollowing.CarFollowingModel` or a registered model name.
    duration_s
        Length of each trajectory, s.
    dt
        Time step, s.
    population_mean
        Natural-unit population means (medians of the log-normal) by parameter name;
        parameters not given use the model's reference values.
    population_sd_log
        Between-driver standard deviation of ``log(theta)``: one number for all parameters
        or ``{name: sd}`` (parameters not named use 0.15). 0 gives identical drivers.
    noise_sd
        Standard deviation of the i.i.d. acceleration noise, m/s^2.
    rng_seed
        Seed of ``numpy.random.default_rng``.
    classes
        Optional vehicle classes: a sequence of class names, or ``{class: {parameter:
        population mean}}`` overriding ``population_mean`` per class (e.g. ``{"car": {},
        "truck": {"v0": 25.0, "T": 2.0, "a": 0.8}}``). Driver ``i`` belongs to class
        ``i mod num_classes``.
    ar
        AR coefficients ``(phi_1, .., phi_p)`` of an autocorrelated acceleration error:
        ``r_k = sum_j phi_j r_{k-j} + noise_sd N(0, 1)`` within each driver's series (started
        in its stationary distribution by a 2,000-step burn-in); must be stationary.
    gp
        ``(lengthscale_s, scale)``: the acceleration error is a squared-exponential Gaussian
        process over time (length scale in s, signal scale in m/s^2) plus white noise of sd
        ``noise_sd`` (the residual model of :class:`carpool.residuals.GP`).
    leader_speeds
        Recorded leader speed profiles instead of synthetic ones, m/s, shape
        ``(num_profiles, >= num_times)`` on the grid ``k dt`` (e.g. real leaders'
        speeds at the same rate): driver ``i`` follows profile ``i mod num_profiles``, its
        first ``round(duration_s / dt) + 1`` samples.

    Returns
    -------
    trajectories : pandas.DataFrame
        Long table with columns ``driver`` (str), ``time`` (s), ``speed`` (m/s), ``gap``
        (m), ``leader_speed`` (m/s), plus ``class`` when ``classes`` is given; sorted by
        driver then time.
    truth : pandas.DataFrame
        True natural-unit parameters, one row per driver (index ``driver``), one column per
        model parameter, plus ``class`` when ``classes`` is given.

    Raises
    ------
    RuntimeError
        If a simulated follower collides with its leader: extreme parameter choices, or
        the OVM, which ignores the approach rate and occasionally runs into leaders that
        stop abruptly (the IDM, Gipps and FVDM defaults do not collide).

    Examples
    --------
    >>> from carpool.testing import simulate_drivers
    >>> df, truth = simulate_drivers(3, duration_s=10.0, rng_seed=1)
    >>> list(df.columns), len(df), list(truth.columns)
    (['driver', 'time', 'speed', 'gap', 'leader_speed'], 153, ['v0', 's0', 'T', 'a', 'b'])
    """
    model = as_model(model)
    num_drivers = int(num_drivers)
    if num_drivers < 1:
        raise InputError(f"num_drivers must be >= 1, got {num_drivers}")
    if not (dt > 0 and duration_s >= dt):
        raise InputError(f"need dt > 0 and duration_s >= dt, got dt={dt}, duration={duration_s}")
    if noise_sd < 0:
        raise InputError(f"noise_sd must be >= 0, got {noise_sd}")
    names = model.parameter_names
    base = _per_parameter(population_mean or {}, names, 0.0, "population_mean")
    base = {**model.reference_params(), **{n: base[n] for n in (population_mean or {})}}
    sd_log = _per_parameter(population_sd_log, names, 0.15, "population_sd_log")
    class_means = _class_means(classes, base)
    class_names = list(class_means)
    for cls, means in class_means.items():
        bad = [n for n, v in means.items() if not v > 0]
        if bad:
            where = "" if cls is None else f" of class {cls!r}"
            raise InputError(f"population means{where} must be positive: {bad}")
    if any(v < 0 for v in sd_log.values()):
        raise InputError(f"population_sd_log must be >= 0, got {sd_log}")

    rng = np.random.default_rng(rng_seed)
    num_times = int(round(duration_s / dt)) + 1
    driver_class = [class_names[i % len(class_names)] for i in range(num_drivers)]
    z = rng.standard_normal((num_drivers, len(names)))
    truth_values = np.array(
        [[class_means[driver_class[i]][n] * np.exp(sd_log[n] * z[i, j])
          for j, n in enumerate(names)] for i in range(num_drivers)]
    )
    if leader_speeds is None:
        leader = np.stack([synthetic_leader_speed(rng, num_times, dt)
                           for _ in range(num_drivers)])
    else:
        profiles = np.asarray(leader_speeds, dtype=float)
        if profiles.ndim != 2 or profiles.shape[1] < num_times:
            raise InputError(f"leader_speeds must have shape (profiles, >= {num_times}), got "
                             f"{profiles.shape}")
        if not (np.isfinite(profiles).all() and (profiles >= 0).all()):
            raise InputError("leader_speeds must be finite and >= 0")
        leader = profiles[np.arange(num_drivers) % len(profiles), :num_times]
    noise = residual_noise(rng, num_drivers, num_times - 1, dt, noise_sd, ar=ar, gp=gp)

    params = {n: jnp.asarray(truth_values[:, j]) for j, n in enumerate(names)}
    leader_j = jnp.asarray(leader)
    rollout = _simulate_batch(model, float(dt), params, leader_j, jnp.asarray(noise))
    collided = np.asarray(rollout.is_collision).any(axis=1)
    ids = _ids("d", num_drivers)
    if collided.any():
        crashed = [ids[i] for i in np.flatnonzero(collided)]
        raise RuntimeError(
            f"simulated followers collided with their leaders: {crashed}; choose less "
            "extreme parameters (e.g. a larger T, s0 or b) or a smaller noise_sd"
        )

    data: dict[str, Any] = {
        "driver": np.repeat(np.array(ids, dtype=object), num_times),
        "time": np.tile(np.arange(num_times) * float(dt), num_drivers),
        "speed": np.asarray(rollout.speed, dtype=np.float64).ravel(),
        "gap": np.asarray(rollout.gap, dtype=np.float64).ravel(),
        "leader_speed": np.asarray(leader_j, dtype=np.float64).ravel(),
    }
    truth = pd.DataFrame(truth_values, columns=names, index=pd.Index(ids, name="driver"))
    if classes is not None:
        data["class"] = np.repeat(np.array(driver_class, dtype=object), num_times)
        truth["class"] = driver_class
    trajectories = pd.DataFrame(data)
    trajectories["driver"] = trajectories["driver"].astype(str)
    if classes is not None:
        trajectories["class"] = trajectories["class"].astype(str)
    return trajectories, truth


def residual_noise(rng: np.random.Generator, num_series: int, num_steps: int, dt: float,
                   noise_sd: float, *, ar: Sequence[float] | None = None,
                   gp: tuple[float, float] | None = None) -> np.ndarray:
    """Acceleration errors (m/s^2), shape ``(num_series, num_steps)``: i.i.d. Normal(0,
    noise_sd^2), or an AR(p) with innovation sd ``noise_sd`` (``ar`` = coefficients), or a
    squared-exponential GP (``gp`` = (lengthscale s, scale m/s^2)) plus that white noise."""
    if ar is not None and gp is not None:
        raise InputError("give ar or gp, not both")
    white = rng.standard_normal((num_series, num_steps))
    if ar is not None:
        phi = np.asarray(ar, dtype=float)
        if phi.ndim != 1 or phi.size == 0:
            raise InputError(f"ar must be a non-empty sequence of coefficients, got {ar!r}")
        roots = np.roots(np.r_[-phi[::-1], 1.0])
        if not np.all(np.abs(roots) > 1.0):
            raise InputError(f"AR coefficients {phi.tolist()} are not stationary")
        burn, p = 2000, phi.size
        innov = noise_sd * np.concatenate([rng.standard_normal((num_series, burn)), white], 1)
        r = np.zeros((num_series, burn + num_steps + p))
        for k in range(burn + num_steps):
            r[:, k + p] = r[:, k : k + p][:, ::-1] @ phi + innov[:, k]
        return r[:, p + burn:]
    if gp is not None:
        lengthscale, scale = (float(x) for x in gp)
        if not (lengthscale > 0 and scale >= 0):
            raise InputError(f"gp needs a positive length scale and scale >= 0, got {gp}")
        t = np.arange(num_steps) * dt
        K = scale**2 * np.exp(-0.5 * ((t[:, None] - t[None, :]) / lengthscale) ** 2)
        L = np.linalg.cholesky(K + 1e-8 * max(scale**2, 1e-12) * np.eye(num_steps))
        f = rng.standard_normal((num_series, num_steps)) @ L.T
        return f + noise_sd * white
    return noise_sd * white


@partial(jax.jit, static_argnums=(0, 1))
def _simulate_batch(
    model: CarFollowingModel,
    dt: float,
    params: dict[str, jax.Array],
    leader: jax.Array,
    noise: jax.Array,
) -> Rollout:
    """Roll out every driver from equilibrium behind its leader; (N,) params, (N, T)
    leaders, (N, T-1) noise. Jitted (cached per model, dt and shapes) because tests and
    benchmarks call the generator many times."""
    init_speed = leader[:, 0]
    init_gap = equilibrium_gap(model, params, init_speed)
    init_gap = jnp.where(jnp.isfinite(init_gap), init_gap, 100.0)  # faster than desired

    def one(p, lead, gap0, speed0, eps):
        return follow_leader(model, p, lead, gap0, speed0, dt, noise=eps)

    return jax.vmap(one)(params, leader, init_gap, init_speed, noise)


def _ids(prefix: str, count: int) -> list[str]:
    width = max(2, len(str(count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def simulate_linear_groups(
    num_groups: int = 8,
    num_obs_per_group: int | Sequence[int] = 20,
    *,
    intercept_mean: float = 1.0,
    intercept_sd: float = 0.5,
    slope_mean: float = -0.5,
    slope_sd: float = 0.3,
    correlation: float = 0.0,
    noise_sd: float = 0.5,
    x_sd: float = 1.0,
    rng_seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate a varying-intercept / varying-slope linear regression with known truth.

    ``(alpha_g, beta_g) ~ N((intercept_mean, slope_mean), Sigma)`` with standard deviations
    ``intercept_sd``, ``slope_sd`` and correlation ``correlation``; ``x ~ N(0, x_sd^2)``;
    ``y = alpha_g + beta_g x + N(0, noise_sd^2)``.

    Parameters
    ----------
    num_groups
        Number of groups, ``>= 1``.
    num_obs_per_group
        Observations per group: one number, or one per group (unbalanced designs show
        partial pooling best).
    intercept_mean, intercept_sd, slope_mean, slope_sd
        Population of the group intercepts and slopes.
    correlation
        Correlation of intercept and slope across groups, in ``(-1, 1)``.
    noise_sd
        Observation noise standard deviation.
    x_sd
        Standard deviation of the covariate.
    rng_seed
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    data : pandas.DataFrame
        Columns ``group`` (str), ``x``, ``y``, sorted by group.
    truth : pandas.DataFrame
        Index ``group``, columns ``intercept`` and ``slope``.

    Examples
    --------
    >>> from carpool.testing import simulate_linear_groups
    >>> data, truth = simulate_linear_groups(3, [2, 5, 1])
    >>> data.groupby("group").size().tolist(), truth.shape
    ([2, 5, 1], (3, 2))
    """
    num_groups = int(num_groups)
    if num_groups < 1:
        raise InputError(f"num_groups must be >= 1, got {num_groups}")
    if isinstance(num_obs_per_group, int | np.integer):
        counts = [int(num_obs_per_group)] * num_groups
    else:
        counts = [int(c) for c in num_obs_per_group]
        if len(counts) != num_groups:
            raise InputError(
                f"num_obs_per_group has {len(counts)} entries for {num_groups} groups"
            )
    if any(c < 0 for c in counts):
        raise InputError(f"num_obs_per_group must be >= 0, got {counts}")
    if not -1.0 < correlation < 1.0:
        raise InputError(f"correlation must be in (-1, 1), got {correlation}")
    if min(intercept_sd, slope_sd, noise_sd, x_sd) < 0:
        raise InputError("standard deviations must be >= 0")

    rng = np.random.default_rng(rng_seed)
    z = rng.standard_normal((num_groups, 2))
    intercept = intercept_mean + intercept_sd * z[:, 0]
    slope = slope_mean + slope_sd * (correlation * z[:, 0]
                                     + np.sqrt(1.0 - correlation**2) * z[:, 1])
    coefficients = np.stack([intercept, slope], axis=1)
    ids = _ids("g", num_groups)
    group_index = np.repeat(np.arange(num_groups), counts)
    x = x_sd * rng.standard_normal(group_index.size)
    y = (coefficients[group_index, 0] + coefficients[group_index, 1] * x
         + noise_sd * rng.standard_normal(group_index.size))
    data = pd.DataFrame({"group": np.array(ids, dtype=object)[group_index], "x": x, "y": y})
    data["group"] = data["group"].astype(str)
    truth = pd.DataFrame(coefficients, columns=["intercept", "slope"],
                         index=pd.Index(ids, name="group"))
    return data, truth
