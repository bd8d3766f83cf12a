"""The reference's hierarchical IDM in PyMC and in carpool, side by side, over several seeds.

Data: a simulated stand-in of 39 congested highD drivers (highD may not be redistributed)
(:func:`carpool.testing.simulate_drivers`: 39 drivers x 28 s at 5 Hz = 140 one-step
observations each, 5,460 in all; stop-and-go leaders at 0-16 m/s; cars, and trucks with a
lower desired speed, longer time gap and gentler acceleration; acceleration noise
0.1 m/s^2).

Model: the reference's (Zhang & Sun 2023; carpool's ``priors="zhang-sun-2023"`` preset):
``v(t+dt) ~ Normal(v + acc_IDM(theta_driver) dt, sigma dt)`` left-censored at 0 m/s,
``theta = ref * exp(mu + diag(tau) L z)`` with ref = (33 m/s, 2 m, 1.6 s, 1.5, 1.67 m/s^2),
``mu ~ Normal(0, 1)``, ``tau ~ Exponential(100)``, ``L ~ LKJCholesky(5, eta=2)``,
``sigma ~ Exponential(1e4)``. PyMC gets it written out as in the reference notebooks
(``LKJCholeskyCov``, non-centred driver effects, a per-observation gather); carpool gets the
preset and chooses its own parameterisation (automatic centring, padded layout). Both run
2 chains x (1,000 warm-up + 1,000 draws) with their default target acceptance (PyMC 0.8,
carpool 0.95 for hierarchical fits) on 2 cores (PyMC: one process per chain; carpool: one
XLA device per chain). Then carpool with its default priors on the same data.

Timing: wall time includes compilation (PyMC: the PyTensor graph compiled once before
``pm.sample``, whose own compilation then hits PyTensor's cache; carpool: JAX's compile
events, the automatic centring and sampling, read after blocking on the samples). Min bulk
ESS and max R-hat are over the same variables for both: ``mu``, ``tau``, ``sigma`` and every
driver's natural parameters ``theta``.

Posterior means are compared where both fits converged (max R-hat < 1.01): for each
population quantity (mu[5], tau[5], sigma) ``z = (mean_a - mean_b) / sqrt(mcse_a^2 +
mcse_b^2)``; with 11 comparisons the largest |z| exceeds 3.3 with probability ~1% if the
posteriors agree, so "match" means max |z| < 3.3.

    python -m pip install -e ".[bench]"          # PyMC, for this script only
    python benchmarks/compare_pymc.py            # the documented run (~80 min on 2 cores)
    python benchmarks/compare_pymc.py --seeds 2 --resume   # add a seed to an earlier run
    python benchmarks/compare_pymc.py --smoke    # seconds; PyMC rows only where installed

A PyMC seed takes ~22 minutes on an idle 2-core machine (2026-12-01), carpool's two fits ~3.
``--resume`` keeps the finished fits of an earlier run with the same data and sampler
settings (its JSON, written after every fit) and runs only the missing (engine, seed)
pairs, so the run can be spread over sessions or survive an interruption.

Prints a table and writes JSON to ``benchmarks/results/compare_pymc.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

PARAMS = ("v0", "s0", "T", "a", "b")
TRUCK = {"v0": 25.0, "T": 2.0, "a": 0.8}
POPULATION = ("mu", "tau", "sigma")
MATCH_Z = 3.3


def stand_in(num_drivers: int, duration_s: float, seed: int):
    """The simulated stand-in of the congested highD set: (trajectories, true parameters)."""
    from carpool.testing import simulate_drivers

    return simulate_drivers(num_drivers, duration_s=duration_s, rng_seed=seed,
                            noise_sd=0.1, classes={"car": {}, "truck": TRUCK})


def pymc_model(grouped: Any) -> Any:
    """The reference's hierarchical IDM as a PyMC model on carpool's one-step data."""
    import numpy as np
    import pymc as pm
    import pytensor.tensor as pt

    from carpool.carfollowing import IDM_ZHANG_SUN_REFERENCE

    ref = np.array([IDM_ZHANG_SUN_REFERENCE[p] for p in PARAMS])
    c = grouped.covariates
    v, gap, vl, dt = (np.asarray(c[k]) for k in ("speed", "gap", "leader_speed", "dt"))
    idx = np.asarray(grouped.group_index)
    G, P = grouped.num_groups, len(PARAMS)
    coords = {"driver": list(grouped.group_ids), "parameter": list(PARAMS)}
    with pm.Model(coords=coords) as model:
        mu = pm.Normal("mu", 0.0, 1.0, dims="parameter")
        chol, _, tau = pm.LKJCholeskyCov("chol", n=P, eta=2.0, compute_corr=True,
                                         sd_dist=pm.Exponential.dist(100.0, shape=P))
        pm.Deterministic("tau", tau, dims="parameter")
        z = pm.Normal("z", 0.0, 1.0, shape=(G, P))
        theta = pm.Deterministic("theta", ref * pt.exp(mu + z @ chol.T),
                                 dims=("driver", "parameter"))
        p = theta[idx]  # per-observation gather, as in the reference
        v0, s0, T, a, b = (p[:, i] for i in range(P))
        s_star = s0 + v * T + v * (v - vl) / (2.0 * pt.sqrt(a * b))
        acc = a * (1.0 - (v / v0) ** 4 - (s_star / gap) ** 2)
        sigma = pm.Exponential("sigma", 1e4)
        pm.Censored("obs", pm.Normal.dist(v + acc * dt, sigma * dt), lower=0.0, upper=None,
                    observed=np.asarray(grouped.y))
    return model


def run_pymc(grouped: Any, chains: int, warmup: int, draws: int, seed: int
             ) -> tuple[Any, dict[str, float]]:
    import pymc as pm
    from pymc.blocking import DictToArrayBijection

    t0 = time.perf_counter()
    model = pymc_model(grouped)
    # compile once, as pm.sample's NUTS does (it then finds the C code in PyTensor's cache)
    fn = model.logp_dlogp_function(ravel_inputs=True)
    fn.set_extra_values({})
    point = model.initial_point()
    fn(DictToArrayBijection.map({v.name: point[v.name] for v in fn._grad_vars}).data)
    compile_s = time.perf_counter() - t0
    with model:
        idata = pm.sample(draws=draws, tune=warmup, chains=chains, cores=chains,
                          random_seed=seed, progressbar=False,
                          compute_convergence_checks=False)
    wall = time.perf_counter() - t0
    return idata, {"wall_s": wall, "compile_s": compile_s}


def run_carpool(df: Any, priors: str, chains: int, warmup: int, draws: int, seed: int
                ) -> tuple[Any, dict[str, float]]:
    import carpool

    t0 = time.perf_counter()
    fit = carpool.fit(df, "idm", pooling="hierarchical", model_options={"priors": priors},
                      sampler=carpool.NutsSettings(chains=chains, warmup=warmup, draws=draws,
                                                   seed=seed), warn=False)
    wall = time.perf_counter() - t0
    t = fit.timing
    return fit, {"wall_s": wall, "compile_s": t["compile_s"],
                 "centring": ",".join(f"{k}:{v[0]}" for k, v in fit.centring.choice.items())}


def posterior_stats(idata: Any) -> dict[str, Any]:
    """Convergence over mu, tau, sigma and theta, and the population means with MCSEs."""
    import arviz as az
    import numpy as np

    az.Numba.disable_numba()  # PyMC brings numba; ArviZ 0.23's numba mcse breaks on NumPy 2.4
    post = idata.posterior[["mu", "tau", "sigma", "theta"]]
    ess = az.ess(post, method="bulk")
    rhat = az.rhat(post)
    mcse = az.mcse(post[list(POPULATION)], method="mean")
    mean = post[list(POPULATION)].mean(("chain", "draw"))
    div = idata.sample_stats["diverging"].values if "sample_stats" in idata else np.zeros(1)
    steps = idata.sample_stats.get("n_steps", idata.sample_stats.get("tree_size"))
    return {
        "min_ess_bulk": float(min(float(ess[v].min()) for v in ess.data_vars)),
        "max_rhat": float(max(float(rhat[v].max()) for v in rhat.data_vars)),
        "divergences": int(np.sum(div)),
        "steps_per_draw": float(np.mean(steps.values)) if steps is not None else float("nan"),
        "means": {v: np.atleast_1d(mean[v].values).astype(float) for v in POPULATION},
        "mcse": {v: np.atleast_1d(mcse[v].values).astype(float) for v in POPULATION},
    }


#: Settings that must match for an earlier run's fits to be kept (``--resume``).
RUN_SETTINGS = ("drivers", "duration_s", "chains", "warmup", "draws", "data_seed")


def finished_fits(path: str, args: Any) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
    """The rows and posterior statistics of an earlier run with the same settings at
    ``path`` (``--resume``): a run of ~40 minutes per PyMC seed on 2 cores can be done one
    seed at a time. Rows written before the statistics were stored keep their numbers but
    have none (their seed gets no mean comparison)."""
    import json

    import numpy as np

    try:
        old = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return [], {}
    done = old.get("meta", {}).get("args", {})
    if any(done.get(k) != getattr(args, k) for k in RUN_SETTINGS):
        print(f"{path}: other settings ({ {k: done.get(k) for k in RUN_SETTINGS} }); "
              "not resumed")
        return [], {}
    rows = list(old.get("rows", []))
    stats = {}
    for r in rows:
        st = {k: r[k] for k in ("min_ess_bulk", "max_rhat", "divergences", "steps_per_draw")}
        if "population_means" in r:
            st["means"] = {v: np.asarray(x) for v, x in r["population_means"].items()}
            st["mcse"] = {v: np.asarray(x) for v, x in r["population_mcse"].items()}
        stats[(r["engine"], r["seed"])] = st
    print(f"resumed from {path}: {sorted(stats)}")
    return rows, stats


def max_z(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    if "means" not in a or "means" not in b:
        return None
    import numpy as np

    z = [np.abs(a["means"][v] - b["means"][v]) / np.hypot(a["mcse"][v], b["mcse"][v])
         for v in POPULATION]
    return float(np.max(np.concatenate(z)))


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drivers", type=int, default=39)
    ap.add_argument("--duration-s", type=float, default=28.0)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data-seed", type=int, default=11)
    ap.add_argument("--engines", default="pymc,carpool,carpool-default")
    ap.add_argument("--resume", action="store_true",
                    help="keep the finished fits of an earlier run with the same settings "
                         "(in --json) and run only the missing (engine, seed) pairs")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/compare_pymc.json")
    args = ap.parse_args()
    if args.smoke:
        args.drivers, args.duration_s, args.warmup, args.draws = 4, 4.0, 30, 30
        args.seeds, args.engines = "0", "pymc,carpool"

    import numpy as np
    import pandas as pd

    engines = args.engines.split(",")
    if "pymc" in engines:
        try:
            import pymc  # noqa: F401
        except ImportError:
            print("PyMC is not installed (pip install -e '.[bench]'): PyMC rows skipped")
            engines.remove("pymc")
    df, _ = stand_in(args.drivers, args.duration_s, args.data_seed)
    from carpool.inference.run import resolve_spec

    grouped = resolve_spec("idm").prepare(df)
    c = grouped.covariates
    print(f"stand-in: {grouped.num_groups} drivers ({dict(df.groupby('class').driver.nunique())}),"
          f" {grouped.num_obs} one-step observations; speed {np.min(c['speed']):.1f}-"
          f"{np.max(c['speed']):.1f} m/s, gap {np.min(c['gap']):.1f}-{np.max(c['gap']):.1f} m")

    rows, stats = finished_fits(args.json, args) if args.resume else ([], {})
    for seed in (int(s) for s in args.seeds.split(",")):
        for engine in engines:
            if (engine, seed) in stats:
                continue
            if engine == "pymc":
                idata, t = run_pymc(grouped, args.chains, args.warmup, args.draws, seed)
                priors = "zhang-sun-2023"
            else:
                priors = "default" if engine == "carpool-default" else "zhang-sun-2023"
                fit, t = run_carpool(df, priors, args.chains, args.warmup, args.draws, seed)
                idata = fit.idata
            s = posterior_stats(idata)
            stats[(engine, seed)] = s
            rows.append({"engine": engine, "priors": priors, "seed": seed,
                         "wall_s": t["wall_s"], "compile_s": t["compile_s"],
                         "min_ess_bulk": s["min_ess_bulk"],
                         "ess_per_s": s["min_ess_bulk"] / t["wall_s"],
                         "max_rhat": s["max_rhat"], "divergences": s["divergences"],
                         "steps_per_draw": s["steps_per_draw"],
                         "centring": t.get("centring", ""),
                         "population_means": {k: v.tolist() for k, v in s["means"].items()},
                         "population_mcse": {k: v.tolist() for k, v in s["mcse"].items()}})
            print(pd.DataFrame(rows[-1:]).drop(columns=["population_means", "population_mcse"])
                  .round(3).to_string(index=False))
            # written after every fit, so a long run cut short keeps what finished
            write_results(args.json, args, rows=rows, complete=False,
                          load_average=os.getloadavg())
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 220)
    print(f"\nhierarchical IDM, {grouped.num_groups} drivers, {grouped.num_obs} observations, "
          f"{args.chains} chains x ({args.warmup} + {args.draws})")
    print(table[[c for c in table.columns if c not in ("centring", "population_means",
                                                       "population_mcse")]]
          .round(3).to_string(index=False))

    comparisons = []
    if "pymc" in engines and "carpool" in engines:
        for seed in sorted({r["seed"] for r in rows}):
            if ("pymc", seed) not in stats or ("carpool", seed) not in stats:
                continue
            a, b = stats[("pymc", seed)], stats[("carpool", seed)]
            both = a["max_rhat"] < 1.01 and b["max_rhat"] < 1.01
            z = max_z(a, b) if both else None
            row_a = table[(table.engine == "pymc") & (table.seed == seed)].iloc[0]
            row_b = table[(table.engine == "carpool") & (table.seed == seed)].iloc[0]
            comparisons.append({
                "seed": seed, "both_converged": both,
                "max_abs_z_population_means": z,
                "means_match": None if z is None else z < MATCH_Z,
                "wall_ratio_pymc_over_carpool": row_a.wall_s / row_b.wall_s,
                "ess_per_s_ratio_carpool_over_pymc": row_b.ess_per_s / max(row_a.ess_per_s,
                                                                             1e-12),
            })
        print("\nPyMC vs carpool, same model and priors:")
        print(pd.DataFrame(comparisons).round(3).to_string(index=False))
    goal = table[table.engine == "carpool-default"]
    if len(goal):
        ok = ((goal.max_rhat < 1.01) & (goal.divergences == 0) & (goal.min_ess_bulk >= 400)
              & (goal.wall_s < 20.0))
        print(f"\ncarpool defaults: goal (R-hat < 1.01, 0 divergences, ESS >= 400, < 20 s) "
              f"met in {int(ok.sum())} of {len(goal)} seeds")
    write_results(args.json, args, rows=rows, comparisons=comparisons, complete=True,
                  load_average=os.getloadavg())


if __name__ == "__main__":
    main()
