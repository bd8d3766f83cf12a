"""The engine: one :class:`ModelSpec` + a :class:`PoolingConfig` -> a NumPyro model.

Sample sites (latent scale, see :mod:`carpool.parameters`):

============== ================ =====================================================
mode           site             shape / meaning
============== ================ =====================================================
pooled         ``z``            (P,) shared latent parameters
unpooled       ``z``            (G, P) independent per-group latent parameters
hierarchical   ``mu``           (P,) population mean (prior = each parameter's prior)
               ``tau``          (P,) population scales, the pooling dial (unless fixed)
               ``L_corr``       (P, P) Cholesky factor of the population correlation,
                                in *centring order* (non-centred parameters first)
               ``tau_level``,   (P,), (K, P) level means ``mu + tau_level * level_eta``
               ``level_eta``    when levels are used (e.g. car / truck)
               ``z_nc``         (G, |N|) standard-normal innovations (non-centred)
               ``theta_c``      (G, |C|) centred group values
               ``z_dec``        (G, P) partially non-centred values (diagonal population)
               ``z``            (G, P) deterministic: the group latent values
all            noise sites      e.g. ``sigma``
all            residual sites   AR / GP parameters (see :mod:`carpool.residuals.process`)
all            ``obs``          observations
============== ================ =====================================================

Mixed centring with a full correlation matrix is exact: with the Cholesky factor ``L`` in the
order (non-centred N, centred C), ``theta = centre + tau * (L @ eps)`` factorises into
``theta_N = centre_N + tau_N * (L_NN eps_N)`` and
``theta_C | eps_N ~ MVN(centre_C + tau_C * (L_CN eps_N), diag(tau_C) L_CC L_CC^T diag(tau_C))``,
so the non-centred block is sampled through ``eps_N`` and the centred block directly. The LKJ
prior is exchangeable, so sampling the factor in that order changes nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from carpool.errors import InputError
from carpool.parameters import ParameterTable
from carpool.pooling.grouped import GroupedData, choose_layout
from carpool.pooling.likelihoods import AbstractLikelihood
from carpool.pooling.linear_mean import linear_mean_check
from carpool.pooling.scoring import data_log_likelihood, one_step
from carpool.pooling.spec import ModelSpec, PoolingConfig
from carpool.priors import Prior

__all__ = ["GROUP_PLATE", "BuiltModel", "build_model", "build_plated_model", "latent_prior",
           "natural_params"]


def latent_prior(priors: list[Prior], batch_shape: tuple[int, ...] = ()) -> Any:
    """A vectorised NumPyro distribution with event shape (P,) for one prior per parameter.

    All priors must share a family (the usual case); the parameters are stacked.
    """
    families = {p.family for p in priors}
    if len(families) != 1:
        raise InputError(
            f"all parameters of a model must use one prior family, got {sorted(families)}"
        )
    family = families.pop()
    stacked = {k: jnp.asarray([p.params[k] for p in priors]) for k in priors[0].params}
    cls = type(priors[0].to_numpyro())
    names = {"normal": ("loc", "scale"), "student_t": ("df", "loc", "scale"),
             "half_normal": ("scale",), "half_cauchy": ("scale",),
             "exponential": ("rate",), "lognormal": ("loc", "scale")}[family]
    d = cls(*(stacked[n] for n in names))
    if batch_shape:
        d = d.expand(batch_shape + (len(priors),))
    return d.to_event(1)


def natural_params(parameters: ParameterTable, z: Any) -> Any:
    """Latent (..., P) -> natural (..., P)."""
    return parameters.to_natural(z, axis=-1)


#: Name of the plate over groups (the one SVI subsamples).
GROUP_PLATE = "groups"


@dataclass(frozen=True)
class BuiltModel:
    """A NumPyro model function with the data and choices it was built with.

    ``model(observed=True, arrays=None, batch_size=None, likelihood=True)``:
    ``observed=True`` conditions on the data, ``False`` simulates ``obs`` (prior or posterior
    predictive). ``arrays`` is the pytree of JAX arrays the model reads (observations,
    covariates, masks, indices, centring weights, a fixed tau); another pytree of the same
    shapes runs the same model on other data, so a sampler compiled as a function of
    ``arrays`` serves every data set of that shape (see :func:`carpool.inference.nuts.run_nuts`).
    ``batch_size``: that many groups subsampled per call, the likelihood and the group
    latents scaled by G / B (the padded layout and i.i.d. residuals only; for SVI).
    ``likelihood=False``: the latent sites only, returning ``z``. ``layout`` is ``"padded"``
    or ``"flat"``; ``centring`` maps each parameter to ``"centred"`` / ``"noncentred"`` /
    ``"partial"`` (hierarchical only); ``order`` is the centring order (non-centred first);
    ``weights`` the (G, P) centring weights. ``global_sites``: the latent sites outside the
    plate over groups; ``local_sites``: ``(name, width)`` of the per-group sites inside it,
    each (G, width), in the order their columns make up a group's latent vector in centring
    order.
    """

    model: Callable[..., Any]
    spec: ModelSpec
    config: PoolingConfig
    data: GroupedData
    layout: str
    centring: Mapping[str, str]
    order: tuple[int, ...]
    arrays: Mapping[str, Any]
    weights: np.ndarray
    global_sites: tuple[str, ...]
    local_sites: tuple[tuple[str, int], ...]

    def __call__(self, observed: bool = True) -> None:
        self.model(observed)

    def latents(self, observed: bool = True, batch_size: int | None = None) -> Any:
        """The latent sites without the likelihood; returns ``z``, (P,) or (B, P)."""
        return self.model(observed, batch_size=batch_size, likelihood=False)


def build_model(
    spec: ModelSpec,
    data: GroupedData,
    config: PoolingConfig,
    *,
    centring: Mapping[str, str] | None = None,
    layout: str = "auto",
    weights: Any = None,
    keep_rows: Any = None,
    held_out: Any = None,
) -> BuiltModel:
    """Build the NumPyro model of ``spec`` on ``data`` in ``config.pooling`` mode.

    This is carpool's one posterior: NUTS samples it, SVI subsamples it (``batch_size``),
    and the per-group densities of separate fits and of the centring choice score the same
    terms (:func:`carpool.pooling.scoring.point_log_density`).

    Parameters
    ----------
    centring
        Parameter -> ``"centred"``/``"noncentred"`` for hierarchical models. ``None`` takes
        ``config.param`` where it is explicit and ``"noncentred"`` where it is ``"auto"``
        (the automatic, data-driven choice lives in :mod:`carpool.pooling.centring`).
    layout
        ``"auto"``, ``"padded"`` or ``"flat"`` (see :mod:`carpool.pooling.grouped`).
    weights
        Centring weights (G, P) in [0, 1] for a *diagonal* population: the partially
        non-centred form ``x ~ Normal(w centre, tau^w)``, ``z = centre + tau^(1-w) (x - w
        centre)`` (1 = centred, 0 = non-centred), exact for any weight. Required where
        ``centring`` says ``"partial"``; see :func:`carpool.pooling.centring.choose_centring`.
    keep_rows
        Boolean (n,): the observations the likelihood scores (``None``: all). The others
        stay in the arrays, masked, so models of one data set with different held-out rows
        share array shapes and hence one compiled sampler (held-out refits,
        :mod:`carpool.inference.warm`).
    held_out
        Group positions whose latent values have no data (all their rows outside
        ``keep_rows``): hierarchical models sample them non-centred, from the population
        alone (a centred group without data is Neal's funnel).
    """
    config = config.with_defaults(spec, data.num_groups)
    params = spec.parameters
    params.check_priors()
    missing = [c for c in spec.covariates if c not in data.covariates]
    if missing:
        raise InputError(f"model {spec.name!r} needs covariate(s) {missing}; data have "
                         f"{list(data.covariates)}")
    if config.use_levels and data.level_index is None:
        raise InputError("levels requested but the data have no level column")
    P, G = len(params), data.num_groups
    pooling = config.pooling
    priors = [p.prior for p in params]
    common = spec.common
    if common is not None:
        common.check_priors()
    lik = spec.likelihood
    noise_priors = lik.noise_priors()
    fixed_noise = {k: jnp.asarray(v) for k, v in lik.fixed_noise().items()}
    residual = spec.residual
    dynamic = residual.is_dynamic

    if centring is None:
        centring = {n: ("noncentred" if config.param_choice(n) == "auto"
                        else config.param_choice(n)) for n in params.names}
    correlated = pooling == "hierarchical" and config.resolve_correlated(G, P) and P > 1
    if "partial" in centring.values() and correlated:
        raise InputError("partial centring needs a diagonal population (correlated=False)")
    if weights is None:
        weights = np.stack([np.full(G, 1.0 if centring[n] == "centred" else 0.0)
                            for n in params.names], axis=1)
    weights = np.asarray(weights, dtype=float)
    held = None
    if held_out is not None and pooling == "hierarchical":
        held = np.zeros(G)
        held[np.asarray(held_out, dtype=int)] = 1.0
        weights = weights * (1.0 - held[:, None])
    nc = [i for i, n in enumerate(params.names) if centring[n] == "noncentred"]
    cc = [i for i, n in enumerate(params.names) if centring[n] in ("centred", "partial")]
    order = tuple(nc + cc)
    o, inverse, n_nc = jnp.asarray(order), jnp.asarray(np.argsort(order)), len(nc)
    layout, arrays, step = _lay_out(spec, data, config, layout, weights, keep_rows)
    arrays["held_out"] = held
    default_arrays = _as_jax(arrays)
    tau_priors = [config.hyperpriors.tau_prior(n) for n in params.names]

    def population(a: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
        """The population's sites: mean, scales, level means (K, P) or None, L_corr."""
        mu = numpyro.sample("mu", latent_prior(priors))
        tau = (numpyro.sample("tau", latent_prior(tau_priors)) if a["tau"] is None
               else a["tau"])
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

    def group_latent(a: Mapping[str, Any], pick: Callable[[Any], Any], B: int,
                     mu: Any, tau: Any, level_mu: Any, L: Any) -> Any:
        """Latent values (B, P) of the plate's groups, sampled inside the plate."""
        centre = (jnp.broadcast_to(mu, (B, P)) if level_mu is None
                  else level_mu[pick(a["level_index"])])
        if L is None:
            # partially non-centred (weights 1 = centred, 0 = non-centred), exact for any w
            w = pick(a["weights"])
            x = numpyro.sample("z_dec", dist.Normal(w * centre, tau**w).to_event(1))
            return centre + tau ** (1.0 - w) * (x - w * centre)
        # a correlated population in centring order (non-centred first)
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
            if a["held_out"] is None:
                parts.append(numpyro.sample(
                    "theta_c", dist.MultivariateNormal(loc_c, scale_tril=scale_tril)))
            else:  # groups without data non-centred: x ~ MVN(0, I), theta = loc + S x
                h = pick(a["held_out"])[:, None]
                eye = jnp.eye(len(cc))
                x = numpyro.sample("theta_c", dist.MultivariateNormal(
                    (1.0 - h) * loc_c, scale_tril=(1.0 - h)[..., None] * scale_tril
                    + h[..., None] * eye))
                parts.append((1.0 - h) * x + h * (loc_c + x @ scale_tril.T))
        return jnp.concatenate(parts, axis=-1)[:, inverse]

    def named(natural: Any, index: Any, shared: Mapping[str, Any]) -> dict[str, Any]:
        """Each parameter's values where the observations of the layout need them, and the
        common parameters' (``shared``, scalars)."""
        if natural.ndim == 1:
            return {**{n: natural[i] for i, n in enumerate(params.names)}, **shared}
        if index is None:  # padded rows
            return {**{n: natural[:, i:i + 1] for i, n in enumerate(params.names)}, **shared}
        return {**{n: natural[index, i] for i, n in enumerate(params.names)}, **shared}

    def shared_values() -> dict[str, Any]:
        """The common parameters' site ``beta`` (C,), natural values by name, and the other
        grouping factors' effects (J, W) by their ``effects_name`` (none when pooled)."""
        out: dict[str, Any] = {}
        if common is not None:
            beta = common.to_natural(numpyro.sample("beta",
                                                    latent_prior([p.prior for p in common])))
            out.update({n: beta[i] for i, n in enumerate(common.names)})
        if pooling != "pooled":
            for f in spec.factors:
                out[f.effects_name] = factor_effects(f)
        return out

    def factor_effects(f: Any) -> Any:
        """A grouping factor's effects (J, W): independent when unpooled, else non-centred
        draws from its population (see :class:`~carpool.pooling.spec.GroupingFactor`)."""
        J, W = len(f.levels), len(f.terms)
        if pooling == "unpooled":
            return numpyro.sample(f.effects_name, dist.Normal(
                0.0, jnp.asarray(f.unpooled_scale)).expand((J, W)).to_event(2))
        tau_f = numpyro.sample(f"tau_{f.name}", latent_prior(list(f.scale_priors)))
        eps = numpyro.sample(f"eps_{f.name}", dist.Normal(0.0, 1.0).expand((J, W)).to_event(2))
        if f.correlated and W > 1:
            L_f = numpyro.sample(f"L_{f.name}", dist.LKJCholesky(W, config.hyperpriors.lkj_eta))
            eps = eps @ L_f.T
        return numpyro.deterministic(f.effects_name, tau_f * eps)

    def model(observed: bool = True, arrays: Mapping[str, Any] | None = None,
              batch_size: int | None = None, likelihood: bool = True) -> Any:
        a = default_arrays if arrays is None else arrays
        noise = dict(fixed_noise)
        z = numpyro.sample("z", latent_prior(priors)) if pooling == "pooled" else None
        pop = population(a) if pooling == "hierarchical" else None
        groups = numpyro.plate(GROUP_PLATE, G, subsample_size=batch_size)
        with groups as idx:
            B = G if batch_size is None else batch_size
            pick = (lambda v: v) if batch_size is None else (lambda v: v[idx])
            if pooling == "unpooled":
                z = numpyro.sample("z", latent_prior(priors))
            elif pop is not None:
                z = numpyro.deterministic("z", group_latent(a, pick, B, *pop))
        shared = shared_values()
        for name, prior in noise_priors.items():
            noise[name] = numpyro.sample(name, prior.to_numpyro())
        if not likelihood:
            return z
        natural = natural_params(params, z)
        if batch_size is not None:  # a subsample of whole padded rows, scaled by G / B
            if dynamic or layout != "padded":
                raise InputError("subsampling groups needs the padded layout and i.i.d. "
                                 "residuals")
            with groups:
                covs = {k: v[idx] for k, v in a["covs"].items()}
                d = lik.distribution(spec.mean_fn(named(natural, None, shared), covs), noise,
                                     covs)
                numpyro.sample("obs", d.mask(a["mask"][idx]).to_event(1),
                               obs=a["y"][idx] if observed else None)
            return z
        y_obs, covs, mask = a["y"], a["covs"], a["mask"]
        if observed and a["projected"] is not None:
            group = {n: natural[..., i] for i, n in enumerate(params.names)}
            group.update({n: jnp.broadcast_to(v, natural.shape[:-1])
                          for n, v in shared.items()})
            numpyro.factor("obs", data_log_likelihood(spec, group, y_obs, mask, covs, noise,
                                                      terms=a["projected"]))
            return z
        p = named(natural, None if layout == "padded" else a["group_index"], shared)
        process = None
        if dynamic:
            rp = residual.sample_params(num_groups=G, level_index=a["level_index"],
                                        num_levels=data.num_levels, pooling=pooling)
            process = (rp, step)
        if observed and a["terms"] is not None:
            numpyro.factor("obs", data_log_likelihood(spec, p, y_obs, mask, covs, noise,
                                                      terms=a["terms"], residual=process))
            return z
        mean = spec.mean_fn(p, covs)
        if dynamic and not observed:  # simulate whole residual series (prior / predictive)
            c = covs[lik.scale_covariate] if lik.scale_covariate is not None else 1.0
            white = numpyro.sample("residual_white",
                                   dist.Normal(0.0, 1.0).expand(mean.shape).to_event(2))
            y = mean + residual.simulate(white, rp, noise["sigma"], step) * c
            if lik.lower is not None:
                y = jnp.maximum(y, lik.lower)
            numpyro.deterministic("obs", y[a["flat_index"]])
            return z
        if dynamic:
            mean, noise = one_step(spec, y_obs, mean, noise, covs, rp, step)
        censored = {} if a["censored"] is None else {"censored_at": a["censored"]}
        d = lik.distribution(mean, noise, covs, **censored)
        if mask is not None:
            d = d.mask(mask)
        numpyro.sample("obs", d.to_event(len(d.batch_shape)),
                       obs=y_obs if observed else None)
        return z

    global_sites, local_sites = _site_names(
        config, (*(("beta",) if common is not None else ()),
                 *_factor_sites(spec, pooling), *noise_priors), P, correlated, n_nc, len(cc))
    return BuiltModel(model, spec, config, data, layout, dict(centring), order,
                      default_arrays, weights, global_sites, local_sites)


def _lay_out(spec: ModelSpec, data: GroupedData, config: PoolingConfig, layout: str,
             weights: np.ndarray, keep_rows: Any = None) -> tuple[str, dict[str, Any], Any]:
    """``(layout, arrays, step)``: the data layout the model scores, the pytree of arrays it
    reads (NumPy) and a dynamic residual's time step (``None`` for i.i.d. residuals).

    One scoring path per likelihood x layout is chosen here: a linear mean's projected
    statistics, else the likelihood's summed form (its data-only parts done once here), else
    each cell's density (with the positions where a censored likelihood's costly term runs).
    ``keep_rows`` (boolean (n,) or ``None``) masks the other observations out.
    """
    residual, lik = spec.residual, spec.likelihood
    step = None
    if residual.is_dynamic:
        # a residual process runs along each group's series: the padded (G, T) layout holds
        # every series as a row in time order, so lags never cross a group boundary
        # (simulated ``obs`` still come back flat, (n,), as with the flat layout)
        residual.check(config.pooling, data.level_index is not None)
        layout = "padded"
    elif config.pooling == "pooled" and layout == "auto":
        layout = "flat"
    else:
        layout = choose_layout(data, layout)
    keep = None if keep_rows is None else np.asarray(keep_rows, dtype=bool)
    if layout == "padded":
        pad = data.padded()
        mask = pad.mask.copy()
        if keep is not None:
            mask[data.group_index, data.positions()] = keep
        arrays: dict[str, Any] = {"y": pad.y, "covs": dict(pad.covariates), "mask": mask}
    else:
        arrays = {"y": data.y, "covs": dict(data.covariates), "mask": keep}
    arrays["group_index"] = data.group_index
    arrays["level_index"] = data.level_index
    arrays["weights"] = weights
    arrays["tau"] = config.fixed_tau(spec.parameters) if config.tau_is_fixed else None
    arrays["projected"] = (None if residual.is_dynamic
                           else projected_terms(spec, data, keep_rows=keep))
    arrays["terms"] = lik.observed_terms(arrays["y"], arrays["mask"], arrays["covs"])
    arrays["censored"] = (lik.censored_at(arrays["y"], arrays["mask"])
                          if arrays["terms"] is None else None)
    if residual.is_dynamic:
        step = residual.step_for(pad.covariates, int(data.group_sizes.max()))
        arrays["flat_index"] = (data.group_index, data.positions())
    return layout, arrays, step


def _factor_sites(spec: ModelSpec, pooling: str) -> tuple[str, ...]:
    """The latent sites of the spec's other grouping factors in ``pooling`` mode."""
    if pooling == "pooled":
        return ()
    if pooling == "unpooled":
        return tuple(f.effects_name for f in spec.factors)
    return tuple(site for f in spec.factors for site in (
        f"tau_{f.name}", f"eps_{f.name}",
        *((f"L_{f.name}",) if f.correlated and len(f.terms) > 1 else ())))


def _site_names(config: PoolingConfig, noise_sites: tuple[str, ...], P: int,
                correlated: bool, n_nc: int, n_c: int
                ) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """The model's latent sites outside the plate over groups, and ``(name, width)`` of
    those inside it (see :class:`BuiltModel`)."""
    if config.pooling == "pooled":
        return ("z", *noise_sites), ()
    if config.pooling == "unpooled":
        return noise_sites, (("z", P),)
    global_sites = ("mu", *(("tau",) if not config.tau_is_fixed else ()),
                    *(("tau_level", "level_eta") if config.use_levels else ()),
                    *(("L_corr",) if correlated else ()), *noise_sites)
    local_sites = ((("z_dec", P),) if not correlated else
                   tuple((n, k) for n, k in (("z_nc", n_nc), ("theta_c", n_c)) if k))
    return global_sites, local_sites


def build_plated_model(spec: ModelSpec, data: GroupedData, config: PoolingConfig, *,
                       centring: Mapping[str, str] | None = None,
                       weights: Any = None) -> BuiltModel:
    """:func:`build_model` in the padded layout, for SVI's subsampled groups (``model(...,
    batch_size=B)``); i.i.d. residuals only (AR / GP residual parameters can be per group,
    which subsampling does not support: use NUTS for them)."""
    if spec.residual.is_dynamic:
        raise InputError(f"{spec.residual.name} residuals need NUTS (a NutsSettings "
                         "sampler); SVI supports the i.i.d. residual only")
    return build_model(spec, data, config, centring=centring, layout="padded",
                       weights=weights)


def projected_terms(spec: ModelSpec, data: GroupedData, *, seed: int = 0,
                    keep_rows: Any = None) -> dict[str, Any] | None:
    """The likelihood's :meth:`~carpool.pooling.likelihoods.AbstractLikelihood.projected_terms`
    of ``data`` where ``spec`` has a linear mean (:mod:`carpool.pooling.linear_mean`) that
    agrees with its ``mean_fn`` on these data, else ``None`` (the per-observation sum is
    scored; a disagreement warns). Checked at the parameters' reference values and at two
    random latent draws per group, ``Normal(0, 0.5)`` (seeded). ``keep_rows`` (boolean (n,))
    keeps only those observations in the statistics (every group stays)."""
    if not linear_mean_usable(spec, data, seed=seed):
        return None
    linear = spec.linear_mean
    covs = {k: np.asarray(v, dtype=float) for k, v in data.covariates.items()}
    return spec.likelihood.projected_terms(data.y, keep_rows, covs, linear.offset(covs),
                                           linear.design(covs), data.group_index,
                                           data.num_groups)


def linear_mean_usable(spec: ModelSpec, data: GroupedData, *, seed: int = 0) -> bool:
    """Whether the fits may score ``data`` through ``spec``'s linear mean: it has one, the
    residuals are i.i.d., the likelihood has a projected form and the linear form agrees
    with ``mean_fn`` on these data (:func:`~carpool.pooling.linear_mean.linear_mean_check`
    at the reference values and two seeded latent draws per group; a disagreement warns)."""
    linear, lik = spec.linear_mean, spec.likelihood
    if (linear is None or spec.residual.is_dynamic
            or type(lik).projected_terms is AbstractLikelihood.projected_terms):
        return False
    covs = {k: np.asarray(v, dtype=float) for k, v in data.covariates.items()}
    # the group parameters then any common ones, drawn per group: the linear form must hold
    # for any values of either
    params = spec.pooled_parameters
    G, P = data.num_groups, len(params)
    z = np.random.default_rng(seed).normal(0.0, 0.5, (3, G, P))
    z[0] = 0.0
    # one compiled call (op by op, each transform's operations compile on their own)
    natural = np.asarray(jax.jit(lambda x: params.to_natural(x, axis=-1))(jnp.asarray(z)))
    problem = linear_mean_check(linear, spec.mean_fn, params.names, natural, covs,
                                np.asarray(data.group_index))
    if problem is not None:
        warnings.warn(f"model {spec.name!r}: {problem}; scoring each observation instead",
                      stacklevel=3)
        return False
    return True


def _as_jax(tree: Any) -> Any:
    """NumPy leaves -> JAX arrays (``None`` stays ``None``, an empty pytree node)."""
    return jax.tree_util.tree_map(jnp.asarray, tree)

