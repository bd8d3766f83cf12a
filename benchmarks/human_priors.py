"""What each IDM prior default costs and buys on the bundled NGSIM human drivers.

For each prior choice (carpool's ``default``, the literature preset
``treiber-kesting-2013``, and the default with the v0 prior centred at the I-80 speed limit
of 65 mph = 29.1 m/s) and for the unpooled and hierarchical modes, on the 76 drivers of
``carpool.load_example("ngsim-i80")`` at the default sampler settings:

- what it buys: drivers outside the IDM's physical ranges (of them, weakly identified),
  the population (hierarchical) or across-driver centre (unpooled) of v0 and b;
- what it costs: PSIS-LOO elpd of the fit, and the next-speed RMSE and median absolute
  error on each driver's last 20% after a refit on the first 80% (leave-future-out).

    python benchmarks/human_priors.py            # the documented run (about 15 minutes)
    python benchmarks/human_priors.py --smoke    # seconds: CI keeps it from rotting

Writes JSON to ``benchmarks/results/human_priors.json`` (or ``--json``), rendered into
``docs/human-drivers.md`` by ``python benchmarks/render_tables.py --readme
docs/human-drivers.md``.
"""

from __future__ import annotations

import os
import time
import warnings

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

#: I-80 at Emeryville: 65 mph.
SPEED_LIMIT_M_S = 65 * 0.44704

CHOICES = {
    "default": {},
    "treiber-kesting-2013": {"priors": "treiber-kesting-2013"},
    "default + speed_limit 29.1 m/s": {"speed_limit": SPEED_LIMIT_M_S},
}


def main() -> None:
    from _results import ngsim_benchmark_args, ngsim_drivers, write_results

    args = ngsim_benchmark_args(__doc__.splitlines()[0], "benchmarks/results/human_priors.json")

    import numpy as np

    import carpool
    from carpool.compare.scores import heldout_score, lfo_split, loo_score
    from carpool.inference.plausibility import count_outside

    warnings.simplefilter("ignore")
    data = ngsim_drivers(args.drivers)
    settings = {"sampler": carpool.NutsSettings(chains=args.chains, warmup=args.warmup,
                                                draws=args.draws, seed=args.seed),
                "warn": False}
    rows = []
    for label, options in CHOICES.items():
        spec = carpool.get_spec("idm", **options)
        grouped = spec.prepare(data)
        train, test = lfo_split(grouped, 0.2)
        for pooling in ("unpooled", "hierarchical"):
            t = time.perf_counter()
            fit = carpool.fit(grouped, spec, pooling=pooling, **settings)
            wall = time.perf_counter() - t
            num_outside, num_weak = count_outside(carpool.plausibility(fit))
            pop = fit.summary().query("kind == 'population'").set_index("parameter")["mean"]
            future = heldout_score(carpool.fit(train, spec, pooling=pooling, **settings), test,
                                   seed=args.seed)
            d = fit.diagnostics
            rows.append({
                "priors": label, "pooling": pooling, "wall_s": wall,
                "max_rhat": d["max_rhat"], "divergences": d["divergences"],
                "outside": num_outside, "outside_weak": num_weak,
                "v0": float(pop["v0"]), "b": float(pop["b"]),
                "elpd_loo": loo_score(fit).elpd,
                "lfo_rmse_m_s": future.rmse,
                "lfo_median_abs_error_m_s": float(np.median(np.sqrt(future.sq_err)))})
            print(rows[-1], flush=True)
    write_results(args.json, args, rows=rows)


if __name__ == "__main__":
    main()
