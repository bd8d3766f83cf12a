"""Accuracy and cost of the GP residual likelihoods against the exact whole-series GP.

Series are drawn from the exact model (squared-exponential kernel + white noise, 5 Hz) and
scored by each approximation of :class:`carpool.residuals.GP`:

- ``sliding W s``: each residual conditioned on the previous W seconds (Vecchia);
- ``window W s``: independent windows of W seconds (the reference's approach);
- ``exact``: the whole-series multivariate normal (``window_s=None``).

Columns: the mean and largest absolute error of the log-likelihood per series against the
exact one (nats; a series of ``--steps`` points), the error of the maximum-likelihood length
scale on a grid (relative), and the time of one value-and-gradient on ``--drivers`` series
(float32, compiled, median of ``--repeats``; blocks on the result).

    python benchmarks/gp_accuracy.py [--smoke] [--json out.json]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--drivers", type=int, default=20)
    ap.add_argument("--series", type=int, default=40, help="series per kernel setting")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/gp_accuracy.json")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.drivers, args.series, args.repeats = 30, 2, 2, 1

    import jax
    import jax.numpy as jnp
    import numpy as np
    import pandas as pd

    from carpool.residuals import GP, se_covariance

    dt, sigma = 0.2, 0.1
    settings = [(0.5, 0.3), (1.5, 0.3), (3.0, 0.3)]  # (length scale s, scale m/s^2)
    if args.smoke:
        settings = settings[1:2]
    methods = {"sliding 5 s": GP(5.0, method="sliding"),
               "sliding 10 s": GP(10.0, method="sliding"),
               "window 10 s": GP(10.0, method="window"),
               "window 20 s": GP(20.0, method="window"),
               "exact": GP(None, method="window")}
    if args.smoke:
        methods = {k: methods[k] for k in ("sliding 5 s", "window 10 s", "exact")}
    rng = np.random.default_rng(0)
    grid = np.exp(np.linspace(np.log(0.3), np.log(6.0), 5 if args.smoke else 41))

    def loglik(process, r, ell, scale):
        steps = (dt, process.window_steps(dt, r.shape[-1]))
        with jax.enable_x64(True):
            m, s = process.conditional(jnp.asarray(r), {"lengthscale": ell, "scale": scale},
                                       sigma, steps)
            return np.asarray(jnp.sum(-0.5 * ((jnp.asarray(r) - m) / s) ** 2 - jnp.log(s)
                                      - 0.5 * np.log(2 * np.pi), axis=-1))

    rows = []
    for ell, scale in settings:
        cov = np.asarray(se_covariance(args.steps, dt, ell, scale, sigma), dtype=float)
        r = rng.multivariate_normal(np.zeros(args.steps), cov, size=args.series)
        exact = loglik(methods["exact"], r, ell, scale)
        mle_exact = grid[np.argmax([loglik(methods["exact"], r, g, scale).sum()
                                    for g in grid])]
        for name, process in methods.items():
            err = loglik(process, r, ell, scale) - exact
            mle = grid[np.argmax([loglik(process, r, g, scale).sum() for g in grid])]
            rows.append({"lengthscale_s": ell, "method": name,
                         "mean_abs_err_nats": float(np.mean(np.abs(err))),
                         "max_abs_err_nats": float(np.max(np.abs(err))),
                         "mle_lengthscale_rel_err": float(mle / mle_exact - 1.0)})
    acc = pd.DataFrame(rows).set_index(["lengthscale_s", "method"])

    r32 = jnp.asarray(rng.standard_normal((args.drivers, args.steps)), jnp.float32)
    cost = {}
    for name, process in methods.items():
        steps = (dt, process.window_steps(dt, args.steps))

        def f(x, process=process, steps=steps):
            m, s = process.conditional(r32, {"lengthscale": jnp.exp(x[0]),
                                             "scale": jnp.exp(x[1])}, jnp.exp(x[2]), steps)
            return jnp.sum(-0.5 * ((r32 - m) / s) ** 2 - jnp.log(s))

        vg = jax.jit(jax.value_and_grad(f))
        x = jnp.asarray([0.4, -1.2, -2.3], jnp.float32)
        jax.block_until_ready(vg(x))
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            jax.block_until_ready(vg(x))
            times.append(time.perf_counter() - t)
        cost[name] = float(np.median(times)) * 1e6
    acc["grad_us"] = [cost[m] for _, m in acc.index]
    pd.set_option("display.width", 160)
    print(f"GP residual likelihoods vs the exact whole-series GP: {args.series} series x "
          f"{args.steps} steps at {1 / dt:g} Hz, white noise {sigma} m/s^2; gradient cost on "
          f"{args.drivers} series")
    print(acc.round(4).to_string())
    write_results(args.json, args, rows=acc.reset_index().to_dict("records"))


if __name__ == "__main__":
    main()
