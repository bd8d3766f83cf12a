"""The IDM on the bundled NGSIM human drivers: convergence, plausibility, held-out prediction.

Three questions on the 76 congested human drivers of ``carpool.load_example("ngsim-i80")``
(5 Hz), at carpool's default settings (4 chains x (1,000 + 1,000)):

1. ``fits``: pooled, unpooled and hierarchical IDM fits (and the hierarchical fit with each
   of ``--residuals``): wall time, convergence, the population values with 94% intervals,
   and how many drivers lie outside the IDM's physical ranges (of them, how many are weakly
   identified).
2. ``heldout``: which residual predicts best. Pooled fits on the first 70% of each driver's
   record with each of ``--heldout-residuals``, scored on the rest by 3 s and 5 s
   predictions behind the recorded leader (RMSE of speed and gap, 90% coverage).
3. ``lfo_points``: why per-driver fits predict a driver's future worse than the pooled fit.
   Pooled and unpooled fits on the first 80% of each series score the next speed of the
   rest: RMSE, median absolute error, and the worst point with its state and the driver's
   fitted jam gap s0 and time gap T.

    python benchmarks/human_drivers.py            # the documented run (about 20 minutes)
    python benchmarks/human_drivers.py --smoke    # seconds: CI keeps it from rotting

Writes JSON to ``benchmarks/results/human_drivers.json`` (or ``--json``); render the tables
of ``docs/human-drivers.md`` with
``python benchmarks/render_tables.py --readme docs/human-drivers.md``.
"""

from __future__ import annotations

import os
import time
import warnings

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")


def _fit_row(fit, pooling: str, residual: str, wall: float) -> dict:
    import carpool
    from carpool.inference.plausibility import count_outside

    d = fit.diagnostics
    checked = carpool.plausibility(fit)
    outside = checked[checked["position"] != "inside"]
    num_outside, num_weak = count_outside(checked)
    row = {"pooling": pooling, "residual": residual, "drivers": len(fit.group_ids),
           "wall_s": wall, "max_rhat": d["max_rhat"], "min_ess_bulk": d["min_ess_bulk"],
           "divergences": d["divergences"], "tree_depth_hits": d["max_tree_depth_hits"],
           "outside": num_outside, "outside_weak": num_weak}
    pop = fit.summary().query("kind == 'population'").set_index("parameter")
    for p, r in pop.iterrows():
        row[p] = f"{r['mean']:.3g} [{r['hdi_3%']:.3g}, {r['hdi_97%']:.3g}]"
    if pooling == "hierarchical":
        tau = fit.idata.posterior["tau"].values.mean(axis=(0, 1))
        row["tau"] = ", ".join(f"{p} {t:.2f}" for p, t in zip(fit.parameter_names, tau,
                                                               strict=True))
    row["outside_by_parameter"] = {
        k: int(v) for k, v in outside.groupby("parameter").size().items()}
    return row


def main() -> None:
    from _results import ngsim_benchmark_args, ngsim_drivers, write_results

    args = ngsim_benchmark_args(
        __doc__.splitlines()[0], "benchmarks/results/human_drivers.json",
        residuals=("ar1", "hierarchical fits besides i.i.d."),
        heldout_residuals=("iid,ar1,ar2,ar4,gp", "residuals scored by held-out prediction"),
        num_draws=(100, "posterior draws simulated"))
    if args.smoke:
        args.residuals, args.heldout_residuals, args.num_draws = "", "iid", 5

    import numpy as np

    import carpool
    from carpool.compare.scores import heldout_score, lfo_split
    from carpool.simulate.heldout import multistep_scores, split_in_time

    warnings.simplefilter("ignore")
    data = ngsim_drivers(args.drivers)
    settings = {"sampler": carpool.NutsSettings(chains=args.chains, warmup=args.warmup,
                                                draws=args.draws, seed=args.seed),
                "warn": False}

    fits, rows = {}, []
    runs = [(m, "iid") for m in ("pooled", "unpooled", "hierarchical")]
    runs += [("hierarchical", r) for r in args.residuals.split(",") if r]
    for pooling, residual in runs:
        t = time.perf_counter()
        fit = carpool.fit(data, "idm", pooling=pooling, model_options={"residual": residual},
                          **settings)
        wall = time.perf_counter() - t
        fits[pooling, residual] = fit
        rows.append(_fit_row(fit, pooling, residual, wall))
        print({k: v for k, v in rows[-1].items() if k != "outside_by_parameter"}, flush=True)

    train, test = split_in_time(data, 0.7)
    heldout = []
    for residual in args.heldout_residuals.split(","):
        t = time.perf_counter()
        fit = carpool.fit(train, "idm", pooling="pooled", model_options={"residual": residual},
                          **settings)
        wall = time.perf_counter() - t
        scores = multistep_scores(fit, test, num_draws=args.num_draws, seed=args.seed)
        for horizon, r in scores.iterrows():
            heldout.append({"residual": residual, "horizon": horizon, "fit_s": wall,
                            **{k: float(v) for k, v in r.items()}})
        print(residual, scores.round(3).to_string(), flush=True)

    spec = carpool.get_spec("idm")
    grouped = spec.prepare(data)
    lfo_train, lfo_test = lfo_split(grouped, 0.2)
    gid = np.asarray(lfo_test.group_ids)[lfo_test.group_index]
    lfo_rows = []
    for pooling in ("pooled", "unpooled"):
        fit = carpool.fit(lfo_train, "idm", pooling=pooling, **settings)
        score = heldout_score(fit, lfo_test, seed=args.seed)
        err = np.sqrt(score.sq_err)
        worst = int(np.argmax(err))
        theta = fit.idata.posterior["theta"].mean(("chain", "draw")).to_pandas()
        own = theta if pooling == "pooled" else theta.loc[gid[worst]]
        c = lfo_test.covariates
        lfo_rows.append({
            "pooling": pooling, "rmse_next_speed_m_s": score.rmse,
            "median_abs_error_m_s": float(np.median(err)),
            "share_of_squared_error_in_worst_1pct": float(
                np.sort(score.sq_err)[-max(1, err.size // 100):].sum() / score.sq_err.sum()),
            "worst_driver": str(gid[worst]), "worst_error_m_s": float(err[worst]),
            "worst_gap_m": float(c["gap"][worst]), "worst_speed_m_s": float(c["speed"][worst]),
            "worst_leader_speed_m_s": float(c["leader_speed"][worst]),
            "fitted_s0_m": float(own["s0"]), "fitted_T_s": float(own["T"])})
        print(lfo_rows[-1], flush=True)

    write_results(args.json, args, fits=rows, heldout=heldout, lfo_points=lfo_rows,
                  data={"drivers": int(data["driver"].nunique()), "rows": int(len(data))})


if __name__ == "__main__":
    main()
