"""carpool's formula interface against Bambi on the Minnesota radon models, with lme4's
published estimates beside them.

Data: the bundled Minnesota radon table (``carpool.data.load_table("radon-mn")``: 919 homes
in 85 counties; Gelman & Hill 2007 via posteriordb). Two models, the same in both engines:

``A``  ``log_radon ~ floor + (1 + floor | county)``
``B``  ``log_radon ~ floor + log_uppm + (1 + floor | county)``

Priors: Intercept, floor, log_uppm ~ Normal(0, 10); the county sd of each varying term
~ HalfNormal(1); sigma ~ HalfNormal(1). Bambi 0.17 has no correlated group-specific effects
(its LKJ code is commented out in ``bambi/backend/model_components.py``; bambinos/bambi
issue #702, "Allow non-independent random effects", is open), so Bambi's county intercepts
and slopes are independent normals. carpool fits each model twice: ``carpool``
(``correlated=False``: Bambi's model exactly) and ``carpool-lkj`` (``correlated=True``,
LKJ(eta=2) on the county correlation: lme4's model). The ratios compare ``carpool`` (and,
for reference, ``carpool-lkj``) with Bambi.

Sampling: 4 chains x (1,000 warm-up + 1,000 draws) for both, over 3 seeds. Bambi: PyMC's
NUTS with its defaults (target acceptance 0.8, jitter+adapt_diag initialisation), Bambi's
defaults otherwise (non-centred group effects, predictors centred for sampling and the
intercept moved back afterwards), one process per chain on ``min(chains, CPUs)`` cores
(PyMC's own default here would be ``min(4, CPUs // 2)``, i.e. one core on 2 CPUs).
carpool: ``carpool.fit`` with ``NutsSettings``, one XLA CPU device per chain.

Timing per fit: ``wall_s`` (model building, compilation and sampling), ``sampling_s`` (the
sampler's own clock for warm-up and draws: carpool's ``fit.timing["sampling_s"]``, PyMC's
``sampling_time``) and ``build_s = wall_s - sampling_s`` (carpool: formula parsing, centring
and JAX compilation; Bambi: building the model, compiling the log density and gradient, and
``pm.sample``'s set-up). Both compile cold, as a first fit does: carpool's persistent
compilation cache is off (``_results.py``) and each Bambi fit gets an empty PyTensor compile
directory (``--bambi-pytensor-cache warm`` uses the user's). ESS is ArviZ's bulk ESS of the
population parameters (Intercept, floor, log_uppm, the county sds, sigma; not the
correlation), and ``ess_per_s`` = the smallest of those / ``sampling_s``
(``ess_per_wall_s``: / ``wall_s``). Estimates are the mean over seeds of each fit's
posterior mean, with its Monte Carlo standard error (sqrt of the summed squared per-fit
MCSEs / seeds), and the mean over seeds of the posterior sd.

lme4 reference (REML point estimates, lmer's default, as ``arm::display`` prints them),
Gelman & Hill (2007), *Data Analysis Using Regression and Multilevel/Hierarchical Models*,
on the same 919 homes (``y`` = log radon, ``x`` = floor, ``u.full`` = county log uranium):

- section 13.1 (varying intercepts and slopes), ``M3 <- lmer(y ~ x + (1 + x | county))``:
  intercept 1.46 (se 0.05), x -0.68 (se 0.09); county sd intercept 0.35, slope 0.34,
  correlation -0.34; residual sd 0.75 (``fixef``: 1.4627700, -0.6810982). This is model A.
- section 12.6 (group-level predictors), ``M2 <- lmer(y ~ x + u.full + (1 | county))``:
  intercept 1.47 (se 0.04), x -0.67 (se 0.07), u.full 0.72 (se 0.09); county sd 0.16;
  residual sd 0.76 (``fixef``: 1.4657628, -0.6682448, 0.7202676). A varying-intercept
  model: the nearest published fit to model B, which also lets the floor slope vary (the
  book's varying-slope model with uranium, section 13.1, adds an ``x:u.full`` interaction),
  so B's column is a guide, not a target.

The book's response is not quite this table's: Gelman & Hill take ``y = log(activity)``
(a zero activity set to 0.1 pCi/L), posteriordb's ``log_radon`` is ``log(activity + 0.1)``
(``exp(log_radon) - 0.1`` is a whole multiple of 0.1 for every home; 3 homes read 0).
Undoing it reproduces the book's numbers: pooled least squares gives 1.32674 and -0.61339
(residual sd 0.8226) as the book's ``lm(y ~ x)``, and REML (statsmodels 0.15.0 ``MixedLM``)
of model A gives 1.4628 (se 0.054), -0.6811 (se 0.089), county sds 0.349 and 0.344,
correlation -0.337, residual sd 0.746: M3 to the printed digits. M2 does not reproduce on
this table in its intercept and uranium coefficient: REML with the book's response gives
1.385 (se 0.039), -0.669 (0.069), 0.808 (0.105), county sd 0.162, residual sd 0.758 (the
book: 1.47, -0.67, 0.72, 0.16, 0.76), so the book's county uranium values differ from
posteriordb's ``log_uppm`` for some counties (not established here why). The column
``reml`` is therefore REML on this very table (its response), statsmodels 0.15.0
``smf.mixedlm(formula, df, groups="county", re_formula="~floor").fit(reml=True)``, computed
once for this benchmark and recorded in ``REML_THIS_TABLE`` (not rerun by it): the
likelihood estimates the posterior means should sit near (county sds: the posterior mean
of a skewed sd lies below or above its mode).

Where these numbers come from: the values above are the book's (section numbers from the
book's code files, ``12.6_Group-level predictors.R`` and chapter 13's); they were checked
against knitted reruns of the book's code with current lme4/arm (arm 1.13-1), which print
exactly these rounded values: GitHub ConstanzaSchibber/Multilevel-Modeling---PhD-Course,
``Lab 2/MLMLab2TheBasics.md`` (commit 7dac33efad800f4a54e53e8fa0179dde628449a8; M2) and
``Lab 3/MLMLab3.md`` (commit f5bc0e635093af0386bd3c432088e18781e745d0; M3); a second course's
copy of the book's code has M2's display in comments with the same values, and the book's
chapter 18 code hard-codes ``sigma.a <- 0.16`` for M2. Page numbers were not verified.

    python benchmarks/radon_vs_bambi.py            # the documented run (~12 min on 2 cores)
    python benchmarks/radon_vs_bambi.py --smoke    # seconds; Bambi only where its Python is
    python benchmarks/radon_vs_bambi.py --engines carpool,carpool-lkj --resume
        # rerun carpool's fits, keeping an earlier run's Bambi fits (same settings)

Bambi runs in a Python environment of its own (it pins PyMC, PyTensor, NumPy and ArviZ
versions of its own), e.g. ``python3.11 -m venv /work/bambivenv && /work/bambivenv/bin/pip
install bambi "matplotlib<3.11"`` (arviz-plots 0.8 fails to import with matplotlib 3.11). This
script runs ``benchmarks/_bambi_radon.py`` with that interpreter (``--bambi-python``, or the
environment variable ``CARPOOL_BAMBI_PYTHON``); without it, Bambi's columns are empty and
the JSON says why. Prints tables and writes JSON to ``benchmarks/results/radon_vs_bambi.json``
(``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ENGINES = ("carpool", "carpool-lkj", "bambi")
FORMULAS = {
    "A": "log_radon ~ floor + (1 + floor | county)",
    "B": "log_radon ~ floor + log_uppm + (1 + floor | county)",
}
#: The population parameters, under carpool's names (Bambi's are mapped in _bambi_radon.py).
POPULATION = {
    "A": ("Intercept", "floor", "tau[Intercept]", "tau[floor]", "sigma"),
    "B": ("Intercept", "floor", "log_uppm", "tau[Intercept]", "tau[floor]", "sigma"),
}
DEFAULT_BAMBI_PYTHON = "/work/bambivenv/bin/python"

#: lme4's estimates in Gelman & Hill (2007) (sources in the module docstring): point
#: estimates, and the standard errors of the fixed effects.
LME4: dict[str, dict[str, Any]] = {
    "A": {
        "source": "Gelman & Hill (2007), section 13.1, M3",
        "formula": "lmer(y ~ x + (1 + x | county))",
        "estimates": {"Intercept": 1.46, "floor": -0.68, "tau[Intercept]": 0.35,
                      "tau[floor]": 0.34, "corr": -0.34, "sigma": 0.75},
        "se": {"Intercept": 0.05, "floor": 0.09},
    },
    "B": {
        "source": "Gelman & Hill (2007), section 12.6, M2 (varying intercept only)",
        "formula": "lmer(y ~ x + u.full + (1 | county))",
        "estimates": {"Intercept": 1.47, "floor": -0.67, "log_uppm": 0.72,
                      "tau[Intercept]": 0.16, "sigma": 0.76},
        "se": {"Intercept": 0.04, "floor": 0.07, "log_uppm": 0.09},
    },
}
#: REML on the bundled table (its log(activity + 0.1) response) of models A and B exactly as
#: fitted here (B with a varying floor slope), statsmodels 0.15.0 MixedLM (see the module
#: docstring); computed once, not by this script.
REML_THIS_TABLE: dict[str, dict[str, float]] = {
    "A": {"Intercept": 1.4945, "floor": -0.6548, "tau[Intercept]": 0.337, "tau[floor]": 0.328,
          "corr": -0.371, "sigma": 0.717},
    "B": {"Intercept": 1.4112, "floor": -0.6161, "log_uppm": 0.8511, "tau[Intercept]": 0.143,
          "tau[floor]": 0.419, "corr": 0.388, "sigma": 0.713},
}
#: The settings a kept fit (``--resume``) must share with this run.
RUN_SETTINGS = ("chains", "warmup", "draws")


# --------------------------------------------------------------------------- carpool side
def _pick(da: Any, label: str) -> Any:
    """``da`` at coordinate ``label`` of whichever non-sample dimension carries it."""
    for dim in da.dims:
        if dim not in ("chain", "draw") and label in [str(v) for v in da[dim].values]:
            return da.sel({dim: label})
    raise KeyError(f"no coordinate {label!r} in {da.name} (dims {da.dims})")


def run_carpool(engine: str, model: str, seed: int, args: Any) -> dict[str, Any]:
    import numpy as np

    import carpool
    from carpool.data import load_table
    from carpool.inference.nuts import NutsSettings
    from carpool.pooling.spec import Hyperpriors, PoolingConfig
    from carpool.priors import HalfNormal, Normal

    df = load_table("radon-mn")
    correlated = engine == "carpool-lkj"
    config = PoolingConfig("hierarchical", correlated=correlated, hyperpriors=Hyperpriors(
        tau={"Intercept": HalfNormal(1.0), "floor": HalfNormal(1.0)}, lkj_eta=2.0))
    priors = {"Intercept": Normal(0.0, 10.0), "floor": Normal(0.0, 10.0),
              "sigma": HalfNormal(1.0)}
    if model == "B":
        priors["log_uppm"] = Normal(0.0, 10.0)
    t0 = time.perf_counter()
    fit = carpool.fit(df, FORMULAS[model], pooling=config, family="gaussian", priors=priors,
                      sampler=NutsSettings(chains=args.chains, warmup=args.warmup,
                                           draws=args.draws, seed=seed), warn=False)
    wall = time.perf_counter() - t0
    post = fit.idata.posterior
    draws = {"Intercept": _pick(post["mu"], "Intercept").values,
             "floor": _pick(post["mu"], "floor").values}
    if model == "B":
        draws["log_uppm"] = _pick(post["beta"], "log_uppm").values
    draws["tau[Intercept]"] = _pick(post["tau"], "Intercept").values
    draws["tau[floor]"] = _pick(post["tau"], "floor").values
    draws["sigma"] = np.asarray(post["sigma"].values)
    extra = {}
    if correlated and "corr" in post:
        corr = np.asarray(post["corr"].values)
        # the off-diagonal element: (chain, draw, 2, 2) or one stored correlation
        extra["corr"] = (corr[..., 0, 1] if corr.ndim == 4
                         else corr.reshape(*corr.shape[:2], -1)[..., 0])
    params = posterior_stats({**draws, **extra})
    sampling = float(fit.timing["sampling_s"])
    min_ess = min(params[k]["ess_bulk"] for k in draws)
    stats = fit.idata.sample_stats
    return {"engine": engine, "model": model, "seed": seed, "formula": FORMULAS[model],
            "correlated": correlated, "build_s": wall - sampling, "sampling_s": sampling,
            "wall_s": wall, "min_ess_bulk": min_ess, "ess_per_s": min_ess / sampling,
            "ess_per_wall_s": min_ess / wall,
            "max_rhat": max(params[k]["rhat"] for k in draws),
            "divergences": int(fit.diagnostics["divergences"]),
            "steps_per_draw": float(np.mean(stats["n_steps"].values)),
            "chains": args.chains, "warmup": args.warmup, "draws": args.draws,
            "timing": {k: float(v) for k, v in fit.timing.items()}, "params": params}


def posterior_stats(draws: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean, sd, MCSE of the mean, bulk ESS and R-hat of each (chain, draw) array."""
    import arviz as az
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.from_dict(posterior={k: np.asarray(v) for k, v in draws.items()})
        ess = az.ess(idata, method="bulk")
        rhat = az.rhat(idata)
        mcse = az.mcse(idata, method="mean")
    return {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)),
                "mcse_mean": float(mcse[k]), "ess_bulk": float(ess[k]),
                "rhat": float(rhat[k])} for k, v in draws.items()}


