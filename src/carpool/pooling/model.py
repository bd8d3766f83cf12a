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
from carpool.pooling.spec import ModelSpec, PoolingConfig
from carpool.priors import Prior

__all__ = ["BuiltModel", "build_model", "latent_prior", "natural_params"]


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


@dataclass(frozen=True)
class BuiltModel:
    """A NumPyro model function with the data and choices it was built with.

    ``model(observed=True)`` conditions on the data; ``observed=False`` simulates ``obs``
    (prior or posterior predictive). ``arrays`` is the pytree of JAX arrays the model reads
    (observations, covariates, masks, indices, centring weights, a fixed tau);
    ``model(observed, arrays=other)`` runs the same model on other arrays of the same
    shapes, so a sampler compiled as a function of ``arrays`` serves every data set of that
    shape (see :func:`carpool.inference.nuts.run_nuts`). ``layout`` is ``"padded"`` or ``"flat"``;
    ``centring`` maps each parameter to ``"centred"`` / ``"noncentred"`` (hierarchical only).
    """

    model: Callable[..., None]
    spec: ModelSpec
    config: PoolingConfig
    data: GroupedData
    layout: str
    centring: Mapping[str, str]
    order: tuple[int, ...]  # centring order of parameters (non-centred first)
    arrays: Mapping[str, Any] = None  # type: ignore[assignment]

    def __call__(self, observed: bool = True) -> None:
        self.model(observed)


