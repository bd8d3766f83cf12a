"""SUMO's IDM on a fit of the NGSIM I-80 drivers: follow the recorded leader, and a lane drop.

One hierarchical IDM fit of the bundled NGSIM I-80 drivers (``carpool.load_example
("ngsim-i80")``, 76 drivers at 5 Hz; NUTS with ``--chains`` x ``--warmup`` + ``--draws``),
then:

- ``follow``: :func:`carpool.simulate.follow` on ``--follow-drivers`` drivers (the first in
  the table), ``--follow-draws`` posterior draws, no noise, in both engines
  (``engine="jax"`` and ``engine="sumo"``): the scores of each engine per horizon (whole
  record, 3 s and 5 s windows), their differences, the share of draws that ever reach a state
  where the two IDMs differ (SUMO's clipped desired gap: a leader faster than the follower
  by more than ``2 T sqrt(a b)``; braking beyond SUMO's bound), the largest speed difference
  on the other draws, and the time of each engine (JAX steady: a second call).
- ``lane_drop``: :func:`carpool.simulate.sumo.lane_drop` at its defaults (2 lanes -> 1 at
  1.5 km of a 2 km road, 3,000 veh/h, 600 s, 180 s warm-up) over ``--lane-drop-draws``
  posterior draws, new drivers from the population (``drivers="population"``) and the
  fitted drivers (``"observed"``), each against the draw's median driver: the discharge
  flow's distribution over draws, queues, collisions and the run time.

Also draws ``docs/figures/sumo_lane_drop.png`` (:func:`carpool.simulate.sumo.plot_lane_drop`,
the population run).

Usage::

    python benchmarks/sumo_follow_lane_drop.py [--smoke] [--json out.json]
        [--figure docs/figures/sumo_lane_drop.png]

Needs ``pip install "carpool[sumo]"``. Writes ``benchmarks/results/sumo_follow_lane_drop.json``.
About 2 minutes on 2 cores (the fit about 30 s).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _results import write_results

HERE = Path(__file__).resolve().parent
FIGURE = HERE.parent / "docs" / "figures" / "sumo_lane_drop.png"
SCORES = ["rmse_speed_m_s", "rmse_gap_m", "crps_speed_m_s", "crps_gap_m",
          "coverage_speed_90", "coverage_gap_90"]


def idms_differ(fit, result, driver: str, seed: int, num_draws: int) -> np.ndarray:
    """Per draw: does carpool's follower ever reach a state where SUMO's IDM acts
    differently (clipped desired gap, braking beyond SUMO's bound, a stop, a start above
    v0)? The draws are follow()'s own."""
    from carpool.simulate.follow import _driver_theta

    theta, _ = _driver_theta(fit, driver, False, seed)
    idx = np.random.default_rng(seed).choice(theta.shape[0], num_draws,
                                             replace=num_draws > theta.shape[0])
    p = {n: theta[idx, j][:, None] for j, n in enumerate(fit.parameter_names)}
    v, s = result.speed, result.gap
    lead = result.record["leader_speed"].to_numpy()[None]
    inner = v * p["T"] + v * (v - lead) / (2.0 * np.sqrt(p["a"] * p["b"]))
    acc = p["a"] * (1.0 - (v / p["v0"]) ** 4 - ((p["s0"] + inner) / s) ** 2)
    return (((inner < 0) | (acc < -np.maximum(9.0, p["b"])) | (v <= 0)).any(axis=1)
            | (v[:, 0] > p["v0"][:, 0]))


