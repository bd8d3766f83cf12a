"""The automatic centring: the previous rule (hyperprior tau) against the current default.

The previous rule took each group's shrinkage factor with tau at the median of its
hyperprior (0.337 on the latent scale) and, marginalising the non-centred block (a Schur
complement), non-centred parameters while their median shrinkage was >= 0.3; on the 76
NGSIM drivers it non-centred all five IDM parameters. The current default estimates tau
from the groups' own estimates (see :mod:`carpool.pooling.centring`). Both are fitted with
the default sampler (4 chains x 1,000 + 1,000), the previous rule as an explicit
``param=`` mapping of what it chose (its centring time is added to its wall time).

Per data set (the 76 NGSIM drivers; the simulated 39-driver stand-in of
``compare_pymc.py``, 28 s each, data seed 11), rule and seed, one fresh process (each fit
compiles cold and the processes do not pile up memory): wall s, the minimum bulk ESS over
the population parameters (mu, tau), ESS/s, the minimum bulk ESS over every variable,
divergences, transitions at the maximum tree depth, max R-hat and the choice (the
non-centred parameters). Then the medians over seeds and the ratio current / previous of
the median ESS/s.

    python benchmarks/centring_choice.py              # seeds 0-2 (~20 min on 2 cores)
    python benchmarks/centring_choice.py --smoke      # seconds

Prints a table and writes JSON to ``benchmarks/results/centring_choice.json`` (``--json``).
"""

from __future__ import annotations

import json
import os
import time
import warnings

DATASETS = ("ngsim", "standin")
RULES = ("previous", "current")


