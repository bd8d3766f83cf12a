"""NumPyro NUTS (carpool's default) against BlackJAX's ChEES-HMC on the same posterior.

The hierarchical IDM on the bundled NGSIM drivers, carpool's model exactly as a fit builds
it (its default priors and data-driven centring): NUTS as ``carpool.fit`` runs it (4 chains x
(1,000 + 1,000), one CPU device per chain), and ChEES-HMC (Hoffman, Radul & Sountsov 2021:
many short chains, jittered trajectory length adapted by the ChEES criterion, step size by
dual averaging, a diagonal mass matrix estimated across the chains) through
``blackjax.chees_adaptation`` and ``blackjax.dhmc`` on the model's potential (the same
log density, one compiled program for all chains). Per seed, in one fresh process for both
samplers: wall time (compilation and warm-up included), the smallest bulk ESS of the
population (mu, tau) and of all of mu, tau, the drivers' parameters and the noise scale,
their ESS per second, divergences and gradient evaluations. Then the medians over seeds and
the ratio ChEES / NUTS of the median ESS/s.

    python benchmarks/sampler_choice.py               # 20 drivers, seeds 0-4
    python benchmarks/sampler_choice.py --smoke       # seconds

Needs ``blackjax`` (``pip install -e ".[samplers]"``; without it, NUTS rows only). Prints a
table and writes JSON to ``benchmarks/results/sampler_choice.json`` (``--json``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

SAMPLERS = ("nuts", "chees")
#: The variables both samplers are scored on: the population, every driver's parameters and
#: the noise scale.
COMPARED = ("mu", "tau", "theta", "sigma")


def _ess(draws: dict) -> tuple[float, float]:
    """Smallest bulk ESS of mu and tau, and of every variable, from (chains, draws, ...)."""
    import arviz as az
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = az.ess(az.from_dict(posterior=draws), method="bulk")
    every = min(float(np.nanmin(ess[v].values)) for v in ess.data_vars)
    pop = min((float(np.nanmin(ess[v].values)) for v in ("mu", "tau") if v in ess),
              default=every)
    return pop, every


def run_nuts(df, args, seed: int) -> dict:
    import numpy as np

    import carpool

    t0 = time.perf_counter()
    fit = carpool.fit(df, "idm", sampler=carpool.NutsSettings(
        chains=args.chains, warmup=args.warmup, draws=args.draws, seed=seed), warn=False)
    wall = time.perf_counter() - t0
    post = fit.idata.posterior
    same = {k: post[k].values for k in COMPARED}
    pop, every = _ess(same)
    d = fit.diagnostics
    return {"sampler": "nuts", "seed": seed, "wall_s": wall, "min_ess_pop": pop,
            "ess_per_s": pop / wall, "min_ess_all": every, "ess_all_per_s": every / wall,
            "divergences": int(d["divergences"]), "max_rhat": _max_rhat(same),
            "gradients": int(np.sum(fit.idata.sample_stats["n_steps"].values))}


def run_chees(df, args, seed: int) -> dict:
    import blackjax
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model

    from carpool.inference.run import resolve_spec
    from carpool.pooling.centring import choose_centring
    from carpool.pooling.model import build_model
    from carpool.pooling.spec import PoolingConfig

    t0 = time.perf_counter()
    spec = resolve_spec("idm")
    data = spec.prepare(df)
    config = PoolingConfig(pooling="hierarchical").with_defaults(spec, data.num_groups)
    centring = choose_centring(spec, data, config, seed=seed)
    weights = (centring.weight_matrix(spec.parameters.names, data.num_groups)
               if centring.weights else None)
    built = build_model(spec, data, config, centring=centring.choice, weights=weights)
    kwargs = {"observed": True}
    info = initialize_model(jax.random.PRNGKey(seed), built.model, model_kwargs=kwargs)
    flat0, unravel = ravel_pytree(info.param_info.z)
    potential = info.potential_fn

    def logdensity(x):
        return -potential(unravel(x))

    C, dim = args.chees_chains, flat0.size
    key_init, key_warm, key_run = jax.random.split(jax.random.PRNGKey(seed), 3)
    # dispersed starts, as carpool's NUTS chains: uniform in (-0.5, 0.5) of every coordinate
    start = jax.random.uniform(key_init, (C, dim), flat0.dtype, -0.5, 0.5)
    warmup = blackjax.chees_adaptation(logdensity, C, mass_matrix_estimation="diagonal",
                                       adaptation_info_fn=lambda *a: None)

    @jax.jit
    def go(key_warm, key_run, start):
        (states, params), _ = warmup.run(key_warm, start, 0.1,
                                         optax.adam(args.learning_rate), args.chees_warmup)
        step = blackjax.dhmc(logdensity, **params).step

        def one(states, key):
            states, info = jax.vmap(step)(jax.random.split(key, C), states)
            return states, (states.position, info.is_divergent,
                            info.num_integration_steps)

        _, (pos, div, steps) = jax.lax.scan(one, states,
                                            jax.random.split(key_run, args.chees_draws))
        return pos, div, steps

    pos, div, steps = jax.block_until_ready(go(key_warm, key_run, start))
    constrain = jax.jit(jax.vmap(jax.vmap(lambda x: info.postprocess_fn(
        unravel(x)))))
    draws = constrain(jnp.swapaxes(pos, 0, 1))  # (chains, draws, ...)
    jax.block_until_ready(draws)
    wall = time.perf_counter() - t0
    # the variables NUTS's row is scored on: z (latent group values) is theta up to a
    # monotone map per coordinate, which rank-normalised bulk ESS and R-hat do not see
    same = {k: np.asarray(draws["z" if k == "theta" else k]) for k in COMPARED}
    pop, every = _ess(same)
    return {"sampler": "chees", "seed": seed, "wall_s": wall, "min_ess_pop": pop,
            "ess_per_s": pop / wall, "min_ess_all": every, "ess_all_per_s": every / wall,
            "divergences": int(np.sum(div)), "max_rhat": _max_rhat(same),
            "gradients": int(np.sum(steps))}


def _max_rhat(draws: dict) -> float:
    import arviz as az
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = az.rhat(az.from_dict(posterior=draws))
    return max(float(np.nanmax(r[v].values)) for v in r.data_vars)


def _child(args, sampler: str, seed: int) -> dict:
    from _results import run_child

    cmd = ["--child", f"{sampler}:{seed}"] + [a for a in sys.argv[1:] if a != "--smoke"]
    return run_child(__file__, cmd + (["--smoke"] if args.smoke else []),
                     f"{sampler} seed {seed}")


def main() -> None:
    from _results import ngsim_benchmark_args, ngsim_drivers, one_device_per_chain, write_results

    one_device_per_chain()

    args = ngsim_benchmark_args(
        __doc__.splitlines()[0], "benchmarks/results/sampler_choice.json",
        drivers_default=(20, "drivers (the documented run: 20)"),
        seeds=("0,1,2,3,4", "comma-separated seeds"),
        chees_chains=(32, "ChEES chains"),
        chees_warmup=(500, "ChEES warm-up steps"),
        chees_draws=(250, "ChEES draws per chain"),
        learning_rate=(0.025, "ChEES's Adam learning rate (BlackJAX's example)"),
        child=("", "internal: run sampler:seed and print its row"))
    if args.drivers is None:
        args.drivers = args.drivers_default
    if args.smoke:
        args.seeds, args.drivers = "0", 3
        args.warmup, args.draws, args.chains = 50, 50, 2
        args.chees_chains, args.chees_warmup, args.chees_draws = 4, 30, 20
    warnings.simplefilter("ignore")
    os.environ["CARPOOL_FIT_CACHE"] = "off"  # every NUTS fit runs
    if args.child:
        sampler, seed = args.child.split(":")
        df = ngsim_drivers(args.drivers)
        row = (run_nuts if sampler == "nuts" else run_chees)(df, args, int(seed))
        print("ROW " + json.dumps(row), flush=True)
        return
    import importlib.util

    import numpy as np
    from render_tables import markdown_table

    samplers = SAMPLERS if importlib.util.find_spec("blackjax") else ("nuts",)
    if len(samplers) < len(SAMPLERS):
        print("blackjax is not installed (pip install -e '.[samplers]'): NUTS rows only")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for sampler in samplers:
            rows.append(_child(args, sampler, seed))
            print(rows[-1], flush=True)
    medians = []
    for sampler in samplers:
        mine = [r for r in rows if r["sampler"] == sampler]
        medians.append({"sampler": sampler, "seed": "median",
                        **{k: float(np.median([r[k] for r in mine]))
                           for k in ("wall_s", "min_ess_pop", "ess_per_s", "min_ess_all",
                                     "ess_all_per_s", "divergences", "max_rhat",
                                     "gradients")}})
    nuts, chees = medians[0], medians[-1]
    ratios = [{"ess_per_s_ratio": chees["ess_per_s"] / nuts["ess_per_s"],
               "ess_all_per_s_ratio": chees["ess_all_per_s"] / nuts["ess_all_per_s"]}]
    write_results(args.json, args, drivers=args.drivers, rows=rows, medians=medians,
                  ratios=ratios)
    columns = ["sampler", "seed", "wall_s", "min_ess_pop", "ess_per_s", "min_ess_all",
               "ess_all_per_s", "divergences", "max_rhat", "gradients"]
    print(markdown_table(rows + medians, columns))
    print(markdown_table(ratios, ["ess_per_s_ratio", "ess_all_per_s_ratio"]))


if __name__ == "__main__":
    main()