def compare_follow(fit, data, drivers: list[str], num_draws: int) -> dict:
    from carpool.simulate import follow

    ours, theirs, rows = [], [], []
    for driver in drivers:
        kwargs = {"num_draws": num_draws, "noise": False, "seed": 0}
        follow(fit, data, driver, **kwargs)  # compiles for this record's length
        clock = time.perf_counter()
        a = follow(fit, data, driver, **kwargs)
        jax_s = time.perf_counter() - clock
        clock = time.perf_counter()
        b = follow(fit, data, driver, engine="sumo", **kwargs)
        sumo_s = time.perf_counter() - clock
        differ = idms_differ(fit, a, driver, 0, num_draws)
        dv = np.abs(a.speed - b.speed)
        rows.append({"driver": driver, "points": a.speed.shape[1],
                     "share_draws_differ": float(differ.mean()),
                     "max_dv_other_draws_m_s": (float(dv[~differ].max()) if (~differ).any()
                                                else None),
                     "max_dv_m_s": float(dv.max()), "jax_steady_s": jax_s, "sumo_s": sumo_s,
                     "sumo_capped_starts": b.settings["sumo_capped_starts"]})
        ours.append(a.metrics[SCORES].assign(driver=driver))
        theirs.append(b.metrics[SCORES].assign(driver=driver))
    jax_m = pd.concat(ours).reset_index().set_index(["driver", "scope"])
    sumo_m = pd.concat(theirs).reset_index().set_index(["driver", "scope"])
    diff = (sumo_m - jax_m).abs()
    by_scope = {
        "jax_mean": jax_m.groupby(level="scope").mean(),
        "sumo_mean": sumo_m.groupby(level="scope").mean(),
        "abs_diff_mean": diff.groupby(level="scope").mean(),
        "abs_diff_max": diff.groupby(level="scope").max(),
    }
    for name, table in by_scope.items():
        print(f"\nfollow, {name} over {len(drivers)} drivers:\n{table.round(4).to_string()}")
    print("\n" + pd.DataFrame(rows).round(4).to_string())
    return {"drivers": rows, **{k: v.reset_index().to_dict("records")
                               for k, v in by_scope.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--follow-drivers", type=int, default=8)
    ap.add_argument("--follow-draws", type=int, default=200)
    ap.add_argument("--lane-drop-draws", type=int, default=20)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default=str(HERE / "results" / "sumo_follow_lane_drop.json"))
    ap.add_argument("--figure", default=str(FIGURE))
    args = ap.parse_args()
    if args.smoke:
        args.chains, args.warmup, args.draws = 1, 50, 50
        args.follow_drivers, args.follow_draws, args.lane_drop_draws = 1, 20, 2

    import carpool
    from carpool.simulate.sumo import lane_drop, plot_lane_drop

    data = carpool.load_example("ngsim-i80")
    clock = time.perf_counter()
    fit = carpool.fit(data, "idm", pooling="hierarchical", warn=False,
                      sampler=carpool.NutsSettings(chains=args.chains, warmup=args.warmup,
                                                   draws=args.draws, seed=args.seed))
    fit_s = time.perf_counter() - clock
    print(f"fit: {fit_s:.1f} s")
    follow_rows = compare_follow(fit, data, list(pd.unique(data["driver"]))[
        : args.follow_drivers], args.follow_draws)
    drops = {}
    for drivers in ("population", "observed"):
        result = lane_drop(fit, num_draws=args.lane_drop_draws, drivers=drivers,
                           seed=args.seed)
        comparison = result.comparison()
        means = result.summary.groupby("population")[
            ["discharge_speed_m_s", "upstream_flow_veh_h", "queued_share", "inserted",
             "not_inserted", "queue_extent_m", "congestion_onset_s", "collisions",
             "emergency_braking"]].mean()
        print(f"\nlane drop, drivers={drivers}, {args.lane_drop_draws} draws, "
              f"{result.settings['run_time_s']:.1f} s:\n{comparison.round(1).to_string()}\n"
              f"{means.round(2).to_string()}")
        drops[drivers] = {"run_time_s": result.settings["run_time_s"],
                          "arrivals": result.settings["arrivals"],
                          "comparison": comparison.reset_index().to_dict("records"),
                          "means": means.reset_index().to_dict("records"),
                          "discharge": result.discharge().reset_index().to_dict("records")}
        if drivers == "population" and args.figure:
            plot_lane_drop(result, None).savefig(args.figure, dpi=110)
            print(f"figure: {args.figure}")
    out = write_results(args.json, args, fit_s=fit_s, follow=follow_rows, lane_drop=drops)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
