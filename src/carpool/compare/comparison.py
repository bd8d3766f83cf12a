"""``carpool.compare``: the three pooling modes side by side, scored, with a recommendation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from carpool.compare.pooling_factors import pooling_factors
from carpool.compare.recommend import PURPOSES, SCORE_WORDS, held_out_caveats, recommend
from carpool.compare.results import MODE_COLUMNS, Comparison
from carpool.compare.scores import (
    PARETO_K_LIMIT,
    PointwiseScore,
    group_folds,
    heldout_score,
    lfo_rows,
    lfo_split,
    loo_score,
    new_group_score,
    paired_difference,
    select_groups,
)
from carpool.errors import InputError
from carpool.pooling.spec import POOLING_MODES
from carpool.verdicts import rhat_ok

if TYPE_CHECKING:
    from carpool.inference.fit import Fit
    from carpool.inference.nuts import NutsSettings
    from carpool.inference.svi import SviSettings

__all__ = ["compare", "population_scales", "as_mode_dict"]

log = logging.getLogger(__name__)


def as_mode_dict(fits: Mapping[str, Fit] | Sequence[Fit]) -> dict[str, Fit]:
    """``{pooling mode: fit}`` from a mapping or a sequence of fits of distinct modes."""
    items = list(fits.values()) if isinstance(fits, Mapping) else list(fits)
    out: dict[str, Fit] = {}
    for f in items:
        if f.pooling in out:
            raise InputError(f"two {f.pooling} fits given; compare one fit per pooling mode")
        out[f.pooling] = f
    if len(out) < 2:
        raise InputError("compare needs fits in at least two pooling modes")
    first = next(iter(out.values()))
    for f in out.values():
        if list(f.group_ids) != list(first.group_ids) or f.data.num_obs != first.data.num_obs:
            raise InputError("the fits must be of the same data (same groups and observations)")
        if f.spec.name != first.spec.name:
            raise InputError(f"the fits are of different models: {first.spec.name!r} and "
                             f"{f.spec.name!r}")
    return {m: out[m] for m in POOLING_MODES if m in out}


def population_scales(fit: Fit, hdi_prob: float = 0.94) -> pd.DataFrame:
    """tau per parameter of a hierarchical fit: ``parameter``, ``mean``, ``lo``, ``hi``."""
    from carpool.inference.summary import stats_table

    if fit.pooling != "hierarchical":
        return pd.DataFrame(columns=["parameter", "mean", "lo", "hi"])
    st = stats_table(fit.idata.posterior["tau"].values, hdi_prob)
    return pd.DataFrame({"parameter": fit.parameter_names, "mean": st["mean"],
                         "lo": st["lo"], "hi": st["hi"]})


def _heldout_refit_score(kind: str, fit: Fit, train: Any, test: Any,
                         sampler: NutsSettings | SviSettings | None, seed: int
                         ) -> PointwiseScore:
    """Refit on ``train`` and score ``test``: later steps (``"lfo"``) or new groups
    (``"ldo"``). One task of :func:`compare` (module level, so workers import it)."""
    from carpool.inference.run import refit

    trained = refit(fit, train, sampler=sampler)
    if kind == "lfo":
        return heldout_score(trained, test, seed=seed)
    return new_group_score(trained, test, seed=seed)


def _warm_refit_scores(fit: Fit, tasks: list[tuple[str, Any, Any, int]],
                       sampler: NutsSettings | None) -> list[PointwiseScore]:
    """All held-out refits of one fit, warm-started and sharing one compiled sampler
    (:func:`carpool.inference.warm.warm_refits`), each scored where it ran. ``tasks``:
    ``(kind, HeldOut, test data, seed)``. One task of :func:`compare` per pooling mode."""
    from carpool.inference.warm import warm_refits

    refits = warm_refits(fit, [t[1] for t in tasks], sampler, seeds=[t[3] for t in tasks])
    return [heldout_score(r, test, seed=seed) if kind == "lfo"
            else new_group_score(r, test, seed=seed)
            for r, (kind, _, test, seed) in zip(refits, tasks, strict=True)]


def compare(
    fits: Mapping[str, Fit] | Sequence[Fit],
    *,
    lfo: bool = True,
    ldo: bool = True,
    lfo_fraction: float = 0.2,
    ldo_folds: int = 5,
    purpose: str = "describe",
    refit_sampler: NutsSettings | SviSettings | None = None,
    warm_start: bool = True,
    seed: int = 0,
    log_fn: Callable[[str], Any] = lambda _: None,
    executor: Any = None,
) -> Comparison:
    """Compare fits of the same data in different pooling modes.

    Parameters
    ----------
    fits
        Fits of one model to the same data, one per pooling mode (a mapping or a sequence).
    lfo
        Leave-future-out: refit each mode on the first ``1 - lfo_fraction`` of every group's
        series and score the rest (log predictive density and RMSE of ``y``). A formula
        fit's rows are taken in the table's order: a forecast where they are in time order
        within each group, else a within-group held-out score, named leave-last-rows-out
        in its messages (:mod:`carpool.compare.words`).
    ldo
        Leave-groups-out (leave-drivers-out): refit the pooled and hierarchical modes without
        each of ``ldo_folds`` folds of groups and predict the held-out groups as new groups
        from the population. Unpooled fits cannot predict new groups: their score is NaN.
    purpose
        What the fit is for, which picks the score that decides the recommendation:
        ``"describe"`` the groups in the data (PSIS-LOO on the full fits), ``"forecast"`` the
        same groups (leave-future-out; needs ``lfo``) or simulate ``"new-groups"`` (new
        drivers; leave-groups-out, needs ``ldo``). Other scores that favour another mode are
        named in the recommendation's reason (:mod:`carpool.compare.recommend`).
    refit_sampler
        The sampler of the held-out refits; ``None``: warm-started refits take
        :func:`carpool.inference.warm.warm_settings` (the fit's chains, 150 warm-up
        iterations, half its draws), refits from scratch each fit's own settings (see
        :func:`carpool.inference.run.refit`).
    warm_start
        Refit NUTS fits with i.i.d. residuals warm: every held-out refit of a fit is the
        same compiled program on its full data with the held-out observations masked,
        started at the full fit's draws with its posterior variance as the mass matrix
        (:mod:`carpool.inference.warm`; about a third of the cost of refits from scratch,
        ``docs/compare.md``). ``False``, SVI, AR / GP residuals and fits whose latent sites
        the warm start cannot rebuild from the posterior
        (:func:`carpool.inference.warm.warm_start_applies`) refit from scratch.
        :attr:`Comparison.refits` says which was done.
    log_fn
        Called with a line of progress text before each refit (as refits finish when
        they run elsewhere).
    executor
        Where the held-out refits (one per mode for leave-future-out, one per mode and
        fold for leave-groups-out) run: ``None`` in this process, one after another; or
        local worker processes, a scheduler address or a Dask client
        (:func:`carpool.batch.as_executor`). Each refit is scored where it ran.
    """
    from carpool.parallel.executors import map_logged

    if purpose not in PURPOSES:
        raise InputError(f"unknown purpose {purpose!r}; choose one of {list(PURPOSES)}")
    if (purpose == "forecast" and not lfo) or (purpose == "new-groups" and not ldo):
        raise InputError(f"purpose={purpose!r} needs its held-out score "
                         f"({'lfo' if purpose == 'forecast' else 'ldo'}=True)")
    from carpool.compare.words import words_for

    by_mode = as_mode_dict(fits)
    any_fit = next(iter(by_mode.values()))
    words = words_for(any_fit.spec)
    group_word = words.groups
    warn: list[str] = []

    loo = {m: loo_score(f) for m, f in by_mode.items()}
    for m, s in loo.items():
        if s.num_high_k:
            warn.append(f"{m}: PSIS-LOO unreliable at {s.num_high_k} observation(s) (Pareto k "
                        f"> {PARETO_K_LIMIT}, max {s.max_pareto_k:.2f}); trust the held-out "
                        "scores more")
        d = by_mode[m].diagnostics
        if rhat_ok(d["max_rhat"]) is False or d["divergences"] > 0:
            warn.append(f"{m}: the fit has not converged (max R-hat {d['max_rhat']:.3f}, "
                        f"{d['divergences']} divergences); its scores are suspect")

    from carpool.inference.warm import HeldOut, warm_start_applies

    warm_modes = {m for m, f in by_mode.items()
                  if warm_start and warm_start_applies(f, refit_sampler)}
    jobs: list[tuple[str, str]] = []  # (score, mode) of each held-out refit, in order
    tasks: dict[str, list[tuple[str, HeldOut, Any, int]]] = {m: [] for m in warm_modes}
    args: list[tuple[Any, ...]] = []
    labels: list[str] = []
    data = any_fit.data
    none = np.zeros(0, dtype=int)
    if lfo:
        train, test = lfo_split(data, lfo_fraction)
        held = HeldOut(~lfo_rows(data, lfo_fraction), none)
        for m, f in by_mode.items():
            jobs.append(("lfo", m))
            if m in warm_modes:
                tasks[m].append(("lfo", held, test, seed))
                continue
            args.append(("lfo", f, train, test, refit_sampler, seed))
            labels.append(f"{words.lfo}: refitting {m} without "
                          f"{words.lfo_said(lfo_fraction)}")
    if ldo and data.num_groups >= 3:
        folds = group_folds(data.num_groups, ldo_folds, seed=seed)
        for m, f in by_mode.items():
            if m == "unpooled":
                continue
            for k, fold in enumerate(folds):
                jobs.append(("ldo", m))
                if m in warm_modes:
                    tasks[m].append(("ldo", HeldOut(~np.isin(data.group_index, fold), fold),
                                     select_groups(data, fold), seed + k))
                    continue
                keep = np.setdiff1d(np.arange(data.num_groups), fold)
                args.append(("ldo", f, select_groups(f.data, keep),
                             select_groups(f.data, fold), refit_sampler, seed + k))
                labels.append(f"leave-{group_word}-out: {m}, fold {k + 1} of {len(folds)}")
    elif ldo:
        warn.append(f"leave-{group_word}-out skipped: it needs at least 3 {group_word}")
    warm_jobs = [m for m in by_mode if tasks.get(m)]
    warm_args = [(by_mode[m], tasks[m], refit_sampler) for m in warm_jobs]
    warm_labels = [f"held-out refits of {m}: {len(tasks[m])}, warm-started from its fit"
                   for m in warm_jobs]
    warm_scores = dict(zip(warm_jobs, map_logged(
        executor, _warm_refit_scores, warm_args, warm_labels, log_fn,
        what="warm-started held-out refits"), strict=True))
    cold = iter(map_logged(executor, _heldout_refit_score, args, labels, log_fn,
                           what="held-out refits"))
    scores = [warm_scores[m].pop(0) if m in warm_scores else next(cold) for _, m in jobs]
    refits = _refits_said(warm_jobs, [m for m in by_mode if m not in warm_jobs and
                                      any(mm == m for _, mm in jobs)])
    lfo_scores = {m: s for (kind, m), s in zip(jobs, scores, strict=True) if kind == "lfo"}
    ldo_parts: dict[str, list[PointwiseScore]] = {}
    for (kind, m), s in zip(jobs, scores, strict=True):
        if kind == "ldo":
            ldo_parts.setdefault(m, []).append(s)
    ldo_scores = {m: PointwiseScore(np.concatenate([p.lpd for p in parts]),
                                    np.concatenate([p.sq_err for p in parts]))
                  for m, parts in ldo_parts.items()}

    pf = (pooling_factors(by_mode["hierarchical"], unpooled=by_mode.get("unpooled"))
          if "hierarchical" in by_mode else pd.DataFrame())
    population = (population_scales(by_mode["hierarchical"]) if "hierarchical" in by_mode
                  else pd.DataFrame())
    by_kind = {"loo": loo, "lfo": lfo_scores, "ldo": ldo_scores}
    kind = PURPOSES[purpose]
    if not by_kind[kind]:
        raise InputError(f"purpose={purpose!r}: no {SCORE_WORDS[kind][0]} could be computed"
                         + (f" (it needs at least 3 {group_word})" if kind == "ldo" else ""))
    name = SCORE_WORDS[kind][0].replace("groups", group_word).replace(
        "leave-future-out", words.lfo)
    rec, ranking = recommend(by_kind[kind], score_name=name, pooling_factors=pf,
                             population=population, group_word=group_word)
    if kind == "ldo":  # unpooled cannot predict new groups: rank it last
        ranking = [m for m in ranking if m in ldo_scores] + [
            m for m in ranking if m not in ldo_scores]
    caveats = held_out_caveats(rec["mode"], by_kind, group_word, lfo_word=words.lfo)
    if kind == "loo" and loo[rec["mode"]].num_high_k:
        caveats.append(f"PSIS-LOO of {rec['mode']} is unreliable at "
                       f"{loo[rec['mode']].num_high_k} observation(s) (Pareto k > "
                       f"{PARETO_K_LIMIT})")
    if caveats:
        rec = {**rec, "reason": rec["reason"] + ". But " + "; ".join(caveats)}
    rec = {**rec, "purpose": purpose}

    best = max(loo, key=lambda m: loo[m].elpd)
    rows = {}
    for m in by_mode:
        diff, dse = paired_difference(loo[best], loo[m]) if m != best else (0.0, 0.0)
        lf, ld = lfo_scores.get(m), ldo_scores.get(m)
        rows[m] = {
            "elpd_loo": loo[m].elpd, "se": loo[m].se, "p_loo": loo[m].p_loo,
            "elpd_diff": diff, "dse": dse, "max_pareto_k": loo[m].max_pareto_k,
            "num_high_k": loo[m].num_high_k,
            "lfo_elpd": lf.elpd if lf else np.nan, "lfo_rmse_speed": lf.rmse if lf else np.nan,
            "ldo_elpd": ld.elpd if ld else np.nan, "ldo_rmse_speed": ld.rmse if ld else np.nan,
            "rank": ranking.index(m) + 1,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")[list(MODE_COLUMNS)]
    table.index.name = "mode"
    return Comparison(table=table, recommendation=rec, pooling_factors=pf,
                      population=population, warnings=tuple(warn), refits=refits)


def _refits_said(warm: list[str], cold: list[str]) -> str:
    """How the held-out scores were computed, in one sentence."""
    parts = []
    if warm:
        parts.append(f"{', '.join(warm)}: warm-started from the full fit (held-out "
                     "observations masked, one compiled sampler per fit)")
    if cold:
        parts.append(f"{', '.join(cold)}: refitted from scratch")
    return ("held-out refits: " + "; ".join(parts)) if parts else ""
