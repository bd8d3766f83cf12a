"""Unpooled IDM fits of many drivers: batches of one-driver fits on 1 and 2 local worker
processes (carpool.batch) against the single-process paths.

Simulated drivers (:func:`carpool.testing.simulate_drivers`, congested stop-and-go leaders,
``--duration-s`` at 5 Hz each), every path with the same NUTS settings. The paths:

- batch, engine ``separate``: groups of drivers per task through
  :func:`carpool.fit_separately`, each worker compiling once (``--drivers`` drivers);
- batch, engine ``fit``: :func:`carpool.fit` per driver, one compilation per driver
  (``--fit-engine-drivers`` drivers: it is the slow path, so fewer; compare per driver);
- this process: ``carpool.fit(all drivers, pooling="unpooled")`` (one joint posterior whose
  drivers share the sampler's step size and tree depth) and ``carpool.fit_separately``
  (``"vmap"``: lockstep batches; ``"loop"``: one driver per call).

Wall times run from the call to the last saved file, cluster start-up included.

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
    ap.add_argument("--fit-engine-drivers", type=int, default=20,
                    help="drivers for the batch rows of engine 'fit' (one compile each)")
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--paths", default="separate,fit,joint,vmap,loop",
                    help="comma-separated subset of the paths to run")
    ap.add_argument("--update", action="store_true",
                    help="keep the rows of the existing --json file for paths not run now")
    ap.add_argument("--pin", action="store_true",
                    help="one core per local worker (make_executor(pin_cores=True))")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/batch_unpooled.json")
    args = ap.parse_args()
    if args.smoke:
        args.drivers, args.fit_engine_drivers, args.duration_s, args.chains = 2, 1, 4.0, 1
        args.warmup, args.draws, args.workers = 10, 10, "0"
        args.paths = "separate,fit"

    import pandas as pd

    import carpool
    from carpool.batch import fit_batch, make_executor, split_table
    from carpool.testing import simulate_drivers

    df, _ = simulate_drivers(args.drivers, duration_s=args.duration_s, rng_seed=11)
    sampler = carpool.NutsSettings(chains=args.chains, warmup=args.warmup, draws=args.draws,
                                   seed=args.seed)
    paths = args.paths.split(",")
    load_before = _load_average()
    rows = []

    def row(path: str, drivers: int, wall: float, **extra: float) -> dict:
        return {"path": path, "drivers": drivers, "wall_s": wall,
                "per_driver_s": wall / drivers, **extra}

    for engine in ("separate", "fit"):
        if engine not in paths:
            continue
        n = args.drivers if engine == "separate" else min(args.drivers,
                                                          args.fit_engine_drivers)
        units = split_table(df, "driver")[:n]
        for workers in (int(w) for w in args.workers.split(",")):
            with tempfile.TemporaryDirectory() as out:
                t = time.perf_counter()
                with make_executor(local_workers=workers,
                                   pin_cores=args.pin) as executor:
                    result = fit_batch(units, "idm", out, pooling="unpooled",
                                       executor=executor, sampler=sampler,
                                       engine=engine)
                wall = time.perf_counter() - t
            records = list(result.manifest.units.values())
            where = ("this process" if workers == 0 else f"{workers} worker(s)"
                     + (", pinned" if args.pin else ", unpinned"))
            rhat = [r["max_rhat"] for r in records if r["status"] == "done"]
            rows.append(row(f"batch {engine}, {where}", n, wall,
                            failed=result.summary["failed"],
                            worst_rhat=max(rhat) if rhat else float("nan"),
                            divergences=sum(r.get("divergences", 0) for r in records)))
    if "joint" in paths:
        t = time.perf_counter()
        fit = carpool.fit(df, "idm", pooling="unpooled", sampler=sampler, warn=False)
        with tempfile.TemporaryDirectory() as out:
            fit.save(os.path.join(out, "all.nc"))
        wall = time.perf_counter() - t
        d = fit.diagnostics
        rows.append(row("one joint unpooled fit, this process", args.drivers, wall,
                        failed=0, worst_rhat=d["max_rhat"], divergences=d["divergences"]))
    for strategy in ("vmap", "loop"):  # one compiled program
        if strategy not in paths:
            continue
        t = time.perf_counter()
        each = carpool.fit_separately(df, "idm", strategy=strategy, sampler=sampler)
        with tempfile.TemporaryDirectory() as out:
            each.save(os.path.join(out, "each.nc"))
        wall = time.perf_counter() - t
        d = each.diagnostics()
        rows.append(row(f"fit_separately {strategy}, this process", args.drivers, wall,
                        failed=0, worst_rhat=d["max_rhat"], divergences=d["divergences"]))
    if args.update and os.path.exists(args.json):
        import json

        now = {r["path"] for r in rows}
        with open(args.json) as f:
            earlier = json.load(f)
        rows += [dict(r, measured=earlier["meta"]["date"]) for r in earlier["rows"]
                 if r["path"] not in now]
    load_after = _load_average()
    table = pd.DataFrame(rows).set_index("path")
    pd.set_option("display.width", 200)
    print(f"unpooled IDM, drivers x {args.duration_s:g} s at 5 Hz, "
          f"{args.chains} chains x ({args.warmup} + {args.draws}); load average "
          f"{load_before} before, {load_after} after, on {os.cpu_count()} cores")
    print(table.round(3).to_string())
    write_results(args.json, args, rows=table.reset_index().to_dict("records"),
                  load_average_before=load_before, load_average_after=load_after)


if __name__ == "__main__":
    main()
