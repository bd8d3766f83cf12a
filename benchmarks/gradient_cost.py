"""What one gradient of the hierarchical IDM's log density costs, and what each of the
likelihood's layout choices saves.

NUTS runs at (leapfrog steps) x (gradient cost): at the defaults' ~130 steps per draw,
2 chains x 2,000 iterations take 520,000 gradients, so every 10 us per gradient is ~2.6 s
of sampling on 2 cores. This script times the gradient alone.

Data: the 39-driver congested stand-in of ``compare_pymc.py`` (5,460 one-step
observations, 41 of them at 0 m/s, i.e. censored). carpool's default priors, the default
centring choice for these data (v0 non-centred, s0 T a b centred). Rows:

- ``iid``: the model as carpool builds it: the IDM's mean is linear in eight data
  features, so each driver's series enters as its projected statistics (an 8 x 8
  triangle, 8 numbers and a constant, :mod:`carpool.pooling.linear_mean`) and the
  censored observations' rows, whatever the series length;
- ``iid, summed density``: the Gaussian log density summed over the observations with its
  data-only parts done once at build time (mask, censoring, the time step's logarithm and
  reciprocal; the censored term at the censored observations only), padded drivers x time
  layout, whole exponent by repeated multiplication (carpool before 2026-12-02's
  projection); the rows below are variants of this one;
- ``iid, data as program constants``: the same model with the data closed over (constants
  of the compiled loop) instead of passed as its argument: XLA then folds every data-only
  computation at compile time. carpool's sampler takes the data as an argument (one
  compiled program per shape, kept on disk), so the argument form is what it pays;
- ``iid, per-observation log density``: each observation's log density (a logarithm and a
  division of its scale sigma * dt per cell) under the mask, summed by NumPyro (carpool
  before 2026-12-02);
- ``iid, censored term everywhere``: that, with the censored ``log Phi`` evaluated for
  every observation under a ``where`` (carpool before 2026-12-01);
- ``iid, exp-log power``: ``(v / v0) ** 4`` as ``exp(4 log(v / v0))`` (before 2026-12-01);
- ``iid, censored term everywhere + exp-log power``: both, i.e. carpool's likelihood as it
  was before 2026-12-01;
- ``iid, flat layout``: one row per observation with a per-observation gather of the
  driver's parameters (``layout="flat"``);
- ``ar4``: AR(4) residuals (per-step coefficients by shifted multiply-adds);
- ``ar4, per-observation log density``: as for iid (before 2026-12-02);
- ``ar4, gathered coefficients``: that, with a per-step gather of the predictor
  coefficients (before 2026-12-01; checked equal to the current form);
- ``gp``: the sliding-window GP residual (10 s window, 50 neighbours);
- ``gp, per-observation log density``: as for iid (before 2026-12-02).

Each gradient is evaluated ``--evals`` times inside one compiled ``fori_loop`` (no Python
dispatch in the clock), with the data as the loop's argument as in the sampler, one CPU
device, after a warm-up call; the fastest of 3 timed calls counts; the clock is read after
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
    """Swap in the older power or AR form a row measures (restored afterwards)."""
    import jax.numpy as jnp

    from carpool.carfollowing import idm
    from carpool.residuals import process

    saved = idm.safe_power, process.ar_conditional
    if "exp-log power" in variant:
        def general_power(x: Any, exponent: Any) -> Any:
            positive = x > 0
            return jnp.where(positive, jnp.power(jnp.where(positive, x, 1.0), exponent), 0.0)

        idm.safe_power = general_power
    if "gathered coefficients" in variant:
        process.ar_conditional = gathered_ar_conditional
    try:
        yield
    finally:
        idm.safe_power, process.ar_conditional = saved


def flat_potential(built: Any, arrays: Any, data_as_constants: bool = False
                   ) -> tuple[Any, Any]:
    """``(x0 (D,), potential(x, data))``: the model's potential energy on its flat
    unconstrained vector, the data as an argument (or closed over, ``data_as_constants``)."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro import handlers
    from numpyro.distributions import biject_to
    from numpyro.infer.util import potential_energy

    def latent(key: Any) -> dict[str, Any]:
        model = handlers.seed(built.model, key)
        sites = handlers.trace(model).get_trace(observed=True, arrays=arrays)
        return {n: biject_to(s["fn"].support).inv(s["value"]) for n, s in sites.items()
                if s["type"] == "sample" and not s["is_observed"]}

    # the unconstrained sites' shapes from an abstract trace, and 0 for each of them: the
    # gradient's cost does not depend on the point, and NumPyro's initialize_model ran the
    # model op by op (90 of the --smoke run's 175 s; measured)
    shapes = jax.eval_shape(latent, jax.random.PRNGKey(0))
    flat, unravel = ravel_pytree({n: jnp.zeros(v.shape, v.dtype) for n, v in shapes.items()})

    def potential(x: Any, data: Any) -> Any:
        data = arrays if data_as_constants else data
        return potential_energy(built.model, (), {"observed": True, "arrays": data},
                                unravel(x))

    return flat, potential


