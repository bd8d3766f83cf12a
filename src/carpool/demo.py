"""``carpool demo``: the three pooling modes on bundled real data, compared and simulated.

By default the IDM on human drivers in congested freeway traffic (the bundled NGSIM I-80
extract, 5 Hz): pooled, unpooled and hierarchical fits of a subset of the drivers, their
comparison and recommendation, the shrinkage figure, the pooling dial, each driver's
estimates against the IDM's physical ranges, a dynamic-residual (AR(1)) fit scored by
held-out multi-step prediction against the i.i.d. one, a Sugiyama ring road of new drivers
drawn from the fitted population, and one driver simulated behind its recorded leader.
``data="usdot-platoon"`` runs the linear ACC controller on the bundled automated platoon.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from carpool.errors import InputError
from carpool.inference.nuts import NutsSettings
from carpool.pooling.spec import POOLING_MODES

__all__ = ["DEMO_DATA", "DemoChoice", "DemoResult", "choose_drivers", "run_demo"]


@dataclass(frozen=True)
class DemoChoice:
    """What the demo fits on one bundled data set, and why (said in the report).

    Attributes
    ----------
    model
        The car-following model.
    num_drivers
        Drivers fitted (``None``: all), chosen by :func:`choose_drivers`.
    duration_s
        Seconds of each driver's record (``None``: all).
    draws, warmup
        NUTS draws and warm-up per chain of the main fits (4 chains).
    target_accept
        Of the hierarchical fit (``None``: carpool's default).
    residual
        The dynamic residual scored against i.i.d. by held-out multi-step prediction
        (``None``: skipped).
    why
        One paragraph for the report.
    title
        The report's subject.
    word
        What a group is called in the terminal output (``"driver"``, ``"vehicle"``).
    grid
        The pooling dial's tau grid (``None``: carpool's default grid).
    refit_warmup, refit_draws
        Warm-up and draws per chain of the comparison's held-out refits, the pooling dial's
        fits and the dynamic-residual check: they feed scores and point estimates, not the
        reported posteriors.
    model_options
        Options of the model's spec, e.g. ``{"speed_limit": 29.1}``.
    """

    model: str
    num_drivers: int | None = None
    duration_s: float | None = None
    draws: int = 1000
    warmup: int = 500
    target_accept: float | None = None
    residual: str | None = None
    why: str = ""
    title: str = ""
    word: str = "driver"
    grid: tuple[float, ...] | None = None
    refit_warmup: int = 250
    refit_draws: int = 250
    model_options: dict[str, Any] = field(default_factory=dict)


DEMO_DATA: dict[str, DemoChoice] = {
    "ngsim-i80": DemoChoice(
        # 1,000 draws per chain: at 500 the unpooled fit's worst R-hat (over 70 variables)
        # was 1.012 on seed 0
        model="idm", num_drivers=14, draws=1000, warmup=500, residual="ar2",
        grid=(0.03, 0.3, 3.0),
        title="the IDM on 14 human drivers in congestion (NGSIM I-80)",
        why=("These choices keep the demo within about three minutes on two cores; the "
             "whole data set is carpool.load_example(\"ngsim-i80\") and "
             "the Human drivers page of the docs reports fits of all 76 at the defaults."),
    ),
    "usdot-platoon": DemoChoice(
        model="linear_acc", duration_s=300.0, draws=1000, warmup=500,
        # 4 vehicles make a narrow population funnel: at the hierarchical default 0.95,
        # seeds 0-3 left 2, 0, 0, 1 divergent transitions of 2,000 draws; 0.99 none
        target_accept=0.99, word="vehicle", refit_draws=500,
        title="the linear ACC controller on the bundled USDOT automated platoon",
        why=("The hierarchical fit runs at target_accept 0.99: 4 vehicles make a narrow "
             "population funnel."),
    ),
}

RING_CAPTION = ("Ring road (Sugiyama-style): 22 new drivers drawn from the fitted population "
                "on a 230 m ring for 300 s, time-space diagram coloured by speed")

#: Column headers of the held-out multi-step table in the report.
MULTISTEP_HEADERS = {"rmse_speed_m_s": "speed RMSE (m/s)", "rmse_gap_m": "gap RMSE (m)",
                     "crps_speed_m_s": "speed CRPS (m/s)", "crps_gap_m": "gap CRPS (m)",
                     "coverage_speed_90": "speed in 90% band", "coverage_gap_90":
                     "gap in 90% band"}

#: Sugiyama et al. (2008): waves moving upstream at about 20 km/h on their 230 m ring;
#: Treiber & Kesting (2013): jam fronts move upstream at -15 +- 5 km/h.
JAM_FRONT_KM_H = (-20.0, -10.0)


def choose_drivers(table: pd.DataFrame, num_drivers: int | None) -> list[str]:
    """``num_drivers`` drivers spread evenly over the order in which they start.

    Deterministic; all drivers when ``num_drivers`` is ``None`` or at least their number.
    """
    first = table.groupby("driver")["time"].min().sort_values(kind="stable")
    if num_drivers is None or num_drivers >= len(first):
        return list(first.index)
    if num_drivers < 2:
        raise InputError(f"the demo needs at least 2 drivers, got {num_drivers}")
    pick = np.linspace(0, len(first) - 1, num_drivers).round().astype(int)
    return list(first.index[pick])


@dataclass(frozen=True)
class DemoResult:
    fits: dict[str, Any]
    shrinkage: pd.DataFrame
    comparison: Any
    table: Any  # rich Table
    files: list[Path]
    multistep: pd.DataFrame | None = None
    ring: Any = None


def _ring(fit: Any, out: Path, seed: int, log: Callable[[str], Any]) -> tuple[Any, Any, list]:
    """A ring road of 22 drivers from the hierarchical fit's population: result, figure,
    files."""
    from carpool.io import atomic_write_text
    from carpool.plots.simulation import plot_time_space
    from carpool.simulate import ring

    log("simulating a ring road of 22 drivers from the population ...")
    res = ring(fit, num_vehicles=22, length_m=230.0, duration_s=300.0, drivers="population",
               seed=seed)
    fig = plot_time_space(res, out / "figures" / "ring")
    files = [atomic_write_text(out / "ring.csv", res.table.to_csv(index=False)),
             atomic_write_text(out / "ring_summary.csv", res.summary.to_csv()),
             out / "figures" / "ring.png", out / "figures" / "ring.svg"]
    return res, fig, files


def ring_text(summary: pd.Series, model: str) -> str:
    """How the simulated ring compares with Sugiyama's experiment and the jam-front speed."""
    wave = float(summary["wave_speed_km_h"])
    lo, hi = JAM_FRONT_KM_H
    collisions = int(summary["collisions"])
    if np.isfinite(wave):
        verdict = ("inside" if lo <= wave <= hi else "faster than" if wave < lo
                   else "slower than")
        waves = (f"Stop-and-go waves move at {wave:.1f} km/h, {verdict} the jam fronts "
                 f"observed on real roads (-15 +- 5 km/h, Treiber & Kesting 2013) and the "
                 f"waves of Sugiyama et al. (2008), about -20 km/h on their 230 m ring.")
    else:
        waves = "No travelling wave was detected."
    return (f"{waves} Mean speed {summary['mean_speed_m_s'] * 3.6:.1f} km/h, "
            f"{100 * summary['share_stopped']:.0f}% of the vehicle-time stopped, speed spread "
            f"grows x{summary['spread_growth']:.2f} over the run "
            f"({'string unstable' if summary['spread_growth'] > 1 else 'damped'}); "
            f"{collisions} collision{'s' if collisions != 1 else ''}, smallest gap "
            f"{summary['min_gap_m']:.2f} m."
            + (" The waves come from the IDM's string instability at this density (even gap "
               "5.5 m): drivers who accelerate gently (small a) let a queue discharge slowly, "
               "so waves persist; the IDM's braking strategy keeps every driver clear of its "
               "leader." if model == "idm" else ""))


