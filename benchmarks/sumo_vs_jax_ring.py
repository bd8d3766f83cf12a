"""SUMO's IDM and carpool's JAX engine on the same ring roads: agreement and speed.

The same vehicles, parameters and initial state (even spacing, carpool's initial speed,
vehicle 0 kicked 1 m back), no noise, dt = 0.1 s, run by :func:`carpool.simulate.simulate_ring`
(JAX, float32) and :func:`carpool.simulate.sumo.simulate_sumo_ring` (SUMO's own IDM through
libsumo, ballistic update, double precision, SUMO's default emergency deceleration).

- ``throughput``: one ring of 1,000 heterogeneous IDM vehicles (log-normal spread 0.15 around
  v0 30 m/s, s0 2 m, T 1.5 s, a 1.5, b 1.67 m/s^2, as ``simulate_throughput.py``), 25 m
  each (a 25 km circle), 1,000 steps, in each engine within this one run. JAX: compilation
  (first call minus a steady call) and the median of ``--repeats`` steady calls,
  ``jax.block_until_ready`` before the clock is read. SUMO: set-up (the ring network by
  netconvert, the route file, starting SUMO, inserting the vehicles) and the steps with the
  state read back every step (subscriptions); one call (no compilation to amortise).
- ``agreement``: trajectories and wave statistics of the two engines on the throughput ring
  and on two string-unstable rings (identical IDM drivers with a 0.3 m/s^2, b 3 m/s^2,
  T 1 s): Sugiyama's 22 vehicles on 230 m, and 1,000 vehicles on 25 km, 600 s each.
  ``first_stop_s``: when the first vehicle stops in carpool's ring; ``max_dv_before_stop``:
  the largest speed difference until then (the engines integrate the same equations there);
  ``onset``: when the speed spread across vehicles first exceeds 0.5 m/s; statistics after
  half the time (:func:`carpool.simulate.ring_statistics`).

Also draws ``docs/figures/sumo_vs_jax_ring.png``: the Sugiyama ring's time-space diagram in
both engines and the speed difference over time.

Usage::

    python benchmarks/sumo_vs_jax_ring.py [--smoke] [--repeats 5] [--json out.json]
        [--figure docs/figures/sumo_vs_jax_ring.png]

Needs ``pip install "carpool[sumo]"``; without it the JAX rows are measured and the SUMO
rows say why they are missing. Writes ``benchmarks/results/sumo_vs_jax_ring.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import write_results

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FIGURE = HERE.parent / "docs" / "figures" / "sumo_vs_jax_ring.png"
MEDIAN = {"v0": 30.0, "s0": 2.0, "T": 1.5, "a": 1.5, "b": 1.67}
UNSTABLE = {"v0": 30.0, "s0": 2.0, "T": 1.0, "a": 0.3, "b": 3.0}
DT = 0.1
STOPPED = 0.1  # m/s
ONSET = 0.5  # m/s of speed spread across vehicles


def heterogeneous(num: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: v * np.exp(0.15 * rng.standard_normal(num)) for k, v in MEDIAN.items()}


def identical(num: int) -> dict[str, np.ndarray]:
    return {k: np.full(num, v) for k, v in UNSTABLE.items()}


def run_jax(params: dict[str, np.ndarray], length: float, steps: int, repeats: int = 0
            ) -> tuple[Any, dict[str, float]]:
    import jax
    import jax.numpy as jnp

    from carpool.simulate import simulate_ring

    p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}

    def call() -> Any:
        return jax.block_until_ready(simulate_ring("idm", p, length_m=length, num_steps=steps,
                                                   dt=DT, perturbation_m=1.0))

    start = time.perf_counter()
    out = call()
    first = time.perf_counter() - start
    steady = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        steady.append(time.perf_counter() - start)
    run = statistics.median(steady) if steady else first
    return out, {"setup_s": max(first - run, 0.0), "run_s": run}


def run_sumo(params: dict[str, np.ndarray], length: float, steps: int
             ) -> tuple[Any, dict[str, float]]:
    from carpool.simulate.sumo import simulate_sumo_ring

    timings: dict[str, float] = {}
    start = time.perf_counter()
    out = simulate_sumo_ring("idm", params, length_m=length, num_steps=steps, dt=DT,
                             perturbation_m=1.0, _timings=timings)
    timings["wall_s"] = time.perf_counter() - start
    return out, timings


def agreement(case: str, jax_out: Any, sumo_out: Any, length: float) -> dict[str, Any]:
    from carpool.simulate import ring_statistics

    v_jax, v_sumo = np.asarray(jax_out.speed, float), np.asarray(sumo_out.speed, float)
    g_jax, g_sumo = np.asarray(jax_out.gap, float), np.asarray(sumo_out.gap, float)
    num_times, num_vehicles = v_jax.shape
    diff = np.abs(v_sumo - v_jax)
    stopped = (v_jax < STOPPED).any(axis=1)
    first_stop = int(np.argmax(stopped)) if stopped.any() else num_times
    row: dict[str, Any] = {
        "case": case, "vehicles": num_vehicles, "duration_s": (num_times - 1) * DT,
        "first_stop_s": first_stop * DT if first_stop < num_times else None,
        "max_dv_before_stop_m_s": float(diff[:first_stop].max()),
        "max_dv_m_s": float(diff.max()), "rms_dv_m_s": float(np.sqrt(np.mean(diff ** 2))),
        "max_dgap_m": float(np.abs(g_sumo - g_jax).max())}
    for name, v, g in (("jax", v_jax, g_jax), ("sumo", v_sumo, g_sumo)):
        spread = v.std(axis=1)
        onset = spread > ONSET
        stats = ring_statistics(v, g, dt=DT, length_m=length)
        row[f"onset_{name}_s"] = float(np.argmax(onset) * DT) if onset.any() else None
        row[f"wave_{name}_km_h"] = stats["wave_speed_km_h"]
        row[f"mean_speed_{name}_m_s"] = stats["mean_speed_m_s"]
        row[f"speed_std_{name}_m_s"] = stats["speed_std_m_s"]
        row[f"share_stopped_{name}"] = stats["share_stopped"]
    return row


def figure(jax_out: Any, sumo_out: Any, length: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from carpool.io import atomic_write_figure

    v_jax, v_sumo = np.asarray(jax_out.speed, float), np.asarray(sumo_out.speed, float)
    x_jax, x_sumo = np.asarray(jax_out.position, float), np.asarray(sumo_out.position, float)
    t = np.arange(v_jax.shape[0]) * DT
    fig = plt.figure(figsize=(11.0, 8.0))
    grid = fig.add_gridspec(2, 2, height_ratios=[2.2, 1.0], hspace=0.32, wspace=0.08)
    top = float(max(v_jax.max(), v_sumo.max()))
    stride = max(1, v_jax.shape[0] // 3000)
    for k, (name, x, v) in enumerate((("carpool (JAX, float32)", x_jax, v_jax),
                                      ("SUMO 1.28 IDM (libsumo, ballistic)", x_sumo, v_sumo))):
        ax = fig.add_subplot(grid[0, k])
        tt = np.repeat(t[::stride, None], x.shape[1], axis=1)
        points = ax.scatter(tt, x[::stride], c=v[::stride], s=0.4, cmap="RdYlGn", vmin=0.0,
                            vmax=top, rasterized=True, linewidths=0)
        ax.set_title(name, fontsize=10, loc="left")
        ax.set_xlabel("time (s)")
        ax.set_xlim(t[0], t[-1])
        ax.set_ylim(0.0, length)
        if k == 0:
            ax.set_ylabel("position on the ring (m)")
        else:
            ax.set_yticklabels([])
    bar = fig.colorbar(points, ax=fig.axes, fraction=0.03, pad=0.015)
    bar.set_label("speed (m/s)")
    ax = fig.add_subplot(grid[1, :])
    diff = np.abs(v_sumo - v_jax).max(axis=1)
    ax.semilogy(t, np.maximum(diff, 1e-8), color="tab:red", lw=1.0,
                label="largest speed difference across vehicles, SUMO - carpool (m/s)")
    stopped = (v_jax < STOPPED).any(axis=1)
    if stopped.any():
        ax.axvline(t[np.argmax(stopped)], color="0.3", ls=":", lw=1.0,
                   label="first vehicle stops (carpool)")
    ax.semilogy(t, v_jax.std(axis=1), color="tab:purple", lw=1.0,
                label="speed spread across vehicles, carpool (m/s)")
    ax.semilogy(t, v_sumo.std(axis=1), color="tab:purple", lw=1.0, ls="--",
                label="speed spread across vehicles, SUMO (m/s)")
    ax.set_xlim(t[0], t[-1])
    ax.set_ylim(1e-7, 20.0)
    ax.set_xlabel("time (s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    fig.suptitle(f"The same ring in both engines: {v_jax.shape[1]} identical IDM drivers "
                 f"(a 0.3 m/s², b 3 m/s², T 1 s) on {length:g} m, 1 m kick, dt {DT:g} s, "
                 "no noise", fontsize=11, x=0.02, ha="left")
    atomic_write_figure(fig, path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=RESULTS / "sumo_vs_jax_ring.json")
    ap.add_argument("--figure", type=Path, default=None,
                    help=f"default {FIGURE.relative_to(HERE.parent)} (beside the JSON with "
                         "--smoke)")
    args = ap.parse_args()
    figure_path = args.figure or (args.json.with_suffix(".png") if args.smoke else FIGURE)
    if args.smoke:
        throughput = (50, 50 * 25.0, 50)
        cases = {"sugiyama 22, unstable": (identical(22), 230.0, 300)}
    else:
        throughput = (1000, 1000 * 25.0, 1000)
        cases = {"sugiyama 22, unstable": (identical(22), 230.0, 6000),
                 "1000, unstable": (identical(1000), 25_000.0, 6000)}
    try:
        from carpool._sumo import binary, import_libsumo, sumo_version

        import_libsumo("this benchmark")
        binary("netconvert", "this benchmark")
        missing = None
    except Exception as exc:  # noqa: BLE001 - reported in the table
        missing = str(exc)
    num, length, steps = throughput
    params = heterogeneous(num)
    rows, agree = [], []
    jax_out, jax_t = run_jax(params, length, steps, repeats=args.repeats)
    rows.append({"engine": "carpool JAX (float32, CPU)", "vehicles": num, "steps": steps,
                 "vehicle_steps": num * steps, **jax_t,
                 "vehicle_steps_per_s": num * steps / jax_t["run_s"]})
    if missing is None:
        sumo_out, sumo_t = run_sumo(params, length, steps)
        rows.append({"engine": f"SUMO {sumo_version()} (libsumo)", "vehicles": num,
                     "steps": steps, "vehicle_steps": num * steps, **sumo_t,
                     "vehicle_steps_per_s": num * steps / sumo_t["run_s"],
                     "vehicle_steps_per_wall_s": num * steps / sumo_t["wall_s"]})
        agree.append(agreement(f"{num}, heterogeneous", jax_out, sumo_out, length))
        for case, (p, ring_length, ring_steps) in cases.items():
            j, _ = run_jax(p, ring_length, ring_steps)
            s, _ = run_sumo(p, ring_length, ring_steps)
            agree.append(agreement(case, j, s, ring_length))
            if case.startswith("sugiyama"):
                figure(j, s, ring_length, figure_path)
                print(f"wrote {figure_path}")
    else:
        rows.append({"engine": "SUMO", "vehicles": num, "steps": steps,
                     "note": f"not measured: {missing}"})
    head = f"{'engine':<30}{'vehicle-steps':>15}{'set-up s':>10}{'run s':>9}{'steps/s':>11}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "run_s" in r:
            print(f"{r['engine']:<30}{r['vehicle_steps']:>15,}{r['setup_s']:>10.2f}"
                  f"{r['run_s']:>9.3f}{r['vehicle_steps_per_s']:>11.3g}")
        else:
            print(f"{r['engine']:<30}{r['note']}")
    if agree:
        print()
        print(f"{'agreement':<26}{'1st stop s':>11}{'max dv before':>14}{'max dv':>9}"
              f"{'rms dv':>9}{'onset s j/s':>14}{'wave km/h j/s':>16}{'stopped j/s':>14}")
        for a in agree:
            stop = "-" if a["first_stop_s"] is None else f"{a['first_stop_s']:.1f}"
            onset = "/".join("-" if a[f"onset_{e}_s"] is None else f"{a[f'onset_{e}_s']:.1f}"
                             for e in ("jax", "sumo"))
            print(f"{a['case']:<26}{stop:>11}{a['max_dv_before_stop_m_s']:>14.2g}"
                  f"{a['max_dv_m_s']:>9.3g}{a['rms_dv_m_s']:>9.3g}{onset:>14}"
                  f"{a['wave_jax_km_h']:>8.2f}/{a['wave_sumo_km_h']:<7.2f}"
                  f"{a['share_stopped_jax']:>7.3f}/{a['share_stopped_sumo']:.3f}")
    out = write_results(args.json, args, throughput=rows, agreement=agree,
                        sumo_missing=missing)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
