"""The seed's picture: pooled line, unpooled points, hierarchical points with shrinkage arrows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["MAX_NAMED_GROUPS", "plot_shrinkage"]

#: Above this many groups the figure plots hierarchical against unpooled estimates, one
#: unnamed point per group, instead of one named column per group (whose labels overprint).
MAX_NAMED_GROUPS = 30

_COLUMNS = ["pooled", "unpooled", "hierarchical"]


def _log_scale(t: pd.DataFrame) -> bool:
    values = t[_COLUMNS]
    return bool((values > 0).all().all() and values.max().max() / values.min().min() > 20)


def _scatter_panel(ax: Any, t: pd.DataFrame) -> None:
    """Hierarchical against unpooled: on the diagonal a group keeps its own estimate, on the
    pooled line it is fully pooled."""
    ax.axhline(t["pooled"].iloc[0], color="0.3", ls="--", lw=1, label="pooled")
    lo = t[_COLUMNS].min().min()
    hi = t[_COLUMNS].max().max()
    ax.plot([lo, hi], [lo, hi], color="tab:orange", lw=1, label="no pooling (y = x)")
    ax.scatter(t["unpooled"], t["hierarchical"], s=12, color="tab:blue", alpha=0.8,
               zorder=3, label="one group")
    if _log_scale(t):
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("unpooled estimate", fontsize=8)
    ax.set_ylabel("hierarchical estimate", fontsize=8)


def plot_shrinkage(table: pd.DataFrame, path: str | Path | None = None) -> Any:
    """One panel per parameter from :func:`carpool.compare.shrinkage_table`.

    Up to :data:`MAX_NAMED_GROUPS` groups: the seed's picture, one named column per group
    (unpooled point, hierarchical point, an arrow between them, the pooled line); beyond
    that, hierarchical against unpooled estimates per parameter (the diagonal: no pooling;
    the dashed line: the pooled value), which stays readable at any number of groups.
    Writes ``path`` with the suffixes ``.png`` and ``.svg`` when given; returns the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(table["parameter"]))
    if table["group"].nunique() > MAX_NAMED_GROUPS:
        fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4),
                                 squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            t = table[table["parameter"] == name].reset_index(drop=True)
            _scatter_panel(ax, t)
            unit = t["unit"].iloc[0]
            ax.set_title(f"{name} ({unit})" if unit else name)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"Shrinkage of {table['group'].nunique()} groups: hierarchical against "
                     "unpooled estimates, pooled line")
        fig.tight_layout()
        _write(fig, path)
        return fig
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        t = table[table["parameter"] == name].reset_index(drop=True)
        x = range(len(t))
        ax.axhline(t["pooled"].iloc[0], color="0.3", ls="--", lw=1, label="pooled")
        ax.scatter(x, t["unpooled"], color="tab:orange", zorder=3, label="unpooled")
        ax.scatter(x, t["hierarchical"], color="tab:blue", zorder=4, label="hierarchical")
        for i, r in t.iterrows():
            ax.annotate("", xy=(i, r["hierarchical"]), xytext=(i, r["unpooled"]),
                        arrowprops={"arrowstyle": "->", "color": "tab:blue", "lw": 1})
        unit = t["unit"].iloc[0]
        ax.set_title(f"{name} ({unit})" if unit else name)
        ax.set_xticks(list(x), t["group"], rotation=60, ha="right", fontsize=7)
        if _log_scale(t):
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Shrinkage: unpooled -> hierarchical estimates, pooled line")
    fig.tight_layout()
    _write(fig, path)
    return fig


def _write(fig: Any, path: str | Path | None) -> None:
    if path is not None:
        from carpool.io import atomic_write_figure

        for suffix in (".png", ".svg"):
            atomic_write_figure(fig, Path(path).with_suffix(suffix))
