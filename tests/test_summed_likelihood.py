"""The summed Gaussian log density the sampler scores equals the per-observation one.

:meth:`Gaussian.summed_log_prob` moves the data-only work (masks, censoring, the scale
covariate's logarithm and reciprocal) out of the gradient; it must be the same function of
the parameters as the masked sum of :meth:`Gaussian.log_prob`, value and gradient, or every
fit would sample a different posterior. Tolerances: float32 sums of ~100-5,000 terms of
size ~1-100 agree to ~1e-6 relative; 1e-4 relative leaves room for the reordering.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import initialize_model, potential_energy

from carpool.models.registry import get_spec
from carpool.pooling.likelihoods import Gaussian
from carpool.pooling.model import build_model
from carpool.pooling.spec import Hyperpriors, PoolingConfig
from carpool.priors import HalfNormal
from carpool.testing import simulate_drivers


def _masked_sum(lik, y, mean, noise, covs, mask):
    lp = lik.log_prob(y, mean, noise, covs)
    return jnp.sum(lp if mask is None else jnp.where(mask, lp, 0.0))


@pytest.mark.parametrize("lower", [None, 0.0])
@pytest.mark.parametrize("covariate", [None, "dt"])
@pytest.mark.parametrize("per_cell_sigma", [False, True])
def test_summed_form_equals_masked_sum_of_log_prob(lower, covariate, per_cell_sigma):
    rng = np.random.default_rng(0)
    y = rng.normal(0.5, 1.0, (4, 30))  # about 30% below the bound 0
    mask = rng.random((4, 30)) < 0.8
    covs = {"dt": rng.uniform(0.1, 0.5, (4, 30))}
    lik = Gaussian(HalfNormal(1.0), scale_covariate=covariate, lower=lower)
    terms = jax.tree_util.tree_map(jnp.asarray, lik.observed_terms(y, mask, covs))
    y_j, covs_j = jnp.asarray(y), {"dt": jnp.asarray(covs["dt"])}

    def both(mu, log_sigma):
        sigma = jnp.exp(log_sigma)
        if per_cell_sigma:
            sigma = sigma * (1.0 + 0.1 * jnp.arange(30.0))
        noise = {"sigma": sigma}
        return (lik.summed_log_prob(terms, y_j, mu, noise),
                _masked_sum(lik, y_j, mu, noise, covs_j, jnp.asarray(mask)))

    mu = jnp.asarray(rng.normal(0.3, 0.5, (4, 30)))
    new, old = both(mu, jnp.asarray(-0.3))
    np.testing.assert_allclose(new, old, rtol=1e-4)
    g_new = jax.grad(lambda m, s: both(m, s)[0], argnums=(0, 1))(mu, jnp.asarray(-0.3))
    g_old = jax.grad(lambda m, s: both(m, s)[1], argnums=(0, 1))(mu, jnp.asarray(-0.3))
    for a, b in zip(g_new, g_old, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_non_positive_scale_covariate_is_named():
    lik = Gaussian(HalfNormal(1.0), scale_covariate="dt")
    with pytest.raises(ValueError, match="'dt' must be positive; observation 2"):
        lik.observed_terms(np.zeros(4), None, {"dt": np.array([0.2, 0.2, 0.0, 0.2])})


@pytest.fixture(scope="module")
def drivers():
    df, _ = simulate_drivers(4, duration_s=12.0, rng_seed=3)
    # stops: next speeds at exactly 0 m/s are censored observations
    df.loc[df.index[10:14], "speed"] = 0.0
    return df


@pytest.mark.parametrize("pooling,residual,layout", [
    ("hierarchical", "iid", "padded"), ("hierarchical", "iid", "flat"),
    ("pooled", "iid", "auto"), ("unpooled", "iid", "padded"),
    ("hierarchical", "ar2", "auto"), ("hierarchical", "gp", "auto")])
def test_the_sampled_potential_is_the_per_observation_one(drivers, pooling, residual, layout):
    spec = get_spec("idm", residual=residual)
    data = spec.prepare(drivers)
    assert np.sum(np.asarray(data.y) <= 0.0) > 0  # the censored term is exercised
    config = PoolingConfig(pooling=pooling, hyperpriors=Hyperpriors.default_for(4))
    built = build_model(spec, data, config, layout=layout)
    assert built.arrays["terms"] is not None
    # i.i.d. IDM residuals: the projected statistics of the linear mean are what is sampled
    assert (built.arrays["projected"] is not None) == (residual == "iid")
    summed = dict(built.arrays, projected=None)  # the summed per-observation density
    per_observation = dict(summed, terms=None)  # the distribution's own log_prob
    info = initialize_model(jax.random.PRNGKey(0), built.model,
                            model_kwargs={"observed": True, "arrays": built.arrays})
    z = info.param_info.z

    def energy(params, arrays):
        return potential_energy(built.model, (), {"observed": True, "arrays": arrays},
                                params)

    for shift in (0.0, 0.3):
        point = jax.tree_util.tree_map(lambda v, s=shift: v + s, z)
        old = energy(point, per_observation)
        g_old = jax.grad(energy)(point, per_observation)
        for arrays in (built.arrays, summed):
            np.testing.assert_allclose(energy(point, arrays), old, rtol=1e-4)
            g_new = jax.grad(energy)(point, arrays)
            for k in g_new:
                # measured: differences at most 5e-7 of the largest gradient component
                np.testing.assert_allclose(g_new[k], g_old[k], rtol=1e-4, atol=1e-5 * float(
                    jnp.max(jnp.abs(g_old[k])) + 1e-3), err_msg=k)


def test_separate_fits_row_density_summed_equals_per_observation():
    # carpool.fit_separately scores each driver's summed log density from its own row of
    # data-only terms (censored positions per row, padded to one bucket over the rows);
    # value and gradient must equal the masked per-observation sum for every driver,
    # including one with no stop at all and the padded tail of a shorter series
    from carpool.inference.separate import _padded, row_terms
    from carpool.pooling.scoring import point_log_density

    df, _ = simulate_drivers(3, duration_s=20.0, rng_seed=4)
    df = df[~((df.driver == "d02") & (df.time > 12.0))]  # a shorter series: padding
    spec = get_spec("idm")
    grouped = spec.prepare(df)
    covariates = tuple(spec.covariates)
    y, mask, covs = _padded(grouped, covariates, 8)
    named = {c: covs[..., i] for i, c in enumerate(covariates)}
    # a stop at a driver's second step, none for another: the per-row positions differ
    y = y.copy()
    y[0, 1] = 0.0
    y[1] = np.maximum(y[1], 0.5)
    terms = row_terms(spec, y, mask, named)
    assert terms["censored"][0].shape == (3, 16) and terms["censored"][1][1].sum() == 0
    assert terms["censored"][1][0].sum() >= 1
    projected = row_terms(spec, y, mask, named, projected=True)  # the linear mean's form
    assert projected["R"].shape == (3, 1, 8, 8)
    assert projected["censored"]["valid"].shape == (3, 16)
    f = point_log_density(spec)
    loc, _ = spec.parameters.latent_prior_arrays()
    for x in (np.concatenate([loc + 0.1, [np.log(0.2)]]),
              np.concatenate([loc - 0.3, [np.log(0.5)]])):
        x = jnp.asarray(x)
        for g in range(3):
            args = (jnp.asarray(y[g]), jnp.asarray(mask[g]),
                    {k: jnp.asarray(v[g]) for k, v in named.items()})
            old = jax.value_and_grad(lambda x, a=args: f(x, *a))(x)
            for form in (terms, projected):
                row = jax.tree_util.tree_map(lambda t, g=g: jnp.asarray(t[g]), form)
                new = jax.value_and_grad(lambda x, a=args, r=row: f(x, *a, r))(x)
                # values of ~1 summed from ~100 terms of ~100: each float32 form is within
                # 3e-4 of the float64 value (measured), hence the absolute 1e-3
                np.testing.assert_allclose(new[0], old[0], rtol=1e-4, atol=1e-3)
                np.testing.assert_allclose(new[1], old[1], rtol=1e-4,
                                           atol=1e-5 * float(jnp.max(jnp.abs(old[1]))))


def test_separate_fits_censored_bucket_is_coarse_and_capped():
    # few shapes, so that the calls of a batch share one compiled program
    from carpool.pooling.linear_mean import censored_bucket

    assert [censored_bucket(n, 200) for n in (0, 1, 16, 17, 64, 65, 300)] == [
        16, 16, 16, 64, 64, 200, 200]
    assert censored_bucket(3, 10) == 10
