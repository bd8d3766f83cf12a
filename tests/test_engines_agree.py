"""Every engine scores the same posterior: NUTS's model in both data layouts, SVI's
subsampled model at full batch, a separate fit's per-driver density and the centring
choice's per-group densities (with AR / GP residuals too).

The model (``pooling/model.py``) and the pure scoring core (``pooling/scoring.py``) share
their scoring code; what differs per engine is the data layout, the site structure (a plate
over groups, the centring order) and the coordinates, which is what these tests pin down.
Each case draws a point from the prior (seeded), evaluates every engine's log joint density
there in float64, and requires agreement to 1e-10 relative (float64 sums of a few thousand
terms agree to ~1e-13; the margin covers the different summation orders of the layouts).
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density, potential_energy

from carpool.models.registry import get_spec
from carpool.pooling.model import build_model, build_plated_model
from carpool.pooling.spec import Hyperpriors, PoolingConfig
from carpool.testing import simulate_drivers, simulate_linear_groups

RTOL = 1e-10

CENTRINGS = ("noncentred", "centred", "mixed", "partial")


def _data(model: str, likelihood: str, drivers: int = 5):
    if model == "linear":
        df, _ = simulate_linear_groups(5, [4, 9, 15, 20, 30], rng_seed=2)
        spec = get_spec("linear")
        return spec, spec.prepare(df)
    df, _ = simulate_drivers(drivers, duration_s=10.0, rng_seed=11)
    df = df[~((df.driver == "d03") & (df.time > 6.0))]  # uneven lengths: padding
    df = df.copy()
    df.loc[df.index[5:8], "speed"] = 0.0  # stops: censored next speeds
    columns = ["speed", "gap", "leader_speed"]
    df[columns] = df[columns].round(2)
    spec = get_spec("idm", likelihood=likelihood)
    return spec, spec.prepare(df)


def _centring(names, choice):
    if choice == "mixed":
        return {n: ("centred" if i % 2 else "noncentred") for i, n in enumerate(names)}
    if choice == "partial":
        return {n: "partial" for n in names}
    return {n: choice for n in names}


def _prior_point(model, seed: int) -> dict:
    trace = handlers.trace(handlers.seed(model, seed)).get_trace(observed=False)
    return {k: v["value"] for k, v in trace.items()
            if v["type"] == "sample" and not v.get("is_observed", False) and k != "obs"}


CASES = [
    *[("idm", lik, pooling, "noncentred", False)
      for lik, pooling in itertools.product(("speed", "joint"), ("pooled", "unpooled"))],
    *[("idm", lik, "hierarchical", c, corr)
      for lik in ("speed", "joint") for c in CENTRINGS for corr in (False, True)
      if not (c == "partial" and corr)],
    *[("linear", "speed", pooling, c, False)
      for pooling, c in [("pooled", "noncentred"), ("unpooled", "noncentred"),
                         ("hierarchical", "mixed"), ("hierarchical", "partial")]],
]


@pytest.mark.parametrize("model,likelihood,pooling,centring,correlated", CASES)
def test_nuts_layouts_and_svi_score_the_same_density(model, likelihood, pooling, centring,
                                                     correlated):
    with jax.enable_x64(True):
        spec, data = _data(model, likelihood)
        names = spec.parameters.names
        config = PoolingConfig(pooling=pooling, correlated=correlated,
                               hyperpriors=Hyperpriors())
        kwargs = {}
        if pooling == "hierarchical":
            kwargs["centring"] = _centring(names, centring)
            if centring == "partial":
                rng = np.random.default_rng(0)
                kwargs["weights"] = rng.uniform(0.0, 1.0, (data.num_groups, len(names)))
        layouts = ("flat",) if pooling == "pooled" else ("flat", "padded")
        built = {lay: build_model(spec, data, config, layout=lay, **kwargs) for lay in layouts}
        plated = build_plated_model(spec, data, config, **kwargs)
        for seed in (1, 2):
            point = _prior_point(built[layouts[0]].model, seed)
            # the deterministic site z is recomputed by each model from the sampled ones
            point = {k: v for k, v in point.items() if k != "z" or pooling != "hierarchical"}
            ref, _ = log_density(built[layouts[0]].model, (), {"observed": True}, point)
            assert np.isfinite(float(ref))
            for lay in layouts[1:]:
                lp, _ = log_density(built[lay].model, (), {"observed": True}, point)
                np.testing.assert_allclose(float(lp), float(ref), rtol=RTOL, err_msg=lay)
            lp, _ = log_density(plated.model, (), {"observed": True}, point)
            np.testing.assert_allclose(float(lp), float(ref), rtol=RTOL, err_msg="svi")


@pytest.mark.parametrize("likelihood", ["speed", "joint"])
def test_separate_fit_density_is_the_one_driver_unpooled_density(likelihood):
    # carpool.fit_separately scores each driver alone with its own noise: for a data set of
    # one driver that is the unpooled model, in the same unconstrained coordinates
    # (latent z, log noise, log-Jacobian included)
    from carpool.inference.separate import _padded, row_terms
    from carpool.pooling.scoring import point_log_density

    with jax.enable_x64(True):
        spec, one = _data("idm", likelihood, drivers=1)
        covariates = tuple(spec.covariates)
        y, mask, covs = _padded(one, covariates, 8)
        named = {c: covs[..., i] for i, c in enumerate(covariates)}
        f = point_log_density(spec)
        terms = row_terms(spec, y, mask, named)
        built = build_model(spec, one, PoolingConfig(pooling="unpooled"), layout="padded")
        noise_names = list(spec.likelihood.noise_priors())
        rng = np.random.default_rng(3)
        loc, _ = spec.parameters.latent_prior_arrays()
        for _ in range(2):
            z = loc + rng.normal(0.0, 0.3, loc.shape)
            log_noise = np.log(rng.uniform(0.05, 0.8, len(noise_names)))
            x = jax.numpy.asarray(np.concatenate([z, log_noise]))
            args = (jax.numpy.asarray(y[0]), jax.numpy.asarray(mask[0]),
                    {k: jax.numpy.asarray(v[0]) for k, v in named.items()})
            row = None if terms is None else jax.tree_util.tree_map(
                lambda t: jax.numpy.asarray(t[0]), terms)
            separate = f(x, *args, row)
            unconstrained = {"z": jax.numpy.asarray(z)[None, :],
                             **{n: jax.numpy.asarray(v)
                                for n, v in zip(noise_names, log_noise, strict=True)}}
            nuts = -potential_energy(built.model, (), {"observed": True}, unconstrained)
            np.testing.assert_allclose(float(separate), float(nuts), rtol=RTOL)


def test_the_comparison_sees_a_different_posterior():
    # negative control: an SVI model built with another population-scale prior must not
    # pass for the same density (the check above is not vacuous)
    from carpool.priors import HalfNormal

    with jax.enable_x64(True):
        spec, data = _data("idm", "speed")
        config = PoolingConfig(pooling="hierarchical", correlated=False)
        other = PoolingConfig(pooling="hierarchical", correlated=False,
                              hyperpriors=Hyperpriors(tau=HalfNormal(0.3)))
        built = build_model(spec, data, config, layout="flat")
        point = {k: v for k, v in _prior_point(built.model, 1).items() if k != "z"}
        ref, _ = log_density(built.model, (), {"observed": True}, point)
        lp, _ = log_density(build_plated_model(spec, data, other).model, (),
                            {"observed": True}, point)
        assert abs(float(lp) - float(ref)) > 1e3 * RTOL * abs(float(ref))


@pytest.mark.parametrize("residual,pooling", [("ar1", "pooled"), ("ar2", "hierarchical"),
                                              ("gp", "pooled"), ("gp", "hierarchical")])
def test_dynamic_residual_rows_score_the_models_likelihood(residual, pooling):
    # the centring choice scores each group's series alone (rows vmapped, the residual
    # parameters laid out per row by row_params); their sum is the model's likelihood
    from carpool.pooling.centring import row_functions

    with jax.enable_x64(True):
        df, _ = simulate_drivers(4, duration_s=12.0, rng_seed=5)
        df = df[~((df.driver == "d01") & (df.time > 8.0))].round(2)
        spec = get_spec("idm", residual=residual)
        data = spec.prepare(df)
        built = build_model(spec, data, PoolingConfig(pooling=pooling))
        for seed in (1, 2):
            point = _prior_point(built.model, seed)
            tr = handlers.trace(handlers.substitute(handlers.seed(built.model, 0), point)
                                ).get_trace(observed=True)
            model_ll = float(tr["obs"]["fn"].log_prob(tr["obs"]["value"]).sum())
            with handlers.seed(rng_seed=0), handlers.substitute(data=point):
                rp = spec.residual.sample_params(num_groups=data.num_groups, level_index=None,
                                                 num_levels=0, pooling=pooling)
            pad = data.padded()
            step = spec.residual.step_for(pad.covariates, int(data.group_sizes.max()))
            rows, static = spec.residual.row_params(rp, step, data.num_groups, np.float64)
            loglik, _ = row_functions(spec, static)
            z = np.broadcast_to(np.asarray(tr["z"]["value"]), (data.num_groups,
                                                                 len(spec.parameters)))
            noise = {n: point[n] for n in spec.likelihood.noise_priors()}
            covs = {k: jax.numpy.asarray(v) for k, v in pad.covariates.items()}
            row_ll = loglik(jax.numpy.asarray(z), jax.numpy.asarray(pad.y),
                            jax.numpy.asarray(pad.mask), covs, rows, noise)
            assert np.isfinite(model_ll)
            np.testing.assert_allclose(float(np.sum(row_ll)), model_ll, rtol=RTOL)
