"""Warm-started held-out refits (``carpool.inference.warm``).

Three things must hold for a warm refit to be the held-out posterior, only reached faster:

- the masked model (full data, held-out rows masked, held-out groups' latents from the
  population) is the training data's model, up to the held-out groups' prior, at every
  point: checked exactly in float64 against the model built on the training data alone;
- the full fit's draws rebuilt in the model's coordinates are the fit's draws (the start);
- a warm refit and a refit from scratch sample the same posterior (Monte Carlo error).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density
from scipy.stats import norm

import carpool
from carpool.compare.scores import lfo_rows, select_groups
from carpool.inference.warm import HeldOut, raw_draws, warm_refits
from carpool.models.registry import get_spec
from carpool.pooling.model import build_model
from carpool.pooling.spec import PoolingConfig
from carpool.testing import simulate_drivers, simulate_linear_groups

#: float64 sums of a few thousand terms in different orders agree to ~1e-13
RTOL = 1e-10


def _idm_data():
    df, _ = simulate_drivers(5, duration_s=10.0, rng_seed=11)
    df = df.copy()
    df.loc[df.index[5:8], "speed"] = 0.0  # stops: censored next speeds
    spec = get_spec("idm")
    return spec, spec.prepare(df)


def _linear_data():
    df, _ = simulate_linear_groups(5, [4, 9, 15, 20, 30], rng_seed=2)
    spec = get_spec("linear")
    return spec, spec.prepare(df)


def _point(model, seed):
    trace = handlers.trace(handlers.seed(model, seed)).get_trace(observed=False)
    return {k: v["value"] for k, v in trace.items()
            if v["type"] == "sample" and not v.get("is_observed", False) and k != "obs"}


def _logp(built, point):
    return float(log_density(built.model, (True,), {}, point)[0])


CASES = [("idm", "pooled", "centred", False), ("idm", "unpooled", "centred", False),
         ("idm", "hierarchical", "mixed", False), ("idm", "hierarchical", "mixed", True),
         ("idm", "hierarchical", "centred", True), ("linear", "hierarchical", "mixed", False),
         ("linear", "pooled", "centred", False)]


@pytest.mark.parametrize("model,pooling,centring,correlated", CASES)
@pytest.mark.parametrize("kind", ["lfo", "ldo"])
def test_masked_model_is_the_training_model(model, pooling, centring, correlated, kind):
    """log p_masked(point) = log p_train(point restricted) + log N(0, 1) of the held-out
    groups' innovations (hierarchical) or their prior (unpooled), exactly."""
    with jax.enable_x64(True):
        spec, data = _idm_data() if model == "idm" else _linear_data()
        names = spec.parameters.names
        choice = ({n: ("centred" if i % 2 else "noncentred") for i, n in enumerate(names)}
                  if centring == "mixed" else {n: centring for n in names})
        config = PoolingConfig(pooling=pooling, correlated=correlated)
        G = data.num_groups
        if kind == "lfo":
            held, kept_groups = np.zeros(0, int), np.arange(G)
            keep = ~lfo_rows(data, 0.25)
            train = data.subset(keep)
        else:
            held, kept_groups = np.array([1, 3]), np.array([0, 2, 4])
            keep = ~np.isin(data.group_index, held)
            train = select_groups(data, kept_groups)
        masked = build_model(spec, data, config, centring=choice, keep_rows=keep,
                             held_out=held)
        trained = build_model(spec, train, config, centring=choice)
        point = _point(trained.model, 3)
        full = dict(point)
        extra = 0.0
        rng = np.random.default_rng(0)
        for name, _ in masked.local_sites:
            values = np.zeros((G,) + np.shape(point[name])[1:])
            values[kept_groups] = np.asarray(point[name])
            if len(held):
                values[held] = rng.normal(size=values[held].shape)
                if pooling == "hierarchical":
                    extra += norm.logpdf(values[held]).sum()
                else:  # unpooled: the latent prior of the held-out groups
                    loc, scale = spec.parameters.latent_prior_arrays()
                    extra += norm.logpdf(values[held], loc, scale).sum()
            full[name] = values
        np.testing.assert_allclose(_logp(masked, full), _logp(trained, point) + extra,
                                   rtol=RTOL)


