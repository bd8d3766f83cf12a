"""Figures of the traffic simulations: the ring's time-space diagram, follow-leader bands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carpool.errors import InputError

if TYPE_CHECKING:
    from carpool.simulate import FollowResult, RingResult

__all__ = ["plot_follow_bands", "plot_time_space"]

#: At most this many line segments are drawn (longer simulations are thinned in time).
MAX_SEGMENTS = 250_000
_UNITS = {"km/h": 3.6, "m/s": 1.0}


def _save(fig: Any, path: str | Path | None) -> None:
    if path is not None:
        from carpool.io import atomic_write_figure

        for suffix in (".png", ".svg"):
            atomic_write_figure(fig, Path(path).with_suffix(suffix))


def plot_time_space(result: RingResult, path: str | Path | None = None, *, draw: int = 0,
                    speed_unit: str = "km/h") -> Any:
    """Time-space diagram of a ring-road simulation, coloured by speed.

    Top: each vehicle's position on the ring (m, in ``[0, L)``; a line leaves at the top
    and re-enters at the bottom each lap) against time (s), coloured from red (stopped) to
    green (the fastest speed reached); stop-and-go waves show as red bands drifting
    downwards (upstream) over time; crosses mark collisions (floored gaps) closing at 1 m/s
    or faster, grey dots slower touches. Bottom:
    the spread of speed across vehicles (standard deviation, growing when the ring is string
    unstable) and the mean speed.

    Parameters
    ----------
    result
        From :func:`carpool.simulate.ring`.
    path
        When given, writes ``path`` with the suffixes ``.png`` and ``.svg``.
    draw
        Which simulated ring (posterior draw) to show.
    speed_unit
        ``"km/h"`` or ``"m/s"`` for the colour bar and the lower panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    if speed_unit not in _UNITS:
        raise InputError(f"speed_unit must be one of {list(_UNITS)}, got {speed_unit!r}")
    factor = _UNITS[speed_unit]
    table = result.table
    if draw not in set(table["draw"].unique()):
        raise InputError(f"no draw {draw}; the result has draws "
                         f"{sorted(table['draw'].unique())}")
    one = table[table["draw"] == draw]
    position = one.pivot(index="time", columns="vehicle", values="position")
    speed = one.pivot(index="time", columns="vehicle", values="speed")
    time = position.index.to_numpy(float)
    x, v = position.to_numpy(float), speed.to_numpy(float) * factor
    length = float(result.settings.get("length_m", np.nanmax(x)))
    num_times, num_vehicles = x.shape
    stride = max(1, int(np.ceil(num_times * num_vehicles / MAX_SEGMENTS)))
    t_s, x_s, v_s = time[::stride], x[::stride], v[::stride]
    start = np.stack([np.repeat(t_s[:-1, None], num_vehicles, 1), x_s[:-1]], axis=-1)
    end = np.stack([np.repeat(t_s[1:, None], num_vehicles, 1), x_s[1:]], axis=-1)
    keep = (x_s[1:] - x_s[:-1]) > -0.5 * length  # drop the jump of each lap
    segments = np.stack([start[keep], end[keep]], axis=1)
    colour = 0.5 * (v_s[1:] + v_s[:-1])[keep]

    fig, (ax, ax_std) = plt.subplots(2, 1, figsize=(10.0, 7.2), sharex=True,
                                     gridspec_kw={"height_ratios": [3.2, 1.0]})
    top = max(float(np.nanmax(v)), 1e-3)
    lines = LineCollection(segments, cmap="RdYlGn", norm=plt.Normalize(0.0, top),
                           linewidths=1.1 if num_vehicles <= 60 else 0.6)
    lines.set_array(colour)
    lines.set_rasterized(True)  # tens of thousands of segments: keep the SVG small
    ax.add_collection(lines)
    if "collision" in one:
        from carpool.simulate.ring import HARD_COLLISION_M_S, collision_events

        hit = one.pivot(index="time", columns="vehicle", values="collision").to_numpy(bool)
        onset, closing = collision_events(speed.to_numpy(float), hit)
        for is_hard, style in ((False, {"s": 3, "marker": "o", "color": "0.35", "lw": 0}),
                               (True, {"s": 14, "marker": "x", "color": "black", "lw": 0.9})):
            mask = onset & ((closing >= HARD_COLLISION_M_S) == is_hard)
            if mask.any():
                k, i = np.nonzero(mask)
                what = (f"collision at >= {HARD_COLLISION_M_S:g} m/s closing speed"
                        if is_hard else "touch (collision closing slower)")
                ax.scatter(time[k], x[k, i], rasterized=True, zorder=3,
                           label=f"{what}: {mask.sum()}", **style)
        if onset.any():
            ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    ax.set_xlim(time[0], time[-1])
    ax.set_ylim(0.0, length)
    ax.set_ylabel("position on the ring (m)")
    bar = fig.colorbar(lines, ax=[ax, ax_std], pad=0.015, fraction=0.04, aspect=30)
    bar.set_label(f"speed ({speed_unit})")
    s = result.settings
    stats = result.summary.loc[draw]
    wave = stats["wave_speed_km_h"]
    wave_txt = "no waves" if not np.isfinite(wave) else f"wave speed {wave:.1f} km/h"
    ax.set_title(
        f"Ring road: {s.get('num_vehicles', num_vehicles)} vehicles on {length:g} m, "
        f"{s.get('model', '')} ({s.get('pooling', '')} fit, {s.get('drivers', '')} drivers"
        f"{', noise' if s.get('noise') else ', no noise'})\n"
        f"after {s.get('warmup_s', 0):g} s: mean speed {3.6 * stats['mean_speed_m_s']:.1f} "
        f"km/h, {100 * stats['share_stopped']:.0f}% of vehicle-time stopped, {wave_txt}, "
        f"{int(stats['collisions'])} collisions", fontsize=10, loc="left")

    spread = v.std(axis=1)
    ax_std.plot(time, spread, color="tab:purple", lw=1.2)
    ax_std.plot(time, v.mean(axis=1), color="0.3", lw=1.0, ls="--")
    ax_std.set_title("speed spread across vehicles (standard deviation, solid purple) and "
                     "mean speed (dashed)", fontsize=9, loc="left")
    ax_std.set_xlabel("time (s)")
    ax_std.set_ylabel(f"speed ({speed_unit})")
    ax_std.set_ylim(bottom=0.0)
    ax_std.grid(alpha=0.3)
    _save(fig, path)
    return fig


