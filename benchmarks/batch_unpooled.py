"""Unpooled IDM fits of many drivers: a batch of one-driver fits on 1 and 2 local worker
processes (carpool.batch) against one unpooled fit of all drivers in this process.

Simulated drivers (:func:`carpool.testing.simulate_drivers`, congested stop-and-go leaders,
``--duration-s`` at 5 Hz each). Every path fits the same drivers with the same NUTS settings;
the single-process paths are ``carpool.fit(all drivers, pooling="unpooled")``, one program
whose drivers are independent in the posterior but share the sampler's step size and tree
depth, and :func:`carpool.fit_separately` (each driver its own sampler, one compiled
program for all drivers, ``"vmap"`` and ``"loop"``). The batch paths pay one compilation
per driver (carpool.fit closes over the data) and one JAX start per worker. Wall times
include everything from the call to the last saved file (cluster start-up included for the
batch paths).

    python benchmarks/batch_unpooled.py               # the documented run
    python benchmarks/batch_unpooled.py --smoke       # seconds: CI keeps it from rotting

Prints a table and writes JSON to ``benchmarks/results/batch_unpooled.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        return None


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drivers", type=int, default=200)
    ap.add_argument("--duration-s", type=float, default=20.0)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/batch_unpooled.json")
    args = ap.parse_args()
    if args.smoke:
        args.drivers, args.duration_s, args.chains = 1, 4.0, 1
        args.warmup, args.draws, args.workers = 10, 10, "0"

    import pandas as pd

    import carpool
    from carpool.batch import fit_batch, make_executor, split_table
    from carpool.testing import simulate_drivers

    df, _ = simulate_drivers(args.drivers, duration_s=args.duration_s, rng_seed=11)
    options = {"chains": args.chains, "warmup": args.warmup, "draws": args.draws,
               "seed": args.seed}
    load_before = _load_average()
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            with make_executor(local_workers=workers) as executor:
                result = fit_batch(split_table(df, "driver"), "idm", out, pooling="unpooled",
                                   executor=executor, fit_options=options)
            wall = time.perf_counter() - t
        records = list(result.manifest.units.values())
        label = "batch, this process" if workers == 0 else f"batch, {workers} worker(s)"
        rows.append({"path": label, "fits": len(records), "wall_s": wall,
                     "per_driver_s": wall / args.drivers,
                     "compile_s_per_fit": sum(r["compile_s"] for r in records) / len(records),
                     "sampling_s_per_fit": sum(r["sampling_s"] for r in records)
                     / len(records), "failed": result.summary["failed"]})
    t = time.perf_counter()
    fit = carpool.fit(df, "idm", pooling="unpooled", warn=False, **options)
    with tempfile.TemporaryDirectory() as out:
        fit.save(os.path.join(out, "all.nc"))
    wall = time.perf_counter() - t
    rows.append({"path": "one unpooled fit, this process", "fits": 1, "wall_s": wall,
                 "per_driver_s": wall / args.drivers,
                 "compile_s_per_fit": fit.timing["compile_s"],
                 "sampling_s_per_fit": fit.timing["sampling_s"], "failed": 0})
    for strategy in ("vmap",) if args.smoke else ("vmap", "loop"):  # one compiled program
        t = time.perf_counter()
        each = carpool.fit_separately(df, "idm", strategy=strategy, **options)
        with tempfile.TemporaryDirectory() as out:
            each.save(os.path.join(out, "each.nc"))
        wall = time.perf_counter() - t
        rows.append({"path": f"fit_separately ({strategy}), this process", "fits": 1,
                     "wall_s": wall, "per_driver_s": wall / args.drivers,
                     "compile_s_per_fit": float("nan"), "sampling_s_per_fit": float("nan"),
                     "failed": 0})
    load_after = _load_average()
    table = pd.DataFrame(rows).set_index("path")
    pd.set_option("display.width", 200)
    print(f"unpooled IDM, {args.drivers} drivers x {args.duration_s:g} s at 5 Hz, "
          f"{args.chains} chains x ({args.warmup} + {args.draws}); load average "
          f"{load_before} before, {load_after} after, on {os.cpu_count()} cores")
    print(table.round(3).to_string())
    write_results(args.json, args, rows=table.reset_index().to_dict("records"),
                  load_average_before=load_before, load_average_after=load_after)


if __name__ == "__main__":
    main()
