"""Simulation-based calibration of the IDM and linear models in the three pooling modes.

Each configuration draws N parameter sets from the prior, simulates data on a fixed design,
samples each posterior with NUTS (one chain, compiled once per configuration, see
:mod:`carpool.inference.sbc`) and tests the ranks of the true values for uniformity: a
chi-square test on 10 bins of the ranks 0..99 for every scalar quantity, passed when every
p-value exceeds 0.01 / m (Bonferroni over the m quantities: a correct sampler fails a
configuration with probability at most 1%). The script also prints the test's power against
a posterior 30% too narrow and one shifted by half a posterior sd (per quantity, at the
Bonferroni level; :func:`carpool.inference.sbc.chi_square_power`).

Designs: linear, 5 groups x 10 observations (x ~ N(0, 1)); IDM, 3 simulated drivers x 6 s at
5 Hz (30 one-step observations each, congested leaders, :func:`carpool.testing
.simulate_drivers`). Hierarchical fits use a diagonal population, non-centred.

    python benchmarks/sbc.py --docs --workers 2   # the documented run: figures + table
    python benchmarks/sbc.py --smoke    # seconds: CI keeps it from rotting

Prints a table, writes JSON to ``benchmarks/results/sbc.json`` (``--json``) and with
``--docs`` the rank histograms ``docs/figures/sbc_<model>_<pooling>.png`` and the results
table between the markers in ``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- sbc-results:begin (written by benchmarks/sbc.py) -->", "<!-- sbc-results:end -->"


def design(model: str):
    """The fixed design (covariates, groups) of a model's SBC."""
    from carpool.models.registry import get_spec
    from carpool.testing import simulate_drivers, simulate_linear_groups

    spec = get_spec(model)
    if model == "linear":
        table, _ = simulate_linear_groups(5, 10, rng_seed=0)
    else:
        table, _ = simulate_drivers(3, duration_s=6.0, rng_seed=1)
    return spec, spec.prepare(table)


def histogram(result, title: str, path: Path) -> None:
    """Rank histograms of every quantity (grey band: the 99% range of a bin's count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from scipy import stats

    from carpool.inference.sbc import bin_counts
    from carpool.io import atomic_write_figure

    names = list(result.ranks)
    cols = min(6, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 1.6 * rows), squeeze=False,
                             sharey=True)
    B, N = result.settings.num_bins, len(next(iter(result.ranks.values())))
    lo, hi = stats.binom.ppf([0.005, 0.995], N, 1.0 / B)
    for ax, name in zip(axes.flat, names, strict=False):
        counts = bin_counts(result.ranks[name], result.num_ranks, B)
        ax.axhspan(lo, hi, color="0.85", zorder=0)
        ax.bar(np.arange(B), counts, width=1.0, color="tab:blue", edgecolor="white")
        ax.set_title(name, fontsize=7)
        ax.set_xticks([])
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write_figure(fig, path)
    plt.close(fig)


def update_docs(markdown: str) -> Path:
    from carpool.io import atomic_write_text

    doc = ROOT / "docs" / "reliability.md"
    text = doc.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} lacks the markers {BEGIN!r} ... {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return atomic_write_text(doc, f"{head}{BEGIN}\n{markdown}\n{END}{tail}")


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="linear,idm")
    ap.add_argument("--poolings", default="pooled,unpooled,hierarchical")
    ap.add_argument("--replications", type=int, default=200)
    ap.add_argument("--idm-replications", type=int, default=200,
                    help="for the unpooled and hierarchical IDM (1-3 s each)")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--ranks", type=int, default=99)
    ap.add_argument("--thinning", type=int, default=4)
    ap.add_argument("--bins", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0,
                    help="local worker processes for the replications (0: this process); "
                         "the ranks do not depend on it")
    ap.add_argument("--docs", action="store_true", help="write figures and the docs table")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/sbc.json")
    args = ap.parse_args()
    if args.smoke:
        args.models, args.poolings = "linear", "pooled"
        args.replications, args.warmup, args.ranks, args.thinning, args.bins = 4, 30, 9, 1, 5
        args.docs = False

    import pandas as pd

    from carpool.inference.sbc import SbcSettings, chi_square_power, run_sbc
    from carpool.pooling.spec import Hyperpriors, PoolingConfig

    executor = None
    if args.workers:
        from carpool.batch import make_executor

        executor = make_executor(local_workers=args.workers)
    rows, t_all = [], time.perf_counter()
    for model in args.models.split(","):
        spec, data = design(model)
        for pooling in args.poolings.split(","):
            n = (args.idm_replications if model == "idm" and pooling != "pooled"
                 else args.replications)
            settings = SbcSettings(num_replications=n, warmup=args.warmup,
                                   num_ranks=args.ranks, thinning=args.thinning,
                                   num_bins=args.bins, seed=args.seed)
            config = PoolingConfig(pooling=pooling, correlated=False, param="noncentred",
                                   hyperpriors=Hyperpriors.default_for(data.num_groups))
            result = run_sbc(spec, data, config, settings,
                             log_fn=lambda m: print(m, flush=True), executor=executor,
                             num_chunks=args.workers or None)
            table = result.table(seed=args.seed)
            m = len(table)
            level = args.alpha / m
            power = {"power_narrow30": chi_square_power(n, num_ranks=args.ranks,
                                                         num_bins=args.bins, alpha=level,
                                                         sd_ratio=0.7, num_trials=1000),
                     "power_shift05": chi_square_power(n, num_ranks=args.ranks,
                                                        num_bins=args.bins, alpha=level,
                                                        shift_sd=0.5, num_trials=1000)}
            worst = table["chi2_p"].idxmin()
            rows.append({
                "model": model, "pooling": pooling, "replications": n, "quantities": m,
                "min_chi2_p": float(table["chi2_p"].min()), "worst": worst,
                "min_ks_p": float(table["ks_p"].min()), "bonferroni_level": level,
                "passes": bool(table["chi2_p"].min() > level), **power,
                "divergent_replications": int((result.divergences > 0).sum()),
                "steps_per_draw": float(result.num_steps.mean()),
                "compile_s": result.compile_s, "wall_s": result.wall_s,
                "per_quantity": table.reset_index().to_dict(orient="records"),
            })
            if args.docs:
                histogram(result, f"SBC ranks, {model} {pooling}: {n} replications, "
                                  f"{args.ranks + 1} ranks in {args.bins} bins",
                          ROOT / "docs" / "figures" / f"sbc_{model}_{pooling}.png")
    wall = time.perf_counter() - t_all
    if executor is not None:
        executor.close()
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "per_quantity"} for r in rows])
    pd.set_option("display.width", 250)
    print(frame.set_index(["model", "pooling"]).round(4).to_string())
    print(f"all: {wall:.0f} s")
    write_results(args.json, args, configurations=rows, wall_s=wall)
    if args.docs:
        cols = ["model", "pooling", "replications", "quantities", "min_chi2_p", "worst",
                "min_ks_p", "passes", "power_narrow30", "power_shift05",
                "divergent_replications", "steps_per_draw", "wall_s"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            cells = [f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        where = (f"on {args.workers} local worker processes" if args.workers
                 else "in one process")
        lines.append(f"Measured on {os.cpu_count()} CPU cores "
                     f"({where}), {wall:.0f} s in all; warm-up {args.warmup}, {args.ranks} "
                     f"ranked draws thinned by {args.thinning}, seed {args.seed}.")
        update_docs("\n".join(lines))


if __name__ == "__main__":
    main()