def what_was_fitted(choice: DemoChoice, data: str, num: int, total: int, chains: int) -> str:
    """The report's paragraph on what the demo chose to fit."""
    words = (f"The demo fits {num} of the {total} {choice.word}s of the bundled {data} data"
             + (" (chosen evenly in the order they entered the recording)" if num < total
                else "")
             + (f", the first {choice.duration_s:g} s of each" if choice.duration_s else "")
             + f", at 5 Hz, with {chains} chains of {choice.warmup} warm-up iterations and "
             f"{choice.draws} draws. The comparison's held-out refits (two folds of "
             f"{choice.word}s) and the pooling dial"
             + (f" (tau = {', '.join(f'{t:g}' for t in choice.grid)})" if choice.grid else "")
             + f" use {choice.refit_warmup} and {choice.refit_draws}.")
    limit = choice.model_options.get("speed_limit")
    if limit is not None:
        words += (f" The prior of the desired speed v0 is centred at the road's speed limit, "
                  f"{limit:g} m/s ({limit * 3.6:.0f} km/h): below free-flow speed the data "
                  "barely identify v0.")
    if choice.residual is not None:
        words += (f" The dynamic-residual check fits pooled i.i.d. and {choice.residual} "
                  f"models to the first 70% of each {choice.word}'s record and predicts the "
                  "rest, restarting from the record every 3 s and 5 s (50 posterior draws "
                  "each).")
    return words + " " + choice.why


