"""The evidence behind carpool's sampler defaults: one hierarchical IDM fit per variant.

Data: the 39-driver congested stand-in of ``compare_pymc.py`` (140 one-step observations
per driver at 5 Hz, cars and trucks). carpool's default priors, 2 chains x (1,000 + 1,000),
target acceptance 0.95. Each variant changes ONE thing against the defaults:

- ``default``: automatic per-parameter centring, diagonal mass matrix, float32, one chain
  per CPU device (parallel);
- ``noncentred`` / ``centred``: every driver parameter non-centred / centred;
- ``dense-population``: a dense mass-matrix block for the population parameters
  (mu, tau, L_corr), diagonal for the rest;
- ``float64``: JAX in double precision;
- ``sequential``: both chains on one device, one after the other;
- ``target-0.99``: target acceptance 0.99 (smaller steps, the usual cure for a few
  divergent transitions);
- ``tau-v0-0.25``: a tighter population-scale prior on the desired speed,
  ``tau[v0] ~ HalfNormal(0.25)`` (the other parameters keep HalfNormal(0.5)): a prior, not
  a sampler setting, so its row answers "what would a user's informative prior buy";
- ``summed-density``: each observation's residual summed in the likelihood, as carpool did
  before the projected statistics of :mod:`carpool.pooling.linear_mean` (the same
  posterior; the row shows what the projection is worth in a whole fit).

Each variant runs in its own process (precision and device count are fixed when JAX
starts), so compilation is counted every time. Clocks are read after blocking on the
samples.

    python benchmarks/defaults.py              # the documented run (~10 min on 2 cores)
    python benchmarks/defaults.py --smoke      # seconds

Prints a table and writes JSON to ``benchmarks/results/defaults.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = ("default", "noncentred", "centred", "dense-population", "float64", "sequential",
            "target-0.99", "tau-v0-0.25", "summed-density")


def child(args: argparse.Namespace) -> None:
    """Fit one variant and print its row as JSON (run in a fresh process)."""
    from dataclasses import replace

    import numpy as np
    from compare_pymc import stand_in

    from carpool.inference.nuts import NutsSettings
    from carpool.inference.run import fit_grouped, resolve_spec
    from carpool.pooling.spec import Hyperpriors, PoolingConfig
    from carpool.priors import HalfNormal

    df, _ = stand_in(args.drivers, args.duration_s, args.data_seed)
    spec = resolve_spec("idm")
    if args.variant == "summed-density":
        spec = replace(spec, linear_mean=None)
    grouped = spec.prepare(df)
    v = args.variant
    param = v if v in ("centred", "noncentred") else "auto"
    hyperpriors = spec.default_hyperpriors or Hyperpriors.default_for(grouped.num_groups)
    if v == "tau-v0-0.25":
        hyperpriors = replace(hyperpriors, tau={n: HalfNormal(0.25) if n == "v0"
                                               else hyperpriors.tau_prior(n)
                                               for n in spec.parameters.names})
    config = PoolingConfig(pooling="hierarchical", param=param, hyperpriors=hyperpriors)
    dense = [("mu", "tau", "L_corr")] if v == "dense-population" else False
    settings = NutsSettings(chains=2, warmup=args.warmup, draws=args.draws,
                            seed=args.seed, target_accept=0.99 if v == "target-0.99" else 0.95,
                            dense_mass=dense)
    t = time.perf_counter()
    fit = fit_grouped(spec, grouped, config, settings, warn=False)
    wall = time.perf_counter() - t
    d = fit.diagnostics
    print(json.dumps({
        "variant": v, "seed": args.seed, "wall_s": wall,
        "compile_s": fit.timing["compile_s"], "sampling_s": fit.timing["sampling_s"],
        "min_ess_bulk": d["min_ess_bulk"], "min_ess_var": d["min_ess_bulk_var"],
        "ess_per_s": d["min_ess_bulk"] / wall, "max_rhat": d["max_rhat"],
        "divergences": int(d["divergences"]),
        "steps_per_draw": float(np.mean(fit.idata.sample_stats["n_steps"].values)),
        "chain_method": fit.settings.get("chain_method", ""),
        "centring": ",".join(f"{k}:{c[0]}" for k, c in fit.centring.choice.items()),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--drivers", type=int, default=39)
    ap.add_argument("--duration-s", type=float, default=28.0)
    ap.add_argument("--data-seed", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/defaults.json")
    args = ap.parse_args()
    if args.variant:
        child(args)
        return
    if args.smoke:
        args.drivers, args.duration_s, args.warmup, args.draws = 3, 4.0, 20, 20
        args.variants = "float64"

    import pandas as pd
    from _results import write_results

    rows = []
    for seed in args.seeds.split(","):
        for v in args.variants.split(","):
            if v not in VARIANTS:
                raise SystemExit(f"unknown variant {v!r}; choose from {list(VARIANTS)}")
            env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count="
                   + ("1" if v == "sequential" else "2")}
            if v == "float64":
                env["JAX_ENABLE_X64"] = "1"
            cmd = [sys.executable, __file__, "--variant", v, "--seed", seed,
                   "--drivers", str(args.drivers), "--duration-s", str(args.duration_s),
                   "--data-seed", str(args.data_seed), "--warmup", str(args.warmup),
                   "--draws", str(args.draws)]
            r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                               cwd=os.path.dirname(os.path.abspath(__file__)))
            if r.returncode != 0:
                raise SystemExit(f"variant {v} failed: {r.stderr.strip().splitlines()[-1]}")
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1])
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 220)
    print(f"\nhierarchical IDM, {args.drivers} drivers x {args.duration_s:g} s, 2 chains x "
          f"({args.warmup} + {args.draws})")
    print(table.drop(columns=["centring"]).round(3).to_string(index=False))
    write_results(args.json, args, rows=rows, load_average=os.getloadavg())


if __name__ == "__main__":
    main()
