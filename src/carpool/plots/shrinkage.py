"""The seed's picture: pooled line, unpooled points, hierarchical points with shrinkage arrows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["plot_shrinkage"]


def plot_shrinkage(table: pd.DataFrame, path: str | Path | None = None) -> Any:
    """One panel per parameter from :func:`carpool.compare.shrinkage_table`.

    Writes ``path`` with the suffixes ``.png`` and ``.svg`` when given; returns the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(table["parameter"]))
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
        if (t[["pooled", "unpooled", "hierarchical"]] > 0).all().all():
            lo = t[["pooled", "unpooled", "hierarchical"]].min().min()
            hi = t[["pooled", "unpooled", "hierarchical"]].max().max()
            if hi / lo > 20:
                ax.set_yscale("log")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Shrinkage: unpooled -> hierarchical estimates, pooled line")
    fig.tight_layout()
    if path is not None:
        from carpool.io import atomic_write_figure

        for suffix in (".png", ".svg"):
            atomic_write_figure(fig, Path(path).with_suffix(suffix))
    return fig