def time_gradient(built: Any, evals: int, variant: str) -> dict[str, float]:
    """Microseconds per value-and-gradient of the potential energy, and the compile time.

    The data enter the compiled loop as an argument, as they enter carpool's sampler (so
    that one compiled program serves every data set of a shape); ``data_as_constants``
    closes over them instead, which lets XLA fold every data-only computation at compile
    time (the row that shows what that is worth). ``variant``: the row's variant (see the
    module docstring).
    """
    import jax

    arrays = dict(built.arrays)
    if variant not in ("", "data as program constants"):
        arrays["projected"] = None  # every older form scores the observations
    if PER_OBSERVATION in variant:  # the likelihood then scores the NumPyro distribution
        arrays["terms"] = None
        arrays["censored"] = jax.tree_util.tree_map(jax.numpy.asarray, built.spec.likelihood
                                                    .censored_at(arrays["y"], arrays["mask"]))
    if "censored term everywhere" in variant:
        arrays["terms"] = None
        arrays["censored"] = None  # the likelihood then finds the censored ones per element
    flat, potential = flat_potential(built, arrays, variant == "data as program constants")
    grad = jax.value_and_grad(potential)

    @jax.jit
    def loop(x: Any, data: Any) -> Any:
        def body(i: Any, carry: Any) -> Any:
            value, g = grad(carry[0] + 1e-7 * i, data)  # a new point each time
            return carry[0], carry[1] + value + g.sum()

        return jax.lax.fori_loop(0, evals, body, (x, 0.0))[1]

    t = time.perf_counter()
    jax.block_until_ready(loop(flat, arrays))
    compile_s = time.perf_counter() - t
    return {"us_per_gradient": 1e6 * fastest(lambda: loop(flat, arrays)) / evals,
            "compile_s": compile_s, "dimension": int(flat.size)}


REPEATS = 3


def fastest(call: Any) -> float:
    """Seconds of the fastest of :data:`REPEATS` blocked calls: other work on a shared
    machine only ever adds time, so the minimum is the least disturbed measurement."""
    import jax

    best = float("inf")
    for _ in range(REPEATS):
        t = time.perf_counter()
        jax.block_until_ready(call())
        best = min(best, time.perf_counter() - t)
    return best


def time_nuts_step(built: Any | None, dimension: int, draws: int) -> dict[str, float]:
    """Microseconds per leapfrog step inside NumPyro's NUTS, data as the program's argument.

    ``built=None`` samples a standard normal of ``dimension`` instead: the tree's own
    bookkeeping, with a gradient that costs nothing. Fixed step size 0.01 and identity mass
    (no adaptation, so every step costs the same), tree depth <= 8, from a point uniform in
    (-0.5, 0.5) per unconstrained coordinate (carpool's default start); time over the steps
    taken (the fastest of :data:`REPEATS` calls), after a warm-up call of the same program.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from numpyro.infer import MCMC, NUTS

    if built is None:
        model_potential, arrays = None, {}
    else:
        flat, model_potential = flat_potential(built, built.arrays)
        dimension, arrays = int(flat.size), built.arrays

    def chain(key: Any, x0: Any, data: Any) -> Any:
        def potential(x: Any) -> Any:
            if model_potential is None:
                return 0.5 * jnp.sum(x * x)
            return model_potential(x, data)

        kernel = NUTS(potential_fn=potential, step_size=0.01, adapt_step_size=False,
                      adapt_mass_matrix=False, max_tree_depth=8)
        mcmc = MCMC(kernel, num_warmup=0, num_samples=draws, progress_bar=False)
        mcmc.run(key, init_params=x0, extra_fields=("num_steps",))
        return mcmc.get_extra_fields()["num_steps"]

    key = jax.random.PRNGKey(1)
    x0 = jax.random.uniform(key, (dimension,), minval=-0.5, maxval=0.5)
    run = jax.jit(chain)
    t = time.perf_counter()
    jax.block_until_ready(run(key, x0, arrays))
    compile_s = time.perf_counter() - t
    steps = int(np.sum(run(key, x0, arrays)))  # the same every call: same key and start
    seconds = fastest(lambda: run(key, x0, arrays))
    return {"us_per_step": 1e6 * seconds / steps, "steps": steps,
            "compile_s": compile_s, "dimension": dimension}


PER_OBSERVATION = "per-observation log density"
ROWS = (("iid", ""), ("iid", "summed density"), ("iid", "data as program constants"),
        ("iid", PER_OBSERVATION),
        ("iid", "censored term everywhere"), ("iid", "exp-log power"),
        ("iid", "censored term everywhere + exp-log power"), ("iid", "flat layout"),
        ("ar4", ""), ("ar4", PER_OBSERVATION),
        ("ar4", f"{PER_OBSERVATION} + gathered coefficients"), ("gp", ""),
        ("gp", PER_OBSERVATION))


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drivers", type=int, default=39)
    ap.add_argument("--duration-s", type=float, default=28.0)
    ap.add_argument("--data-seed", type=int, default=11)
    ap.add_argument("--evals", type=int, default=2000)
    ap.add_argument("--nuts-draws", type=int, default=1000)
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
    def hierarchical(residual: str, layout: str = "auto") -> Any:
        spec = resolve_spec("idm", residual=residual)
        grouped = spec.prepare(df)
        config = PoolingConfig(pooling="hierarchical",
                               hyperpriors=(spec.default_hyperpriors
                                            or Hyperpriors.default_for(grouped.num_groups)))
        return build_model(spec, grouped, config, centring=CENTRING, layout=layout)

    for residual, variant in ROWS:
        with old_form(variant):
            built = hierarchical(residual, "flat" if variant == "flat layout" else "auto")
            grouped = built.data
            row = time_gradient(built, args.evals, variant)
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

    built = hierarchical("iid")
    draws = 20 if args.smoke else args.nuts_draws
    nuts = [{"potential": "hierarchical IDM, iid (as sampled)",
             **time_nuts_step(built, 0, draws)}]
    nuts.append({"potential": "standard normal, same dimension (bookkeeping alone)",
                 **time_nuts_step(None, nuts[0]["dimension"], draws)})
    nuts_table = pd.DataFrame(nuts)
    print("\nNUTS, one leapfrog step (fixed step size 0.01, identity mass, depth <= 8)")
    print(nuts_table.round(2).to_string(index=False))
    write_results(args.json, args, rows=rows, nuts_step=nuts, load_average=os.getloadavg())


if __name__ == "__main__":
    main()
