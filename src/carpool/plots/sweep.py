"""The pooling dial: group estimates and the held-out score against a fixed tau."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carpool.errors import InputError
from carpool.verdicts import PARETO_K_MAX

if TYPE_CHECKING:
    from carpool.compare.results import SweepResult

__all__ = ["plot_sweep"]

_TAU_LABEL = "population scale tau (latent sd)"


def plot_sweep(sweep: SweepResult, path: str | Path | None = None) -> Any:
    """One panel per parameter of every group's estimate against tau, and the score below.

    Each group is a line (posterior mean) with a faint band (its interval) over the grid
    of fixed population scales; tau -> 0 is complete pooling and tau -> infinity no pooling,
    so the pooled estimate is marked at the left edge and each group's unpooled estimate at
    the right edge (when :attr:`~carpool.compare.SweepResult.ends` is given). The learned
    tau's posterior mean is a dashed vertical line with its interval shaded (when
    :attr:`~carpool.compare.SweepResult.learned_tau` is given). The bottom panel is the
    PSIS-LOO elpd +- se at each tau; points with Pareto k > 0.7 are marked.

    Parameters
    ----------
    sweep
        From :func:`carpool.compare.pooling_sweep`. Grid points with tau <= 0 cannot be shown
        on the log axis and are left out.
    path
        When given, writes ``path`` with the suffixes ``.png`` and ``.svg``.

    Returns
    -------
    matplotlib.figure.Figure
        Natural units on the y axes; a legend of the groups when there are at most 10.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    est = sweep.estimates.copy()
    est["group"] = est["group"].astype(str)
    est = est[est["tau"] > 0]
    if est.empty:
        raise InputError("the sweep has no estimates at a positive tau to plot")
    names = list(dict.fromkeys(est["parameter"]))
    groups = list(dict.fromkeys(est["group"]))
    G, P = len(groups), len(names)
    cmap = plt.get_cmap("tab10" if G <= 10 else "tab20")
    colour = {g: cmap(k % cmap.N) for k, g in enumerate(groups)}
    taus = np.unique(est["tau"].to_numpy(dtype=float))
    ends = sweep.ends.copy()
    if not ends.empty:
        ends["group"] = ends["group"].astype(str)
    pad = 3.0 if not ends.empty else 1.0  # room for the pooled / unpooled markers
    x_left, x_right = taus.min() / pad, taus.max() * pad
    learned = sweep.learned_tau
    scores = sweep.scores[sweep.scores["tau"] > 0] if not sweep.scores.empty else sweep.scores
    is_group_legend = G <= 10

    ncols = min(P, 3)
    nrows = -(-P // ncols)
    has_scores = not scores.empty
    width = 4.2 * ncols + (1.9 if is_group_legend or not ends.empty else 0.4)
    fig = plt.figure(figsize=(width, 3.3 * nrows + (2.8 if has_scores else 0.0) + 0.8))
    gs = fig.add_gridspec(nrows + has_scores, ncols,
                          height_ratios=[1.0] * nrows + ([0.85] if has_scores else []))
    band_alpha = 0.12 if G <= 10 else 0.6 / G  # overlapping bands stack up
    first_ax = None
    for k, name in enumerate(names):
        ax = fig.add_subplot(gs[k // ncols, k % ncols], sharex=first_ax)
        first_ax = first_ax or ax
        t = est[est["parameter"] == name]
        unit = str(t["unit"].iloc[0]) if "unit" in t and len(t) else ""
        values = [t["lo"].to_numpy(float), t["hi"].to_numpy(float)]
        e = ends[ends["parameter"] == name] if not ends.empty else ends
        for g in groups:
            tg = t[t["group"] == g].sort_values("tau")
            if tg.empty:
                continue
            ax.fill_between(tg["tau"], tg["lo"], tg["hi"], color=colour[g], alpha=band_alpha,
                            lw=0)
            ax.plot(tg["tau"], tg["mean"], color=colour[g], lw=1.4, marker="o", ms=2.5,
                    label=g)
            eg = e[e["group"] == g] if not e.empty else e
            if not eg.empty:
                pooled, unpooled = float(eg["pooled"].iloc[0]), float(eg["unpooled"].iloc[0])
                ax.plot([x_left, tg["tau"].iloc[0]], [pooled, tg["mean"].iloc[0]], ":",
                        color=colour[g], lw=0.8)
                ax.plot([tg["tau"].iloc[-1], x_right], [tg["mean"].iloc[-1], unpooled], ":",
                        color=colour[g], lw=0.8)
                ax.plot(x_right, unpooled, "D", color=colour[g], ms=5, mec="black", mew=0.5,
                        zorder=4)
                values.append(np.array([pooled, unpooled]))
        if not e.empty:
            ax.plot(np.full(len(e), x_left), e["pooled"], "s", color="0.45", ms=6, mec="black",
                    mew=0.5, zorder=4)
            tr = blended_transform_factory(ax.transData, ax.transAxes)
            for x, text, ha in ((x_left, "pooled", "left"), (x_right, "unpooled", "right")):
                ax.text(x, 1.01, text, transform=tr, ha=ha, va="bottom", fontsize=7,
                        color="0.3")
        lt = learned[learned["parameter"] == name] if not learned.empty else learned
        if not lt.empty:
            r = lt.iloc[0]
            ax.axvspan(float(r["lo"]), float(r["hi"]), color="0.5", alpha=0.15, lw=0)
            ax.axvline(float(r["mean"]), color="black", ls="--", lw=1.1)
        ax.set_xscale("log")
        v = np.concatenate(values)
        if (v > 0).all() and v.max() / v.min() > 20:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=11, pad=12 if not e.empty else 6)
        ax.set_ylabel(f"{name} ({unit})" if unit else name, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if k // ncols == nrows - 1 or k + ncols >= P:
            ax.set_xlabel(_TAU_LABEL, fontsize=9)
    assert first_ax is not None
    first_ax.set_xlim(x_left / 1.4, x_right * 1.4)

    if has_scores:
        ax = fig.add_subplot(gs[nrows, :], sharex=first_ax)
        s = scores.sort_values("tau")
        ax.errorbar(s["tau"], s["elpd_loo"], yerr=s["se"], fmt="o-", color="black", ms=4,
                    capsize=3, lw=1.2, label="elpd_loo +- se")
        best = s.loc[s["elpd_loo"].idxmax()]
        ax.plot(best["tau"], best["elpd_loo"], "*", color="tab:red", ms=13, zorder=4,
                label=f"best: tau = {best['tau']:.3g}")
        if "max_pareto_k" in s:
            bad = s[s["max_pareto_k"] > PARETO_K_MAX]
            if not bad.empty:
                ax.plot(bad["tau"], bad["elpd_loo"], "o", mfc="none", mec="tab:red", ms=10,
                        label=f"Pareto k > {PARETO_K_MAX} (LOO unreliable)")
        ax.set_title("held-out score (PSIS-LOO elpd)", fontsize=11)
        ax.set_ylabel("elpd_loo (higher is better)", fontsize=10)
        ax.set_xlabel(_TAU_LABEL, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")

    handles: list[Any] = []
    if is_group_legend:
        handles += [Line2D([], [], color=colour[g], lw=1.6, label=g) for g in groups]
    if not ends.empty:
        handles += [Line2D([], [], ls="", marker="s", color="0.45", mec="black",
                           label="pooled (tau -> 0)"),
                    Line2D([], [], ls="", marker="D", color="white", mec="black",
                           label="unpooled (tau -> inf)")]
    if not learned.empty:
        handles += [Patch(color="0.5", alpha=0.3, label="learned tau\n(mean, interval)")]
    if handles:
        fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    more = "" if is_group_legend else f" ({G} groups{', colours repeat' if G > 20 else ''})"
    fig.suptitle(f"Pooling dial: estimates with tau fixed on a grid{more}", fontsize=12)
    fig.tight_layout(rect=(0, 0, (width - 1.8) / width if handles else 1, 1))
    if path is not None:
        from carpool.io import atomic_write_figure

        for suffix in (".png", ".svg"):
            atomic_write_figure(fig, Path(path).with_suffix(suffix))
    return fig
