"""Corner plot of one group's posterior: pairs, marginals and latent correlations."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["plot_corner"]


def plot_corner(fit: Fit, group: str | None = None, path: str | Path | None = None,
                max_draws: int = 2000) -> Any:
    """Pairwise posterior of one group's parameters.

    Lower triangle: scatter of the draws; diagonal: histograms; upper triangle: the
    posterior correlation of each pair on the latent scale (where the priors and the
    population live; for a log parameter, of log theta), coloured by value.

    Parameters
    ----------
    fit
        Any fit. A pooled fit has one parameter set shared by all groups: ``group`` is then
        ignored (``None`` or ``"all"`` read best).
    group
        The group id as written in the data (e.g. a driver id). ``None`` is allowed for a
        pooled fit and for a fit with a single group.
    path
        When given, writes ``path`` with the suffixes ``.png`` and ``.svg``.
    max_draws
        At most this many draws are scattered (a fixed, seeded thinning); histograms and
        correlations use every draw.

    Returns
    -------
    matplotlib.figure.Figure
        Natural units; axes of log-transformed parameters are logarithmic when the draws
        span more than a factor of 5.

    Raises
    ------
    ValueError
        For a group the fit does not have.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = fit.spec.parameters
    theta = fit.theta_draws()  # (S, G, P) or (S, P)
    from carpool.compare.words import words_for

    words = words_for(fit.spec)
    if fit.pooling == "pooled":
        label = f"the parameters shared by all {words.groups}"
    else:
        from carpool.plots._groups import group_position

        group, position = group_position(fit, group)
        theta = theta[:, position, :]
        label = f"{words.group} {group}"
    latent = np.asarray(params.to_latent(theta, axis=-1))
    P = len(params)
    corr = np.corrcoef(latent, rowvar=False).reshape(P, P) if P > 1 else np.ones((1, 1))
    S = theta.shape[0]
    keep = (np.sort(np.random.default_rng(0).choice(S, max_draws, replace=False))
            if max_draws < S else np.arange(S))
    alpha = 0.5 if keep.size <= 500 else 0.25
    is_log = [p.transform == "log" and theta[:, i].min() > 0
              and theta[:, i].max() / theta[:, i].min() > 5 for i, p in enumerate(params)]
    labels = [f"{p.name} ({p.unit})" if p.unit else p.name for p in params]

    size = max(5.0, 1.9 * P + 1.0)
    fig, axes = plt.subplots(P, P, figsize=(size, size), squeeze=False)
    cmap = plt.get_cmap("RdBu_r")
    for i in range(P):
        for j in range(P):
            ax = axes[i][j]
            if j > i:  # upper triangle: latent correlation
                r = corr[i, j]
                ax.set_facecolor((*cmap(0.5 + 0.5 * r)[:3], 0.4))
                ax.text(0.5, 0.5, f"r = {r:+.2f}", ha="center", va="center",
                        fontsize=11 if P <= 4 else 9, transform=ax.transAxes,
                        color="black", fontweight="bold" if abs(r) >= 0.5 else "normal")
                ax.set_xticks([])
                ax.set_yticks([])
                for side in ax.spines.values():
                    side.set_visible(False)
                continue
            x = theta[:, j]
            if i == j:
                num_bins = int(np.clip(np.sqrt(S), 10, 30))
                bins: Any = num_bins
                if is_log[j]:
                    bins = np.geomspace(x.min(), x.max(), num_bins + 1)
                    ax.set_xscale("log")
                ax.hist(x, bins=bins, color="tab:blue", alpha=0.7, density=True)
                ax.set_yticks([])
            else:
                ax.scatter(x[keep], theta[keep, i], s=3, alpha=alpha, color="tab:blue",
                           lw=0, rasterized=True)
                if is_log[j]:
                    ax.set_xscale("log")
                if is_log[i]:
                    ax.set_yscale("log")
            ax.tick_params(labelsize=7)
            if i == P - 1:
                ax.set_xlabel(labels[j], fontsize=9)
            else:
                ax.tick_params(labelbottom=False)
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i], fontsize=9)
            elif i != j:
                ax.tick_params(labelleft=False)
    # parameter j has the diagonal's range in its column (x) and its row (y)
    for j in range(P):
        lim = axes[j][j].get_xlim()
        for i in range(j + 1, P):
            axes[i][j].set_xlim(lim)
        for k in range(j):
            axes[j][k].set_ylim(lim)
    if P == 1:
        axes[0][0].set_xlabel(labels[0], fontsize=9)
    fig.suptitle(f"Posterior of {label}: {fit.spec.name} ({fit.pooling})\n"
                 "upper: correlation of the latent draws", fontsize=11)
    fig.tight_layout()
    if path is not None:
        from carpool.io import atomic_write_figure

        for suffix in (".png", ".svg"):
            atomic_write_figure(fig, Path(path).with_suffix(suffix))
    return fig
