"""Hierarchical IDM with dynamic residuals at the reference's size: time, ESS and ESS/s.

Simulated data with realistic values (:func:`carpool.testing.simulate_drivers`): 20 drivers x
32 s at 5 Hz (160 one-step observations each, as in Zhang, Wang & Sun 2024), congested
stop-and-go leaders, acceleration errors from an AR(2) (phi = 0.6, 0.25, innovation sd
0.1 m/s^2) for the AR fits and from a squared-exponential GP (length scale 1.5 s, scale
0.3 m/s^2, white noise 0.1 m/s^2) for the GP fit. Each model is fitted with carpool's
defaults (automatic centring, target acceptance 0.95 for hierarchical fits) with
2 chains x (1,000 warm-up + 1,000 draws). Wall time includes compilation and the automatic
centring step; clocks are read after blocking on the samples (carpool.inference.nuts).

    python benchmarks/residuals_fit.py              # the documented run
    python benchmarks/residuals_fit.py --smoke      # seconds: CI keeps it from rotting

Prints a table and writes JSON to ``benchmarks/results/residuals_fit.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--residuals", default="iid,ar4,gp")
    ap.add_argument("--drivers", type=int, default=20)
    ap.add_argument("--duration-s", type=float, default=32.0)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gp-window-s", type=float, default=10.0)  # the library default
    ap.add_argument("--pooling", default="hierarchical")
    ap.add_argument("--target-accept", type=float, default=None,
                    help="NUTS target acceptance (default: carpool's, 0.95 hierarchical)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/residuals_fit.json")
    args = ap.parse_args()
    if args.smoke:
        args.drivers, args.duration_s, args.chains = 3, 6.0, 1
        args.warmup, args.draws, args.residuals = 20, 20, "ar1"
        args.pooling = "pooled"

    import numpy as np
    import pandas as pd

    import carpool
    from carpool.testing import simulate_drivers

    rows = []
    for residual in args.residuals.split(","):
        kw = {"gp": (1.5, 0.3)} if residual == "gp" else {"ar": (0.6, 0.25)}
        df, _ = simulate_drivers(args.drivers, duration_s=args.duration_s, rng_seed=3,
                                 noise_sd=0.1, **kw)
        t = time.perf_counter()
        fit = carpool.fit(df, "idm", pooling=args.pooling,
                          model_options={"residual": residual,
                                         "gp_window_s": args.gp_window_s},
                          sampler=carpool.NutsSettings(
                              chains=args.chains, warmup=args.warmup, draws=args.draws,
                              seed=args.seed, target_accept=args.target_accept), warn=False)
        wall = time.perf_counter() - t
        d, timing = fit.diagnostics, fit.timing
        steps = fit.idata.sample_stats["n_steps"].values
        rows.append({
            "residual": residual, "target_accept": fit.settings["target_accept"],
            "observations": fit.data.num_obs,
            "wall_s": wall, "compile_s": timing["compile_s"],
            "sampling_s": timing["sampling_s"], "centring_s": timing["centring_s"],
            "min_ess_bulk": d["min_ess_bulk"], "min_ess_var": d["min_ess_bulk_var"],
            "ess_per_s": d["min_ess_bulk"] / wall, "max_rhat": d["max_rhat"],
            "divergences": int(d["divergences"]), "steps_per_draw": float(np.mean(steps)),
            "centring": ",".join(f"{k}:{v[0]}" for k, v in fit.centring.choice.items()),
        })
    table = pd.DataFrame(rows).set_index("residual")
    pd.set_option("display.width", 200)
    print(f"{args.pooling} IDM, {args.drivers} drivers x {args.duration_s:g} s at 5 Hz, "
          f"{args.chains} chains x ({args.warmup} + {args.draws})")
    print(table.round(3).to_string())
    write_results(args.json, args, rows=table.reset_index().to_dict("records"))


if __name__ == "__main__":
    main()
