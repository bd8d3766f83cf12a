"""The joint speed-and-gap likelihood against the speed likelihood on the NGSIM drivers.

Zhang & Sun's joint model scores each step's next speed and next gap together (the
ballistic update, see ``carpool.carfollowing_spec(likelihood="joint")``). For both
likelihoods, in the unpooled and hierarchical modes, on the 76 drivers of
``carpool.load_example("ngsim-i80")`` at the default sampler settings: wall time,
convergence, drivers outside the IDM's physical ranges, the population (hierarchical) or
across-driver median (unpooled) of s0, T and b, and the learned measurement errors.

    python benchmarks/joint_likelihood.py            # the documented run (about 15 minutes)
    python benchmarks/joint_likelihood.py --smoke    # seconds: CI keeps it from rotting

Writes JSON to ``benchmarks/results/joint_likelihood.json`` (or ``--json``), rendered into
``docs/human-drivers.md`` by ``python benchmarks/render_tables.py --readme
docs/human-drivers.md``.
"""

from __future__ import annotations

import os
import time
import warnings

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")


def main() -> None:
    from _results import ngsim_benchmark_args, ngsim_drivers, write_results

    args = ngsim_benchmark_args(__doc__.splitlines()[0],
                                "benchmarks/results/joint_likelihood.json")

    import numpy as np

    import carpool
    from carpool.inference.plausibility import count_outside

    warnings.simplefilter("ignore")
    data = ngsim_drivers(args.drivers)
    settings = {"sampler": carpool.NutsSettings(chains=args.chains, warmup=args.warmup,
                                                draws=args.draws, seed=args.seed),
                "warn": False}
    rows = []
    for likelihood in ("speed", "joint"):
        spec = carpool.get_spec("idm", likelihood=likelihood)
        grouped = spec.prepare(data)
        for pooling in ("unpooled", "hierarchical"):
            t = time.perf_counter()
            fit = carpool.fit(grouped, spec, pooling=pooling, **settings)
            wall = time.perf_counter() - t
            num_outside, num_weak = count_outside(carpool.plausibility(fit))
            s = fit.summary()
            if pooling == "hierarchical":
                centre = s.query("kind == 'population'").set_index("parameter")["mean"]
            else:
                centre = s.query("kind == 'group'").groupby("parameter")["mean"].median()
            noise = {k: float(np.mean(v)) for k, v in fit.noise_draws().items()}
            d = fit.diagnostics
            rows.append({
                "likelihood": likelihood, "pooling": pooling, "wall_s": wall,
                "max_rhat": d["max_rhat"], "min_ess_bulk": d["min_ess_bulk"],
                "divergences": d["divergences"],
                "outside": num_outside, "outside_weak": num_weak,
                "s0": float(centre["s0"]), "T": float(centre["T"]), "b": float(centre["b"]),
                "sigma": noise["sigma"],
                "sigma_speed": noise.get("sigma_first", float("nan")),
                "sigma_gap": noise.get("sigma_second", float("nan"))})
            print(rows[-1], flush=True)
    write_results(args.json, args, drivers=len(grouped.group_ids), rows=rows)


if __name__ == "__main__":
    main()
