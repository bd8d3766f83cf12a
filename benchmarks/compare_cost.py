"""What a comparison costs against one fit, on the bundled NGSIM human drivers.

Per seed, in a fresh process of one run (so the ratios do not depend on the machine's drift,
and every seed compiles cold, as a first comparison does):

- ``one_fit_s``: one default hierarchical IDM fit (the fit cache off);
- ``compare_s``: ``carpool compare`` as the CLI runs it: the three modes fitted, PSIS-LOO,
  leave-future-out (3 refits) and leave-drivers-out (5 folds x 2 modes), the held-out refits
  warm-started (the default, :mod:`carpool.inference.warm`); ``compare_ratio = compare_s /
  one_fit_s``; ``refits_s`` the held-out refits and scoring alone;
- ``cold_s``: the same comparison with every held-out refit from scratch at the fits' own
  settings (``warm_start=False``, the three fits reused; ``cold_ratio`` counts the fits in),
  how far the warm refits' held-out scores are from those (``lfo_warm_cold``,
  ``ldo_warm_cold``: the largest change over the modes, nats) and whether it recommends the
  same mode; ``lfo_seed_shift``: the largest change of a leave-future-out score between warm
  refits with two seeds (the Monte Carlo noise of the score itself);
- ``report_from_s``: ``carpool report --from`` on the folder ``compare --out`` wrote (fits and
  comparison read, figures drawn, no fit; the sweep off);
- ``repeat_s``: the whole comparison run again with the fit cache warm (filled by the first
  run), so every fit and refit is read back.

Clocks are read after each call returns: carpool's fits convert the draws to NumPy (blocking
on them) before they return.

    python benchmarks/compare_cost.py                     # 20 drivers, seeds 0-2
    python benchmarks/compare_cost.py --drivers 76 --seeds 0
    python benchmarks/compare_cost.py --smoke             # seconds

Prints a table and writes JSON to ``benchmarks/results/compare_cost.json`` (``--json``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path


def _scores(comparison) -> dict[str, dict[str, float]]:
    t = comparison.table
    return {m: {"lfo": float(t.loc[m, "lfo_elpd"]), "ldo": float(t.loc[m, "ldo_elpd"])}
            for m in t.index}


def _shift(a: dict, b: dict, key: str) -> float:
    import math

    moves = [abs(a[m][key] - b[m][key]) for m in a
             if not (math.isnan(a[m][key]) or math.isnan(b[m][key]))]
    return max(moves) if moves else float("nan")


TABLE_COLUMNS = ["seed", "one_fit_s", "compare_s", "compare_ratio", "refits_s", "cold_s",
                 "cold_ratio", "lfo_warm_cold", "ldo_warm_cold", "lfo_seed_shift",
                 "same_recommendation", "report_from_s", "repeat_s"]


def one_seed(df, args, seed: int, workdir: Path) -> dict:
    import carpool
    from carpool.compare.results import Comparison
    from carpool.inference.nuts import NutsSettings
    from carpool.pipeline import FitOptions, build_report, fit_modes

    sampler = NutsSettings(chains=args.chains, warmup=args.warmup, draws=args.draws,
                           seed=seed)
    os.environ["CARPOOL_FIT_CACHE"] = "off"
    t0 = time.perf_counter()
    carpool.fit(df, "idm", sampler=sampler, warn=False)
    one_fit = time.perf_counter() - t0

    cache = workdir / f"fits-{seed}"
    os.environ["CARPOOL_FIT_CACHE"] = str(cache)  # filled by this run, read by the repeat
    options = FitOptions(model="idm", sampler=sampler)
    refit = None if not args.refit_draws else NutsSettings(
        chains=args.chains, warmup=args.refit_warmup, draws=args.refit_draws, seed=seed)
    t0 = time.perf_counter()
    fits = fit_modes(df, options)
    t_modes = time.perf_counter() - t0
    full = carpool.compare(fits, seed=seed, ldo_folds=args.folds, refit_sampler=refit)
    compare_s = time.perf_counter() - t0

    os.environ["CARPOOL_FIT_CACHE"] = "off"
    # another seed for the refits' chains (the leave-future-out split does not depend on it)
    again = carpool.compare(fits, seed=seed + 1000, refit_sampler=refit, ldo=False)
    t0 = time.perf_counter()
    cold = carpool.compare(fits, seed=seed, ldo_folds=args.folds, warm_start=False)
    cold_s = t_modes + time.perf_counter() - t0

    folder = workdir / f"compared-{seed}"
    for f in fits.values():
        f.save(folder / f"{f.pooling}.nc")
    full.save(folder / "comparison.json")
    t0 = time.perf_counter()
    loaded = {m: carpool.load(folder / f"{m}.nc") for m in fits}
    build_report(None, workdir / f"report-{seed}.html", options, fits=loaded,
                 comparison=Comparison.load(folder / "comparison.json"), grid=())
    report_s = time.perf_counter() - t0

    os.environ["CARPOOL_FIT_CACHE"] = str(cache)
    t0 = time.perf_counter()
    carpool.compare(fit_modes(df, options), seed=seed, ldo_folds=args.folds,
                    refit_sampler=refit)
    repeat_s = time.perf_counter() - t0

    a, b, c = _scores(full), _scores(cold), _scores(again)
    return {"seed": seed, "one_fit_s": one_fit, "modes_s": t_modes, "compare_s": compare_s,
            "compare_ratio": compare_s / one_fit, "refits_s": compare_s - t_modes,
            "cold_s": cold_s, "cold_ratio": cold_s / one_fit,
            "lfo_warm_cold": _shift(a, b, "lfo"), "ldo_warm_cold": _shift(a, b, "ldo"),
            "lfo_seed_shift": _shift(a, c, "lfo"),
            "same_recommendation": full.recommendation["mode"] == cold.recommendation["mode"],
            "report_from_s": report_s, "repeat_s": repeat_s}


def _child(args, seed: int) -> dict:
    """One seed in a fresh process: each seed compiles cold, and the hundreds of programs a
    comparison compiles do not pile up in one process."""
    cmd = [sys.executable, __file__, "--child", str(seed), "--drivers", str(args.drivers),
           "--chains", str(args.chains), "--warmup", str(args.warmup), "--draws",
           str(args.draws), "--refit-warmup", str(args.refit_warmup), "--refit-draws",
           str(args.refit_draws), "--folds", str(args.folds)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    rows = [ln[4:] for ln in r.stdout.splitlines() if ln.startswith("ROW ")]
    if r.returncode != 0 or not rows:
        raise SystemExit(f"seed {seed} failed:\n{r.stderr[-3000:]}")
    return json.loads(rows[0])


def main() -> None:
    # one CPU device per chain, as the CLI gives JAX (before JAX starts)
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_"
                                   f"platform_device_count={max(4, os.cpu_count() or 1)}")
    from _results import ngsim_benchmark_args, ngsim_drivers, write_results

    args = ngsim_benchmark_args(
        __doc__.splitlines()[0], "benchmarks/results/compare_cost.json",
        drivers_default=(20, "drivers (the documented run: 20)"),
        seeds=("0,1,2", "comma-separated seeds"),
        refit_warmup=(0, "warm-up of the warm held-out refits (0: carpool's default)"),
        refit_draws=(0, "draws of the warm held-out refits (0: carpool's default)"),
        folds=(5, "leave-drivers-out folds (carpool compare's default: 5)"),
        child=(-1, "internal: run this one seed and print its row"))
    args.child = None if args.child < 0 else args.child
    if args.drivers is None:
        args.drivers = args.drivers_default
    if args.smoke:
        args.seeds, args.refit_warmup, args.refit_draws, args.folds = "0", 20, 20, 2
    import numpy as np
    from render_tables import markdown_table

    warnings.simplefilter("ignore")
    if args.child is not None:  # one seed in this fresh process: its row as JSON
        with tempfile.TemporaryDirectory() as tmp:
            row = one_seed(ngsim_drivers(args.drivers), args, args.child, Path(tmp))
        print("ROW " + json.dumps(row), flush=True)
        return
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows.append(_child(args, seed))
        print(rows[-1], flush=True)
    df = ngsim_drivers(args.drivers)
    median = {k: float(np.median([r[k] for r in rows])) for k in rows[0]
              if k not in ("seed", "same_recommendation")}
    median["seed"] = "median"
    rows_out = [*rows, median]
    write_results(args.json, args, drivers=int(df["driver"].nunique()), rows=rows_out)
    print(markdown_table(rows_out, TABLE_COLUMNS))


if __name__ == "__main__":
    main()
