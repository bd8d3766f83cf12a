"""Heatmap of the population correlation of a hierarchical fit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carpool.errors import InputError

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["plot_population_correlation"]


def plot_population_correlation(fit: Fit, path: str | Path | None = None,
                                hdi_prob: float = 0.94) -> Any:
    """Posterior mean of the population correlation ``corr`` (latent scale), with HDIs.

    Each cell shows the posterior mean and its ``hdi_prob`` highest-density interval; the
    colour scale is fixed to [-1, 1]. For a diagonal population (``correlated=False``) the
    correlation is the identity in every draw and the title says it was not learned.

    Parameters
    ----------
    fit
        A hierarchical fit (only it has a population).
    path
        When given, writes ``path`` with the suffixes ``.png`` and ``.svg``.
    hdi_prob
        Probability mass of the intervals.

    Returns
    -------
    matplotlib.figure.Figure
        The heatmap is ``fig.axes[0].images[0]``; its data is the posterior mean, (P, P).

    Raises
    ------
    ValueError
        For a pooled or unpooled fit.
    """
    if fit.pooling != "hierarchical" or "corr" not in fit.idata.posterior:
        raise InputError(f"the population correlation exists only for hierarchical fits; "
                         f"this fit is {fit.pooling!r} (refit with pooling='hierarchical')")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from carpool.inference.summary import stats_table

    draws = fit.idata.posterior["corr"].values  # (chain, draw, P, P)
    P = draws.shape[-1]
    names = fit.parameter_names
    is_learned = not np.allclose(draws, np.eye(P))
    with np.errstate(invalid="ignore", divide="ignore"):  # R-hat of the constant diagonal
        st = stats_table(draws, hdi_prob)
    mean = draws.mean(axis=(0, 1))

    size = max(4.0, 0.95 * P + 1.8)
    fig, ax = plt.subplots(figsize=(size + 0.9, size))
    im = ax.imshow(mean, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    fs = 10 if P <= 3 else 9 if P <= 5 else 7
    for i in range(P):
        for j in range(P):
            colour = "white" if abs(mean[i, j]) > 0.6 else "black"
            if i == j or not is_learned:
                text = f"{mean[i, j]:.2g}"
            else:
                text = f"{mean[i, j]:+.2f}\n[{st['lo'][i, j]:+.2f}, {st['hi'][i, j]:+.2f}]"
            ax.text(j, i, text, ha="center", va="center", fontsize=fs, color=colour)
    ax.set_xticks(range(P), names, fontsize=10, rotation=0 if P <= 6 else 45)
    ax.set_yticks(range(P), names, fontsize=10)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("correlation of the latent parameters", fontsize=9)
    title = f"Population correlation ({fit.spec.name})"
    if is_learned:
        title += f"\nposterior mean [{100 * hdi_prob:g}% HDI]"
    else:
        title += "\n(not learned: diagonal population)"
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    if path is not None:
        from carpool.io import atomic_write_figure

        for suffix in (".png", ".svg"):
            atomic_write_figure(fig, Path(path).with_suffix(suffix))
    return fig