def build_model(
    spec: ModelSpec,
    data: GroupedData,
    config: PoolingConfig,
    *,
    centring: Mapping[str, str] | None = None,
    layout: str = "auto",
    weights: Any = None,
) -> BuiltModel:
    """Build the NumPyro model of ``spec`` on ``data`` in ``config.pooling`` mode.

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
    priors = [p.prior for p in params]
    lik = spec.likelihood
    noise_priors = lik.noise_priors()
    fixed_noise = {k: jnp.asarray(v) for k, v in lik.fixed_noise().items()}

    residual = spec.residual
    dynamic = residual.is_dynamic
    if dynamic:
        # a residual process runs along each group's series: the padded (G, T) layout holds
        # every series as a row in time order, so lags never cross a group boundary
        # (simulated ``obs`` still come back flat, (n,), as with the flat layout)
        residual.check(config.pooling, data.level_index is not None)
        layout = "padded"
    else:
        layout = "flat" if config.pooling == "pooled" else choose_layout(data, layout)

    if centring is None:
        centring = {n: ("noncentred" if config.param_choice(n) == "auto"
                        else config.param_choice(n)) for n in params.names}
    correlated = config.resolve_correlated(G, P) and P > 1
    if "partial" in centring.values() and correlated:
        raise InputError("partial centring needs a diagonal population (correlated=False)")
    if weights is None:
        weights = np.stack([np.full(G, 1.0 if centring[n] == "centred" else 0.0)
                            for n in params.names], axis=1)
    nc = [i for i, n in enumerate(params.names) if centring[n] == "noncentred"]
    cc = [i for i, n in enumerate(params.names) if centring[n] in ("centred", "partial")]
    order = tuple(nc + cc)
    inverse = np.argsort(order)

    # data as JAX arrays in the chosen layout: one pytree, the model's argument
    if layout == "padded":
        pad = data.padded()
        arrays: dict[str, Any] = {"y": pad.y, "covs": dict(pad.covariates), "mask": pad.mask}
    else:
        arrays = {"y": data.y, "covs": dict(data.covariates), "mask": None}
    arrays["group_index"] = data.group_index
    arrays["level_index"] = data.level_index
    arrays["weights"] = np.asarray(weights, dtype=float)
    arrays["tau"] = config.fixed_tau(params) if config.tau_is_fixed else None
    # the data-only parts of the summed log density, done once here instead of per gradient
    arrays["terms"] = lik.observed_terms(arrays["y"], arrays["mask"], arrays["covs"])
    # else where a censored likelihood's observations sit at the bound (its costly term runs
    # there)
    arrays["censored"] = (lik.censored_at(arrays["y"], arrays["mask"])
                          if arrays["terms"] is None else None)
    # a mean linear in data features: each group's series as its projected statistics
    arrays["projected"] = None if dynamic else projected_terms(spec, data)
    if dynamic:
        scale_name = lik.scale_covariate
        step = residual.step_for(pad.covariates, int(data.group_sizes.max()))
        arrays["flat_index"] = (data.group_index, data.positions())
    default_arrays = _as_jax(arrays)
    tau_priors = [config.hyperpriors.tau_prior(n) for n in params.names]
    eta = config.hyperpriors.lkj_eta

    def group_params(natural: Any, group_index: Any) -> dict[str, Any]:
        if config.pooling == "pooled":
            return {n: natural[i] for i, n in enumerate(params.names)}
        if layout == "padded":
            return {n: natural[:, i:i + 1] for i, n in enumerate(params.names)}
        return {n: natural[group_index, i] for i, n in enumerate(params.names)}

    def hierarchical_latent(a: Mapping[str, Any]) -> Any:
        level_index = a["level_index"]
        mu = numpyro.sample("mu", latent_prior(priors))
        tau = (numpyro.sample("tau", latent_prior(tau_priors)) if a["tau"] is None
               else a["tau"])
        if config.use_levels:
            K = data.num_levels
            tau_level = numpyro.sample(
                "tau_level", latent_prior([config.hyperpriors.tau_level] * P))
            level_eta = numpyro.sample("level_eta", dist.Normal(0.0, 1.0).expand((K, P))
                                       .to_event(2))
            centre = (mu + tau_level * level_eta)[level_index]
        else:
            centre = jnp.broadcast_to(mu, (G, P))
        if not correlated:
            # partially non-centred (weights 1 = centred, 0 = non-centred), exact for any w
            w = a["weights"]
            x = numpyro.sample("z_dec", dist.Normal(w * centre, tau**w).to_event(2))
            return numpyro.deterministic("z", centre + tau ** (1.0 - w) * (x - w * centre))
        # a correlated population: permute to centring order (non-centred first)
        o = jnp.asarray(order)
        centre_o, tau_o = centre[:, o], tau[o]
        L = numpyro.sample("L_corr", dist.LKJCholesky(P, concentration=eta))
        n_nc = len(nc)
        parts = []
        eps_n = None
        if n_nc:
            eps_n = numpyro.sample("z_nc", dist.Normal(0.0, 1.0).expand((G, n_nc)).to_event(2))
            x_n = eps_n @ L[:n_nc, :n_nc].T
            parts.append(centre_o[:, :n_nc] + tau_o[:n_nc] * x_n)
        if len(cc):
            loc_c = centre_o[:, n_nc:]
            if eps_n is not None:
                loc_c = loc_c + tau_o[n_nc:] * (eps_n @ L[n_nc:, :n_nc].T)
            scale_tril = tau_o[n_nc:, None] * L[n_nc:, n_nc:]
            d = dist.MultivariateNormal(loc_c, scale_tril=scale_tril)
            parts.append(numpyro.sample("theta_c", d.to_event(1)))
        theta_o = jnp.concatenate(parts, axis=-1)
        return numpyro.deterministic("z", theta_o[:, jnp.asarray(inverse)])

    def model(observed: bool = True, arrays: Mapping[str, Any] | None = None) -> None:
        a = default_arrays if arrays is None else arrays
        y_obs, covs, mask, level_index = a["y"], a["covs"], a["mask"], a["level_index"]
        if config.pooling == "pooled":
            z = numpyro.sample("z", latent_prior(priors))
        elif config.pooling == "unpooled":
            z = numpyro.sample("z", latent_prior(priors, (G,)).to_event(1))
        else:
            z = hierarchical_latent(a)
        natural = natural_params(params, z)
        noise = dict(fixed_noise)
        for name, prior in noise_priors.items():
            noise[name] = numpyro.sample(name, prior.to_numpyro())
        if observed and a["projected"] is not None:
            beta = spec.linear_mean.coefficients(
                {n: natural[..., i] for i, n in enumerate(params.names)})
            numpyro.factor("obs", lik.projected_log_prob(a["projected"], beta, noise))
            return
        mean = spec.mean_fn(group_params(natural, a["group_index"]), covs)
        if dynamic:
            rp = residual.sample_params(num_groups=G, level_index=level_index,
                                        num_levels=data.num_levels, pooling=config.pooling)
            c = covs[scale_name] if scale_name is not None else 1.0
            if not observed:  # simulate whole residual series (prior / posterior predictive)
                white = numpyro.sample("residual_white",
                                       dist.Normal(0.0, 1.0).expand(mean.shape).to_event(2))
                y = mean + residual.simulate(white, rp, noise["sigma"], step) * c
                if lik.lower is not None:
                    y = jnp.maximum(y, lik.lower)
                numpyro.deterministic("obs", y[a["flat_index"]])
                return
            mean, s_cond = residual.one_step(y_obs, mean, c, rp, noise["sigma"], step)
            noise = {**noise, "sigma": s_cond}
        if observed and a["terms"] is not None:
            numpyro.factor("obs", lik.summed_log_prob(a["terms"], y_obs, mean, noise))
            return
        censored = {} if a["censored"] is None else {"censored_at": a["censored"]}
        d = lik.distribution(mean, noise, covs, **censored)
        if mask is not None:
            d = d.mask(mask)
        numpyro.sample("obs", d.to_event(len(d.batch_shape)),
                       obs=y_obs if observed else None)

    return BuiltModel(model, spec, config, data, layout, dict(centring), order,
                      default_arrays)


def projected_terms(spec: ModelSpec, data: GroupedData, *, seed: int = 0
                    ) -> dict[str, Any] | None:
    """The likelihood's :meth:`~carpool.pooling.likelihoods.AbstractLikelihood.projected_terms`
    of ``data`` where ``spec`` has a linear mean (:mod:`carpool.pooling.linear_mean`) that
    agrees with its ``mean_fn`` on these data, else ``None`` (the per-observation sum is
    scored; a disagreement warns). Checked at the parameters' reference values and at two
    random latent draws per group, ``Normal(0, 0.5)`` (seeded)."""
    if not linear_mean_usable(spec, data, seed=seed):
        return None
    linear = spec.linear_mean
    covs = {k: np.asarray(v, dtype=float) for k, v in data.covariates.items()}
    return spec.likelihood.projected_terms(data.y, None, covs, linear.offset(covs),
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
    G, P = data.num_groups, len(spec.parameters)
    z = np.random.default_rng(seed).normal(0.0, 0.5, (3, G, P))
    z[0] = 0.0
    # one compiled call (op by op, each transform's operations compile on their own)
    natural = np.asarray(jax.jit(lambda x: spec.parameters.to_natural(x, axis=-1))(
        jnp.asarray(z)))
    problem = linear_mean_check(linear, spec.mean_fn, spec.parameters.names, natural, covs,
                                np.asarray(data.group_index))
    if problem is not None:
        warnings.warn(f"model {spec.name!r}: {problem}; scoring each observation instead",
                      stacklevel=3)
        return False
    return True


def _as_jax(tree: Any) -> Any:
    """NumPy leaves -> JAX arrays (``None`` stays ``None``, an empty pytree node)."""
    return jax.tree_util.tree_map(jnp.asarray, tree)