@pytest.fixture(scope="module")
def linear_fit():
    df, _ = simulate_linear_groups(6, [8, 10, 12, 15, 20, 25], intercept_sd=0.6,
                                   slope_sd=0.3, rng_seed=4)
    return carpool.fit(df, "linear", sampler=carpool.NutsSettings(
        chains=2, warmup=300, draws=300, seed=0), warn=False)


@pytest.mark.parametrize("correlated,levels", [(False, False), (True, False), (True, True)])
def test_raw_draws_rebuild_the_fit(correlated, levels):
    """The full fit's draws, rebuilt in the refit model's sites (mixed centring, held-out
    groups non-centred, level means), give back the fit's own group values."""
    df, _ = simulate_linear_groups(6, 12, rng_seed=5)
    if levels:
        df["kind"] = np.where(df["group"].astype(str).str[-1].isin(list("02468")), "a", "b")
    names = get_spec("linear").parameters.names
    param = {names[0]: "noncentred", names[1]: "centred"}
    fit = carpool.fit(df, "linear", pooling=PoolingConfig(
        pooling="hierarchical", correlated=correlated, param=param),
        level="kind" if levels else None,
        sampler=carpool.NutsSettings(chains=2, warmup=100, draws=50, seed=1), warn=False)
    held = np.array([2])
    built = build_model(fit.spec, fit.data, fit.config, centring=fit.centring.choice,
                        keep_rows=~np.isin(fit.data.group_index, held), held_out=held)
    raw = raw_draws(fit, built)
    expected = fit.spec.parameters.to_latent(fit.idata.posterior["theta"].values, axis=-1)
    for c in range(2):
        for s in (0, 17, 49):
            point = {k: v[c, s] for k, v in raw.items()}
            z = handlers.substitute(handlers.seed(built.latents, 0), point)()
            # float32 draws through a Cholesky factor and a triangular solve
            np.testing.assert_allclose(np.asarray(z), expected[c, s], rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # ~27 s, two sampled posteriors compared: CI runs it in the slow step
def test_warm_refit_samples_the_held_out_posterior(linear_fit):
    """A warm refit (leave-future-out and a left-out group) and a refit from scratch of the
    same training data agree on the population mean within Monte Carlo error."""
    from carpool.inference.run import refit

    data = linear_fit.data
    test = lfo_rows(data, 0.2)
    held = np.array([1])
    folds = [HeldOut(~test, np.zeros(0, int)),
             HeldOut(~np.isin(data.group_index, held), held)]
    sampler = carpool.NutsSettings(chains=2, warmup=150, draws=600, seed=3)
    warm = warm_refits(linear_fit, folds, sampler)
    cold = [refit(linear_fit, data.subset(~test), sampler=sampler),
            refit(linear_fit, select_groups(data, [0, 2, 3, 4, 5]), sampler=sampler)]
    for w, c in zip(warm, cold, strict=True):
        assert w.diagnostics["divergences"] == 0
        a, b = w.idata.posterior["mu"].values, c.idata.posterior["mu"].values
        se = np.sqrt(a.reshape(-1, a.shape[-1]).var(0) / w.diagnostics["min_ess_bulk"]
                     + b.reshape(-1, b.shape[-1]).var(0) / c.diagnostics["min_ess_bulk"])
        # 4.5 combined Monte Carlo standard errors: two parameters x two refits compared,
        # each a normal deviate under the null, so a false alarm has probability < 1e-4
        assert np.all(np.abs(a.mean((0, 1)) - b.mean((0, 1))) < 4.5 * se)
