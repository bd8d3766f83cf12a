"""One Bambi fit of a radon model, for ``radon_vs_bambi.py``: prints one JSON row on stdout.

Runs in a Python environment with Bambi (not carpool's: Bambi brings PyMC, PyTensor and its
own ArviZ/NumPy pins), e.g. ``python3.11 -m venv /work/bambivenv &&
/work/bambivenv/bin/pip install bambi``. It reads the radon table from the CSV path it is
given (``--data``), so it never imports carpool.

    /work/bambivenv/bin/python benchmarks/_bambi_radon.py --model A --seed 0 \
        --data src/carpool/data/bundled/radon_mn.csv [--chains 4 --warmup 1000 --draws 1000]

Model (explicit priors; Bambi 0.17 has no correlated group-specific effects, so the county
intercepts and slopes are independent normals; Bambi's default non-centred parameterisation
and predictor centring, PyMC's default NUTS with target acceptance 0.8)::

    log_radon ~ Normal(Intercept + floor_coef * floor [+ log_uppm_coef * log_uppm]
                       + a[county] + b[county] * floor, sigma)
    Intercept, floor_coef, log_uppm_coef ~ Normal(0, 10)
    a[j] ~ Normal(0, tau_Intercept), b[j] ~ Normal(0, tau_floor)
    tau_Intercept, tau_floor ~ HalfNormal(1);  sigma ~ HalfNormal(1)

The row: ``compile_s`` (building the model and compiling the log density and its gradient,
which ``pm.sample`` then finds in PyTensor's cache), ``fit_s`` (wall time of ``model.fit``),
``sampling_s`` (PyMC's own ``sampling_time``: the sampling loop of all chains, warm-up
included, without the set-up before it), ``wall_s`` (``compile_s + fit_s``) and ``build_s``
(``wall_s - sampling_s``, as carpool's rows count it), bulk ESS, R-hat, posterior mean, sd
and MCSE of the mean of each population parameter, under carpool's names (``Intercept``,
``floor``, ``log_uppm``, ``tau[Intercept]``, ``tau[floor]``, ``sigma``), and the Bambi name
of each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

FORMULAS = {
    "A": "log_radon ~ floor + (1 + floor | county)",
    "B": "log_radon ~ floor + log_uppm + (1 + floor | county)",
}


def population_names(model: str) -> dict[str, str]:
    """carpool's name -> Bambi's posterior variable, for the population parameters."""
    names = {"Intercept": "Intercept", "floor": "floor"}
    if model == "B":
        names["log_uppm"] = "log_uppm"
    names.update({"tau[Intercept]": "1|county_sigma", "tau[floor]": "floor|county_sigma",
                  "sigma": "sigma"})
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(FORMULAS), required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", required=True, help="radon_mn.csv")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--cores", type=int, default=None,
                    help="PyMC's cores (default: PyMC's, min(4, CPUs))")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    import arviz as az
    import bambi as bmb
    import numpy as np
    import pandas as pd
    import pymc as pm
    import pytensor
    from pymc.blocking import DictToArrayBijection

    if hasattr(az, "Numba"):  # PyMC brings numba; ArviZ 0.23's numba mcse can break on NumPy 2.4
        az.Numba.disable_numba()

    df = pd.read_csv(args.data, dtype={"county": str})
    group = bmb.Prior("Normal", mu=0.0, sigma=bmb.Prior("HalfNormal", sigma=1.0))
    priors = {"Intercept": bmb.Prior("Normal", mu=0.0, sigma=10.0),
              "floor": bmb.Prior("Normal", mu=0.0, sigma=10.0),
              "1|county": group, "floor|county": group,
              "sigma": bmb.Prior("HalfNormal", sigma=1.0)}
    if args.model == "B":
        priors["log_uppm"] = bmb.Prior("Normal", mu=0.0, sigma=10.0)

    t0 = time.perf_counter()
    model = bmb.Model(FORMULAS[args.model], df, family="gaussian", priors=priors)
    model.build()
    pm_model = model.backend.model
    # compile once, as pm.sample's NUTS does (it then finds the C code in PyTensor's cache)
    fn = pm_model.logp_dlogp_function(ravel_inputs=True)
    fn.set_extra_values({})
    point = pm_model.initial_point()
    fn(DictToArrayBijection.map({v.name: point[v.name] for v in fn._grad_vars}).data)
    build_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    kwargs = {} if args.cores is None else {"cores": args.cores}
    idata = model.fit(draws=args.draws, tune=args.warmup, chains=args.chains,
                      random_seed=args.seed, progressbar=False,
                      compute_convergence_checks=False, **kwargs)
    fit_s = time.perf_counter() - t1
    wall_s = build_s + fit_s
    sampling_s = float(idata.posterior.attrs.get("sampling_time", fit_s))

    names = population_names(args.model)
    post = idata.posterior
    missing = [b for b in names.values() if b not in post]
    if missing:
        raise SystemExit(f"Bambi posterior has no {missing}; it has {list(post.data_vars)}")
    sub = post[list(names.values())]
    ess = az.ess(sub, method="bulk")
    rhat = az.rhat(sub)
    mcse = az.mcse(sub, method="mean")
    params = {}
    for ours, theirs in names.items():
        x = sub[theirs].values
        params[ours] = {"mean": float(np.mean(x)), "sd": float(np.std(x, ddof=1)),
                        "mcse_mean": float(mcse[theirs]), "ess_bulk": float(ess[theirs]),
                        "rhat": float(rhat[theirs]), "bambi_name": theirs}
    min_ess = min(p["ess_bulk"] for p in params.values())
    stats = idata.sample_stats
    row = {"engine": "bambi", "model": args.model, "seed": args.seed,
           "formula": FORMULAS[args.model], "correlated": False,
           "compile_s": build_s, "fit_s": fit_s, "sampling_s": sampling_s,
           "build_s": wall_s - sampling_s, "wall_s": wall_s,
           "min_ess_bulk": min_ess, "ess_per_s": min_ess / sampling_s,
           "ess_per_wall_s": min_ess / wall_s,
           "max_rhat": max(p["rhat"] for p in params.values()),
           "divergences": int(stats["diverging"].values.sum()),
           "steps_per_draw": float(np.mean(stats["n_steps"].values)),
           "chains": args.chains, "warmup": args.warmup, "draws": args.draws,
           "cores": args.cores or min(4, os.cpu_count() or 1),
           "pytensor_compiledir": str(pytensor.config.compiledir),
           "params": params,
           "versions": {"bambi": bmb.__version__, "pymc": pm.__version__,
                        "pytensor": pytensor.__version__, "arviz": az.__version__,
                        "numpy": np.__version__, "python": sys.version.split()[0]}}
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