def _multistep(table: pd.DataFrame, choice: DemoChoice, chains: int, seed: int,
               log: Callable[[str], Any]) -> pd.DataFrame:
    """Pooled i.i.d. and dynamic-residual fits on each driver's first 70%, scored on the
    rest by 3 s and 5 s predictions."""
    import carpool
    from carpool.simulate.heldout import multistep_scores, split_in_time

    train, test = split_in_time(table, 0.7)
    rows = []
    for residual in ("iid", choice.residual):
        log(f"held-out multi-step prediction: pooled {choice.model}, residual {residual} ...")
        f = carpool.fit(train, choice.model, pooling="pooled",
                        sampler=NutsSettings(chains=chains, warmup=choice.refit_warmup,
                                             draws=choice.refit_draws, seed=seed),
                        model_options={**choice.model_options, "residual": residual},
                        warn=False)
        scores = multistep_scores(f, test, num_draws=50, seed=seed)
        rows.append(scores.reset_index().assign(residual=residual))
    frame = pd.concat(rows, ignore_index=True)
    frame = frame[["horizon", "residual", "rmse_speed_m_s", "rmse_gap_m", "crps_speed_m_s",
                   "crps_gap_m", "coverage_speed_90", "coverage_gap_90"]]
    return frame.sort_values(["horizon", "residual"]).reset_index(drop=True)


def _population_table(fits: dict[str, Any], word: str) -> Any:
    """Per parameter: pooled value, unpooled centre, hierarchical population (medians), and
    how many groups lie outside the physical ranges (80 columns)."""
    from rich.markup import escape
    from rich.table import Table

    from carpool.inference.plausibility import count_outside, plausibility

    hier = fits["hierarchical"]
    table = Table(title=f"{hier.spec.name}: population values (posterior means)")
    table.add_column("parameter")
    for head in ("pooled", "unpooled", "hierarchical", "range"):
        table.add_column(head, justify="right")
    pops = {m: f.summary().query("kind == 'population'").set_index("parameter")["mean"]
            for m, f in fits.items()}
    ranges = hier.spec.physical_ranges
    for p in hier.spec.parameters:
        rng = ranges.get(p.name)
        table.add_row(escape(f"{p.name} [{p.unit}]"),
                      *(f"{pops[m][p.name]:.3g}" for m in POOLING_MODES),
                      "-" if rng is None else f"{rng[0]:g}-{rng[1]:g}")
    if ranges:
        counts = []
        for mode in ("unpooled", "hierarchical"):
            n, _ = count_outside(plausibility(fits[mode]))
            counts.append(f"{mode} {n} of {len(fits[mode].group_ids)}")
        table.caption = (f"{word}s with an estimate outside the physical ranges: "
                         + ", ".join(counts))
    return table


