"""carpool's ring road in Eclipse SUMO: the same scenario, the same tidy tables.

:func:`sumo_ring` is :func:`carpool.simulate.ring` run by SUMO instead of carpool's JAX
engine: the same vehicles (one seed draws the same posterior draws and drivers), the same
geometry and initial state, SUMO's own IDM (``carFollowModel="IDM"``), and the same
:class:`~carpool.simulate.ring.RingResult` (tidy table ``draw, vehicle, time, position,
speed, gap, collision``, summary statistics, vehicles, settings), so the summaries and the
time-space figure of the JAX engine apply unchanged. :func:`simulate_sumo_ring` is the pure
core, mirroring :func:`~carpool.simulate.ring.simulate_ring`; :func:`simulate_sumo_follow`
runs followers under SUMO's IDM behind a replayed (recorded) leader, mirroring
:func:`carpool.carfollowing.follow_leader`.

Needs the optional extra ``pip install "carpool[sumo]"`` (the ``eclipse-sumo``, ``libsumo``,
``traci`` and ``sumolib`` wheels); carpool starts SUMO itself.

The SUMO scenario
-----------------
- **Network** (built by ``netconvert``): a one-lane circle of ``length_m`` metres made of
  four edges of a quarter each (arcs between four nodes, exact lengths), no internal
  junction lanes (``--no-internal-links``): a vehicle leaving one edge enters the next
  directly. The lane's speed limit is above every vehicle's desired speed, so it never binds.
- **Routes**: one closed route per starting edge (``e_k e_k+1 ... e_k-1``) repeated
  (``repeat``) often enough for the fastest vehicle to drive the whole simulated time.
- **Vehicles**: one ``vType`` per vehicle with its IDM parameters (the mapping of
  :mod:`carpool.export.sumo`: ``accel = a``, ``decel = b``, ``tau = T``, ``minGap = s0``,
  ``delta``, ``maxSpeed = v0``, ``speedFactor = 1``, ``speedDev = 0``, ``length``), inserted at
  time 0 at carpool's even slots (vehicle 0 ``perturbation_m`` back) with carpool's initial
  speed, ``insertionChecks="none"`` (SUMO would otherwise refuse or delay vehicles inserted
  closer than its safe gap).
- **Integration**: step length ``dt``, SUMO's *ballistic* position update
  (``--step-method.ballistic``; carpool's rings are ballistic), IDM ``stepping = dt`` (one IDM
  iteration per step, as carpool: SUMO iterates ``max(1, int(dt / stepping + 0.5))`` times
  per step, default stepping 0.25 s), no teleporting of jammed vehicles, collisions only
  reported (``--collision.action warn``, ``--collision.mingap-factor 0``).

How SUMO's IDM differs from carpool's (both integrate ``v <- max(0, v + acc dt)`` with the
acceleration held over the step, and move vehicles by ``(v + v_next) dt / 2``):

1. SUMO clips the desired gap, ``s* = s0 + max(0, vT + v dv / (2 sqrt(ab)))`` (Treiber &
   Kesting's form); carpool's IDM does not clip it (see :mod:`carpool.carfollowing.idm`).
   They differ only when the leader is faster than the follower by more than
   ``2 T sqrt(ab)``.
2. A vehicle that stops within a step travels ``v dt / 2`` in SUMO (its IDM returns a speed
   of 0, not a negative one), ``v^2 / (2 |acc|)`` in carpool (the exact stopping distance
   under the step's constant deceleration): SUMO's stopping vehicles creep a little further.
3. SUMO bounds braking at the vType's ``emergencyDecel`` (default 9 m/s^2 for passenger cars,
   or ``decel`` if larger); carpool's IDM brakes as hard as the formula says.
4. Collisions: carpool floors gaps at ``min_gap`` (0.01 m) and holds the colliding vehicle
   back; SUMO (here) lets vehicles overlap and carries on. The ``collision`` column marks
   gaps below ``min_gap`` in both engines.
5. SUMO computes in double precision, carpool's JAX engine in single precision (float32).

Measured agreement (``benchmarks/sumo_vs_jax_ring.py``, ``docs/sumo.md``): before the first
vehicle stops the two engines agree to the precision of float32 (speeds within about
1e-5 m/s); once stop-and-go waves stop vehicles, difference 2 and the chaotic dynamics of an
unstable ring let individual trajectories drift apart (centimetres per second) while the
wave statistics (mean speed, speed spread, share stopped, wave speed) agree closely.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np
from jax.typing import ArrayLike

from carpool._sumo import (
    SUMO_PARAMETER_NAMES,
    binary,
    format_float,
    idm_vtype_attributes,
    import_libsumo,
    import_traci,
    sumo_version,
)
from carpool.carfollowing.model import CarFollowingModel, as_model
from carpool.errors import InputError
from carpool.io import atomic_write_text
from carpool.simulate.ring import (
    VEHICLE_LENGTH_M,
    RingResult,
    RingTrajectory,
    _ring_result,
    _ring_setup,
    check_ring,
)

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["INTERFACES", "idm_parameter_values", "simulate_sumo_follow", "simulate_sumo_ring",
           "sumo_follow_windows", "sumo_ring"]

#: How carpool drives SUMO: in-process (``libsumo``, fast) or over a local socket to a
#: ``sumo`` process it starts (``traci``).
INTERFACES = ("libsumo", "traci")
#: Edges of the ring network.
NUM_EDGES = 4
#: Points per edge of the drawn arc (geometry only; lengths are set exactly).
_ARC_POINTS = 16


def idm_parameter_values(model: CarFollowingModel | str, params: Mapping[str, ArrayLike]
                         ) -> dict[str, np.ndarray]:
    """The six IDM parameters SUMO needs (``v0, s0, T, a, b, delta``), float64 arrays of
    one shape, from a model built on carpool's IDM and its calibrated ``params``; fixed
    parameters and the constant ``delta`` come from the model.

    Raises
    ------
    InputError
        For a model that is not carpool's IDM (or a variant of it, ``IDM.fix(...)``,
        ``IDM.free(...)``): SUMO has no mapping for it.
    """
    from carpool.carfollowing.idm import idm_acceleration

    model = as_model(model)
    if model.acceleration_fn is not idm_acceleration:
        raise InputError(f"model {model.name!r} has no SUMO mapping: carpool hands SUMO the "
                         "IDM only (carFollowModel=\"IDM\"); fit the IDM ('idm') to use "
                         "SUMO")
    model.check_params(params)
    merged: dict[str, Any] = {**model.constants, **model.fixed,
                              **{n: params[n] for n in model.parameter_names}}
    missing = [n for n in SUMO_PARAMETER_NAMES if n not in merged]
    if missing:
        raise InputError(f"model {model.name!r} has no IDM parameters {missing}")
    arrays = {n: np.asarray(merged[n], dtype=float) for n in SUMO_PARAMETER_NAMES}
    shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
    return {n: np.broadcast_to(a, shape).copy() for n, a in arrays.items()}


# -- network and routes -------------------------------------------------------------------
def _write_ring_network(folder: Path, length_m: float, lane_speed: float) -> Path:
    """A one-lane circle of ``length_m`` metres from ``NUM_EDGES`` arcs, by netconvert."""
    radius = length_m / (2.0 * math.pi)

    def point(fraction: float) -> tuple[float, float]:
        angle = 2.0 * math.pi * fraction
        return radius * math.cos(angle), radius * math.sin(angle)

    nodes = ["<nodes>"]
    edges = ["<edges>"]
    for k in range(NUM_EDGES):
        x, y = point(k / NUM_EDGES)
        nodes.append(f'    <node id="n{k}" x="{x:.4f}" y="{y:.4f}" type="priority"/>')
        shape = " ".join("{:.4f},{:.4f}".format(*point((k + j / _ARC_POINTS) / NUM_EDGES))
                         for j in range(_ARC_POINTS + 1))
        edges.append(f'    <edge id="e{k}" from="n{k}" to="n{(k + 1) % NUM_EDGES}" '
                     f'numLanes="1" speed="{format_float(lane_speed)}" '
                     f'length="{format_float(length_m / NUM_EDGES)}" shape="{shape}"/>')
    atomic_write_text(folder / "ring.nod.xml", "\n".join([*nodes, "</nodes>", ""]))
    atomic_write_text(folder / "ring.edg.xml", "\n".join([*edges, "</edges>", ""]))
    net = folder / "ring.net.xml"
    command = [binary("netconvert", "the SUMO ring"), "--node-files", str(folder / "ring.nod.xml"),
               "--edge-files", str(folder / "ring.edg.xml"), "--output-file", str(net),
               "--no-internal-links", "true", "--no-turnarounds", "true",
               "--junctions.limit-turn-speed", "-1", "--xml-validation", "never",
               "--no-warnings", "true"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not net.exists():
        raise RuntimeError(f"netconvert failed to build the ring network:\n{done.stderr}")
    return net


def _write_ring_routes(folder: Path, values: Mapping[str, np.ndarray], position0: np.ndarray,
                       speed0: float, *, length_m: float, vehicle_length_m: float,
                       repeat: int, stepping: float, emergency_decel: float | None) -> Path:
    edge_length = length_m / NUM_EDGES
    lines = ["<routes>"]
    for k in range(NUM_EDGES):
        edges = " ".join(f"e{(k + j) % NUM_EDGES}" for j in range(NUM_EDGES))
        lines.append(f'    <route id="r{k}" edges="{edges}" repeat="{repeat}"/>')
    num_vehicles = len(position0)
    for i in range(num_vehicles):
        attrs = idm_vtype_attributes({n: values[n][i] for n in SUMO_PARAMETER_NAMES},
                                     vehicle_length_m=vehicle_length_m, stepping=stepping,
                                     emergency_decel=emergency_decel)
        text = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
        lines.append(f'    <vType id="t{i}" {text}/>')
    for i in range(num_vehicles):
        edge = min(int(position0[i] // edge_length), NUM_EDGES - 1)
        pos = position0[i] - edge * edge_length
        lines.append(f'    <vehicle id="v{i}" type="t{i}" route="r{edge}" depart="0" '
                     f'departLane="0" departPos="{format_float(pos)}" '
                     f'departSpeed="{format_float(speed0)}" insertionChecks="none"/>')
    lines += ["</routes>", ""]
    path = folder / "ring.rou.xml"
    atomic_write_text(path, "\n".join(lines))
    return path


def _sumo_options(net: Path, routes: Path, dt: float) -> list[str]:
    return ["--net-file", str(net), "--route-files", str(routes), "--begin", "0",
            "--step-length", format_float(dt), "--step-method.ballistic", "true",
            "--time-to-teleport", "-1", "--collision.action", "warn",
            "--collision.mingap-factor", "0", "--default.speeddev", "0", "--seed", "0",
            "--no-step-log", "true", "--no-warnings", "true", "--duration-log.disable", "true",
            "--xml-validation", "never"]


class _Session:
    """One SUMO simulation through libsumo or TraCI, closed on exit."""

    def __init__(self, interface: str, options: list[str]) -> None:
        if interface not in INTERFACES:
            raise InputError(f"unknown SUMO interface {interface!r}; choose one of "
                             f"{list(INTERFACES)}")
        sumo = binary("sumo", "the SUMO engine")
        if interface == "libsumo":
            self.api = import_libsumo("the SUMO engine")
            if self.api.simulation.isLoaded():
                raise InputError("a libsumo simulation is already running in this process; "
                                 "close it (libsumo.close()) or use interface='traci'")
            self.api.start([sumo, *options])
            self.label = None
        else:
            self.api = import_traci("the SUMO engine")
            self.label = f"carpool-{os.getpid()}-{id(self)}"
            # TraCI prints its connection retries while sumo starts up
            with contextlib.redirect_stdout(io.StringIO()):
                self.api.start([sumo, *options], label=self.label)
            self.api = self.api.getConnection(self.label)

    def __enter__(self) -> Any:
        return self.api

    def __exit__(self, *exc: object) -> None:
        self.api.close()


def simulate_sumo_ring(
    model: CarFollowingModel | str,
    params: Mapping[str, ArrayLike],
    *,
    length_m: float,
    num_steps: int,
    dt: float = 0.1,
    vehicle_length_m: float = VEHICLE_LENGTH_M,
    init_speed: float | None = None,
    perturbation_m: float = 0.0,
    min_gap: float = 0.01,
    emergency_decel: float | None = None,
    interface: str = "libsumo",
    _timings: dict[str, float] | None = None,
) -> RingTrajectory:
    """Simulate IDM vehicles on a ring road in SUMO: :func:`~carpool.simulate.simulate_ring`
    with SUMO as the engine (deterministic; no noise).

    Parameters
    ----------
    model
        carpool's IDM (``"idm"``) or a variant of it (fixed or freed parameters).
    params
        ``{name: array of shape (N,)}``, natural units, vehicle ``i`` follows ``i + 1``.
    length_m, num_steps, dt, vehicle_length_m, init_speed, perturbation_m
        As :func:`~carpool.simulate.simulate_ring`; ``dt`` must be a whole number of
        milliseconds (SUMO's clock).
    min_gap
        Gaps below this (m) are flagged as collisions (SUMO does not floor them).
    emergency_decel
        SUMO's bound on braking, m/s^2; ``None`` for SUMO's default (9 m/s^2 for passenger
        cars, or ``decel`` if larger). Large values (e.g. 1000) remove the bound, as in
        carpool's IDM.
    interface
        ``"libsumo"`` (SUMO in this process, fast) or ``"traci"`` (a ``sumo`` process driven
        over a local socket; use it where another libsumo simulation is running).

    Returns
    -------
    RingTrajectory
        NumPy float64 arrays ``(num_steps + 1, N)``: front-bumper positions along the ring in
        ``[0, L)`` (m), speeds (m/s), bumper-to-bumper gaps to the leader (m, computed from
        the positions; negative where vehicles overlap) and ``gap < min_gap`` flags.
    """
    import jax.numpy as jnp

    from carpool.carfollowing.rollout import equilibrium_speed

    model = as_model(model)
    values = idm_parameter_values(model, params)
    shape = values["v0"].shape
    if len(shape) != 1:
        raise InputError(f"params must all have shape (N,), got {shape}")
    (num_vehicles,) = shape
    num_steps = int(num_steps)
    if num_steps < 1:
        raise InputError(f"num_steps must be >= 1, got {num_steps}")
    if not dt > 0 or abs(dt * 1000.0 - round(dt * 1000.0)) > 1e-6:
        raise InputError(f"SUMO's time step must be a positive whole number of milliseconds, "
                         f"got dt={dt!r} s")
    gap = check_ring(num_vehicles, float(length_m), float(vehicle_length_m),
                     float(perturbation_m), float(min_gap))
    if emergency_decel is not None and not emergency_decel > 0:
        raise InputError(f"emergency_decel must be positive, got {emergency_decel}")
    dtype = jnp.result_type(float)
    if init_speed is None:  # carpool's choice: the median driver's equilibrium speed
        median = {n: jnp.median(jnp.asarray(params[n], dtype)) for n in model.parameter_names}
        speed0 = float(equilibrium_speed(model, median, jnp.asarray(gap, dtype)))
    else:
        speed0 = float(init_speed)
    if not speed0 >= 0:
        raise InputError(f"init_speed must be >= 0, got {speed0}")
    if speed0 > values["v0"].min():
        raise InputError(f"SUMO refuses an initial speed ({speed0:g} m/s) above a vehicle's "
                         f"desired speed v0 (its maxSpeed, {values['v0'].min():g} m/s here)")
    length_m = float(length_m)
    slot = np.arange(num_vehicles) * (length_m / num_vehicles)
    slot[0] -= perturbation_m
    position0 = np.mod(slot, length_m)
    fastest = max(float(values["v0"].max()), speed0)
    repeat = int(math.ceil(fastest * num_steps * dt / length_m)) + 2
    start_edge = np.minimum((position0 // (length_m / NUM_EDGES)).astype(int), NUM_EDGES - 1)
    edge_length = length_m / NUM_EDGES
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="carpool-sumo-") as tmp:
        folder = Path(tmp)
        net = _write_ring_network(folder, length_m, lane_speed=2.0 * fastest + 10.0)
        routes = _write_ring_routes(folder, values, position0, speed0, length_m=length_m,
                                    vehicle_length_m=float(vehicle_length_m),
                                    repeat=repeat, stepping=float(dt),
                                    emergency_decel=emergency_decel)
        position = np.empty((num_steps + 1, num_vehicles))
        speed = np.empty((num_steps + 1, num_vehicles))
        with _Session(interface, _sumo_options(net, routes, float(dt))) as sumo:
            from traci import constants as tc

            ids = [f"v{i}" for i in range(num_vehicles)]
            variables = (tc.VAR_SPEED, tc.VAR_LANEPOSITION, tc.VAR_ROUTE_INDEX)
            sumo.simulationStep()  # inserts every vehicle at time 0 (they move next step)
            if sumo.vehicle.getIDCount() != num_vehicles:
                raise RuntimeError(f"SUMO inserted {sumo.vehicle.getIDCount()} of "
                                   f"{num_vehicles} vehicles")
            for vid in ids:
                sumo.vehicle.subscribe(vid, variables)
            started = time.perf_counter()
            for k in range(num_steps + 1):
                if k:
                    sumo.simulationStep()
                results = sumo.vehicle.getAllSubscriptionResults()
                rows = [results[vid] for vid in ids]
                speed[k] = [r[tc.VAR_SPEED] for r in rows]
                lane_pos = np.fromiter((r[tc.VAR_LANEPOSITION] for r in rows), float,
                                       num_vehicles)
                route_index = np.fromiter((r[tc.VAR_ROUTE_INDEX] for r in rows), int,
                                          num_vehicles)
                edge = (start_edge + route_index) % NUM_EDGES
                position[k] = np.mod(edge * edge_length + lane_pos, length_m)
            if _timings is not None:  # benchmarks: set-up (files, netconvert, start,
                # insertion) and the steps with reading the state back
                _timings.update(setup_s=started - clock, run_s=time.perf_counter() - started)
    spacing = np.mod(np.roll(position, -1, axis=1) - position, length_m)
    gaps = spacing - float(vehicle_length_m)
    return RingTrajectory(position=position, speed=speed, gap=gaps,
                          is_collision=gaps < float(min_gap))


def sumo_ring(
    fit: Fit,
    *,
    num_vehicles: int = 22,
    length_m: float = 230.0,
    duration_s: float = 300.0,
    dt: float = 0.1,
    drivers: str = "population",
    num_draws: int = 1,
    noise: bool = False,
    seed: int = 0,
    perturbation_m: float = 1.0,
    vehicle_length_m: float = VEHICLE_LENGTH_M,
    init_speed: float | None = None,
    warmup_s: float | None = None,
    min_gap: float = 0.01,
    emergency_decel: float | None = None,
    interface: str = "libsumo",
) -> RingResult:
    """:func:`carpool.simulate.ring` with SUMO as the engine: a Sugiyama-style ring road of
    drivers from a fitted IDM, run by SUMO's own IDM.

    Takes :func:`~carpool.simulate.ring`'s arguments and, with the same ``seed``, simulates
    the same vehicles (posterior draws, new or resampled drivers) from the same initial
    state; returns the same :class:`~carpool.simulate.ring.RingResult` (tidy table, summary,
    vehicles, settings with ``engine="sumo"`` and ``sumo_version``). One SUMO run per draw.

    Parameters
    ----------
    fit
        A fit of the IDM (or a variant of it).
    num_vehicles, length_m, duration_s, dt, drivers, num_draws, seed
        As :func:`~carpool.simulate.ring`.
    perturbation_m, vehicle_length_m, init_speed, warmup_s, min_gap
        As :func:`~carpool.simulate.ring`.
    noise
        Must be ``False``: SUMO's IDM is deterministic, so the fitted acceleration noise (and
        any AR / GP residual process) has no counterpart in SUMO.
    emergency_decel, interface
        As :func:`simulate_sumo_ring`.

    Raises
    ------
    InputError
        ``noise=True``; a fit of a model other than the IDM; the errors of
        :func:`~carpool.simulate.ring`; SUMO not installed (naming
        ``pip install "carpool[sumo]"``).
    """
    if noise:
        raise InputError("SUMO's IDM is deterministic: the fitted acceleration noise has no "
                         "counterpart in SUMO; use noise=False (--no-noise) with the SUMO "
                         "engine, or the JAX engine for noisy rings")
    setup = _ring_setup(fit, num_vehicles=num_vehicles, length_m=length_m,
                        duration_s=duration_s, dt=dt, drivers=drivers, num_draws=num_draws,
                        seed=seed, perturbation_m=perturbation_m,
                        vehicle_length_m=vehicle_length_m, min_gap=min_gap)
    names = setup.model.parameter_names
    idm_parameter_values(setup.model, {n: setup.values[0, :, j] for j, n in enumerate(names)})
    out = []
    for d in range(setup.num_draws):
        params = {n: setup.values[d, :, j] for j, n in enumerate(names)}
        out.append(simulate_sumo_ring(
            setup.model, params, length_m=setup.length_m, num_steps=setup.num_steps, dt=dt,
            vehicle_length_m=setup.vehicle_length_m, init_speed=init_speed,
            perturbation_m=perturbation_m, min_gap=min_gap, emergency_decel=emergency_decel,
            interface=interface))
    position, speed, gap, collision = (np.stack([getattr(o, f) for o in out])
                                       for f in RingTrajectory._fields)
    return _ring_result(fit, setup, position, speed, gap, collision, warmup_s=warmup_s,
                        noise=False, seed=seed, perturbation_m=perturbation_m,
                        min_gap=min_gap, engine="sumo", sumo_version=sumo_version(),
                        sumo_interface=interface, emergency_decel=emergency_decel)


# -- follow the recorded leader ---------------------------------------------------------------
def _check_dt(dt: float) -> float:
    """``dt`` as a whole number of milliseconds (SUMO's clock), or an InputError."""
    if not dt > 0 or abs(dt * 1000.0 - round(dt * 1000.0)) > 1e-6:
        raise InputError(f"SUMO's time step must be a positive whole number of milliseconds, "
                         f"got dt={dt!r} s")
    return round(dt * 1000.0) / 1000.0


def simulate_sumo_follow(
    model: CarFollowingModel | str,
    params: Mapping[str, ArrayLike],
    leader_speed: ArrayLike,
    init_gap: ArrayLike,
    init_speed: ArrayLike,
    dt: float,
    *,
    vehicle_length_m: float = VEHICLE_LENGTH_M,
    min_gap: float = 0.01,
    emergency_decel: float | None = None,
    interface: str = "libsumo",
) -> RingTrajectory:
    """Followers under SUMO's IDM behind a replayed leader:
    :func:`carpool.carfollowing.follow_leader` with SUMO as the engine (deterministic).

    Each of the ``D`` parameter sets drives its own follower behind its own copy of the
    leader, on a straight one-lane road of its own (all of them in one SUMO run). The
    leader's speed is set every step (``vehicle.setSpeed`` with all of SUMO's checks off,
    ``setSpeedMode(0)``), so with the ballistic update it travels ``(v_k + v_k+1) dt / 2``
    per step, as in carpool; the follower starts ``init_gap`` behind it at ``init_speed``.

    Parameters
    ----------
    model
        carpool's IDM or a variant of it.
    params
        ``{name: array of shape (D,)}`` (or scalars: one follower), natural units.
    leader_speed
        The leader's speed at ``t_k = k dt``, m/s: shape ``(T,)`` (one leader for every
        follower) or ``(T, D)`` (a leader per follower), ``T >= 2``.
    init_gap, init_speed
        The followers' gap (m, bumper to bumper, ``> 0``) and speed (m/s, ``>= 0``) at
        ``t_0``: scalars or shape ``(D,)``. SUMO refuses a speed above a follower's desired
        speed ``v0`` (its ``maxSpeed``).
    dt
        Time step, s, a whole number of milliseconds.
    vehicle_length_m, min_gap, emergency_decel, interface
        As :func:`simulate_sumo_ring`.

    Returns
    -------
    RingTrajectory
        NumPy float64 arrays ``(T, D)``: the follower's position along its road (m, front
        bumper), speed (m/s), gap to the leader (m, from the positions) and
        ``gap < min_gap`` flags.
    """
    from traci import constants as tc

    model = as_model(model)
    values = idm_parameter_values(model, params)
    values = {n: np.atleast_1d(v) for n, v in values.items()}
    if values["v0"].ndim != 1:
        raise InputError(f"params must be scalars or have shape (D,), got "
                         f"{values['v0'].shape}")
    (num,) = values["v0"].shape
    lead = np.asarray(leader_speed, dtype=float)
    if lead.ndim == 1:
        lead = np.repeat(lead[:, None], num, axis=1)
    if (lead.ndim != 2 or lead.shape[0] < 2 or lead.shape[1] != num
            or not np.isfinite(lead).all() or (lead < 0).any()):
        raise InputError(f"leader_speed must be finite speeds >= 0 of shape (T,) or (T, {num})"
                         f" with T >= 2, got shape {np.shape(leader_speed)}")
    dt = _check_dt(dt)
    try:
        gap0 = np.broadcast_to(np.asarray(init_gap, dtype=float), (num,))
        speed0 = np.broadcast_to(np.asarray(init_speed, dtype=float), (num,))
    except ValueError:
        raise InputError(f"init_gap and init_speed must be scalars or have shape ({num},)"
                         ) from None
    if not ((gap0 > 0).all() and (speed0 >= 0).all()):
        raise InputError(f"need init_gap > 0 and init_speed >= 0, got gaps down to "
                         f"{gap0.min():g} m and speeds down to {speed0.min():g} m/s")
    above = speed0 > values["v0"]
    if above.any():
        i = int(np.argmax(above))
        raise InputError(f"SUMO refuses an initial speed ({speed0[i]:g} m/s) above a "
                         f"follower's desired speed v0 ({values['v0'][i]:g} m/s here)")
    num_times = lead.shape[0]
    length = float(vehicle_length_m)
    travel = float(np.max(np.sum(0.5 * (lead[1:] + lead[:-1]), axis=0)) * dt)
    road = (length + float(gap0.max()) + length + travel
            + max(100.0, 2.0 * float(lead.max()) * dt))
    start = 1.0 + length  # the follower's front at t_0
    top = 2.0 * max(float(values["v0"].max()), float(lead.max())) + 10.0
    with tempfile.TemporaryDirectory(prefix="carpool-sumo-") as tmp:
        folder = Path(tmp)
        nodes, edges = ["<nodes>"], ["<edges>"]
        for d in range(num):
            nodes.append(f'    <node id="a{d}" x="0" y="{20.0 * d}"/>')
            nodes.append(f'    <node id="b{d}" x="{format_float(road)}" y="{20.0 * d}"/>')
            edges.append(f'    <edge id="road{d}" from="a{d}" to="b{d}" numLanes="1" '
                         f'speed="{format_float(top)}"/>')
        atomic_write_text(folder / "follow.nod.xml", "\n".join([*nodes, "</nodes>", ""]))
        atomic_write_text(folder / "follow.edg.xml", "\n".join([*edges, "</edges>", ""]))
        net = folder / "follow.net.xml"
        _netconvert(folder, "follow", "the SUMO follower's roads")
        lines = ["<routes>",
                 f'    <vType id="leader" accel="100" decel="100" emergencyDecel="100" '
                 f'maxSpeed="{format_float(top)}" length="{format_float(length)}" '
                 'speedFactor="1" speedDev="0" minGap="0"/>']
        for d in range(num):
            attrs = idm_vtype_attributes({n: values[n][d] for n in SUMO_PARAMETER_NAMES},
                                         vehicle_length_m=length, stepping=dt,
                                         emergency_decel=emergency_decel)
            text = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
            lines.append(f'    <vType id="t{d}" {text}/>')
        for d in range(num):
            lines.append(f'    <vehicle id="l{d}" type="leader" depart="0" departLane="0" '
                         f'departPos="{format_float(start + gap0[d] + length)}" '
                         f'departSpeed="{format_float(lead[0, d])}" insertionChecks="none">'
                         f'<route edges="road{d}"/></vehicle>')
            lines.append(f'    <vehicle id="f{d}" type="t{d}" depart="0" departLane="0" '
                         f'departPos="{format_float(start)}" '
                         f'departSpeed="{format_float(speed0[d])}" insertionChecks="none">'
                         f'<route edges="road{d}"/></vehicle>')
        lines += ["</routes>", ""]
        routes = folder / "follow.rou.xml"
        atomic_write_text(routes, "\n".join(lines))
        position = np.empty((num_times, num))
        speed = np.empty((num_times, num))
        gap = np.empty((num_times, num))
        leaders = [f"l{d}" for d in range(num)]
        followers = [f"f{d}" for d in range(num)]
        with _Session(interface, _sumo_options(net, routes, dt)) as sumo:
            sumo.simulationStep()  # inserts the vehicles at time 0
            if sumo.vehicle.getIDCount() != 2 * num:
                raise RuntimeError(f"SUMO inserted {sumo.vehicle.getIDCount()} of "
                                   f"{2 * num} vehicles")
            for vid in leaders:
                sumo.vehicle.setSpeedMode(vid, 0)
                sumo.vehicle.subscribe(vid, (tc.VAR_LANEPOSITION,))
            for vid in followers:
                sumo.vehicle.subscribe(vid, (tc.VAR_LANEPOSITION, tc.VAR_SPEED))
            for k in range(num_times):
                if k:
                    for d, vid in enumerate(leaders):
                        sumo.vehicle.setSpeed(vid, float(lead[k, d]))
                    sumo.simulationStep()
                results = sumo.vehicle.getAllSubscriptionResults()
                x_f = np.fromiter((results[v][tc.VAR_LANEPOSITION] for v in followers),
                                  float, num)
                x_l = np.fromiter((results[v][tc.VAR_LANEPOSITION] for v in leaders),
                                  float, num)
                position[k] = x_f
                speed[k] = np.fromiter((results[v][tc.VAR_SPEED] for v in followers),
                                       float, num)
                gap[k] = x_l - length - x_f
    return RingTrajectory(position=position, speed=speed, gap=gap,
                          is_collision=gap < float(min_gap))


def _netconvert(folder: Path, name: str, what: str, *extra: str) -> Path:
    """Build ``folder/name.net.xml`` from ``name.nod.xml`` and ``name.edg.xml`` (and
    ``extra`` netconvert options)."""
    net = folder / f"{name}.net.xml"
    done = subprocess.run(
        [binary("netconvert", what), "--node-files", str(folder / f"{name}.nod.xml"),
         "--edge-files", str(folder / f"{name}.edg.xml"), "--output-file", str(net),
         "--xml-validation", "never", "--no-warnings", "true", *extra],
        capture_output=True, text=True, check=False)
    if done.returncode != 0 or not net.exists():
        raise RuntimeError(f"netconvert failed to build {what}:\n{done.stderr}")
    return net


def sumo_follow_windows(
    model: CarFollowingModel | str,
    params: Mapping[str, ArrayLike],
    record: Mapping[str, np.ndarray],
    dt: float,
    steps: int,
    *,
    min_gap: float = 0.01,
    vehicle_length_m: float = VEHICLE_LENGTH_M,
    emergency_decel: float | None = None,
    interface: str = "libsumo",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The SUMO engine of :func:`carpool.simulate.follow`: ``D`` followers restarted from the
    record every ``steps`` steps, every (draw, window) pair on a road of its own, all in one
    SUMO run of ``steps`` steps.

    ``params`` ``{name: (D,)}``; ``record`` the recorded ``speed``, ``gap`` and
    ``leader_speed`` (``(n,)`` each, on a grid of ``dt``). Windows tile the record as in the
    JAX engine (``[0, h], [h, 2h], ...``, the leader held at its last speed past the record's
    end). A recorded starting speed above a draw's desired speed ``v0`` (which SUMO refuses)
    starts that follower at ``v0`` (SUMO caps a vehicle's speed at its ``maxSpeed``).

    Returns speed, gap, collision ``(D, n)`` on the record's grid (the first point is the
    recorded state), the window of each simulated point ``(n - 1,)`` and the number of
    followers started at ``v0`` instead of the recorded speed.
    """
    model = as_model(model)
    values = idm_parameter_values(model, params)
    values = {n: np.atleast_1d(v) for n, v in values.items()}
    (num_draws,) = values["v0"].shape
    speed_rec = np.asarray(record["speed"], dtype=float)
    gap_rec = np.asarray(record["gap"], dtype=float)
    num_points = speed_rec.shape[0]
    steps = max(1, min(int(steps), num_points - 1))
    num_windows = -(-(num_points - 1) // steps)
    starts = np.arange(num_windows) * steps
    leader = np.pad(np.asarray(record["leader_speed"], dtype=float),
                    (0, num_windows * steps + 1 - num_points), mode="edge")
    segments = np.stack([leader[s : s + steps + 1] for s in starts], axis=1)  # (steps+1, W)
    # pair p = d * W + w: draw d, window w
    pair_values = {n: np.repeat(v, num_windows) for n, v in values.items()}
    speed0 = np.tile(speed_rec[starts], num_draws)
    capped = speed0 > pair_values["v0"]
    speed0 = np.minimum(speed0, pair_values["v0"])
    out = simulate_sumo_follow(model, pair_values, np.tile(segments, (1, num_draws)),
                               np.tile(gap_rec[starts], num_draws), speed0, dt,
                               vehicle_length_m=vehicle_length_m, min_gap=min_gap,
                               emergency_decel=emergency_decel, interface=interface)

    def assemble(sims: np.ndarray, first: Any) -> np.ndarray:  # (steps+1, D*W) -> (D, n)
        per_draw = sims.T.reshape(num_draws, num_windows, steps + 1)
        inner = per_draw[:, :, 1:].reshape(num_draws, -1)[:, : num_points - 1]
        return np.concatenate([np.full((num_draws, 1), first, inner.dtype), inner], axis=1)

    window_id = np.repeat(np.arange(num_windows), steps)[: num_points - 1]
    return (assemble(out.speed, speed_rec[0]), assemble(out.gap, gap_rec[0]),
            assemble(out.is_collision, False), window_id, int(capped.sum()))
