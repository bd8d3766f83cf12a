"""Held-out multi-step prediction on the bundled real ACC platoon: i.i.d. versus AR residuals.

Each of the 4 followers of the bundled USDOT platoon (5 Hz) is split in time: the first
``--train-s`` seconds are fitted (hierarchical, the same model, priors and sampler settings
for every residual), the following ``--test-s`` seconds are held out. On the held-out part
every follower is simulated behind its recorded leader with :func:`carpool.simulate.follow`,
restarting from the recorded state every 3 s and 5 s (k-step-ahead prediction; with AR
residuals the error process is carried forward from the recorded residuals before each
window). The table gives the RMSE of speed (m/s) and gap (m) over all held-out simulated
points of all followers, the CRPS and the 90% coverage, per residual model and horizon.

    python benchmarks/residuals_heldout.py            # the documented run
    python benchmarks/residuals_heldout.py --smoke    # seconds: CI keeps it from rotting

Writes JSON to ``benchmarks/results/residuals_heldout.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="linear_acc")
    ap.add_argument("--residuals", default="iid,ar1,ar2")
    ap.add_argument("--train-s", type=float, default=240.0)
    ap.add_argument("--test-s", type=float, default=120.0)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--num-draws", type=int, default=200, help="posterior draws simulated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/residuals_heldout.json")
    ap.add_argument("--pooling", default="hierarchical")
    args = ap.parse_args()
    if args.smoke:
        args.train_s, args.test_s, args.chains, args.warmup, args.draws = 30.0, 15.0, 1, 30, 30
        args.num_draws, args.residuals, args.pooling = 10, "ar1", "pooled"

    import numpy as np
    import pandas as pd

    import carpool
    from carpool.simulate import follow

    data = carpool.load_example("usdot-platoon", max_duration_s=args.train_s + args.test_s)
    t0 = data.groupby("driver")["time"].transform("min")
    train = data[data["time"] - t0 < args.train_s].reset_index(drop=True)
    test = data[data["time"] - t0 >= args.train_s].reset_index(drop=True)
    drivers = list(pd.unique(data["driver"]))
    rows, fits_info = [], {}
    for residual in args.residuals.split(","):
        t = time.perf_counter()
        fit = carpool.fit(train, args.model, pooling=args.pooling,
                          model_options={"residual": residual},
                          sampler=carpool.NutsSettings(chains=args.chains, warmup=args.warmup,
                                                       draws=args.draws, seed=args.seed),
                          warn=False)
        wall = time.perf_counter() - t
        d = fit.diagnostics
        fits_info[residual] = {"wall_s": wall, "max_rhat": d["max_rhat"],
                               "min_ess_bulk": d["min_ess_bulk"],
                               "divergences": d["divergences"]}
        per = {"3 s": [], "5 s": []}
        for drv in drivers:
            r = follow(fit, test, drv, num_draws=args.num_draws, seed=args.seed)
            n = len(test[test["driver"] == drv]) - 1
            for scope in per:
                per[scope].append((r.metrics.loc[scope], n))
        for scope, items in per.items():
            w = np.array([n for _, n in items], dtype=float)

            def pooled(col, square=False, items=items, w=w):
                v = np.array([m[col] for m, _ in items], dtype=float)
                if square:  # RMSE over all points of all followers
                    return float(np.sqrt(np.sum(w * v**2) / w.sum()))
                return float(np.sum(w * v) / w.sum())

            rows.append({"residual": residual, "horizon": scope,
                         "rmse_speed_m_s": pooled("rmse_speed_m_s", True),
                         "rmse_gap_m": pooled("rmse_gap_m", True),
                         "crps_speed_m_s": pooled("crps_speed_m_s"),
                         "crps_gap_m": pooled("crps_gap_m"),
                         "coverage_speed_90": pooled("coverage_speed_90"),
                         "coverage_gap_90": pooled("coverage_gap_90")})
    table = pd.DataFrame(rows).set_index(["horizon", "residual"]).sort_index()
    pd.set_option("display.width", 160)
    print(f"held-out multi-step prediction, {args.model}, {args.pooling}, "
          f"{len(drivers)} followers: fit on the first {args.train_s:g} s, "
          f"score the next {args.test_s:g} s")
    print(table.round(4).to_string())
    print(pd.DataFrame(fits_info).T.round(3).to_string())
    write_results(args.json, args, table=table.reset_index().to_dict("records"),
                  fits=fits_info)


if __name__ == "__main__":
    main()