def run_demo(out: str | Path, *, data: str = "ngsim-i80", model: str | None = None,
             num_drivers: int | None = None, duration_s: float | None = None,
             draws: int | None = None, warmup: int | None = None, chains: int = 4,
             seed: int = 0, speed_limit: float | None = None, report: bool = True,
             log: Callable[[str], Any] = lambda _: None) -> DemoResult:
    """Fit pooled, unpooled and hierarchical models to a bundled data set and compare them.

    Parameters
    ----------
    out
        Output folder.
    data
        A key of :data:`DEMO_DATA`: ``"ngsim-i80"`` (human drivers, the IDM) or
        ``"usdot-platoon"`` (automated cars, the linear ACC controller).
    model, num_drivers, duration_s, draws, warmup
        Override the data set's :class:`DemoChoice`.
    chains, seed
        NUTS chains and seed of every fit.
    speed_limit
        m/s: centre the v0 prior there (see :func:`carpool.models.carfollowing.carfollowing_spec`).
    report
        Also compare, sweep, simulate and write ``report.html``; ``False`` stops after the
        fits and the shrinkage table.

    Writes to ``out``: ``fit_<pooling>.nc``, ``summary_<pooling>.json``, ``shrinkage.csv``,
    ``shrinkage.png`` / ``.svg``, ``timing.json``, and with ``report``: ``comparison.json``
    (the ``carpool compare --json`` contract), ``ring.csv``, ``ring_summary.csv``,
    ``multistep.csv`` (NGSIM), ``figures/`` and the self-contained ``report.html``.
    """
    import time

    import carpool
    from carpool.compare import shrinkage_table
    from carpool.inference.summary import summary_dict
    from carpool.io import atomic_write_text
    from carpool.pipeline import FitOptions, build_report
    from carpool.plots.shrinkage import plot_shrinkage

    if data not in DEMO_DATA:
        raise InputError(f"unknown demo data {data!r}; choose one of {list(DEMO_DATA)}")
    base = DEMO_DATA[data]
    choice = replace(base, **{k: v for k, v in {
        "model": model, "num_drivers": num_drivers, "duration_s": duration_s,
        "draws": draws, "warmup": warmup}.items() if v is not None})
    if choice.model != base.model:  # the data set's spec options belong to its own model
        choice = replace(choice, model_options={})
    if speed_limit is not None:
        choice = replace(choice, model_options={**choice.model_options,
                                                "speed_limit": speed_limit})
    start = time.perf_counter()
    say = log

    def log(message: str) -> None:
        say(f"[{time.perf_counter() - start:4.0f} s] {message}")

    out = Path(out)
    full = carpool.load_example(data, max_duration_s=choice.duration_s)
    table = full[full["driver"].isin(choose_drivers(full, choice.num_drivers))]
    table = table.reset_index(drop=True)
    num = table["driver"].nunique()
    log(f"bundled {data}: {num} of {full['driver'].nunique()} {choice.word}s, "
        f"{len(table)} rows at 5 Hz; model {choice.model}")
    fits, files = {}, []
    for pooling in POOLING_MODES:
        log(f"fitting {pooling} ...")
        sampler = NutsSettings(chains=chains, warmup=choice.warmup, draws=choice.draws,
                               seed=seed, target_accept=choice.target_accept
                               if pooling == "hierarchical" else None)
        f = carpool.fit(table, choice.model, pooling=pooling, sampler=sampler,
                        model_options=choice.model_options)
        fits[pooling] = f
        files.append(f.save(out / f"fit_{pooling}.nc"))
        files.append(atomic_write_text(out / f"summary_{pooling}.json",
                                       json.dumps(summary_dict(f), indent=2)))
    shrink = shrinkage_table(fits["pooled"], fits["unpooled"], fits["hierarchical"])
    files.append(atomic_write_text(out / "shrinkage.csv", shrink.to_csv(index=False)))
    plot_shrinkage(shrink, out / "shrinkage")
    files += [out / "shrinkage.png", out / "shrinkage.svg"]
    timing = {p: f.timing | {"diagnostics": f.diagnostics} for p, f in fits.items()}
    files.append(atomic_write_text(out / "timing.json", json.dumps(timing, indent=2)))

    comparison, multistep, ring_result = None, None, None
    if report:
        from carpool.plots.simulation import plot_follow_bands
        from carpool.simulate import follow

        light = NutsSettings(chains=chains, warmup=choice.refit_warmup,
                             draws=choice.refit_draws, seed=seed)
        options = FitOptions(model=choice.model, sampler=NutsSettings(
            chains=chains, warmup=choice.warmup, draws=choice.draws, seed=seed),
            model_options=dict(choice.model_options))
        hier = fits["hierarchical"]
        ring_result, ring_fig, ring_files = _ring(hier, out, seed, log)
        files += ring_files
        summary = ring_result.summary.iloc[0]
        notes: dict[str, Any] = {"What the demo fitted": what_was_fitted(
            choice, data, num, full["driver"].nunique(), chains)}
        extra = {RING_CAPTION: ring_fig}
        driver = hier.group_ids[int(np.argsort(hier.data.group_sizes)[num // 2])]
        log(f"simulating {choice.word} {driver} behind its recorded leader ...")
        follow_result = follow(hier, table, driver, num_draws=200, seed=seed)
        extra[f"{choice.word.capitalize()} {driver} simulated behind its recorded leader "
              "(hierarchical fit, 200 posterior draws, closed loop over the whole record)"] = \
            plot_follow_bands(follow_result, out / "figures" / "follow")
        files += [out / "figures" / "follow.png", out / "figures" / "follow.svg"]
        if choice.residual is not None:
            multistep = _multistep(table, choice, chains, seed, log)
            files.append(atomic_write_text(out / "multistep.csv", multistep.to_csv(index=False)))
            notes[f"Held-out multi-step prediction: i.i.d. vs {choice.residual} residuals"] = \
                multistep.round(3).rename(columns=MULTISTEP_HEADERS)
        notes["Ring road of new drivers"] = ring_text(summary, choice.model)
        rep = build_report(table, out / "report.html", options, fits=fits, ldo_folds=2,
                           grid=choice.grid,
                           refit_sampler=light, sweep_sampler=light,
                           figures_dir=out / "figures",
                           title=f"carpool demo: {choice.title}",
                           extra_figures=extra, notes=notes, log=log)
        comparison = rep.comparison
        files += rep.files
        files.append(atomic_write_text(out / "comparison.json",
                                       json.dumps(comparison.to_dict(), indent=2)))

    table_out = _population_table(fits, choice.word)
    table_out.caption = (table_out.caption or "") + (
        "; wall time (compile + sampling): "
        + ", ".join(f"{p} {f.timing['total_s']:.0f} s" for p, f in fits.items())
        + f"; the whole demo {time.perf_counter() - start:.0f} s")
    return DemoResult(fits, shrink, comparison, table_out, files, multistep, ring_result)
