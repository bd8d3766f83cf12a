"""What one gradient of the hierarchical IDM's log density costs, and what each of the
likelihood's layout choices saves.

NUTS runs at (leapfrog steps) x (gradient cost): at the defaults' ~130 steps per draw,
2 chains x 2,000 iterations take 520,000 gradients, so every 10 us per gradient is ~2.6 s
of sampling on 2 cores. This script times the gradient alone.

Data: the 39-driver congested stand-in of ``compare_pymc.py`` (5,460 one-step
observations, 41 of them at 0 m/s, i.e. censored). carpool's default priors, the default
centring choice for these data (v0 non-centred, s0 T a b centred). Rows:

- ``iid``: the model as carpool builds it (padded drivers x time layout, whole exponent by
  repeated multiplication, censored term at the censored observations only);
- ``iid, censored term everywhere``: the censored ``log Phi`` evaluated for every
  observation under a ``where`` (carpool before 2026-12-01);
- ``iid, exp-log power``: ``(v / v0) ** 4`` as ``exp(4 log(v / v0))`` (before 2026-12-01);
- ``iid, censored term everywhere + exp-log power``: both, i.e. carpool's likelihood as it
  was before 2026-12-01;
- ``iid, flat layout``: one row per observation with a per-observation gather of the
  driver's parameters (``layout="flat"``);
- ``ar4``: AR(4) residuals (per-step coefficients by shifted multiply-adds);
- ``ar4, gathered coefficients``: the AR(4) likelihood with a per-step gather of the
  predictor coefficients (before 2026-12-01; checked equal to the current form);
- ``gp``: the sliding-window GP residual (10 s window, 50 neighbours).

Each gradient is evaluated ``--evals`` times inside one compiled ``fori_loop`` (no Python
dispatch in the clock), one CPU device, after a warm-up call; the clock is read after
blocking on the result. The compile column is the first call (tracing + XLA).

    python benchmarks/gradient_cost.py            # the documented run (~1 min)
    python benchmarks/gradient_cost.py --smoke    # seconds

Prints a table and writes JSON to ``benchmarks/results/gradient_cost.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

CENTRING = {"v0": "noncentred", "s0": "centred", "T": "centred", "a": "centred",
            "b": "centred"}


def gathered_ar_conditional(r: Any, kappa: Any, sigma: Any) -> tuple[Any, Any]:
    """The AR(p) one-step mean and sd with a per-step coefficient gather (the old form)."""
    import jax.numpy as jnp

    from carpool.residuals.ar import durbin_levinson, shift_lags

    G, T = r.shape
    p = kappa.shape[-1]
    coefficients, sd_factor = durbin_levinson(jnp.broadcast_to(kappa, (G, p)))
    order = jnp.minimum(jnp.arange(T), p)
    mean = jnp.sum(shift_lags(r, p) * jnp.take(coefficients, order, axis=-2), axis=-1)
    sigma = jnp.asarray(sigma, r.dtype)
    sigma = sigma[:, None] if sigma.ndim == 1 else sigma
    return mean, jnp.broadcast_to(sigma * jnp.take(sd_factor, order, axis=-1), mean.shape)


def check_old_ar_form() -> None:
    """The old AR form must be the same likelihood as the current one (else its row lies)."""
    import jax.numpy as jnp
    import numpy as np

    from carpool.residuals.ar import ar_conditional

    r = jnp.asarray(np.random.default_rng(0).normal(size=(5, 30)), jnp.float32)
    kappa = jnp.asarray([0.6, -0.2, 0.1, 0.05])
    for new, old in zip(ar_conditional(r, kappa, 0.3), gathered_ar_conditional(r, kappa, 0.3),
                        strict=True):
        np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-6)


@contextlib.contextmanager
def old_form(variant: str) -> Iterator[None]:
    """Swap in the pre-2026-12-01 form a row measures (restored afterwards)."""
    import jax.numpy as jnp

    from carpool.carfollowing import idm
    from carpool.residuals import process

    saved = idm.safe_power, process.ar_conditional
    if "exp-log power" in variant:
        def general_power(x: Any, exponent: Any) -> Any:
            positive = x > 0
            return jnp.where(positive, jnp.power(jnp.where(positive, x, 1.0), exponent), 0.0)

        idm.safe_power = general_power
    if variant == "gathered coefficients":
        process.ar_conditional = gathered_ar_conditional
    try:
        yield
    finally:
        idm.safe_power, process.ar_conditional = saved


def time_gradient(built: Any, evals: int, censored_everywhere: bool) -> dict[str, float]:
    """Microseconds per value-and-gradient of the potential energy, and the compile time."""
    import jax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model

    arrays = dict(built.arrays)
    if censored_everywhere:
        arrays["censored"] = None  # the likelihood then finds the censored ones per element
    info = initialize_model(jax.random.PRNGKey(0), built.model,
                            model_kwargs={"observed": True, "arrays": arrays})
    flat, unravel = ravel_pytree(info.param_info.z)
    grad = jax.value_and_grad(lambda x: info.potential_fn(unravel(x)))

    @jax.jit
    def loop(x: Any) -> Any:
        def body(i: Any, carry: Any) -> Any:
            value, g = grad(carry[0] + 1e-7 * i)  # a new point each time: nothing hoisted
            return carry[0], carry[1] + value + g.sum()

        return jax.lax.fori_loop(0, evals, body, (x, 0.0))[1]

    t = time.perf_counter()
    jax.block_until_ready(loop(flat))
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(loop(flat))
    return {"us_per_gradient": 1e6 * (time.perf_counter() - t) / evals,
            "compile_s": compile_s, "dimension": int(flat.size)}


ROWS = (("iid", ""), ("iid", "censored term everywhere"), ("iid", "exp-log power"),
        ("iid", "censored term everywhere + exp-log power"), ("iid", "flat layout"),
        ("ar4", ""), ("ar4", "gathered coefficients"), ("gp", ""))


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drivers", type=int, default=39)
    ap.add_argument("--duration-s", type=float, default=28.0)
    ap.add_argument("--data-seed", type=int, default=11)
    ap.add_argument("--evals", type=int, default=2000)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/gradient_cost.json")
    args = ap.parse_args()
    if args.smoke:
        args.drivers, args.duration_s, args.evals = 3, 6.0, 20

    import numpy as np
    import pandas as pd
    from compare_pymc import stand_in

    from carpool.inference.run import resolve_spec
    from carpool.pooling.model import build_model
    from carpool.pooling.spec import Hyperpriors, PoolingConfig

    check_old_ar_form()
    df, _ = stand_in(args.drivers, args.duration_s, args.data_seed)
    rows = []
    for residual, variant in ROWS:
        spec = resolve_spec("idm", residual=residual)
        grouped = spec.prepare(df)
        config = PoolingConfig(pooling="hierarchical",
                               hyperpriors=(spec.default_hyperpriors
                                            or Hyperpriors.default_for(grouped.num_groups)))
        with old_form(variant):
            built = build_model(spec, grouped, config, centring=CENTRING,
                                layout="flat" if variant == "flat layout" else "auto")
            row = time_gradient(built, args.evals, "censored term everywhere" in variant)
        rows.append({"residual": residual, "variant": variant or "carpool",
                     "observations": grouped.num_obs,
                     "censored": int(np.sum(np.asarray(grouped.y) <= 0.0)), **row})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    base = {res: table[(table.residual == res) & (table.variant == "carpool")]
            .us_per_gradient.iloc[0] for res in table.residual.unique()}
    table["relative"] = table.us_per_gradient / table.residual.map(base)
    rows = table.to_dict("records")
    pd.set_option("display.width", 200)
    print(f"\nhierarchical IDM, {args.drivers} drivers, {rows[0]['observations']} observations "
          f"({rows[0]['censored']} censored); one CPU device, {args.evals} gradients per row")
    print(table.round(2).to_string(index=False))
    write_results(args.json, args, rows=rows, load_average=os.getloadavg())


if __name__ == "__main__":
    main()
