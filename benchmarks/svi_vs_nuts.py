"""SVI against NUTS on the hierarchical IDM, then SVI alone on many drivers.

Simulated drivers (:func:`carpool.testing.simulate_drivers`, 5 Hz, congested leaders, known
true parameters). Part 1: the same data fitted by NUTS (carpool's defaults, ``--chains`` x
(``--warmup`` + ``--draws``)) and by SVI with each guide; for the population (``population``
= natural population medians, ``tau``) and the driver parameters, the error of SVI's
posterior mean in units of the NUTS posterior sd, the ratio of SVI's to NUTS's posterior
sd, the coverage of 90% driver intervals of the true values, and wall times. Part 2: SVI on
``--big-drivers`` drivers in minibatches: time per step, wall time and the error of the
population median against the truth (the simulation's population mean).

    python benchmarks/svi_vs_nuts.py              # the documented run (docs/svi.md)
    python benchmarks/svi_vs_nuts.py --smoke      # seconds: CI keeps it from rotting

Prints tables and writes JSON to ``benchmarks/results/svi_vs_nuts.json`` (``--json``), with
the load average of the machine (timings on a shared machine are noisy).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")


def _stats(fit, truth):
    import numpy as np

    post = fit.idata.posterior
    out = {}
    for name in ("population", "tau"):
        v = post[name].values.reshape(-1, post[name].shape[-1])
        out[name] = (v.mean(0), v.std(0))
    th = fit.theta_draws()
    lo, hi = np.quantile(th, [0.05, 0.95], axis=0)
    out["theta"] = (th.mean(0), th.std(0))
    out["coverage90"] = ((truth >= lo) & (truth <= hi)).mean(0)
    return out


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drivers", type=int, default=39)
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--guides", default="structured,meanfield")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--big-drivers", type=int, default=10000)
    ap.add_argument("--big-steps", type=int, default=300)
    ap.add_argument("--big-batch", type=int, default=1000)
    ap.add_argument("--big-draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/svi_vs_nuts.json")
    args = ap.parse_args()
    if args.smoke:
        args.drivers, args.duration_s, args.chains = 3, 6.0, 1
        args.warmup = args.draws = 30
        args.steps, args.guides = 50, "structured"
        args.big_drivers, args.big_steps, args.big_batch, args.big_draws = 20, 20, 5, 20

    import numpy as np
    import pandas as pd

    import carpool
    from carpool.carfollowing import as_model
    from carpool.testing import simulate_drivers

    load_before = os.getloadavg()
    df, truth = simulate_drivers(args.drivers, duration_s=args.duration_s, rng_seed=1)
    names = list(truth.columns)
    t = time.perf_counter()
    nuts = carpool.fit(df, "idm", warn=False, sampler=carpool.NutsSettings(
        chains=args.chains, warmup=args.warmup, draws=args.draws, seed=args.seed))
    fits = {"nuts": (nuts, time.perf_counter() - t)}
    for guide in args.guides.split(","):
        t = time.perf_counter()
        f = carpool.fit(df, "idm", warn=False, sampler=carpool.SviSettings(
            guide=guide, num_steps=args.steps, draws=args.draws, seed=args.seed))
        fits[f"svi-{guide}"] = (f, time.perf_counter() - t)
    ref = _stats(nuts, truth.values)
    rows = []
    for label, (f, wall) in fits.items():
        st = _stats(f, truth.values)
        for quantity in ("population", "tau", "theta"):
            m, s = st[quantity]
            m0, s0 = ref[quantity]
            err = np.abs(m - m0) / s0  # in NUTS posterior sds
            ratio = s / s0
            if quantity == "theta":  # median over drivers, per parameter
                err, ratio = np.median(err, axis=0), np.median(ratio, axis=0)
            for i, n in enumerate(names):
                rows.append({"method": label, "quantity": quantity, "parameter": n,
                             "mean": float(np.median(m[..., i])) if quantity == "theta"
                             else float(m[i]), "err_nuts_sd": float(err[i]),
                             "sd_ratio": float(ratio[i]),
                             "coverage90": (float(st["coverage90"][i]) if quantity == "theta"
                                            else None),
                             "wall_s": wall})
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(f"hierarchical IDM, {args.drivers} drivers x {args.duration_s:g} s at 5 Hz; NUTS "
          f"{args.chains} x ({args.warmup} + {args.draws}); SVI {args.steps} steps full batch")
    print("err_nuts_sd: |mean - NUTS mean| / NUTS sd; sd_ratio: sd / NUTS sd (theta: median "
          "over drivers); coverage90: share of true driver values in 90% intervals")
    print(table.round(3).to_string(index=False))
    walls = {k: w for k, (_, w) in fits.items()}
    print("wall s:", {k: round(w, 1) for k, w in walls.items()})

    # part 2: many drivers, minibatches
    big_df, big_truth = simulate_drivers(args.big_drivers, duration_s=args.duration_s,
                                         rng_seed=2)
    t = time.perf_counter()
    big = carpool.fit(big_df, "idm", warn=False, sampler=carpool.SviSettings(
        num_steps=args.big_steps, batch_size=args.big_batch, draws=args.big_draws,
        seed=args.seed))
    big_wall = time.perf_counter() - t
    pop = big.idata.posterior["population"].values.reshape(-1, len(names))
    true_pop = np.array([as_model("idm").reference_params()[n]
                         for n in names])
    big_row = {"drivers": args.big_drivers, "observations": big.data.num_obs,
               "steps": args.big_steps, "batch_size": args.big_batch, "wall_s": big_wall,
               **{k: big.timing[k] for k in ("centring_s", "start_s", "compile_s",
                                             "optimise_s", "step_ms", "draws_s")},
               "population_mean": dict(zip(names, pop.mean(0).tolist(), strict=True)),
               "population_sd": dict(zip(names, pop.std(0).tolist(), strict=True)),
               "population_true": dict(zip(names, true_pop.tolist(), strict=True)),
               "population_rel_error": dict(zip(names, (pop.mean(0) / true_pop - 1).tolist(),
                                                strict=True))}
    print(f"SVI on {args.big_drivers} drivers ({big.data.num_obs} observations), "
          f"{args.big_steps} steps of {args.big_batch} drivers: wall {big_wall:.1f} s, "
          f"{big.timing['step_ms']:.1f} ms/step")
    print(pd.DataFrame({"true": true_pop, "svi_mean": pop.mean(0), "svi_sd": pop.std(0)},
                       index=names).round(4).to_string())
    load_after = os.getloadavg()
    print(f"load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f} "
          f"(2 cores shared)")
    write_results(args.json, args, comparison=rows, wall_s=walls, big=big_row,
                  load_average={"before": load_before, "after": load_after})


if __name__ == "__main__":
    main()