# ----------------------------------------------------------------------------- Bambi side

def bambi_python(args: Any) -> tuple[str | None, str | None]:
    """(interpreter, None) when it imports Bambi, else (None, why not)."""
    path = args.bambi_python
    if not Path(path).exists():
        return None, f"no Bambi Python at {path} (set --bambi-python or CARPOOL_BAMBI_PYTHON)"
    r = subprocess.run([path, "-c", "import bambi, pymc; print(bambi.__version__)"],
                       capture_output=True, text=True, timeout=300, check=False)
    if r.returncode != 0:
        return None, f"{path} cannot import bambi: {r.stderr.strip().splitlines()[-1:]}"
    return path, None


def run_bambi(python: str, model: str, seed: int, data: Path, args: Any) -> dict[str, Any]:
    cores = args.bambi_cores or min(args.chains, os.cpu_count() or 1)
    cmd = [python, str(HERE / "_bambi_radon.py"), "--model", model, "--seed", str(seed),
           "--data", str(data), "--chains", str(args.chains), "--warmup", str(args.warmup),
           "--draws", str(args.draws), "--cores", str(cores)]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as compiledir:
        if args.bambi_pytensor_cache == "cold":
            flags = env.get("PYTENSOR_FLAGS", "")
            env["PYTENSOR_FLAGS"] = (flags + "," if flags else "") + f"base_compiledir={compiledir}"
        r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        raise SystemExit(f"Bambi model {model} seed {seed} failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1])


# -------------------------------------------------------------------------------- summary

def _fmt(mean: float | None, mcse: float | None, sd: float | None) -> str | None:
    if mean is None:
        return None
    return f"{mean:.3f} ± {mcse:.3f} (sd {sd:.3f})"


def summarise(rows: list[dict[str, Any]], models: list[str]) -> dict[str, list[dict]]:
    """Means over seeds: speed per (model, engine), ratios to Bambi, estimates per
    (model, parameter) beside lme4's."""
    speed, ratios, estimates = [], [], []
    keys = ("build_s", "sampling_s", "wall_s", "min_ess_bulk", "ess_per_s", "ess_per_wall_s",
            "steps_per_draw")
    by = {}
    for model in models:
        for engine in ENGINES:
            mine = [r for r in rows if r["model"] == model and r["engine"] == engine]
            if not mine:
                continue
            by[model, engine] = mine
            speed.append({"model": model, "engine": engine, "seeds": len(mine),
                          **{k: sum(r[k] for r in mine) / len(mine) for k in keys},
                          "max_rhat": max(r["max_rhat"] for r in mine),
                          "divergences": sum(r["divergences"] for r in mine)})
    mean_of = {(s["model"], s["engine"]): s for s in speed}
    for model in models:
        bambi = mean_of.get((model, "bambi"))
        for engine in ("carpool", "carpool-lkj"):
            ours = mean_of.get((model, engine))
            if ours is None:
                continue
            ratios.append({"model": model, "carpool": engine, **{
                f"{k}_ratio": (ours[k] / bambi[k] if bambi else None)
                for k in ("wall_s", "build_s", "sampling_s", "ess_per_s", "ess_per_wall_s")}})
    for model in models:
        ref = LME4[model]
        params = list(POPULATION[model]) + ["corr"]
        for p in params:
            row: dict[str, Any] = {"model": model, "parameter": p}
            est = ref["estimates"].get(p)
            se = ref["se"].get(p)
            row["lme4"] = (None if est is None else
                           f"{est:.2f}" + (f" (se {se:.2f})" if se is not None else ""))
            row["lme4_estimate"], row["lme4_se"] = est, se
            reml = REML_THIS_TABLE[model].get(p)
            row["reml_estimate"], row["reml"] = reml, (None if reml is None else f"{reml:.3f}")
            pooled = {}
            for engine in ENGINES:
                fits = [r["params"][p] for r in by.get((model, engine), []) if p in r["params"]]
                if not fits:
                    row[engine] = None
                    continue
                n = len(fits)
                m = sum(f["mean"] for f in fits) / n
                se_mc = math.sqrt(sum(f["mcse_mean"] ** 2 for f in fits)) / n
                sd = sum(f["sd"] for f in fits) / n
                pooled[engine] = (m, se_mc)
                row.update({f"{engine}_mean": m, f"{engine}_mcse": se_mc, f"{engine}_sd": sd,
                            engine: _fmt(m, se_mc, sd)})
            if p == "corr" and not any(row.get(e) for e in ENGINES) and est is None:
                continue
            if "carpool" in pooled and "bambi" in pooled:
                (a, sa), (b, sb) = pooled["carpool"], pooled["bambi"]
                row["z_carpool_bambi"] = (a - b) / math.sqrt(sa ** 2 + sb ** 2)
            estimates.append(row)
    return {"speed": speed, "ratios": ratios, "estimates": estimates}


def kept_rows(path: str, engines: list[str], args: Any) -> list[dict[str, Any]]:
    """``--resume``: an earlier run's fits of the engines not run now, if its settings match."""
    p = Path(path)
    if not p.exists():
        return []
    old = json.loads(p.read_text())
    same = all(old.get("meta", {}).get("args", {}).get(k) == getattr(args, k)
               for k in RUN_SETTINGS)
    return [r for r in old.get("rows", []) if same and r["engine"] not in engines]


def main() -> None:
    from _results import one_device_per_chain, run_child, write_results

    one_device_per_chain()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="A,B")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--bambi-python",
                    default=os.environ.get("CARPOOL_BAMBI_PYTHON", DEFAULT_BAMBI_PYTHON))
    ap.add_argument("--bambi-cores", type=int, default=0,
                    help="PyMC's cores (default: min(chains, CPUs))")
    ap.add_argument("--bambi-pytensor-cache", choices=("cold", "warm"), default="cold",
                    help="cold: an empty PyTensor compile directory per Bambi fit")
    ap.add_argument("--resume", action="store_true",
                    help="keep the fits of engines not run now from the JSON at --json")
    ap.add_argument("--summarise-only", action="store_true",
                    help="recompute the summary tables of the JSON at --json (no fits)")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/radon_vs_bambi.json")
    ap.add_argument("--child", default="", help="internal: engine:model:seed")
    args = ap.parse_args()
    if args.smoke:
        args.seeds, args.chains, args.warmup, args.draws = "0", 2, 50, 50
    warnings.simplefilter("ignore")
    os.environ["CARPOOL_FIT_CACHE"] = "off"  # every fit runs
    if args.child:
        engine, model, seed = args.child.split(":")
        print("ROW " + json.dumps(run_carpool(engine, model, int(seed), args)), flush=True)
        return

    from render_tables import COLUMNS, markdown_table

    from carpool.data import load_table

    if args.summarise_only:
        old = json.loads(Path(args.json).read_text())
        args = argparse.Namespace(**{**vars(args), **old["meta"]["args"]})
        rows = old["rows"]
        keep = {k: old[k] for k in ("unavailable", "bambi_versions", "load_average") if k in old}
        write_results(args.json, args, rows=rows, **summarise(rows, args.models.split(",")),
                      lme4=LME4, reml=REML_THIS_TABLE, **keep)
        print(markdown_table(summarise(rows, args.models.split(","))["estimates"],
                             COLUMNS[("radon_vs_bambi", "estimates")]))
        return

    models = args.models.split(",")
    engines = args.engines.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    unavailable: dict[str, str] = {}
    python = None
    if "bambi" in engines:
        python, why = bambi_python(args)
        if why:
            unavailable["bambi"] = why
    for engine, why in unavailable.items():
        print(f"{engine}: not run ({why})", flush=True)

    rows = kept_rows(args.json, engines, args) if args.resume else []
    passthrough = ["--chains", str(args.chains), "--warmup", str(args.warmup),
                   "--draws", str(args.draws)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "radon_mn.csv"  # the very table carpool fits, for Bambi's process
        load_table("radon-mn").to_csv(data, index=False)
        for seed in seeds:
            for model in models:
                for engine in engines:
                    if engine == "bambi":
                        if python is None:
                            continue
                        row = run_bambi(python, model, seed, data, args)
                    else:
                        if "carpool" in unavailable:
                            continue
                        row = run_child(__file__, ["--child", f"{engine}:{model}:{seed}",
                                                   *passthrough], f"{engine} {model} {seed}")
                    rows.append(row)
                    print({k: row[k] for k in COLUMNS[("radon_vs_bambi", "rows")]},
                          flush=True)
                    write_results(args.json, args, rows=rows, **summarise(rows, models),
                                  lme4=LME4, reml=REML_THIS_TABLE, unavailable=unavailable,
                                  incomplete=True)
    versions = next((r["versions"] for r in rows if r["engine"] == "bambi"), None)
    summary = summarise(rows, models)
    write_results(args.json, args, rows=rows, **summary, lme4=LME4, reml=REML_THIS_TABLE,
                  unavailable=unavailable, bambi_versions=versions,
                  load_average=list(os.getloadavg()))
    for section in ("rows", "speed", "ratios", "estimates"):
        table = rows if section == "rows" else summary[section]
        if table:
            print(f"\n{section}\n" + markdown_table(table, COLUMNS[("radon_vs_bambi", section)]))
    if not rows:
        print("no fits ran: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))


if __name__ == "__main__":
    main()
