"""End-to-end jobs behind ``carpool compare``, ``carpool sweep``, ``carpool report`` and the demo.

Each job is a plain function of data and options returning results (and writing files only
where asked), so the CLI stays thin and the jobs are usable from Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from carpool.errors import InputError
from carpool.inference.nuts import NutsSettings
from carpool.pooling.spec import POOLING_MODES

__all__ = ["FitOptions", "fit_modes", "data_summary", "ReportResult", "build_report"]

Log = Callable[[str], Any]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class FitOptions:
    """Options shared by every fit of a job (see :func:`carpool.fit`): the model (a
    registered name or a formula such as ``"y ~ x + (1 + x | g)"``), the sampler settings,
    the level column and the model's options; ``family`` and ``priors`` (prior overrides
    by term) apply to formulas only (``None``: the formula's defaults)."""

    model: str = "idm"
    sampler: NutsSettings = field(default_factory=NutsSettings)
    level: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    family: str | None = None
    priors: Mapping[str, Any] | None = None

    @property
    def is_formula(self) -> bool:
        from carpool.inference.run import is_formula

        return is_formula(self.model)


def fit_modes(table: Any, options: FitOptions, *, modes: tuple[str, ...] = POOLING_MODES,
              log: Log = _quiet) -> dict[str, Any]:
    """Fit ``options.model`` to ``table`` in each pooling mode: ``{mode: Fit}``."""
    import carpool

    formula: dict[str, Any] = {}
    if options.is_formula:
        formula = {"family": options.family, "priors": options.priors}
    elif options.family is not None or options.priors is not None:
        raise InputError("family and priors apply to formulas, not to the registered model "
                         f"{options.model!r}")
    fits = {}
    for mode in modes:
        log(f"fitting {mode} {options.model} ...")
        fits[mode] = carpool.fit(table, options.model, pooling=mode, sampler=options.sampler,
                                 level=options.level,
                                 model_options=dict(options.model_options), **formula)
        t = fits[mode].timing
        log(f"  {mode}: {t['total_s']:.1f} s (compile {t['compile_s']:.1f} s), max R-hat "
            f"{fits[mode].diagnostics['max_rhat']:.3f}, "
            f"{fits[mode].diagnostics['divergences']} divergences")
    return fits


def data_summary(fit: Any) -> dict[str, Any]:
    """Key facts of the data behind ``fit`` for the report (units in the keys)."""
    d = fit.data
    sizes = d.group_sizes
    if fit.spec.name == "formula":
        return _formula_summary(fit)
    out: dict[str, Any] = {
        "model": fit.spec.name,
        f"{fit.spec.group_dim}s": d.num_groups,
        "observations": d.num_obs,
        "observations per group (min, max)": (int(sizes.min()), int(sizes.max())),
    }
    covs = d.covariates
    if {"speed", "gap", "dt"} <= set(covs):
        dt = covs["dt"]
        out["time step (s)"] = float(np.median(dt))
        out["duration per group (s, min, max)"] = tuple(
            float(np.sum(dt[d.group_index == g])) for g in (int(np.argmin(sizes)),
                                                            int(np.argmax(sizes))))
        out["speed range (m/s)"] = (float(covs["speed"].min()), float(covs["speed"].max()))
        out["gap range (m)"] = (float(covs["gap"].min()), float(covs["gap"].max()))
    else:
        out["y range"] = (float(d.y.min()), float(d.y.max()))
    if d.level_ids:
        out["levels"] = ", ".join(d.level_ids)
    return out


def _formula_summary(fit: Any) -> dict[str, Any]:
    """:func:`data_summary` of a formula fit: the formula, its groups (the first grouping
    factor), terms and other factors, in the words of :mod:`carpool.compare.words`."""
    from carpool.compare.words import words_for

    spec, d = fit.spec, fit.data
    words = words_for(spec)
    sizes = d.group_sizes
    opts = spec.options
    groups = (words.groups if words.group == spec.group_dim
              else f"{words.groups} ({opts.get('group', spec.group_dim)})")
    out: dict[str, Any] = {
        "formula": words.formula,
        "family": opts.get("family", "gaussian"),
        groups: d.num_groups,
        "rows": d.num_obs,
        f"rows per {words.group} (min, max)": (int(sizes.min()), int(sizes.max())),
        f"terms varying by {words.group}": ", ".join(spec.parameters.names),
    }
    if spec.common_names:
        out["common terms (one value for all groups)"] = ", ".join(spec.common_names)
    for f in spec.factors:
        out[f"other grouping factor {f.label}"] = (f"{len(f.levels)} levels; varying "
                                                   f"{', '.join(f.terms)}")
    if opts.get("known_sigma"):
        out["known standard errors"] = opts["known_sigma"]
    out[f"{words.response} range"] = (float(d.y.min()), float(d.y.max()))
    return out


@dataclass(frozen=True)
class ReportResult:
    fits: dict[str, Any]
    comparison: Any
    sweep: Any
    path: Path
    files: list[Path]


def _example_group(fit: Any) -> str:
    """The group with the median number of observations (a typical one)."""
    sizes = fit.data.group_sizes
    return fit.group_ids[int(np.argsort(sizes)[len(sizes) // 2])]


def build_report(
    table: Any,
    out: str | Path,
    options: FitOptions,
    *,
    fits: Mapping[str, Any] | None = None,
    comparison: Any = None,
    grid: tuple[float, ...] | None = None,
    lfo: bool = True,
    ldo: bool = True,
    ldo_folds: int = 5,
    refit_sampler: NutsSettings | None = None,
    sweep_sampler: NutsSettings | None = None,
    figures_dir: str | Path | None = None,
    title: str | None = None,
    sensitivity: bool = False,
    extra_figures: Mapping[str, Any] | None = None,
    notes: Mapping[str, Any] | None = None,
    log: Log = _quiet,
) -> ReportResult:
    """Fit the three modes (unless ``fits`` are given), compare, sweep and write the report.

    Parameters
    ----------
    table
        Trajectories (or another table the model understands), or grouped data.
    out
        The HTML file to write.
    comparison
        The :class:`~carpool.compare.results.Comparison` of ``fits`` where it exists
        already (``carpool compare --out``), else it is computed here.
    grid
        The tau grid of the pooling-dial sweep (``None``: the default grid; ``()``: no sweep).
    refit_sampler, sweep_sampler
        The sampler of the held-out refits (:func:`carpool.compare`) and of the sweep's
        fits, e.g. fewer draws; ``None``: the hierarchical fit's own.
    figures_dir
        Also write every figure there as PNG and SVG.
    sensitivity
        Also refit the hierarchical model with weak and with informative hyperpriors
        (:func:`carpool.prior_sensitivity`, two more fits) and report how far each driver's
        estimates move, with prior predictive draws.
    extra_figures
        Further ``{caption: matplotlib figure}`` to show after the others.
    notes
        Further report sections, ``{heading: text or pandas table}`` (see
        :func:`carpool.report.write_report`).
    """
    from carpool.compare import compare, shrinkage_table
    from carpool.compare.sweep import DEFAULT_GRID, sweep
    from carpool.plots.corner import plot_corner
    from carpool.plots.correlation import plot_population_correlation
    from carpool.plots.forest import plot_forest
    from carpool.plots.predictive import plot_predictive
    from carpool.plots.shrinkage import plot_shrinkage
    from carpool.plots.sweep import plot_sweep
    from carpool.report import write_report

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"the report file must end in .html, got {out}")
    if out.is_dir():
        raise InputError(f"{out} is a folder; give a file name ending in .html")
    fits = dict(fits) if fits is not None else fit_modes(table, options, log=log)
    hier = fits["hierarchical"]
    seed = options.sampler.seed
    if comparison is None:
        log("comparing the modes (PSIS-LOO and held-out refits) ...")
        comparison = compare(fits, lfo=lfo, ldo=ldo, ldo_folds=ldo_folds,
                             refit_sampler=refit_sampler, seed=seed, log_fn=log)
    sweep_result = None
    grid = DEFAULT_GRID if grid is None else tuple(grid)
    # the hierarchical fit's own configuration (levels, hyperpriors) with tau learned
    config = replace(hier.config, tau="learned")
    if grid:
        sweep_result = sweep(hier.data, hier.spec, grid, fits=fits, pooling=config,
                             sampler=sweep_sampler or hier.sampler, log_fn=log)

    sens = None
    if sensitivity:
        from carpool.compare.sensitivity import prior_sensitivity

        sens = prior_sensitivity(hier.data, hier.spec, pooling=config, sampler=hier.sampler,
                                 seed=seed, log_fn=log)

    log("drawing figures ...")
    from carpool.compare.words import words_for

    words = words_for(hier.spec)
    group = _example_group(hier)
    fdir = Path(figures_dir) if figures_dir is not None else None
    figures: dict[str, Any] = {}
    files: list[Path] = []

    def add(caption: str, name: str, draw: Callable[[Path | None], Any]) -> None:
        path = fdir / name if fdir is not None else None
        figures[caption] = draw(path)
        if path is not None:
            files.extend([path.with_suffix(".png"), path.with_suffix(".svg")])

    add("Shrinkage: pooled line, unpooled points, hierarchical points (arrows: how far each "
        "estimate moved)", "shrinkage",
        lambda p: plot_shrinkage(shrinkage_table(fits["pooled"], fits["unpooled"], hier), p))
    add(f"Per-{words.group} parameters in the three modes (mean and 94% HDI)",
        "forest", lambda p: plot_forest(fits, p))
    if _has_correlation(hier):
        add("Population correlation of the parameters (LKJ posterior)", "correlation",
            lambda p: plot_population_correlation(hier, p))
    add(f"Posterior of {words.group} {group}'s parameters (hierarchical fit)",
        "corner", lambda p: plot_corner(hier, group, p))
    add(f"Posterior predictive against the record, {words.group} {group} "
        "(hierarchical fit)", "predictive", lambda p: plot_predictive(hier, group, p))
    if sweep_result is not None:
        add("The pooling dial: estimates against a fixed tau, learned tau shaded, held-out "
            "score below", "sweep", lambda p: plot_sweep(sweep_result, p))
    if sens is not None:
        from carpool.plots.sensitivity import plot_prior_sensitivity

        add(f"Prior sensitivity: how far each {words.group}'s estimates move between weak "
            "and informative hyperpriors, against its amount of data; prior predictive draws",
            "sensitivity", lambda p: plot_prior_sensitivity(sens, p))
    figures.update(extra_figures or {})
    model_name = words.formula or hier.spec.name
    path = write_report(out, title=title or f"carpool: {model_name}, three pooling modes",
                        data_summary=data_summary(hier), fits=fits, comparison=comparison,
                        sweep=sweep_result, sensitivity=sens, figures=figures, notes=notes)
    import matplotlib.pyplot as plt

    for fig in figures.values():
        plt.close(fig)
    return ReportResult(fits, comparison, sweep_result, path, [path, *files])


def _has_correlation(fit: Any) -> bool:
    """Whether ``fit``'s population has a correlation to show: two or more parameters (a
    formula's ``(1 | g)`` has one)."""
    return len(fit.spec.parameters) >= 2


def comparison_frame(comparison: Any) -> pd.DataFrame:
    """The comparison table with the columns a person reads first."""
    cols = ["rank", "elpd_loo", "se", "elpd_diff", "dse", "p_loo", "max_pareto_k",
            "lfo_elpd", "lfo_rmse_speed", "ldo_elpd", "ldo_rmse_speed"]
    return comparison.table[cols].sort_values("rank")
