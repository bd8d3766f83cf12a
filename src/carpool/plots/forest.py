"""Forest plot: every group's parameters under each pooling mode, with HDIs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carpool.errors import InputError

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["plot_forest", "MODE_COLOURS"]

#: Colours of the pooling modes, shared by every carpool figure.
MODE_COLOURS = {"pooled": "0.45", "unpooled": "tab:orange", "hierarchical": "tab:blue"}


def plot_forest(fits: Mapping[str, Fit], path: str | Path | None = None,
                hdi_prob: float = 0.94) -> Any:
    """One panel per parameter; groups down the y axis; one mean + HDI line per mode.

    Parameters
    ----------
    fits
        Fits of the same model to the same groups by label, usually some of ``"pooled"``,
        ``"unpooled"`` and ``"hierarchical"`` (coloured grey, orange, blue). A pooled fit has
        one value for every group and is drawn as a vertical line with a shaded HDI band.
    path
        When given, writes ``path`` with the suffixes ``.png`` and ``.svg``.
    hdi_prob
        Probability mass of the highest-density intervals.

    Returns
    -------
    matplotlib.figure.Figure
        Natural units; a panel switches to a log x axis when its positive values span more
        than a factor of 20.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from carpool.inference.summary import stats_table

    if not fits:
        raise InputError("plot_forest needs at least one fit")
    labels = list(fits)
    first = fits[labels[0]]
    params = first.spec.parameters
    from carpool.compare.words import words_for

    words = words_for(first.spec)
    for label in labels[1:]:
        if fits[label].parameter_names != params.names:
            raise InputError(f"fit {label!r} has parameters {fits[label].parameter_names}, "
                             f"but {labels[0]!r} has {params.names}; compare fits of one model")
    grouped = [lab for lab in labels if fits[lab].pooling != "pooled"]
    group_ids: list[str] = list(dict.fromkeys(
        g for lab in (grouped or labels) for g in fits[lab].group_ids))
    G, P = len(group_ids), len(params)
    row_of = {g: i for i, g in enumerate(group_ids)}

    stats = {lab: stats_table(fits[lab].idata.posterior["theta"].values, hdi_prob)
             for lab in labels}
    colours = {lab: MODE_COLOURS.get(lab, MODE_COLOURS.get(fits[lab].pooling, f"C{k + 3}"))
               for k, lab in enumerate(labels)}
    offsets = (np.linspace(-0.18, 0.18, len(grouped)) if len(grouped) > 1
               else np.zeros(len(grouped)))

    ncols = P if P <= 5 else 4
    nrows = -(-P // ncols)
    height = max(2.8, 0.6 + 0.24 * G) * nrows + 0.9
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols + 0.8, height),
                             squeeze=False, sharey=True)
    tick_size = 9 if G <= 15 else 7 if G <= 30 else 6
    step = 1 if G <= 45 else int(np.ceil(G / 45))
    pct = f"{100 * hdi_prob:g}%"
    for j, p in enumerate(params):
        ax = axes[j // ncols][j % ncols]
        values = []
        for lab in labels:
            st = stats[lab]
            mean, lo, hi = st["mean"][..., j], st["lo"][..., j], st["hi"][..., j]
            if fits[lab].pooling == "pooled":
                ax.axvspan(float(lo), float(hi), color=colours[lab], alpha=0.18, lw=0)
                ax.axvline(float(mean), color=colours[lab], lw=1.5, ls="--",
                           label=f"{lab} (shared by all)")
                values += [float(lo), float(hi)]
                continue
            off = offsets[grouped.index(lab)]
            y = np.array([row_of[g] for g in fits[lab].group_ids]) + off
            ax.hlines(y, lo, hi, color=colours[lab], lw=1.6, alpha=0.85)
            ax.plot(mean, y, "o", color=colours[lab], ms=4.5, zorder=3,
                    label=lab)
            values += list(lo) + list(hi)
        v = np.asarray(values, dtype=float)
        if (v > 0).all() and v.max() / v.min() > 20:
            ax.set_xscale("log")
        unit = p.unit
        ax.set_title(p.name, fontsize=11)
        ax.set_xlabel(f"{p.name} ({unit})" if unit else p.name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
        if j % ncols == 0:
            ax.set_ylabel(words.group, fontsize=10)
    for k in range(P, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    ax0 = axes[0][0]
    ax0.set_yticks(range(0, G, step), group_ids[::step])
    ax0.tick_params(axis="y", labelsize=tick_size)
    ax0.set_ylim(G - 0.5, -0.5)  # first group at the top
    handles, names = ax0.get_legend_handles_labels()
    sep = ": " if ncols > 2 else "\n"
    fig.suptitle(f"Per-{words.group} parameters of {first.spec.name}{sep}posterior "
                 f"mean (dot) and {pct} HDI (line, band)", fontsize=12 if ncols > 1 else 10)
    fig.legend(handles, names, loc="lower center", ncol=len(handles), fontsize=9,
               frameon=False)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    if path is not None:
        from carpool.io import atomic_write_figure

        for suffix in (".png", ".svg"):
            atomic_write_figure(fig, Path(path).with_suffix(suffix))
    return fig
