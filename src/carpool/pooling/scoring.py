"""The pure scoring core: a model's log-likelihood of observations and the latent prior of
one group's (or the pooled) parameters, as plain JAX functions.

:func:`carpool.pooling.model.build_model` scores its observations with
:func:`data_log_likelihood`; the per-group densities that drive separate fits
(:func:`carpool.inference.separate.fit_separately`), the pooled MAP and the centring
choice's Newton steps (:mod:`carpool.pooling.centring`) are :func:`point_log_density` and
:func:`data_log_likelihood`. Everything that scores data goes through here, so a likelihood,
residual or scoring-path change is made once (``tests/test_engines_agree.py`` checks every
engine against the model in float64).

Scoring paths, chosen once by what ``terms`` holds:

- a linear mean's projected statistics (``terms`` has ``"R"``): ``projected_log_prob``;
- the likelihood's summed form (data-only parts done once, ``observed_terms``):
  ``summed_log_prob``;
- ``terms=None``: each cell's ``log_prob``, masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from carpool.pooling.spec import ModelSpec

__all__ = ["data_log_likelihood", "one_step", "point_log_density"]


def one_step(spec: ModelSpec, y: Any, mean: Any, noise: Mapping[str, Any],
             covs: Mapping[str, Any], residual_params: Any, step: Any
             ) -> tuple[Any, dict[str, Any]]:
    """Mean and noise of the one-step-ahead distribution of ``y`` (padded rows (..., T))
    under the spec's residual process with ``residual_params`` and time ``step``."""
    lik = spec.likelihood
    c = covs[lik.scale_covariate] if lik.scale_covariate is not None else 1.0
    mean, s = spec.residual.one_step(y, mean, c, residual_params, noise["sigma"], step)
    return mean, {**noise, "sigma": s}


def data_log_likelihood(spec: ModelSpec, params: Mapping[str, Any], y: Any, mask: Any,
                        covs: Mapping[str, Any], noise: Mapping[str, Any], *,
                        terms: Any = None, residual: tuple[Any, Any] | None = None) -> Any:
    """``log p(y | params, noise)`` summed over the observed cells.

    Parameters
    ----------
    params
        Parameter name -> natural values: per observation (broadcasting against ``y``) for
        the mean function, or per group where ``terms`` are projected statistics.
    y, mask, covs
        Observations, a boolean mask (``None``: every cell counts) and covariates, one
        layout (flat (n,) or padded (G, T)).
    noise
        The shared values: noise name -> value (the likelihood's fixed noise is added), and
        the spec's common parameters and other factors' effects by name (natural units;
        :attr:`~carpool.pooling.spec.ModelSpec.shared_names`), which join ``params``.
    terms
        The likelihood's data-only terms of these observations (``observed_terms``), or
        a linear mean's projected statistics (``projected_terms``), or ``None``.
    residual
        ``(residual params, time step)`` of a dynamic residual process (padded rows), or
        ``None`` for i.i.d. residuals.
    """
    lik = spec.likelihood
    noise = {**{k: jnp.asarray(v) for k, v in lik.fixed_noise().items()}, **noise}
    shared = [n for n in spec.shared_names if n in noise]
    if shared:
        params = {**params, **{n: noise.pop(n) for n in shared}}
    if terms is not None and "R" in terms:
        return lik.projected_log_prob(terms, spec.linear_mean.coefficients(params), noise)
    mean = spec.mean_fn(params, covs)
    if residual is not None:
        mean, noise = one_step(spec, y, mean, noise, covs, *residual)
    if terms is not None:
        return lik.summed_log_prob(terms, y, mean, noise)
    lp = lik.log_prob(y, mean, noise, covs)
    return jnp.sum(lp if mask is None else jnp.where(mask, lp, 0.0))


def point_log_density(spec: ModelSpec, *, residual: bool = False, step: Any = None) -> Any:
    """``f(x, y, mask, covs, terms=None) -> log density`` of one set of parameters (one
    group fitted alone, or the pooled model) in unconstrained coordinates.

    ``x = (z (P,), log noise (K,), residual latents (R,))``: the model's latent parameters
    (:attr:`~carpool.pooling.spec.ModelSpec.pooled_parameters`: the group parameters, then
    any common ones; their priors), the log of each learned noise scale (its prior plus the
    log-Jacobian of ``exp``) and, with ``residual=True``, the dynamic residual process's MAP
    coordinates (``map_params``: values and their log prior) with time ``step``
    (``step_for``). The data are as for :func:`data_log_likelihood`."""
    params = spec.pooled_parameters
    names = params.names
    P = len(names)
    priors = [p.prior.to_numpyro() for p in params]  # type: ignore[union-attr]
    noise_priors = spec.likelihood.noise_priors()
    noise_dists = {n: d.to_numpyro() for n, d in noise_priors.items()}
    K = len(noise_dists)

    def log_density(x: jax.Array, y: Any, mask: Any, covs: Mapping[str, Any],
                    terms: Any = None) -> jax.Array:
        z, log_noise = x[:P], x[P:P + K]
        lp = sum(d.log_prob(z[i]) for i, d in enumerate(priors))
        noise = {}
        for k, (n, d) in enumerate(noise_dists.items()):
            noise[n] = jnp.exp(log_noise[k])
            lp = lp + d.log_prob(noise[n]) + log_noise[k]  # log-Jacobian of exp
        process = None
        if residual:
            rp, lp_r = spec.residual.map_params(x[P + K:])
            lp, process = lp + lp_r, (rp, step)
        natural = params.to_natural(z)
        named = {n: natural[i] for i, n in enumerate(names)}
        return lp + data_log_likelihood(spec, named, y, mask, covs, noise, terms=terms,
                                        residual=process)

    return log_density
