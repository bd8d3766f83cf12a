"""The engine with group latents local to a plate over groups, for minibatched SVI.

:func:`carpool.pooling.model.build_model` samples every group's latent values as one (G, P)
site, which is what NUTS wants. Stochastic variational inference on thousands of groups
needs them *local to a plate* over groups instead, so a minibatch of B groups touches only
its own latents and the likelihood is scaled by G / B (``numpyro.plate(...,
subsample_size=B)`` does the scaling). Same priors, same site names per group (batch shape
(B,) instead of one (G, ...) site) and the same latent-to-natural maps as the full engine:

============== ================ =====================================================
mode           site             shape / meaning
============== ================ =====================================================
pooled         ``z``            (P,) shared latent parameters (only the likelihood sits
                                in the plate)
unpooled       ``z``            (B, P) independent per-group latent parameters
hierarchical   ``mu``, ``tau``, (P,), (P,), (P, P) as in :mod:`carpool.pooling.model`
               ``L_corr``
               ``tau_level``,   (P,), (K, P) level means (with levels)
               ``level_eta``
               ``z_nc``         (B, |N|) innovations of the non-centred parameters
               ``theta_c``      (B, |C|) centred values (correlated population)
               ``z_dec``        (B, P) partially non-centred values (diagonal population)
               ``z``            (B, P) deterministic: the group latent values
all            ``sigma`` ...    noise sites
all            ``obs``          observations, padded (B, T) with a mask
============== ================ =====================================================

Only the i.i.d. residual is supported: AR / GP residual parameters can be per group and are
not written for subsampling yet (use NUTS for them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from carpool.errors import InputError
from carpool.pooling.grouped import GroupedData
from carpool.pooling.model import latent_prior, natural_params
from carpool.pooling.spec import ModelSpec, PoolingConfig

__all__ = ["GROUP_PLATE", "PlatedModel", "build_plated_model"]

#: Name of the plate over groups (the subsampled one).
GROUP_PLATE = "groups"


@dataclass(frozen=True)
class PlatedModel:
    """A plate-over-groups NumPyro model with the data and choices it was built with.

    ``model(observed=True, batch_size=None)``: the full model; ``batch_size`` groups are
    subsampled per call (``None``: all groups). ``latents(observed, batch_size)``: the same
    latent sites without the likelihood (for turning guide draws into ``z``).
    ``global_sites``: the latent sites outside the plate (population and noise);
    ``local_sites``: ``(name, width)`` of the per-group sites inside the plate, each (B,
    width), in the order their columns make up a group's latent vector in centring order.
    The attributes ``spec``, ``config``, ``data``, ``layout``, ``centring`` and ``order`` mean
    what they mean on :class:`carpool.pooling.model.BuiltModel`.
    """

    model: Callable[..., None]
    latents: Callable[..., Any]
    spec: ModelSpec
    config: PoolingConfig
    data: GroupedData
    layout: str
    centring: Mapping[str, str]
    order: tuple[int, ...]
    global_sites: tuple[str, ...]
    local_sites: tuple[tuple[str, int], ...]
    weights: np.ndarray  # (G, P) centring weights, 1 centred, 0 non-centred


def build_plated_model(
    spec: ModelSpec,
    data: GroupedData,
    config: PoolingConfig,
    *,
    centring: Mapping[str, str] | None = None,
    weights: Any = None,
) -> PlatedModel:
    """Build the plate-over-groups model of ``spec`` on ``data`` (padded layout).

    Parameters
    ----------
    centring
        Parameter -> ``"centred"`` / ``"noncentred"`` / ``"partial"`` (hierarchical only),
        as for :func:`carpool.pooling.model.build_model`.
    weights
        Centring weights (G, P) in [0, 1] for a diagonal population (1 centred,
        0 non-centred); required where ``centring`` says ``"partial"``.

    Raises
    ------
    ValueError
        For AR / GP residuals, which need NUTS.
    """
    config = config.with_defaults(spec, data.num_groups)
    params = spec.parameters
    params.check_priors()
    if spec.residual.is_dynamic:
        raise InputError(f"{spec.residual.name} residuals need NUTS (method='nuts'); SVI "
                         "supports the i.i.d. residual only")
    missing = [c for c in spec.covariates if c not in data.covariates]
    if missing:
        raise InputError(f"model {spec.name!r} needs covariate(s) {missing}; data have "
                         f"{list(data.covariates)}")
    if config.use_levels and data.level_index is None:
        raise InputError("levels requested but the data have no level column")
    P, G = len(params), data.num_groups
    priors = [p.prior for p in params]
    lik = spec.likelihood
    noise_priors = lik.noise_priors()
    fixed_noise = {k: jnp.asarray(v) for k, v in lik.fixed_noise().items()}
    pooling = config.pooling

    if centring is None:
        centring = {n: ("noncentred" if config.param_choice(n) == "auto"
                        else config.param_choice(n)) for n in params.names}
    correlated = pooling == "hierarchical" and config.resolve_correlated(G, P) and P > 1
    if "partial" in centring.values() and correlated:
        raise InputError("partial centring needs a diagonal population (correlated=False)")
    if weights is None:
        weights = np.stack([np.full(G, 1.0 if centring[n] == "centred" else 0.0)
                            for n in params.names], axis=1)
    weights_j = jnp.asarray(np.asarray(weights, dtype=float))
    nc = [i for i, n in enumerate(params.names) if centring[n] == "noncentred"]
    cc = [i for i, n in enumerate(params.names) if centring[n] in ("centred", "partial")]
    order = tuple(nc + cc)
    o, inverse = jnp.asarray(order), jnp.asarray(np.argsort(order))
    n_nc = len(nc)

    pad = data.padded()
    y_all = jnp.asarray(pad.y)
    covs_all = {k: jnp.asarray(v) for k, v in pad.covariates.items()}
    mask_all = jnp.asarray(pad.mask)
    level_index = None if data.level_index is None else jnp.asarray(data.level_index)
    tau_fixed = jnp.asarray(config.fixed_tau(params)) if config.tau_is_fixed else None
    tau_priors = [config.hyperpriors.tau_prior(n) for n in params.names]

    def population() -> tuple[Any, Any, Any, Any]:
        """Global sites of a hierarchical model: mu, tau, level means (K, P), L_corr."""
        mu = numpyro.sample("mu", latent_prior(priors))
        tau = numpyro.sample("tau", latent_prior(tau_priors)) if tau_fixed is None else tau_fixed
        level_mu = None
        if config.use_levels:
            tau_level = numpyro.sample(
                "tau_level", latent_prior([config.hyperpriors.tau_level] * P))
            level_eta = numpyro.sample("level_eta", dist.Normal(0.0, 1.0)
                                       .expand((data.num_levels, P)).to_event(2))
            level_mu = mu + tau_level * level_eta
        L = (numpyro.sample("L_corr", dist.LKJCholesky(P, config.hyperpriors.lkj_eta))
             if correlated else None)
        return mu, tau, level_mu, L

    def group_latent(idx: Any, mu: Any, tau: Any, level_mu: Any, L: Any) -> Any:
        """Latent values (B, P) of the groups ``idx``, sampled inside the plate."""
        B = idx.shape[0]
        centre = (jnp.broadcast_to(mu, (B, P)) if level_mu is None
                  else level_mu[level_index[idx]])
        if not correlated:
            w = weights_j[idx]
            x = numpyro.sample("z_dec", dist.Normal(w * centre, tau**w).to_event(1))
            return centre + tau ** (1.0 - w) * (x - w * centre)
        centre_o, tau_o = centre[:, o], tau[o]
        parts, eps_n = [], None
        if n_nc:
            eps_n = numpyro.sample("z_nc", dist.Normal(0.0, 1.0).expand((n_nc,)).to_event(1))
            parts.append(centre_o[:, :n_nc] + tau_o[:n_nc] * (eps_n @ L[:n_nc, :n_nc].T))
        if cc:
            loc_c = centre_o[:, n_nc:]
            if eps_n is not None:
                loc_c = loc_c + tau_o[n_nc:] * (eps_n @ L[n_nc:, :n_nc].T)
            scale_tril = tau_o[n_nc:, None] * L[n_nc:, n_nc:]
            parts.append(numpyro.sample(
                "theta_c", dist.MultivariateNormal(loc_c, scale_tril=scale_tril)))
        return jnp.concatenate(parts, axis=-1)[:, inverse]

    def run(observed: bool, batch_size: int | None, likelihood: bool) -> Any:
        z = numpyro.sample("z", latent_prior(priors)) if pooling == "pooled" else None
        pop = population() if pooling == "hierarchical" else None
        noise = dict(fixed_noise)
        for name, prior in noise_priors.items():
            noise[name] = numpyro.sample(name, prior.to_numpyro())
        with numpyro.plate(GROUP_PLATE, G, subsample_size=batch_size) as idx:
            if pooling == "unpooled":
                z = numpyro.sample("z", latent_prior(priors))
            elif pop is not None:
                z = numpyro.deterministic("z", group_latent(idx, *pop))
            if not likelihood:
                return z
            natural = natural_params(params, z)
            group = ({n: natural[i] for i, n in enumerate(params.names)} if z.ndim == 1
                     else {n: natural[:, i:i + 1] for i, n in enumerate(params.names)})
            covs = {k: v[idx] for k, v in covs_all.items()}
            d = lik.distribution(spec.mean_fn(group, covs), noise, covs).mask(mask_all[idx])
            numpyro.sample("obs", d.to_event(1), obs=y_all[idx] if observed else None)
        return z

    def model(observed: bool = True, batch_size: int | None = None) -> None:
        run(observed, batch_size, True)

    def latents(observed: bool = True, batch_size: int | None = None) -> Any:
        """The latent sites only (no likelihood); returns z, (P,) or (B, P)."""
        return run(observed, batch_size, False)

    global_sites = (("z",) if pooling == "pooled" else
                    ("mu", "tau", "tau_level", "level_eta", "L_corr")
                    if pooling == "hierarchical" else ())
    global_sites = tuple(s for s in global_sites
                         if not (s == "tau" and tau_fixed is not None)
                         and not (s in ("tau_level", "level_eta") and not config.use_levels)
                         and not (s == "L_corr" and not correlated)) + tuple(noise_priors)
    if pooling == "pooled":
        local_sites: tuple[tuple[str, int], ...] = ()
    elif pooling == "unpooled":
        local_sites = (("z", P),)
    elif not correlated:
        local_sites = (("z_dec", P),)
    else:
        local_sites = tuple((n, k) for n, k in (("z_nc", n_nc), ("theta_c", len(cc))) if k)
    return PlatedModel(model, latents, spec, config, data, "padded", dict(centring), order,
                       global_sites, local_sites, np.asarray(weights, dtype=float))
