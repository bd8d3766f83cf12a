"""carpool's scenarios in Eclipse SUMO: the ring road and the recorded leader (the same
tables as carpool's JAX engine), and a lane drop fed by a fitted driver population.

:func:`sumo_ring` is :func:`carpool.simulate.ring` run by SUMO instead of carpool's JAX
engine: the same vehicles (one seed draws the same posterior draws and drivers), the same
geometry and initial state, SUMO's own IDM (``carFollowModel="IDM"``), and the same
:class:`~carpool.simulate.ring.RingResult` (tidy table ``draw, vehicle, time, position,
speed, gap, collision``, summary statistics, vehicles, settings), so the summaries and the
time-space figure of the JAX engine apply unchanged. :func:`simulate_sumo_ring` is the pure
core, mirroring :func:`~carpool.simulate.ring.simulate_ring`; :func:`simulate_sumo_follow`
runs followers under SUMO's IDM behind a replayed (recorded) leader, mirroring
:func:`carpool.carfollowing.follow_leader`, and :func:`sumo_follow_windows` is the SUMO
engine of :func:`carpool.simulate.follow` (``engine="sumo"``: every posterior draw and
window its own leader-follower pair on a road of its own, one SUMO run per horizon).
:func:`lane_drop` is a scenario of SUMO's own: a multi-lane road losing a lane, fed by the
fit's drivers, against a homogeneous population of the median driver
(:class:`LaneDropResult`, :func:`plot_lane_drop`).

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
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
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
           "sumo_follow_windows", "sumo_ring", "lane_drop", "LaneDropResult",
           "plot_lane_drop"]

#: How carpool drives SUMO: in-process (``libsumo``, fast) or over a local socket to a
#: ``sumo`` process it starts (``traci``).
INTERFACES = ("libsumo", "traci")
#: Most (draw, window) pairs, each a road of its own, in one SUMO run of the follow engine
#: (SUMO's set-up grows faster than linearly with the number of roads).
MAX_PAIRS_PER_RUN = 4096
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


def _vtype_lines(values: Mapping[str, np.ndarray], count: int, **attributes: Any
                 ) -> list[str]:
    """``<vType id="t{i}" .../>`` of the first ``count`` drivers of ``values`` (IDM
    parameters by name), with :func:`~carpool._sumo.idm_vtype_attributes`' other
    ``attributes``."""
    lines = []
    for i in range(count):
        attrs = idm_vtype_attributes({n: values[n][i] for n in SUMO_PARAMETER_NAMES},
                                     **attributes)
        text = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
        lines.append(f'    <vType id="t{i}" {text}/>')
    return lines


def _write_ring_routes(folder: Path, values: Mapping[str, np.ndarray], position0: np.ndarray,
                       speed0: float, *, length_m: float, vehicle_length_m: float,
                       repeat: int, stepping: float, emergency_decel: float | None) -> Path:
    edge_length = length_m / NUM_EDGES
    lines = ["<routes>"]
    for k in range(NUM_EDGES):
        edges = " ".join(f"e{(k + j) % NUM_EDGES}" for j in range(NUM_EDGES))
        lines.append(f'    <route id="r{k}" edges="{edges}" repeat="{repeat}"/>')
    num_vehicles = len(position0)
    lines += _vtype_lines(values, num_vehicles, vehicle_length_m=vehicle_length_m,
                          stepping=stepping, emergency_decel=emergency_decel)
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
        lines += _vtype_lines(values, num, vehicle_length_m=length, stepping=dt,
                              emergency_decel=emergency_decel)
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
    SUMO run of ``steps`` steps (or one per :data:`MAX_PAIRS_PER_RUN` pairs: a long record
    cut into short windows makes many).

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
    leaders = np.tile(segments, (1, num_draws))
    gap0 = np.tile(gap_rec[starts], num_draws)
    chunks = []  # runs of at most MAX_PAIRS_PER_RUN roads
    for lo in range(0, num_draws * num_windows, MAX_PAIRS_PER_RUN):
        hi = min(lo + MAX_PAIRS_PER_RUN, num_draws * num_windows)
        chunks.append(simulate_sumo_follow(
            model, {n: v[lo:hi] for n, v in pair_values.items()}, leaders[:, lo:hi],
            gap0[lo:hi], speed0[lo:hi], dt, vehicle_length_m=vehicle_length_m,
            min_gap=min_gap, emergency_decel=emergency_decel, interface=interface))
    out = RingTrajectory(*(np.concatenate([getattr(c, f) for c in chunks], axis=1)
                           for f in RingTrajectory._fields))

    def assemble(sims: np.ndarray, first: Any) -> np.ndarray:  # (steps+1, D*W) -> (D, n)
        per_draw = sims.T.reshape(num_draws, num_windows, steps + 1)
        inner = per_draw[:, :, 1:].reshape(num_draws, -1)[:, : num_points - 1]
        return np.concatenate([np.full((num_draws, 1), first, inner.dtype), inner], axis=1)

    window_id = np.repeat(np.arange(num_windows), steps)[: num_points - 1]
    return (assemble(out.speed, speed_rec[0]), assemble(out.gap, gap_rec[0]),
            assemble(out.is_collision, False), window_id, int(capped.sum()))


# -- the lane drop ------------------------------------------------------------------------------
#: Where the lane drop's drivers come from: new drivers from the population of each posterior
#: draw (hierarchical fits), or the fitted drivers at that draw, resampled.
LANE_DROP_DRIVERS = ("population", "observed")
#: The two populations each posterior draw is simulated with.
POPULATIONS = ("heterogeneous", "homogeneous")
LANE_DROP_SUMMARY_COLUMNS = (
    "draw", "posterior_draw", "population", "discharge_flow_veh_h", "discharge_speed_m_s",
    "upstream_flow_veh_h", "queued_share", "inserted", "not_inserted", "congestion_onset_s",
    "queue_extent_m", "congested_share", "congested_speed_m_s", "collisions",
    "emergency_braking", "teleports")


@dataclass(frozen=True)
class LaneDropResult:
    """A lane drop run by SUMO for posterior draws of a fit (:func:`lane_drop`).

    Attributes
    ----------
    summary
        One row per (draw, population), columns :data:`LANE_DROP_SUMMARY_COLUMNS`:
        ``draw`` (0, 1, ...), ``posterior_draw`` (index into the stacked draws),
        ``population`` (``"heterogeneous"``: every vehicle its own driver;
        ``"homogeneous"``: every vehicle the population's median driver of that draw),
        ``discharge_flow_veh_h`` (vehicles per hour past the detectors ``discharge_at_m``
        downstream of the drop, all remaining lanes, after the warm-up) and
        ``discharge_speed_m_s`` (their mean speed), ``upstream_flow_veh_h`` (at the first
        detector, near the entry), ``queued_share`` (share of the intervals after the
        warm-up in which some detector upstream of the drop saw congestion: near 1, a queue
        stood before the bottleneck, so the discharge flow is its capacity; SUMO's vehicles
        leave the ending lane well before its end, so the queue may stand upstream of the
        merging zone rather than at the drop),
        ``inserted`` and ``not_inserted`` (vehicles SUMO had inserted by the end, and those
        still waiting to enter because the road was full),
        ``congestion_onset_s`` (start of the first detector interval in which a detector
        upstream of the drop saw congestion, NaN for none), ``queue_extent_m`` (how far
        upstream of the drop congestion reached, m, 0 for none), ``congested_share`` (share
        of upstream detector intervals after the warm-up that were congested),
        ``congested_speed_m_s`` (the threshold used), ``collisions``,
        ``emergency_braking`` and ``teleports`` (SUMO's statistics).
    detectors
        Tidy time-space table of the detectors: ``draw``, ``population``, ``position_m``
        (along the road from the entry), ``edge`` (``"upstream"`` / ``"downstream"``),
        ``time_s`` (interval start), ``flow_veh_h`` (all lanes), ``speed_m_s`` (mean speed
        of the vehicles that passed, NaN for none), ``occupancy`` (mean over lanes, %),
        ``congested`` (speed below ``congested_speed_m_s``, or no vehicle passing a detector
        more than half occupied), ``count`` (vehicles that passed).
    drivers
        The drivers: ``draw``, ``posterior_draw``, ``population``, ``vehicle`` (its index in
        arrival order; ``-1``: the homogeneous population's one driver), ``driver`` (the
        fitted driver, ``"new"``, or ``"median"``) and the IDM parameters ``v0, s0, T, a, b,
        delta`` (natural units).
    settings
        The scenario (lanes, lengths, demand, durations, dt, detectors, seed, ...), the fit's
        model and pooling, ``sumo_version``, and the run time.
    """

    summary: pd.DataFrame
    detectors: pd.DataFrame
    drivers: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    def discharge(self) -> pd.DataFrame:
        """Discharge flow (veh/h) per draw: columns ``heterogeneous``, ``homogeneous`` and
        their ``difference`` (heterogeneous minus homogeneous: the same posterior draw and the
        same arrivals), index ``draw``."""
        table = self.summary.pivot(index="draw", columns="population",
                                   values="discharge_flow_veh_h")
        table = table.reindex(columns=[p for p in POPULATIONS if p in table.columns])
        if len(table.columns) == 2:
            table["difference"] = table["heterogeneous"] - table["homogeneous"]
        table.columns.name = None
        return table

    def comparison(self, level: float = 0.9) -> pd.DataFrame:
        """The distribution over posterior draws of the discharge flow (veh/h) of each
        population and of their difference: ``mean``, ``sd``, ``median``, the central
        ``level`` interval (``lo``, ``hi``) and the number of draws."""
        flows = self.discharge()
        q = [(1 - level) / 2, 0.5, (1 + level) / 2]
        rows = {}
        for name in flows.columns:
            x = flows[name].to_numpy(float)
            lo, med, hi = np.quantile(x, q)
            rows[name] = {"mean": x.mean(), "sd": x.std(ddof=1) if x.size > 1 else np.nan,
                          "median": med, "lo": lo, "hi": hi, "num_draws": x.size}
        out = pd.DataFrame.from_dict(rows, orient="index")
        out.index.name = "discharge_flow_veh_h"
        return out


def _lane_drop_network(folder: Path, lanes: int, length_m: float, drop_at_m: float,
                       speed: float) -> dict[str, float]:
    """The road: edge ``up`` of ``lanes`` lanes from x = 0 to the drop, edge ``down`` of
    ``lanes - 1`` lanes to ``length_m``; the rightmost lane (index 0) ends at the drop (lane
    ``i`` of ``up`` continues as lane ``i - 1``). Returns where each edge's lanes start and
    how long they are (netconvert shortens edges by the junction's few metres)."""
    atomic_write_text(folder / "drop.nod.xml", "\n".join([
        "<nodes>", '    <node id="entry" x="0" y="0"/>',
        f'    <node id="drop" x="{format_float(drop_at_m)}" y="0" type="priority"/>',
        f'    <node id="exit" x="{format_float(length_m)}" y="0"/>', "</nodes>", ""]))
    atomic_write_text(folder / "drop.edg.xml", "\n".join([
        "<edges>",
        f'    <edge id="up" from="entry" to="drop" numLanes="{lanes}" '
        f'speed="{format_float(speed)}"/>',
        f'    <edge id="down" from="drop" to="exit" numLanes="{lanes - 1}" '
        f'speed="{format_float(speed)}"/>', "</edges>", ""]))
    connections = [f'    <connection from="up" to="down" fromLane="{i}" toLane="{i - 1}"/>'
                   for i in range(1, lanes)]
    atomic_write_text(folder / "drop.con.xml",
                      "\n".join(["<connections>", *connections, "</connections>", ""]))
    net = _netconvert(folder, "drop", "the lane-drop road", "--connection-files",
                      str(folder / "drop.con.xml"))
    geometry = {}
    for lane in ET.parse(net).getroot().iter("lane"):
        edge = lane.get("id", "").rsplit("_", 1)[0]
        if edge in ("up", "down") and edge not in geometry:
            x0 = float(lane.get("shape", "0,0").split()[0].split(",")[0])
            geometry[edge] = (x0, float(lane.get("length", "nan")))
    return {"up_start": geometry["up"][0], "up_length": geometry["up"][1],
            "down_start": geometry["down"][0], "down_length": geometry["down"][1]}


def _run_lane_drop(sumo: str, net: Path, run_dir: Path, values: Mapping[str, np.ndarray],
                   depart: np.ndarray, detector_xml: str, *, dt: float, duration_s: float,
                   vehicle_length_m: float, seed: int) -> None:
    """One SUMO run of the lane drop in ``run_dir``: one vType per driver in ``values``
    (one driver: every vehicle is it), a vehicle per departure time; writes
    ``detectors.xml`` and ``statistics.xml`` there."""
    # the detectors write next to their additional file: the run's folder
    atomic_write_text(run_dir / "detectors.add.xml", detector_xml)
    routes = ["<routes>"]
    num_types = values["v0"].size
    for i in range(num_types):
        attrs = idm_vtype_attributes({n: values[n][i] for n in SUMO_PARAMETER_NAMES},
                                     vehicle_length_m=vehicle_length_m, stepping=dt)
        text = " ".join(f"{a}={quoteattr(v)}" for a, v in attrs.items())
        routes.append(f'    <vType id="t{i}" {text}/>')
    routes.append('    <route id="road" edges="up down"/>')
    for i, t in enumerate(depart):
        vtype = f"t{i}" if num_types > 1 else "t0"
        routes.append(f'    <vehicle id="v{i}" type="{vtype}" route="road" depart="{t:.3f}" '
                      'departLane="free" departSpeed="last"/>')
    atomic_write_text(run_dir / "drop.rou.xml", "\n".join([*routes, "</routes>", ""]))
    command = [
        sumo, "--net-file", str(net), "--route-files", str(run_dir / "drop.rou.xml"),
        "--additional-files", str(run_dir / "detectors.add.xml"), "--statistic-output",
        str(run_dir / "statistics.xml"), "--begin", "0", "--end", format_float(duration_s),
        "--step-length", format_float(dt), "--step-method.ballistic", "true",
        "--time-to-teleport", "-1", "--collision.action", "warn",
        "--collision.mingap-factor", "0", "--default.speeddev", "0", "--seed",
        str(seed % 2**31), "--no-step-log", "true", "--no-warnings", "true",
        "--duration-log.disable", "true", "--xml-validation", "never"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=run_dir)
    if done.returncode != 0:
        raise RuntimeError(f"SUMO failed on the lane drop:\n{done.stderr}")


def _read_detectors(path: Path) -> pd.DataFrame:
    rows = [{"id": el.get("id"), "begin": float(el.get("begin")),
             "end": float(el.get("end")), "count": int(el.get("nVehContrib")),
             "speed": float(el.get("speed")), "occupancy": float(el.get("occupancy"))}
            for el in ET.parse(path).getroot().iter("interval")]
    return pd.DataFrame(rows, columns=["id", "begin", "end", "count", "speed", "occupancy"])


def _read_statistics(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()

    def number(tag: str, name: str) -> int:
        el = root.find(tag)
        return int(float(el.get(name, 0))) if el is not None else 0

    return {"inserted": number("vehicles", "inserted"),
            "not_inserted": number("vehicles", "waiting"),
            "collisions": number("safety", "collisions"),
            "emergency_braking": number("safety", "emergencyBraking"),
            "teleports": number("teleports", "total")}


def lane_drop(
    fit: Fit,
    *,
    lanes: int = 2,
    length_m: float = 2000.0,
    drop_at_m: float = 1500.0,
    demand_veh_h: float = 3000.0,
    duration_s: float = 600.0,
    warmup_s: float = 180.0,
    num_draws: int = 10,
    drivers: str = "population",
    dt: float | None = None,
    speed_limit_m_s: float | None = None,
    vehicle_length_m: float = VEHICLE_LENGTH_M,
    period_s: float = 30.0,
    detector_spacing_m: float = 100.0,
    discharge_at_m: float = 100.0,
    congested_speed_m_s: float | None = None,
    congested_fraction: float = 0.6,
    seed: int = 0,
) -> LaneDropResult:
    """A lane drop in SUMO, fed by a fitted driver population, against a homogeneous one.

    A straight road of ``length_m`` metres whose ``lanes`` lanes drop to ``lanes - 1`` at
    ``drop_at_m`` (the rightmost lane ends; its vehicles merge left under SUMO's default
    lane-changing model, LC2013), fed at its entry by ``demand_veh_h`` vehicles per hour
    (Poisson arrivals; SUMO inserts each vehicle on the freest lane at the speed of the last
    vehicle on it, its desired speed on an empty lane, as soon as that is safe, so vehicles
    wait to enter while a queue reaches back to the entry: ``departLane="free"
    departSpeed="last"``). For each of
    ``num_draws`` posterior draws, two SUMO runs with the same arrivals:

    - **heterogeneous**: every vehicle its own driver, drawn from the fit at that posterior
      draw (``drivers="population"``: new drivers from the population, hierarchical fits;
      ``"observed"``: the fitted drivers, resampled);
    - **homogeneous**: every vehicle the population's median driver at that draw (for a
      hierarchical fit the population's centre, ``exp(mu)`` on the log scale; for
      ``drivers="observed"`` the per-parameter median of the fitted drivers).

    Detectors (SUMO induction loops, ``<inductionLoop>``, on every lane) every
    ``detector_spacing_m`` upstream of the drop and ``discharge_at_m`` downstream of it count
    vehicles and their speeds over intervals of ``period_s``: the discharge flow (the
    bottleneck's capacity once a queue stands before it), and where and when congestion
    forms upstream. SUMO settings: step ``dt`` with the ballistic update, carpool's IDM
    mapping (``docs/sumo.md``), no teleporting, collisions only counted, SUMO's ``--seed``
    fixed to ``seed``. Cost: two SUMO runs per draw, each simulating about
    ``demand_veh_h x duration_s / 3600`` vehicles; a few seconds per run at the defaults.

    Parameters
    ----------
    fit
        A fit of the IDM (or a variant of it).
    lanes
        Lanes before the drop (at least 2); ``lanes - 1`` after it.
    length_m, drop_at_m
        Road length and where the lane ends, m from the entry.
    demand_veh_h
        Arrivals at the entry, veh/h (all lanes). The default, 3,000 veh/h, is above the
        one-lane capacity of typical calibrated drivers (about 1,800 to 2,800 veh/h), below
        the two-lane one, so a queue forms at the drop.
    duration_s, warmup_s
        Simulated time, s; flows and speeds are averaged after ``warmup_s``.
    num_draws
        Posterior draws simulated (without replacement where the posterior has enough).
    drivers
        ``"population"`` or ``"observed"`` (see above).
    dt
        SUMO's time step, s (a whole number of milliseconds); default the fit's data time
        step (carpool's IDM is an Euler step of it), else 0.1 s.
    speed_limit_m_s
        The road's speed limit; drivers aim for ``min(v0, limit)``. Default: above every
        vehicle's ``v0``, so each drives towards its calibrated desired speed.
    vehicle_length_m
        Every vehicle's length, m.
    period_s, detector_spacing_m, discharge_at_m
        Detector interval (s), spacing upstream of the drop (m) and the discharge detectors'
        distance downstream of it (m).
    congested_speed_m_s, congested_fraction
        A detector interval upstream of the drop is congested below this mean speed, m/s
        (or with no vehicle passing a detector occupied more than half the time); default
        ``congested_fraction`` (0.6) of the desired speed of the draw's median driver,
        ``min(v0, limit)``, one threshold for both populations of a draw.
    seed
        Seeds the posterior draws, the drivers, the arrivals and SUMO.

    Returns
    -------
    LaneDropResult

    Raises
    ------
    InputError
        A fit of a model other than the IDM; ``drivers="population"`` with a fit without a
        population (pooled, unpooled); a pooled fit (one driver: nothing to compare);
        inconsistent geometry or times; SUMO not installed.
    """
    from carpool.simulate._fit import carfollowing_model

    started = time.perf_counter()
    model = carfollowing_model(fit)
    idm_parameter_values(model, {n: np.ones(1) for n in model.parameter_names})
    if drivers not in LANE_DROP_DRIVERS:
        raise InputError(f"unknown drivers {drivers!r}; choose 'population' or 'observed'")
    if fit.pooling == "pooled":
        raise InputError("a pooled fit has one parameter set shared by every driver: no "
                         "heterogeneity to compare; use a hierarchical fit")
    if drivers == "population" and fit.pooling != "hierarchical":
        raise InputError(f"an {fit.pooling} fit has no population distribution to draw new "
                         "drivers from; use drivers='observed' or a hierarchical fit")
    if isinstance(lanes, bool) or not isinstance(lanes, int | np.integer) or lanes < 2:
        raise InputError(f"lanes must be a whole number >= 2 (one of them drops), got "
                         f"{lanes!r}")
    lanes = int(lanes)
    if not (0 < drop_at_m < length_m):
        raise InputError(f"need 0 < drop_at_m < length_m, got drop_at_m={drop_at_m}, "
                         f"length_m={length_m}")
    if not 0 < discharge_at_m < length_m - drop_at_m - 10.0:
        raise InputError(f"discharge_at_m ({discharge_at_m} m) must lie on the road past the "
                         f"drop, which has {length_m - drop_at_m:g} m")
    if not (demand_veh_h > 0 and duration_s > 0 and period_s > 0
            and 0 <= warmup_s < duration_s - period_s / 2 and detector_spacing_m > 0
            and vehicle_length_m > 0 and 0 < congested_fraction < 1
            and (congested_speed_m_s is None or congested_speed_m_s > 0)):
        raise InputError("demand, duration, period, detector spacing, vehicle length and "
                         "congested speed must be positive, and the warm-up shorter than the "
                         "duration")
    if int(num_draws) < 1:
        raise InputError(f"num_draws must be >= 1, got {num_draws}")
    num_draws = int(num_draws)
    if dt is None:
        data_dt = np.asarray(fit.data.covariates.get("dt", np.array([np.nan])), dtype=float)
        guess = float(np.nanmedian(data_dt)) if data_dt.size else float("nan")
        dt = (round(guess * 1000.0) / 1000.0
              if np.isfinite(guess) and 0.001 <= guess <= 1.0 else 0.1)
    dt = _check_dt(float(dt))
    rng = np.random.default_rng([int(seed), 32])
    theta = fit.theta_draws()
    num_posterior = theta.shape[0]
    draw_idx = rng.choice(num_posterior, num_draws, replace=num_draws > num_posterior)
    # the arrivals, shared by every draw and both populations (common random numbers)
    mean_headway = 3600.0 / float(demand_veh_h)
    expected = int(duration_s / mean_headway)
    headways = rng.exponential(mean_headway, size=2 * expected + 50)
    depart = np.cumsum(headways) - headways[0]
    depart = np.round(depart[depart < duration_s], 3)
    num_vehicles = depart.size
    names = model.parameter_names
    spec_params = fit.spec.parameters
    hetero, median, source = [], [], []
    for d in draw_idx:
        if drivers == "population":
            from carpool.inference.predict import new_group_params

            values = new_group_params(fit, num_vehicles, seed=int(rng.integers(2**31)),
                                      draws=np.array([d]))[0]
            mu = fit.idata.posterior["mu"].values.reshape(num_posterior, -1)[d]
            centre = np.asarray(spec_params.to_natural(mu, axis=-1), dtype=float)
            source.append(np.full(num_vehicles, "new", dtype=object))
        else:
            pick = rng.integers(theta.shape[1], size=num_vehicles)
            values = theta[d, pick]
            centre = np.median(theta[d], axis=0)
            source.append(np.asarray(fit.group_ids, dtype=object)[pick])
        hetero.append(idm_parameter_values(model, {n: values[:, j]
                                                    for j, n in enumerate(names)}))
        median.append(idm_parameter_values(model, {n: centre[j:j + 1]
                                                    for j, n in enumerate(names)}))
    fastest = max(float(v["v0"].max()) for v in hetero + median)
    lane_speed = (fastest + 10.0 if speed_limit_m_s is None else float(speed_limit_m_s))
    if not lane_speed > 0:
        raise InputError(f"speed_limit_m_s must be positive, got {speed_limit_m_s}")
    sumo_bin = binary("sumo", "the SUMO lane drop")
    summaries, tables, driver_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="carpool-sumo-") as tmp:
        folder = Path(tmp)
        geo = _lane_drop_network(folder, lanes, float(length_m), float(drop_at_m), lane_speed)
        # detectors: upstream every detector_spacing_m back from the drop (the first 20 m
        # before the junction left free), downstream at discharge_at_m
        up_pos = np.arange(geo["up_length"] - 20.0, 10.0, -float(detector_spacing_m))[::-1]
        detectors = [("upstream", "up", lane, float(p), geo["up_start"] + float(p))
                     for p in up_pos for lane in range(lanes)]
        down_pos = min(float(discharge_at_m), geo["down_length"] - 5.0)
        detectors += [("downstream", "down", lane, down_pos, geo["down_start"] + down_pos)
                      for lane in range(lanes - 1)]
        det_ids = [f"det_{edge}_{lane}_{k}" for k, (_, edge, lane, _, _) in
                   enumerate(detectors)]
        det_x = {i: x for i, (*_, x) in zip(det_ids, detectors, strict=True)}
        det_kind = {i: kind for i, (kind, *_) in zip(det_ids, detectors, strict=True)}
        lines = ["<additional>"]
        for det_id, (_, edge, lane, pos, _) in zip(det_ids, detectors, strict=True):
            lines.append(f'    <inductionLoop id="{det_id}" lane="{edge}_{lane}" '
                         f'pos="{format_float(pos)}" period="{format_float(period_s)}" '
                         'file="detectors.xml"/>')
        detector_xml = "\n".join([*lines, "</additional>", ""])
        for k, d in enumerate(draw_idx):
            for population in POPULATIONS:
                values = hetero[k] if population == "heterogeneous" else median[k]
                run_dir = folder / f"run{k}_{population}"
                run_dir.mkdir()
                _run_lane_drop(sumo_bin, folder / "drop.net.xml", run_dir, values, depart,
                               detector_xml, dt=dt, duration_s=float(duration_s),
                               vehicle_length_m=float(vehicle_length_m), seed=int(seed))
                raw = _read_detectors(run_dir / "detectors.xml")
                stats = _read_statistics(run_dir / "statistics.xml")
                threshold = (congested_fraction * min(float(median[k]["v0"][0]), lane_speed)
                             if congested_speed_m_s is None else float(congested_speed_m_s))
                table = _detector_table(raw, det_x, det_kind, period_s, threshold)
                table.insert(0, "population", population)
                table.insert(0, "draw", k)
                tables.append(table)
                summaries.append({"draw": k, "posterior_draw": int(d),
                                  "population": population,
                                  **_lane_drop_summary(table, float(warmup_s),
                                                       float(drop_at_m)), **stats,
                                  "congested_speed_m_s": threshold})
                rows = pd.DataFrame({n: values[n] for n in SUMO_PARAMETER_NAMES})
                rows.insert(0, "driver", source[k] if population == "heterogeneous"
                            else "median")
                rows.insert(0, "vehicle", np.arange(len(rows)) if population ==
                            "heterogeneous" else -1)
                rows.insert(0, "population", population)
                rows.insert(0, "posterior_draw", int(d))
                rows.insert(0, "draw", k)
                driver_rows.append(rows)
    summary = pd.DataFrame(summaries)[list(LANE_DROP_SUMMARY_COLUMNS)]
    settings = {"model": model.name, "pooling": fit.pooling, "drivers": drivers,
                "lanes": lanes, "length_m": float(length_m), "drop_at_m": float(drop_at_m),
                "demand_veh_h": float(demand_veh_h), "arrivals": num_vehicles,
                "duration_s": float(duration_s), "warmup_s": float(warmup_s), "dt": dt,
                "num_draws": num_draws, "speed_limit_m_s": lane_speed,
                "speed_limit_binds": speed_limit_m_s is not None,
                "vehicle_length_m": float(vehicle_length_m), "period_s": float(period_s),
                "detector_spacing_m": float(detector_spacing_m),
                "discharge_at_m": float(geo["down_start"] + down_pos - drop_at_m),
                "congested_speed_m_s": congested_speed_m_s,
                "congested_fraction": float(congested_fraction),
                "lane_change_model": "LC2013 (SUMO's default)", "seed": int(seed),
                "engine": "sumo", "sumo_version": sumo_version(),
                "run_time_s": time.perf_counter() - started}
    return LaneDropResult(summary, pd.concat(tables, ignore_index=True),
                          pd.concat(driver_rows, ignore_index=True), settings)


def _detector_table(raw: pd.DataFrame, position: Mapping[str, float],
                    kind: Mapping[str, str], period_s: float,
                    congested_speed: float) -> pd.DataFrame:
    """Lanes of each detector line summed: flow, mean speed, occupancy, congestion."""
    raw = raw.assign(position_m=raw["id"].map(position), edge=raw["id"].map(kind),
                     weighted=raw["count"] * raw["speed"].clip(lower=0.0))
    grouped = raw.groupby(["position_m", "edge", "begin"], sort=True)
    out = grouped.agg(count=("count", "sum"), weighted=("weighted", "sum"),
                      occupancy=("occupancy", "mean"), end=("end", "max")).reset_index()
    span = (out["end"] - out["begin"]).clip(lower=1e-9)
    out["flow_veh_h"] = out["count"] * 3600.0 / span
    out["speed_m_s"] = np.where(out["count"] > 0,
                                out["weighted"] / out["count"].clip(lower=1), np.nan)
    out["congested"] = ((out["speed_m_s"] < congested_speed)
                        | ((out["count"] == 0) & (out["occupancy"] > 50.0)))
    out = out.rename(columns={"begin": "time_s"})
    return out[["position_m", "edge", "time_s", "flow_veh_h", "speed_m_s", "occupancy",
                "congested", "count"]]


def _lane_drop_summary(table: pd.DataFrame, warmup_s: float, drop_at_m: float
                       ) -> dict[str, float]:
    """One run's numbers from its detector table (see :class:`LaneDropResult`)."""
    late = table[table["time_s"] >= warmup_s - 1e-9]

    def flow(rows: pd.DataFrame) -> tuple[float, float]:
        if rows.empty:
            return float("nan"), float("nan")
        count = float(rows["count"].sum())
        speed = (float((rows["speed_m_s"].fillna(0.0) * rows["count"]).sum() / count)
                 if count else float("nan"))
        return float(rows.groupby("time_s")["flow_veh_h"].sum().mean()), speed

    up = table[table["edge"] == "upstream"]
    late_up = late[late["edge"] == "upstream"]
    discharge, speed = flow(late[late["edge"] == "downstream"])
    upstream, _ = flow(late_up[late_up["position_m"] == up["position_m"].min()])
    queued = late_up.groupby("time_s")["congested"].any()
    congested = up[up["congested"]]
    return {"discharge_flow_veh_h": discharge, "discharge_speed_m_s": speed,
            "upstream_flow_veh_h": upstream,
            "queued_share": float(queued.mean()) if len(queued) else float("nan"),
            "congestion_onset_s": (float(congested["time_s"].min()) if len(congested)
                                   else float("nan")),
            "queue_extent_m": (float(drop_at_m - congested["position_m"].min())
                               if len(congested) else 0.0),
            "congested_share": (float(late_up["congested"].mean()) if len(late_up)
                                else float("nan"))}


def plot_lane_drop(result: LaneDropResult, path: str | os.PathLike[str] | None = None, *,
                   draw: int = 0) -> Any:
    """The lane drop at a glance: time-space speed maps of one posterior draw, heterogeneous
    and homogeneous (detectors' mean speeds, the drop marked), and the discharge flow of
    every draw, both populations (the same draw joined by a line).

    Parameters
    ----------
    result
        From :func:`lane_drop`.
    path
        When given, writes ``path`` with the suffixes ``.png`` and ``.svg``.
    draw
        The draw shown in the time-space maps.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from carpool.io import atomic_write_figure

    s = result.settings
    table = result.detectors[result.detectors["draw"] == draw]
    if table.empty:
        raise InputError(f"draw {draw} is not in the result (draws 0 to "
                         f"{result.summary['draw'].max()})")
    fig, axes = plt.subplots(1, 3, figsize=(15.0, 4.8), layout="constrained",
                             gridspec_kw={"width_ratios": [1.0, 1.0, 0.6]})
    # the colour scale: up to the fastest median driver (a few very fast drivers of a
    # heterogeneous population would wash out the congested speeds)
    top = float(np.nanmax([result.drivers.loc[result.drivers["population"] == "homogeneous",
                                              "v0"].max(), 1.0]))
    top = min(top, float(s["speed_limit_m_s"]))
    for ax, population in zip(axes[:2], POPULATIONS, strict=True):
        grid = table[table["population"] == population].pivot_table(
            index="position_m", columns="time_s", values="speed_m_s", dropna=False)
        t = grid.columns.to_numpy(float)
        x = grid.index.to_numpy(float)
        t_edges = np.append(t, t[-1] + s["period_s"])
        x_mid = (x[1:] + x[:-1]) / 2
        x_edges = np.concatenate([[x[0] - (x_mid[0] - x[0]) if x.size > 1 else x[0] - 50],
                                  x_mid, [x[-1] + (x[-1] - x_mid[-1]) if x.size > 1
                                          else x[0] + 50]])
        mesh = ax.pcolormesh(t_edges, x_edges, grid.to_numpy(float), cmap="RdYlGn",
                             vmin=0.0, vmax=top, shading="flat")
        ax.axhline(s["drop_at_m"], color="black", lw=1.0, ls="--")
        ax.text(t_edges[0], s["drop_at_m"], " lane drop", va="bottom", fontsize=8)
        row = result.summary[(result.summary["draw"] == draw)
                             & (result.summary["population"] == population)].iloc[0]
        ax.set_title(f"draw {draw}, {population}: discharge "
                     f"{row['discharge_flow_veh_h']:.0f} veh/h", fontsize=10, loc="left")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("position (m from the entry)")
    fig.colorbar(mesh, ax=axes[1], extend="max").set_label(
        "mean speed at the detectors (m/s)")
    flows = result.discharge()
    ax = axes[2]
    for population, xpos in (("heterogeneous", 0), ("homogeneous", 1)):
        ax.scatter(np.full(len(flows), xpos), flows[population], color="tab:blue", zorder=3,
                   s=18)
    for _, row in flows.iterrows():
        ax.plot([0, 1], [row["heterogeneous"], row["homogeneous"]], color="0.6", lw=0.8)
    ax.axhline(s["demand_veh_h"], color="tab:red", lw=1.0, ls=":", label="demand")
    ax.set_xticks([0, 1], ["heterogeneous", "homogeneous\n(median driver)"])
    ax.set_xlim(-0.4, 1.4)
    ax.set_ylim(bottom=0.0)
    ax.set_ylabel("discharge flow (veh/h)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{len(flows)} posterior draws", fontsize=10, loc="left")
    fig.suptitle(f"Lane drop in SUMO: {s['lanes']} -> {s['lanes'] - 1} lanes at "
                 f"{s['drop_at_m']:g} m, {s['demand_veh_h']:g} veh/h demand, "
                 f"{s['model']} drivers ({s['pooling']} fit, {s['drivers']}); white: no "
                 "vehicle passed", fontsize=11, x=0.01, ha="left")
    if path is not None:
        for suffix in (".png", ".svg"):
            atomic_write_figure(fig, Path(path).with_suffix(suffix))
    return fig
