"""What the persistent compilation cache saves: one fit per fresh process, cache off, cold
and warm, and two fits in one process.

carpool's samplers take the data as an argument, so their compiled program depends on the
model's structure, the settings and the data's shapes only, and JAX's persistent cache
(:mod:`carpool.inference.compile_cache`) serves a later fit of the same shapes. Rows, each
a fresh Python process fitting an IDM (``--pooling``, default hierarchical; ``--drivers`` x
``--duration-s`` at 5 Hz, 2 chains in parallel):

1. ``off``: ``CARPOOL_COMPILATION_CACHE=off`` (what every fit cost before the cache);
2. ``cold``: an empty cache directory (the first fit also writes the cache);
3. ``warm, other data``: the same shapes, another simulated data set (another seed);
4. ``warm, other data, second fit``: the same process fits a third data set after the
   warm fit, so the in-process caches (traced centring functions) count too.

    python benchmarks/compile_cache.py            # the documented run
    python benchmarks/compile_cache.py --smoke    # seconds: CI keeps it from rotting

Prints a table and writes JSON to ``benchmarks/results/compile_cache.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, sys, time
import carpool
from carpool.testing import simulate_drivers
drivers, duration, warmup, draws = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), \\
    int(sys.argv[4])
pooling, seeds = sys.argv[5], [int(s) for s in sys.argv[6].split(",")]
for seed in seeds:
    df, _ = simulate_drivers(drivers, duration_s=duration, rng_seed=seed)
    t = time.perf_counter()
    f = carpool.fit(df, "idm", pooling=pooling, warn=False,
                    sampler=carpool.NutsSettings(chains=2, warmup=warmup, draws=draws))
    print(json.dumps({**f.timing, "fit_s": time.perf_counter() - t}))
"""


def run_child(cache: str, seeds: list[int], args: argparse.Namespace) -> list[dict[str, float]]:
    """Timings of the fits of one child process (one dict per seed), plus its wall time."""
    env = {**os.environ, "CARPOOL_COMPILATION_CACHE": cache,
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, str(args.drivers), str(args.duration_s),
                        str(args.warmup), str(args.draws), args.pooling,
                        ",".join(map(str, seeds))],
                       env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    fits = [json.loads(line) for line in r.stdout.strip().splitlines()[-len(seeds):]]
    fits[0]["process_s"] = wall
    return fits


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drivers", type=int, default=8)
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--pooling", default="hierarchical")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/compile_cache.json")
    args = ap.parse_args()
    if args.smoke:
        args.drivers, args.duration_s, args.warmup, args.draws = 2, 4.0, 10, 10
        args.pooling = "pooled"

    import pandas as pd

    rows = []
    with tempfile.TemporaryDirectory(prefix="carpool-cache-bench-") as cache:
        runs = [("off", "off", [1]), ("cold", cache, [1]),
                ("warm, other data", cache, [2, 3])]
        for label, where, seeds in runs[1:2] if args.smoke else runs:  # smoke: one child
            fits = run_child(where, seeds, args)
            for i, timing in enumerate(fits):
                rows.append({"cache": label + (", second fit" if i else ""),
                             "data_seed": seeds[i], **timing})
    table = pd.DataFrame(rows).set_index("cache")
    pd.set_option("display.width", 200)
    print(f"{args.pooling} IDM, {args.drivers} drivers x {args.duration_s:g} s at 5 Hz, "
          f"2 parallel chains x ({args.warmup} + {args.draws}), one fresh process per run "
          f"on {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    print(table.round(2).to_string())
    write_results(args.json, args, rows=table.reset_index().to_dict("records"),
                  load_average=os.getloadavg())


if __name__ == "__main__":
    main()