def plot_follow_bands(result: FollowResult, path: str | Path | None = None, *,
                      level: float = 0.9) -> Any:
    """Speed and gap of the simulated follower against its record, with the median and the
    central ``level`` band over posterior draws.

    Parameters
    ----------
    result
        From :func:`carpool.simulate.follow`.
    path
        When given, writes ``path`` with the suffixes ``.png`` and ``.svg``.
    level
        Width of the band.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bands = result.bands(level)
    t = bands["time"].to_numpy()
    s = result.settings
    horizon = s.get("horizon_s")
    scope = "whole" if horizon is None else f"{horizon:g} s"
    row = result.metrics.loc[scope] if scope in result.metrics.index else None
    width = max(8.0, min(14.0, 6.0 + 0.01 * t.size))
    fig, (ax_v, ax_s) = plt.subplots(2, 1, figsize=(width, 6.6), sharex=True)
    for ax, name, unit in ((ax_v, "speed", "m/s"), (ax_s, "gap", "m")):
        ax.fill_between(t, bands[f"{name}_lo"], bands[f"{name}_hi"], color="tab:blue",
                        alpha=0.25, lw=0, label=f"simulated {100 * level:g}% band")
        ax.plot(t, bands[f"{name}_median"], color="tab:blue", lw=1.2, label="simulated median")
        label = f"recorded {name}"
        if row is not None:
            label += (f"\nRMSE {row[f'rmse_{name}_' + ('m_s' if name == 'speed' else 'm')]:.2f}"
                      f" {unit}, {100 * row[f'coverage_{name}_90']:.0f}% in the 90% band")
        ax.plot(t, bands[f"{name}_record"], color="black", lw=1.0, label=label)
        ax.set_ylabel(f"{name} ({unit})")
        ax.grid(alpha=0.3)
    ax_v.plot(t, bands["leader_speed"], color="0.55", lw=0.9, ls="--",
              label="leader speed (recorded, input)")
    ax_s.set_xlabel("time (s)")
    if horizon is not None and t[-1] - t[0] <= 60 * horizon:  # mark the restarts
        for ax in (ax_v, ax_s):
            for start in np.arange(t[0] + horizon, t[-1], horizon):
                ax.axvline(start, color="0.75", lw=0.6, ls=":", zorder=0)
    for ax in (ax_v, ax_s):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    how = ("closed loop over the whole record" if horizon is None
           else f"restarted from the record every {horizon:g} s")
    ax_v.set_title(
        f"Driver {result.driver} behind the recorded leader: {s.get('model', '')} "
        f"({s.get('pooling', '')} fit, parameters from {s.get('params_from', '')})\n"
        f"{s.get('num_draws', '')} posterior draws, {how}"
        f"{'' if s.get('noise') else ', no noise'}", fontsize=10, loc="left")
    fig.tight_layout()
    _save(fig, path)
    return fig
