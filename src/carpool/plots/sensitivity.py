"""Prior sensitivity: how far each group's estimate moves between hyperprior settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from carpool.compare.results import PriorSensitivity

__all__ = ["plot_prior_sensitivity"]


def plot_prior_sensitivity(sens: PriorSensitivity, path: str | Path | None = None,
                           y_label: str | None = None) -> Any:
    """|shift| of each group's estimate against its number of observations, per parameter.

    The shift is the difference of the latent posterior means under the weak and the
    informative hyperpriors, in units of the weak fit's posterior sd; groups with few
    observations are expected to move most. When
    :attr:`~carpool.compare.PriorSensitivity.prior_predictive` is given, a last panel
    compares the prior predictive distribution of ``y`` under each setting with the
    observed ``y``.

    Parameters
    ----------
    sens
        From :func:`carpool.compare.prior_sensitivity`.
    path
        When given, writes ``path`` with the suffixes ``.png`` and ``.svg``.
    y_label
        Axis label of ``y`` in the prior predictive panel; by default ``"next speed (m/s)"``
        when the observations look like car-following speeds (all in [0, 70] m/s), else
        ``"y"``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = sens.table.copy()
    table["group"] = table["group"].astype(str)
    names = list(dict.fromkeys(table["parameter"]))
    groups = list(dict.fromkeys(table["group"]))
    has_pp = bool(sens.prior_predictive)
    has_gap = has_pp and bool(sens.prior_predictive_gap)
    num_panels = len(names) + has_pp + has_gap
    ncols = min(num_panels, 3)
    nrows = -(-num_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.5 * nrows + 0.6),
                             squeeze=False)
    flat = [ax for row in axes for ax in row]
    n_obs = table["num_obs"].to_numpy(dtype=float)
    is_logx = n_obs.min() > 0 and n_obs.max() / n_obs.min() > 10
    for ax, name in zip(flat, names, strict=False):
        t = table[table["parameter"] == name]
        shift = np.abs(t["shift"].to_numpy(dtype=float))
        x = t["num_obs"].to_numpy(dtype=float)
        ax.scatter(x, shift, color="tab:blue", s=22, zorder=3)
        ax.axhline(1.0, color="0.4", ls="--", lw=0.9, label="one posterior sd")
        if len(groups) <= 15:
            for xi, si, g in zip(x, shift, t["group"], strict=True):
                ax.annotate(g, (xi, si), xytext=(3, 3), textcoords="offset points",
                            fontsize=7, color="0.25")
        if is_logx:
            ax.set_xscale("log")
        unit = str(t["unit"].iloc[0]) if "unit" in t and len(t) else ""
        ax.set_title(f"{name} ({unit})" if unit else name, fontsize=11)
        ax.set_xlabel("observations per group", fontsize=9)
        ax.set_ylabel("|shift| (weak-fit posterior sds)", fontsize=9)
        ax.set_ylim(bottom=0.0, top=max(1.2, 1.15 * float(shift.max(initial=0.0))))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    flat[0].legend(fontsize=8, loc="best")
    if has_pp:
        observed = None if sens.observed is None else np.asarray(sens.observed, dtype=float)
        if y_label is None:
            ref = (observed if observed is not None else
                   np.concatenate([np.ravel(v) for v in sens.prior_predictive.values()]))
            is_speed = ref.min() >= 0 and ref.max() <= 70.0
            y_label = "next speed (m/s)" if is_speed else "y"
        _prior_predictive_panel(flat[len(names)], sens.prior_predictive, observed, y_label)
    if has_gap:
        _prior_predictive_panel(flat[len(names) + 1], sens.prior_predictive_gap,
                                None if sens.observed_gap is None
                                else np.asarray(sens.observed_gap, dtype=float),
                                "next gap, one step from the observed state (m)")
    for ax in flat[num_panels:]:
        ax.set_visible(False)
    fig.suptitle("Prior sensitivity: weak vs informative hyperpriors", fontsize=12)
    fig.tight_layout()
    if path is not None:
        from carpool.io import atomic_write_figure

        for suffix in (".png", ".svg"):
            atomic_write_figure(fig, Path(path).with_suffix(suffix))
    return fig


def _prior_predictive_panel(ax: Any, draws_by_setting: dict[str, np.ndarray],
                            observed: np.ndarray | None, label: str) -> None:
    """Histograms of prior predictive draws per setting against the observed values."""
    draws = {k: np.asarray(v, dtype=float).ravel() for k, v in draws_by_setting.items()}
    draws = {k: v[np.isfinite(v)] for k, v in draws.items()}
    # the axis shows the observations and each setting's central 95%: a weak prior's
    # predictive can have tails so long that the observed histogram would be one bar
    ends = [np.quantile(v, [0.025, 0.975]) for v in draws.values() if v.size]
    if observed is not None:
        ends.append(np.array([observed.min(), observed.max()]))
    lo = min(float(e[0]) for e in ends)
    hi = max(float(e[1]) for e in ends)
    bins = np.linspace(lo, hi, 60)
    if observed is not None:
        ax.hist(observed, bins=bins, density=True, color="0.6", alpha=0.6, label="observed")
    for k, (setting, v) in enumerate(draws.items()):
        inside = np.mean((v >= lo) & (v <= hi))
        ax.hist(v, bins=bins, density=True, histtype="step", lw=1.6, color=f"C{k}",
                label=f"prior predictive, {setting}"
                      + (f" ({100 * (1 - inside):.0f}% beyond the axis)" if inside < 0.995
                         else ""))
    ax.set_xlabel(label, fontsize=9)
    ax.set_ylabel("density", fontsize=9)
    ax.set_title("prior predictive vs observed", fontsize=11)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="best")
