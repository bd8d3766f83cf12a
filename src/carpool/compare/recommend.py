"""Which pooling mode do the data support? A rule a user can read, with its reason in words.

The rule, in the spirit of the seed's "when to use each model":

1. Score each mode by its expected log predictive density (PSIS-LOO by default, or held-out
   leave-future-out) and find the best. Modes whose score is within
   :data:`TIE_SE` standard errors of the paired difference of the best are *tied*:
   the data cannot tell them apart.
2. Among tied modes prefer the simplest story:
   - **pooled** if it is tied: the groups do not differ detectably;
   - **unpooled** if it is tied and the hierarchical fit barely pools
     (median pooling factor below :data:`STANDS_ALONE`): every group has enough data to stand
     alone, and the population adds nothing to the estimates;
   - otherwise the best-scoring mode, which is usually **hierarchical**: groups differ, and
     some have too little data to stand alone.
3. The score of step 1 follows the user's purpose (:data:`PURPOSES`): PSIS-LOO to describe
   the groups in the data, leave-future-out to forecast the same groups, leave-groups-out to
   simulate new groups. Whatever the purpose, every other score that puts another mode
   ahead of the recommended one beyond :data:`TIE_SE` standard errors is named in the
   reason (:func:`held_out_caveats`), with the purpose that would choose it; so a mode that
   predicts both the groups' futures and new groups worse never comes without saying so.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from carpool.compare.scores import PointwiseScore, paired_difference

__all__ = ["recommend", "held_out_caveats", "PURPOSES", "TIE_SE", "STANDS_ALONE",
           "NEEDS_POOLING"]

#: What the fit is for -> the score that decides: describe the groups in the data
#: (PSIS-LOO), forecast the same groups (leave-future-out), or predict new groups
#: (leave-groups-out).
PURPOSES = {"describe": "loo", "forecast": "lfo", "new-groups": "ldo"}
#: Words for each score in a reason.
SCORE_WORDS = {"loo": ("elpd_loo", "describe"),
               "lfo": ("leave-future-out elpd", "forecast"),
               "ldo": ("leave-groups-out elpd", "new-groups")}

#: Score differences within this many standard errors of the paired difference are ties.
TIE_SE = 2.0
#: Median pooling factor below which groups are said to stand alone.
STANDS_ALONE = 0.1
#: Pooling factor above which a group is said to have too little data to stand alone.
NEEDS_POOLING = 0.5


def _tau_text(population: pd.DataFrame) -> str:
    """Which population scales are clearly above 0 (94% HDI lower end above 0.05)."""
    if population.empty:
        return ""
    clear = [r for r in population.itertuples() if r.lo > 0.05]
    vague = [r for r in population.itertuples() if r.lo <= 0.05]

    def fmt(rows: list) -> str:
        return ", ".join(f"{r.parameter} {r.mean:.2g} [{r.lo:.2g}, {r.hi:.2g}]" for r in rows)

    parts = []
    if clear:
        parts.append(f"tau clearly above 0 for {fmt(clear)}")
    if vague:
        parts.append(f"possibly near 0 for {fmt(vague)}")
    return "; ".join(parts)


def recommend(scores: Mapping[str, PointwiseScore], *, score_name: str,
              pooling_factors: pd.DataFrame | None = None,
              population: pd.DataFrame | None = None, group_word: str = "groups"
              ) -> tuple[dict[str, str], list[str]]:
    """Apply the rule; returns ``({"mode", "reason"}, ranking)``.

    ``scores`` maps each mode to its pointwise score on the same observations;
    ``pooling_factors`` (of the hierarchical fit) and ``population`` (tau rows) make the
    reason specific.
    """
    if not scores:
        raise ValueError("nothing to compare")
    pf = pooling_factors if pooling_factors is not None else pd.DataFrame()
    population = population if population is not None else pd.DataFrame()
    best = max(scores, key=lambda m: scores[m].elpd)
    diffs = {m: paired_difference(scores[best], s) if m != best else (0.0, 0.0)
             for m, s in scores.items()}
    tied = [m for m, (d, se) in diffs.items() if m == best or d <= TIE_SE * se]

    def delta(m: str) -> str:
        d, se = diffs[m]
        return f"{score_name} {d:+.1f} +/- {se:.1f} behind {best}" if m != best else \
            f"best {score_name}"

    median_pf = float(np.median(pf["pooling_factor"])) if not pf.empty else float("nan")
    if not pf.empty:
        per_group = pf.groupby("group", sort=False)["pooling_factor"].max()
        needy = int((per_group > NEEDS_POOLING).sum())
        num_groups = len(per_group)
    else:
        needy, num_groups = 0, 0
    tau_text = _tau_text(population)

    if "pooled" in tied:
        mode = "pooled"
        reason = (f"pooled: scores as well as the other modes ({delta('pooled')}); the "
                  f"{group_word} do not differ detectably"
                  + (f" ({tau_text})" if tau_text else "")
                  + ", so one shared parameter set is the simplest adequate model")
    elif "unpooled" in tied and not pf.empty and median_pf < STANDS_ALONE:
        mode = "unpooled"
        reason = (f"unpooled: scores as well as hierarchical ({delta('unpooled')}); the "
                  f"{group_word} differ strongly and each has enough data to stand alone "
                  f"(median pooling factor {median_pf:.2f}), so the population adds nothing "
                  "to the per-group estimates")
    else:
        mode = "hierarchical" if "hierarchical" in tied else best
        if mode == "hierarchical":
            parts = [delta("hierarchical")]
            if tau_text:
                parts.append(f"{group_word} differ ({tau_text})")
            if num_groups:
                verb = "has" if needy == 1 else "have"
                parts.append(f"but {needy} of {num_groups} {group_word} {verb} too little "
                             f"data to stand alone in at least one parameter (pooling factor "
                             f"> {NEEDS_POOLING})")
            reason = "hierarchical: " + "; ".join(parts)
        else:
            reason = f"{mode}: {delta(mode)}, ahead of the others beyond Monte Carlo noise"
    others = sorted((m for m in scores if m != mode), key=lambda m: -scores[m].elpd)
    return {"mode": mode, "reason": reason}, [mode, *others]


def held_out_caveats(mode: str, scores: Mapping[str, Mapping[str, PointwiseScore]],
                     group_word: str = "groups", *, lfo_word: str = "leave-future-out"
                     ) -> list[str]:
    """Scores on which another mode is ahead of ``mode`` beyond :data:`TIE_SE` standard errors.

    Parameters
    ----------
    mode
        The recommended mode.
    scores
        Score kind (``"loo"``, ``"lfo"``, ``"ldo"``) -> mode -> pointwise score; kinds
        without ``mode`` are skipped.
    group_word, lfo_word
        The groups and the leave-future-out score in words
        (:class:`carpool.compare.words.Words`).

    Returns
    -------
    list of str
        One phrase per score and mode ahead, e.g. ``"pooled is ahead on leave-future-out elpd
        (+2552 +/- 310; RMSE 0.125 vs 0.318), the score for purpose='forecast'"``.
    """
    out = []
    for kind, by_mode in scores.items():
        if mode not in by_mode:
            continue
        name, purpose = SCORE_WORDS[kind]
        name = name.replace("groups", group_word).replace("leave-future-out", lfo_word)
        for other, score in by_mode.items():
            if other == mode:
                continue
            d, se = paired_difference(score, by_mode[mode])
            if d > TIE_SE * se:
                rmse = (f"; RMSE {score.rmse:.3g} vs {by_mode[mode].rmse:.3g}"
                        if np.isfinite(score.rmse) else "")
                out.append(f"{other} is ahead on {name} ({d:+.0f} +/- {se:.0f}{rmse}), the "
                           f"score for purpose='{purpose}'")
    return out
