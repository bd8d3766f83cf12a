"""Posterior predictive against the observations of one group."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["plot_predictive"]

#: Covariates that mark a one-step car-following observation model (y = next speed, m/s).
_CAR_FOLLOWING = ("speed", "gap", "leader_speed", "dt")


def plot_predictive(fit: Fit, group: str | None = None, path: str | Path | None = None,
                    num_draws: int = 400, seed: int = 0) -> Any:
    """Posterior predictive draws of one group's observations, with 50% and 90% bands.

    Car-following fits (covariates ``speed``, ``gap``, ``leader_speed``, ``dt``; ``y`` is
    the next speed) get three panels over time (s, cumulative ``dt`` within the group):

    - (a) next speed (m/s): observed against the predictive median and bands;
    - (b) the same as the acceleration over the step, ``(y - speed) / dt`` (m/s^2): the
      one-step noise is tiny next to the range of speeds, so only here are the bands and
      misses visible;
    - (c) next gap (m): observed (the group's next row's ``gap``; for its last row the ballistic
      update ``gap + dt (leader_speed - (speed + y) / 2)``) against the same update applied
      to each predicted next speed. These are one-step predictions from the observed state,
      not a rollout.

    Any other model gets one panel of ``y`` against the observation index.

    Parameters
    ----------
    fit
        Any fit (pooled fits predict every group with the shared parameters).
    group
        A group id of the fitted data; ``None`` is allowed when the data have one group.
    path
        When given, writes ``path`` with the suffixes ``.png`` and ``.svg``.
    num_draws, seed
        Posterior draws used (thinned without replacement) and the seed of the thinning and
        of the simulated noise.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        For a group not in the fitted data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from carpool.inference.predict import posterior_predictive
    from carpool.plots._groups import group_position
    from carpool.pooling.grouped import GroupedData

    data = fit.data
    group, position = group_position(fit, group)
    rows = np.flatnonzero(data.group_index == position)
    n = rows.size
    covs = {k: v[rows] for k, v in data.covariates.items()}
    sub = GroupedData(data.y[rows], np.zeros(n, dtype=np.int32), (group,), covs)
    y = sub.y
    y_pred = posterior_predictive(fit, sub, num_draws=num_draws, seed=seed)  # (S, n)

    is_cf = all(c in covs for c in _CAR_FOLLOWING)
    from carpool.compare.words import words_for

    words = words_for(fit.spec)
    who = f"{words.group} {group}"
    title = (f"Posterior predictive, {who} ({fit.spec.name}, {fit.pooling}, "
             f"{y_pred.shape[0]} draws)")
    if not is_cf:
        fig, ax = plt.subplots(figsize=(max(6.0, min(12.0, 4.0 + 0.06 * n)), 3.8))
        _intervals(ax, np.arange(n), y, y_pred)
        ax.set_xlabel("observation index within the group")
        ax.set_ylabel(f"{words.response if words.formula else 'y'} (observed outcome)")
        ax.set_title(title.replace(" (", "\n(", 1), fontsize=11)  # fits the narrow panel
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        dt, gap = covs["dt"], covs["gap"]
        speed, leader = covs["speed"], covs["leader_speed"]
        time = np.cumsum(dt)  # time of the predicted observation, from the group's start

        def next_gap(v_next: np.ndarray) -> np.ndarray:
            return gap + dt * (leader - (speed + v_next) / 2.0)

        gap_obs = np.append(gap[1:], next_gap(y)[-1])
        fig, (ax_v, ax_a, ax_s) = plt.subplots(
            3, 1, figsize=(max(7.5, min(13.0, 5.0 + 0.03 * n)), 8.4), sharex=True)
        _bands(ax_v, time, y, y_pred, "next speed")
        ax_v.set_ylabel("next speed (m/s)")
        ax_v.set_title("(a) next speed", fontsize=10, loc="left")
        # the one-step noise is small next to the speed's range: show it as an acceleration
        _bands(ax_a, time, (y - speed) / dt, (y_pred - speed) / dt, "acceleration")
        ax_a.set_ylabel("acceleration (m/s^2)")
        ax_a.set_title("(b) the same draws as the acceleration over the step, "
                       "(next speed - speed) / dt", fontsize=10, loc="left")
        _bands(ax_s, time, gap_obs, next_gap(y_pred), "next gap", levels=(0.9,),
               show_coverage=False)
        ax_s.set_ylabel("gap to leader (m)")
        ax_s.set_xlabel("time (s)")
        ax_s.set_title("(c) next gap (one step ahead from the observed state)", fontsize=10,
                       loc="left")
        for ax in (ax_v, ax_a, ax_s):
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    if path is not None:
        from carpool.io import atomic_write_figure

        for suffix in (".png", ".svg"):
            atomic_write_figure(fig, Path(path).with_suffix(suffix))
    return fig


def _bands(ax: Any, x: np.ndarray, observed: np.ndarray, draws: np.ndarray, what: str,
           levels: tuple[float, ...] = (0.9, 0.5), show_coverage: bool = True) -> None:
    """Predictive median and central bands (widest first) of a series, and the observations."""
    for level, alpha in zip(levels, (0.2, 0.35), strict=False):
        lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
        ax.fill_between(x, lo, hi, color="tab:blue", alpha=alpha, lw=0,
                        label=f"predictive {100 * level:g}%")
    ax.plot(x, np.median(draws, axis=0), color="tab:blue", lw=1.2, label="predictive median")
    ax.plot(x, observed, "o" if x.size <= 150 else ".", color="black", ms=2.5, lw=0,
            label=f"observed {what}" + (_coverage(observed, draws) if show_coverage else ""))
    ax.grid(alpha=0.3)


def _intervals(ax: Any, x: np.ndarray, observed: np.ndarray, draws: np.ndarray) -> None:
    """Exchangeable observations: a predictive interval per observation, not a band."""
    lo90, lo50, med, hi50, hi90 = np.quantile(draws, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    lw = 1.0 if x.size > 100 else 2.0
    ax.vlines(x, lo90, hi90, color="tab:blue", alpha=0.3, lw=lw, label="predictive 90%")
    ax.vlines(x, lo50, hi50, color="tab:blue", alpha=0.7, lw=2 * lw, label="predictive 50%")
    ax.plot(x, med, "_", color="navy", ms=7, label="predictive median")
    ax.plot(x, observed, "o", color="black", ms=3 if x.size <= 150 else 1.5, lw=0,
            label="observed y" + _coverage(observed, draws))
    ax.grid(alpha=0.3)


def _coverage(observed: np.ndarray, draws: np.ndarray) -> str:
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    inside = np.mean((observed >= lo) & (observed <= hi))
    return f"\n({100 * inside:.0f}% inside the 90% band)"
