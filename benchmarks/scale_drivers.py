"""How fitting scales with the number of drivers: hierarchical NUTS, and unpooled fits of
many drivers as one vectorised program versus a loop over one compiled function.

Data: :func:`carpool.testing.simulate_drivers` (IDM drivers behind stop-and-go leaders,
5 Hz, ``--duration-s`` seconds each: 200 one-step observations at the default 40 s, inside
the realistic 150-300).

Part 1, hierarchical IDM with carpool's defaults (automatic centring, target acceptance
0.95) on ``--sizes`` drivers, ``--iterations`` warm-up and as many draws per size (the
largest size gets fewer by default, and the table says how many): wall time including
compilation, min bulk ESS, ESS/s, steps per draw and the cost of one gradient.

Part 2, unpooled fits of ``--unpooled-drivers`` drivers, each driver alone with its own
noise scale (:func:`carpool.fit_separately`), 2 chains each:

- ``loop``: one compiled function, called once per pair of drivers (one per CPU core),
  timed on the first ``--loop-drivers`` drivers (its cost is linear in drivers);
- ``vmap``: ``--batch-size`` drivers per call, vectorised (lockstep trees);
- ``recompile``: a fresh :func:`carpool.fit` per driver (what a naive loop does), timed on
  ``--recompile-drivers`` drivers and reported per driver: the cost that the other two
  avoid.

Clocks are read after blocking on the samples.

    python benchmarks/scale_drivers.py            # the documented run
    python benchmarks/scale_drivers.py --smoke    # seconds: CI keeps it from rotting

Prints tables and writes JSON to ``benchmarks/results/scale_drivers.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")


def hierarchical_rows(sizes, iterations, duration_s, chains, seed, on_row=None):
    """One row per size; ``on_row(rows)`` after each, so a run stopped early keeps them."""
    import numpy as np

    import carpool
    from carpool.testing import simulate_drivers

    rows = []
    for num, its in zip(sizes, iterations, strict=True):
        df, _ = simulate_drivers(num, duration_s=duration_s, rng_seed=100 + num)
        t = time.perf_counter()
        fit = carpool.fit(df, "idm", pooling="hierarchical", warn=False,
                          sampler=carpool.NutsSettings(chains=chains, warmup=its, draws=its,
                                                       seed=seed))
        wall = time.perf_counter() - t
        d = fit.diagnostics
        steps = float(np.mean(fit.idata.sample_stats["n_steps"].values))
        sampling = fit.timing["sampling_s"]
        rows.append({
            "drivers": num, "observations": fit.data.num_obs, "iterations": f"{its}+{its}",
            "wall_s": wall, "compile_s": fit.timing["compile_s"],
            "centring_s": fit.timing["centring_s"], "sampling_s": sampling,
            "min_ess_bulk": d["min_ess_bulk"], "ess_per_s": d["min_ess_bulk"] / wall,
            "max_rhat": d["max_rhat"], "divergences": int(d["divergences"]),
            "steps_per_draw": steps,
            # chains run in parallel, one per core: per-chain gradients over sampling time
            "ms_per_gradient": 1e3 * sampling / (steps * 2 * its),
        })
        print(rows[-1], flush=True)
        if on_row is not None:
            on_row(rows)
    return rows


def unpooled_rows(num, its, duration_s, batch_size, loop_drivers, recompile_drivers,
                  seed, strategies=("loop", "vmap")):
    import numpy as np

    import carpool
    from carpool.testing import simulate_drivers

    df, truth = simulate_drivers(num, duration_s=duration_s, rng_seed=7)
    rows = []
    for strategy in strategies:
        # the loop's cost is linear in drivers (one call per pair): timed on loop_drivers
        n = min(loop_drivers, num) if strategy == "loop" else num
        part = df[df.driver.isin(sorted(df.driver.unique())[:n])]
        t = time.perf_counter()
        fits = carpool.fit_separately(part, "idm", strategy=strategy, batch_size=batch_size,
                                      sampler=carpool.NutsSettings(chains=2, warmup=its,
                                                                   draws=its, seed=seed))
        wall = time.perf_counter() - t
        d = fits.diagnostics()
        theta = fits.idata.posterior["theta"].values
        steps = fits.idata.sample_stats["n_steps"].values
        # recovery check: share of drivers whose 94% interval of T covers the truth
        lo, hi = np.quantile(theta[..., 2], [0.03, 0.97], axis=(0, 1))
        true_T = truth["T"].to_numpy()[:n]
        cover = float(np.mean((true_T >= lo) & (true_T <= hi)))
        rows.append({
            "strategy": strategy, "drivers": n, "iterations": f"{its}+{its}",
            "wall_s": wall, "s_per_driver": wall / n, "calls": fits.timing["calls"],
            "min_ess_bulk": d["min_ess_bulk"], "max_rhat": d["max_rhat"],
            "divergences": d["divergences"], "steps_per_draw": float(np.mean(steps)),
            "T_94pct_coverage": cover,
        })
        print(rows[-1])
    if recompile_drivers:
        sub = df[df.driver.isin(sorted(df.driver.unique())[:recompile_drivers])]
        t = time.perf_counter()
        for _, one in sub.groupby("driver"):
            carpool.fit(one, "idm", pooling="pooled", warn=False,
                        sampler=carpool.NutsSettings(chains=2, warmup=its, draws=its,
                                                     seed=seed))
        wall = time.perf_counter() - t
        rows.append({"strategy": "recompile", "drivers": recompile_drivers,
                     "iterations": f"{its}+{its}", "wall_s": wall,
                     "s_per_driver": wall / recompile_drivers})
        print(rows[-1])
    return rows


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--iterations", default="1000,1000,250",
                    help="warm-up (= draws) per size")
    ap.add_argument("--duration-s", type=float, default=40.0)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--unpooled-drivers", type=int, default=1000)
    ap.add_argument("--unpooled-iterations", type=int, default=1000)
    # 64 drivers per call cost the same per driver as the loop (0.38-0.39 s, 2026-12-02);
    # 500 had not finished 1,000 drivers in 14 minutes (lockstep trees)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--loop-drivers", type=int, default=100)
    ap.add_argument("--recompile-drivers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="'hierarchical' and/or 'unpooled'")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/scale_drivers.json")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.iterations, args.duration_s = "3", "20", 6.0
        args.unpooled_drivers, args.unpooled_iterations, args.batch_size = 3, 20, 2
        args.recompile_drivers = 0

    import pandas as pd

    pd.set_option("display.width", 220)
    sizes = [int(s) for s in args.sizes.split(",")]
    iterations = [int(s) for s in args.iterations.split(",")]
    result = {}

    def save_partial(rows):  # what is done so far, written as each size finishes
        write_results(args.json, args, **result, hierarchical=rows, incomplete=True,
                      load_average=os.getloadavg())

    # the unpooled part first: it is bounded, while the largest hierarchical size can run
    # for many minutes (a run stopped there keeps everything before it)
    if "unpooled" not in args.skip:
        rows = unpooled_rows(args.unpooled_drivers, args.unpooled_iterations,
                             args.duration_s, args.batch_size, args.loop_drivers,
                             args.recompile_drivers, args.seed,
                             strategies=("loop",) if args.smoke else ("loop", "vmap"))
        print(f"\nunpooled IDM, each driver alone, 2 chains x ({args.unpooled_iterations} + "
              f"{args.unpooled_iterations})")
        print(pd.DataFrame(rows).round(3).to_string(index=False))
        result["unpooled"] = rows
        save_partial([])
    if "hierarchical" not in args.skip:
        rows = hierarchical_rows(sizes, iterations, args.duration_s, args.chains, args.seed,
                                 on_row=save_partial)
        print(f"\nhierarchical IDM, {args.duration_s:g} s per driver at 5 Hz, "
              f"{args.chains} chains")
        print(pd.DataFrame(rows).round(3).to_string(index=False))
        result["hierarchical"] = rows
    write_results(args.json, args, **result, load_average=os.getloadavg())


if __name__ == "__main__":
    main()
