"""Throughput of the traffic simulations (vehicle-steps per second), compilation excluded.

Cases (IDM, i.i.d. acceleration noise, dt = 0.1 s):

- ``ring 1 x 1000 vehicles``: one ring of 1,000 heterogeneous vehicles (25 m each, so a
  25 km circle), 1,000 steps;
- ``ring 1 x 10000 vehicles``: the same with 10,000 vehicles (a 250 km circle);
- ``ring 100 draws x 22``: 100 independent Sugiyama rings (22 vehicles on 230 m), vmapped;
- ``follow 1000 draws``: one follower behind a 300 s recorded leader (1,500 steps at 5 Hz) for
  1,000 posterior draws, one closed-loop window.

Each case is called once to compile (reported separately, ``compile_s`` = first call minus a
steady call), then ``--repeats`` times; the table shows the median steady time. JAX
dispatches asynchronously, so every timing ends with ``jax.block_until_ready``. The inputs
(parameters, white noise) are made beforehand; building the tidy pandas table of
:func:`carpool.simulate.ring` is not included.

Usage::

    python benchmarks/simulate_throughput.py [--smoke] [--repeats 5] [--json out.json]

writes ``benchmarks/results/simulate_throughput.json`` by default (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from carpool.carfollowing import get_model
from carpool.simulate.follow import _windows
from carpool.simulate.noise import iid_noise
from carpool.simulate.ring import _rings

RESULTS = Path(__file__).resolve().parent / "results"
IDM = get_model("idm")
MEDIAN = {"v0": 30.0, "s0": 2.0, "T": 1.5, "a": 1.5, "b": 1.67}


def _params(rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, jax.Array]:
    """Log-normal heterogeneity (sd 0.15 on the log scale) around MEDIAN."""
    return {k: jnp.asarray(v * np.exp(0.15 * rng.standard_normal(shape)), jnp.float32)
            for k, v in MEDIAN.items()}


def ring_case(num_draws: int, num_vehicles: int, num_steps: int, length_m: float
              ) -> Callable[[], Any]:
    rng = np.random.default_rng(0)
    params = _params(rng, (num_draws, num_vehicles))
    white = jnp.asarray(rng.standard_normal((num_steps, num_draws, num_vehicles)), jnp.float32)
    geometry = tuple(jnp.asarray(x, jnp.float32) for x in (0.1, length_m, 5.0, 0.01))
    speed0 = jnp.full(num_draws, jnp.nan, jnp.float32)
    sigma = jnp.full(num_draws, 0.1, jnp.float32)
    kick = jnp.asarray(1.0, jnp.float32)
    return lambda: _rings(IDM, iid_noise, geometry, params, speed0, kick, sigma, white)


def follow_case(num_draws: int, num_steps: int) -> Callable[[], Any]:
    rng = np.random.default_rng(1)
    t = np.arange(num_steps + 1) * 0.2
    leader = np.clip(8.0 + 4.0 * np.sin(2 * np.pi * t / 40.0), 0.0, None)
    params = _params(rng, (num_draws,))
    white = jnp.asarray(rng.standard_normal((num_steps, num_draws, 1)), jnp.float32)
    sigma = jnp.full(num_draws, 0.1, jnp.float32)
    lead = jnp.asarray(leader[None], jnp.float32)
    gap0, speed0 = jnp.asarray([20.0], jnp.float32), jnp.asarray([8.0], jnp.float32)
    return lambda: _windows(IDM, 0.2, 0.01, iid_noise, params, lead, gap0, speed0, sigma,
                            white)


def measure(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(first call incl. compilation, median steady call), seconds."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    steady = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        steady.append(time.perf_counter() - start)
    return first, statistics.median(steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS / "simulate_throughput.json",
                        help="where to write the results (default: benchmarks/results/, "
                             "not tracked by git)")
    args = parser.parse_args()
    if args.smoke:
        cases = {"ring 1 x 50 vehicles": (1, 50, 50, 50 * 25.0),
                 "ring 4 draws x 22": (4, 22, 50, 230.0),
                 "follow 8 draws": (8, 50)}
    else:
        cases = {"ring 1 x 1000 vehicles": (1, 1000, 1000, 1000 * 25.0),
                 "ring 1 x 10000 vehicles": (1, 10_000, 1000, 10_000 * 25.0),
                 "ring 100 draws x 22": (100, 22, 1000, 230.0),
                 "follow 1000 draws": (1000, 1500)}
    rows = []
    for name, size in cases.items():
        if name.startswith("ring"):
            num_draws, num_vehicles, num_steps, length = size
            fn = ring_case(num_draws, num_vehicles, num_steps, length)
            vehicle_steps = num_draws * num_vehicles * num_steps
        else:
            num_draws, num_steps = size
            fn = follow_case(num_draws, num_steps)
            vehicle_steps = num_draws * num_steps
        first, steady = measure(fn, args.repeats)
        rows.append({"case": name, "vehicle_steps": vehicle_steps,
                     "compile_s": max(first - steady, 0.0), "run_s": steady,
                     "vehicle_steps_per_s": vehicle_steps / steady})
    head = f"{'case':<24}{'vehicle-steps':>15}{'compile s':>11}{'run s':>9}{'steps/s':>12}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['case']:<24}{r['vehicle_steps']:>15,}{r['compile_s']:>11.2f}"
              f"{r['run_s']:>9.4f}{r['vehicle_steps_per_s']:>12.3g}")
    info = {"jax": jax.__version__, "device": str(jax.devices()[0]),
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "smoke": args.smoke, "repeats": args.repeats}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": info, "results": rows}, indent=2) + "\n",
                         encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
