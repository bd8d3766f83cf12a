"""Do batch workers keep JAX to one core? CPU time over wall time of one fit in a child
process, with the worker environment (carpool.batch.worker_environment) and without it.

A ratio near 1.0 means the fit used one core (N workers then keep about N cores busy, no
oversubscription); above 1 means XLA fanned work out over more cores than the worker's
share. The row with a one-core CPU affinity (``os.sched_setaffinity``) is the hard limit:
its wall time says what the extra cores bought. The fit: an IDM (``--pooling``, default
hierarchical; ``--drivers`` x ``--duration-s`` at 5 Hz), one chain, so any parallelism is
XLA's own, not carpool's chains.

    python benchmarks/worker_threads.py            # the documented run
    python benchmarks/worker_threads.py --smoke    # seconds: CI keeps it from rotting

Prints a table and writes JSON to ``benchmarks/results/worker_threads.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

CHILD = """
import sys, time
import carpool
from carpool.testing import simulate_drivers
drivers, duration, warmup, draws = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), \\
    int(sys.argv[4])
pooling = sys.argv[5]
df, _ = simulate_drivers(drivers, duration_s=duration, rng_seed=3)
f = carpool.fit(df, "idm", pooling=pooling, warn=False,
                sampler=carpool.NutsSettings(chains=1, warmup=warmup, draws=draws))
print(f.timing["sampling_s"])
"""


def _one_core() -> None:  # runs in the child before exec
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def run_child(env: dict[str, str], args: argparse.Namespace, pin: bool = False
              ) -> dict[str, float]:
    """Wall and CPU seconds (user + system) of one child fit (``pin``: on one core)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, str(args.drivers), str(args.duration_s),
                        str(args.warmup), str(args.draws), args.pooling], env=env,
                       capture_output=True,
                       text=True, check=False, preexec_fn=_one_core if pin else None)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "cpu_over_wall": cpu / wall,
            "sampling_s": float(r.stdout.strip().splitlines()[-1])}


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drivers", type=int, default=40)
    ap.add_argument("--duration-s", type=float, default=40.0)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--pooling", default="hierarchical")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/worker_threads.json")
    args = ap.parse_args()
    if args.smoke:
        args.drivers, args.duration_s, args.warmup, args.draws = 2, 4.0, 10, 10
        args.pooling = "pooled"

    import pandas as pd

    from carpool.batch import worker_environment

    base = {k: v for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                         "OPENBLAS_NUM_THREADS")}
    rows = []
    worker = {**base, **worker_environment()}
    runs = [("worker environment", worker, False),
            ("worker environment, one-core affinity", worker, True),
            ("no thread settings", base, False)]
    for label, env, pin in runs[-1:] if args.smoke else runs:  # smoke: one child
        rows.append({"environment": label, "xla_flags": env.get("XLA_FLAGS", ""),
                     **run_child(env, args, pin)})
    table = pd.DataFrame(rows).set_index("environment")
    pd.set_option("display.width", 200)
    print(f"{args.pooling} IDM, {args.drivers} drivers x {args.duration_s:g} s at 5 Hz, 1 chain "
          f"x ({args.warmup} + {args.draws}), in a child process on {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(table.drop(columns="xla_flags").round(3).to_string())
    write_results(args.json, args, rows=table.reset_index().to_dict("records"),
                  load_average=os.getloadavg())


if __name__ == "__main__":
    main()
