"""Render benchmark results (JSON under benchmarks/results/) as the tables of
benchmarks/README.md, so no number there is typed by hand.

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in the README
(or the file given with ``--readme``); NAME is a result file's stem (``compare_pymc``,
``scale_drivers``, ``residuals_fit``, ...), or ``STEM.SECTION`` for one section of it.
A table whose JSON is missing is left as it is.

    python benchmarks/render_tables.py             # rewrite benchmarks/README.md in place
    python benchmarks/render_tables.py --smoke     # render into a temporary copy (CI)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: Columns shown per result and section (others stay in the JSON).
COLUMNS = {
    ("compare_pymc", "rows"): ["engine", "priors", "seed", "wall_s", "compile_s",
                               "min_ess_bulk", "ess_per_s", "max_rhat", "divergences",
                               "steps_per_draw"],
    ("compare_pymc", "comparisons"): ["seed", "both_converged", "max_abs_z_population_means",
                                      "means_match", "wall_ratio_pymc_over_carpool",
                                      "ess_per_s_ratio_carpool_over_pymc"],
    ("scale_drivers", "hierarchical"): ["drivers", "observations", "iterations", "wall_s",
                                        "compile_s", "centring_s", "min_ess_bulk",
                                        "ess_per_s", "max_rhat", "divergences",
                                        "steps_per_draw", "ms_per_gradient"],
    ("scale_drivers", "unpooled"): ["strategy", "drivers", "iterations", "wall_s",
                                    "s_per_driver", "calls", "min_ess_bulk", "max_rhat",
                                    "divergences", "steps_per_draw", "T_94pct_coverage"],
    ("batch_unpooled", "rows"): ["path", "drivers", "wall_s", "per_driver_s", "failed",
                                 "worst_rhat", "divergences"],
    ("worker_threads", "rows"): ["environment", "xla_flags", "wall_s", "cpu_s",
                                 "cpu_over_wall", "sampling_s"],
    ("defaults", "rows"): ["variant", "seed", "wall_s", "compile_s", "min_ess_bulk",
                           "min_ess_var", "ess_per_s", "max_rhat", "divergences",
                           "steps_per_draw", "chain_method"],
    ("gradient_cost", "rows"): ["residual", "variant", "observations", "censored",
                                "dimension", "us_per_gradient", "relative", "compile_s"],
    ("gradient_cost", "nuts_step"): ["potential", "dimension", "steps", "us_per_step",
                                     "compile_s"],
    ("compile_cache", "rows"): ["cache", "data_seed", "process_s", "fit_s", "compile_s",
                                "centring_s", "sampling_s"],
    ("residuals_fit", "rows"): ["residual", "observations", "wall_s", "compile_s",
                                "sampling_s", "centring_s", "min_ess_bulk", "min_ess_var",
                                "ess_per_s", "max_rhat", "divergences", "steps_per_draw"],
    ("human_priors", "rows"): ["priors", "pooling", "wall_s", "max_rhat", "divergences",
                               "outside", "outside_weak", "v0", "b", "elpd_loo",
                               "lfo_rmse_m_s", "lfo_median_abs_error_m_s"],
    ("compare_cost", "rows"): ["seed", "one_fit_s", "compare_s", "compare_ratio", "refits_s",
                               "cold_s", "cold_ratio", "lfo_warm_cold", "ldo_warm_cold",
                               "lfo_seed_shift", "same_recommendation", "report_from_s",
                               "repeat_s"],
    ("centring_choice", "rows"): ["dataset", "rule", "seed", "wall_s", "min_ess_pop",
                                  "ess_per_s", "min_ess_all", "ess_all_per_s", "divergences",
                                  "max_depth_hits", "max_rhat", "noncentred"],
    ("centring_choice", "medians"): ["dataset", "rule", "wall_s", "min_ess_pop", "ess_per_s",
                                     "min_ess_all", "ess_all_per_s", "divergences",
                                     "max_depth_hits", "max_rhat", "noncentred"],
    ("centring_choice", "ratios"): ["dataset", "ess_per_s_ratio", "ess_all_per_s_ratio",
                                    "wall_ratio"],
    ("sampler_choice", "rows"): ["sampler", "seed", "wall_s", "min_ess_pop", "ess_per_s",
                                 "min_ess_all", "ess_all_per_s", "divergences", "max_rhat",
                                 "gradients"],
    ("sampler_choice", "medians"): ["sampler", "wall_s", "min_ess_pop", "ess_per_s",
                                    "min_ess_all", "ess_all_per_s", "divergences", "max_rhat",
                                    "gradients"],
    ("sampler_choice", "ratios"): ["ess_per_s_ratio", "ess_all_per_s_ratio"],
    ("joint_likelihood", "rows"): ["likelihood", "pooling", "wall_s", "max_rhat",
                                   "min_ess_bulk", "divergences", "outside", "outside_weak",
                                   "s0", "T", "b", "sigma", "sigma_speed", "sigma_gap"],
    ("human_drivers", "fits"): ["pooling", "residual", "wall_s", "max_rhat", "min_ess_bulk",
                                "divergences", "tree_depth_hits", "outside", "outside_weak",
                                "v0", "s0", "T", "a", "b", "tau"],
    ("human_drivers", "heldout"): ["residual", "horizon", "rmse_speed_m_s", "rmse_gap_m",
                                   "crps_speed_m_s", "coverage_speed_90", "coverage_gap_90",
                                   "fit_s"],
    ("human_drivers", "lfo_points"): ["pooling", "rmse_next_speed_m_s",
                                      "median_abs_error_m_s",
                                      "share_of_squared_error_in_worst_1pct", "worst_driver",
                                      "worst_error_m_s", "worst_gap_m", "worst_speed_m_s",
                                      "worst_leader_speed_m_s", "fitted_s0_m", "fitted_T_s"],
    ("sumo_vs_jax_ring", "throughput"): ["engine", "vehicles", "steps", "vehicle_steps",
                                         "setup_s", "run_s", "vehicle_steps_per_s", "note"],
    ("sumo_vs_jax_ring", "agreement"): ["case", "vehicles", "duration_s", "first_stop_s",
                                        "max_dv_before_stop_m_s", "max_dv_m_s", "rms_dv_m_s",
                                        "max_dgap_m", "onset_jax_s", "onset_sumo_s",
                                        "wave_jax_km_h", "wave_sumo_km_h",
                                        "share_stopped_jax", "share_stopped_sumo"],
    ("radon_vs_bambi", "rows"): ["engine", "model", "seed", "build_s", "sampling_s", "wall_s",
                                 "min_ess_bulk", "ess_per_s", "max_rhat", "divergences",
                                 "steps_per_draw"],
    ("radon_vs_bambi", "speed"): ["model", "engine", "seeds", "build_s", "sampling_s",
                                  "wall_s", "min_ess_bulk", "ess_per_s", "ess_per_wall_s",
                                  "max_rhat", "divergences", "steps_per_draw"],
    ("radon_vs_bambi", "ratios"): ["model", "carpool", "wall_s_ratio", "build_s_ratio",
                                   "sampling_s_ratio", "ess_per_s_ratio",
                                   "ess_per_wall_s_ratio"],
    ("radon_vs_bambi", "estimates"): ["model", "parameter", "lme4", "reml", "carpool",
                                      "carpool-lkj", "bambi", "z_carpool_bambi"],
}


#: Result files written by a script of another name (``--json``).
SCRIPT_OF: dict[str, str] = {"svi_vs_nuts_100k": "svi_vs_nuts"}


def _cell(value: Any, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if column == "max_rhat":
            return f"{value:.3f}"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cols = [c for c in columns if any(c in r for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c), c) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def render(result: dict[str, Any], name: str, only: str | None = None, *,
           dated: bool = True) -> str:
    """Markdown of one result file (``only``: one section). ``dated=False`` (user docs) leaves
    the date and commit out of the caption: they stay in the JSON."""
    meta = result["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in meta.items()
                         if k in ("jax", "numpyro", "arviz", "pymc", "dask") and v)
    load = result.get("load_average")
    commit = f", carpool {meta['commit']}" if meta.get("commit") and dated else ""
    when = f"{meta['date']}{commit}, " if dated else ""
    parts = [f"*{when}{meta['cpus']} CPUs ({meta['machine']}), Python "
             f"{meta['python']}, {versions}"
             + (f"; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
                if load else "") + f"; from `benchmarks/{SCRIPT_OF.get(name, name)}.py`.*"]
    if result.get("incomplete"):
        parts.append("*The run was stopped before it finished; these are the parts it "
                     "completed.*")
    for (script, section), columns in COLUMNS.items():
        if script == name and result.get(section) and only in (None, section):
            if section not in ("rows",) and only is None:
                parts.append(f"**{section}**")
            parts.append(markdown_table(result[section], columns))
    return "\n\n".join(parts)


def rewrite(readme: Path, results: Path) -> list[str]:
    text = readme.read_text(encoding="utf-8")
    done = []
    for name in sorted(set(re.findall(r"<!-- table:([\w.]+) -->", text))):
        stem, _, section = name.partition(".")
        path = results / f"{stem}.json"
        if not path.exists():
            continue
        # every rendered page is published in the docs site: the date and commit stay in
        # the JSON
        table = render(json.loads(path.read_text()), stem, section or None, dated=False)
        text = re.sub(rf"<!-- table:{re.escape(name)} -->.*?<!-- /table:{re.escape(name)} -->",
                      lambda _m, n=name, t=table: f"<!-- table:{n} -->\n{t}\n<!-- /table:{n} -->",
                      text, flags=re.S)
        done.append(name)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(readme)
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", type=Path, default=HERE / "README.md")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default=None, help="also write what was rendered as JSON")
    args = ap.parse_args()
    if args.smoke:
        tmpdir = Path(tempfile.mkdtemp())
        shutil.copy(args.readme, tmpdir / "README.md")
        args.readme = tmpdir / "README.md"
        (tmpdir / "results").mkdir()
        sample = {"meta": {"date": "2026-01-01", "cpus": 2, "machine": "x86_64",
                           "python": "3.11", "jax": "0"},
                  "rows": [{"residual": "iid", "wall_s": 1.0}]}
        (tmpdir / "results" / "residuals_fit.json").write_text(json.dumps(sample))
        args.results = tmpdir / "results"
    done = rewrite(args.readme, args.results)
    print("rendered: " + (", ".join(done) or "nothing (no results yet)"))
    if args.json:
        Path(args.json).write_text(json.dumps({"rendered": done}))


if __name__ == "__main__":
    main()