def summarise(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Medians over seeds per data set and rule, and the ratios current / previous of the
    median ESS per second: of the population (``ess_per_s``) and of every variable
    (``ess_all_per_s``, from the smallest bulk ESS of any variable)."""
    import numpy as np

    for r in rows:
        r["ess_all_per_s"] = r["min_ess_all"] / r["wall_s"]
    medians, ratios = [], []
    for dataset in DATASETS:
        for rule in RULES:
            mine = [r for r in rows if r["dataset"] == dataset and r["rule"] == rule]
            m = {k: float(np.median([r[k] for r in mine]))
                 for k in ("wall_s", "min_ess_pop", "ess_per_s", "min_ess_all",
                           "ess_all_per_s", "divergences", "max_depth_hits", "max_rhat")}
            medians.append({"dataset": dataset, "rule": rule, "seed": "median", **m,
                            "noncentred": mine[0]["noncentred"]})
        old, new = (next(m for m in medians if m["dataset"] == dataset and m["rule"] == r)
                    for r in RULES)
        ratios.append({"dataset": dataset,
                       "ess_per_s_ratio": new["ess_per_s"] / old["ess_per_s"],
                       "ess_all_per_s_ratio": new["ess_all_per_s"] / old["ess_all_per_s"],
                       "wall_ratio": new["wall_s"] / old["wall_s"]})
    return medians, ratios


def previous_rule(spec, grouped, config) -> dict[str, str]:
    """The rule before tau came from the data: hyperprior-median tau, information at the
    full-step group estimates, Schur complement, non-centre while the median kappa >= 0.3."""
    import numpy as np

    from carpool.pooling.centring import group_information, pooled_map_with_residual

    names = spec.parameters.names
    config = config.with_defaults(spec, grouped.num_groups)
    tau = np.array([config.hyperpriors.tau_prior(n).median() for n in names])
    z, noise, rp = pooled_map_with_residual(spec, grouped)
    info = group_information(spec, grouped, z, noise, residual_params=rp)
    _, scale = spec.parameters.latent_prior_arrays()
    A = info + np.diag(1.0 / (10.0 * scale) ** 2)
    P, nc = len(names), []
    while True:
        c = [i for i in range(P) if i not in nc]
        s2 = 1.0 / np.diagonal(A, axis1=-2, axis2=-1).copy()
        if c:
            S = A[:, c][:, :, c]
            if nc:
                S = S - A[:, c][:, :, nc] @ np.linalg.solve(A[:, nc][:, :, nc],
                                                            A[:, nc][:, :, c])
            s2[:, c] = 1.0 / np.diagonal(S, axis1=-2, axis2=-1)
        kappa = np.median(s2 / (s2 + tau**2), axis=0)
        worst = [(kappa[i], i) for i in c if kappa[i] >= 0.3]
        if not worst:
            break
        nc.append(max(worst)[1])
    return {n: ("noncentred" if i in nc else "centred") for i, n in enumerate(names)}


def load(dataset: str, args):
    from _results import ngsim_drivers
    from compare_pymc import stand_in

    if dataset == "ngsim":
        return ngsim_drivers(args.drivers)
    return stand_in(args.standin_drivers, args.duration_s, args.data_seed)[0]


def one_fit(dataset: str, rule: str, seed: int, args) -> dict:
    import arviz as az
    import numpy as np

    import carpool
    from carpool.inference.nuts import NutsSettings
    from carpool.inference.run import resolve_spec
    from carpool.pooling.spec import PoolingConfig

    os.environ["CARPOOL_FIT_CACHE"] = "off"
    df = load(dataset, args)
    sampler = NutsSettings(chains=args.chains, warmup=args.warmup, draws=args.draws,
                           seed=seed)
    t0 = time.perf_counter()
    pooling: object = "hierarchical"
    if rule == "previous":
        spec = resolve_spec("idm")
        config = PoolingConfig(pooling="hierarchical")
        pooling = PoolingConfig(pooling="hierarchical",
                                param=previous_rule(spec, spec.prepare(df), config))
    fit = carpool.fit(df, "idm", pooling=pooling, sampler=sampler, warn=False)
    wall = time.perf_counter() - t0
    d = fit.diagnostics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = az.ess(fit.idata.posterior[["mu", "tau"]], method="bulk")
    ess_pop = float(min(np.nanmin(ess[v].values) for v in ess.data_vars))
    nc = [n for n, c in fit.centring.choice.items() if c != "centred"]
    return {"dataset": dataset, "rule": rule, "seed": seed, "wall_s": wall,
            "min_ess_pop": ess_pop, "ess_per_s": ess_pop / wall,
            "min_ess_all": float(d["min_ess_bulk"]), "min_ess_var": d["min_ess_bulk_var"],
            "max_rhat_var": d["max_rhat_var"], "divergences": int(d["divergences"]),
            "max_depth_hits": int(d["max_tree_depth_hits"]), "max_rhat": float(d["max_rhat"]),
            "noncentred": ",".join(nc) or "-",
            "tau_ref": {k: round(v, 3) for k, v in fit.centring.tau_ref.items()}}


def _child(args, dataset: str, rule: str, seed: int) -> dict:
    from _results import run_child

    cmd = ["--child", f"{dataset}:{rule}:{seed}", "--chains", str(args.chains), "--warmup",
           str(args.warmup), "--draws", str(args.draws), "--standin-drivers",
           str(args.standin_drivers), "--duration-s", str(args.duration_s), "--data-seed",
           str(args.data_seed)]
    if args.drivers is not None:
        cmd += ["--drivers", str(args.drivers)]
    return run_child(__file__, cmd, f"{dataset} {rule} seed {seed}")


def main() -> None:
    from _results import ngsim_benchmark_args, one_device_per_chain, write_results

    one_device_per_chain()

    args = ngsim_benchmark_args(
        __doc__.splitlines()[0], "benchmarks/results/centring_choice.json",
        seeds=("0,1,2", "comma-separated seeds"),
        standin_drivers=(39, "drivers of the simulated stand-in"),
        duration_s=(28.0, "seconds per stand-in driver (compare_pymc.py's default)"),
        data_seed=(11, "the stand-in's data seed (compare_pymc.py's default)"),
        child=("", "internal: run this dataset:rule:seed and print its row"))
    if args.smoke:
        args.seeds, args.standin_drivers, args.duration_s = "0", 3, 6.0
    from render_tables import markdown_table

    warnings.simplefilter("ignore")
    if args.child:  # one fit in this fresh process: its row as JSON
        dataset, rule, seed = args.child.split(":")
        print("ROW " + json.dumps(one_fit(dataset, rule, int(seed), args)), flush=True)
        return
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for dataset in DATASETS:
            for rule in RULES:
                rows.append(_child(args, dataset, rule, seed))
                print({k: v for k, v in rows[-1].items() if k != "tau_ref"}, flush=True)
    medians, ratios = summarise(rows)
    write_results(args.json, args, rows=rows, medians=medians, ratios=ratios)
    columns = ["dataset", "rule", "seed", "wall_s", "min_ess_pop", "ess_per_s", "min_ess_all",
               "ess_all_per_s", "divergences", "max_depth_hits", "max_rhat", "noncentred"]
    print(markdown_table(rows + medians, columns))
    print()
    print(markdown_table(ratios, ["dataset", "ess_per_s_ratio", "ess_all_per_s_ratio",
                                  "wall_ratio"]))


if __name__ == "__main__":
    main()
