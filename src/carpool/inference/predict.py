"""Prior and posterior predictive simulation, pointwise log-likelihoods, new groups.

All functions work from natural-unit posterior draws and the spec's mean function on the flat
(n,) layout, so they serve the fitted data, new observations of known groups, and new groups
drawn from the population alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from carpool.errors import InputError
from carpool.pooling.grouped import GroupedData

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["expected_mean", "posterior_predictive", "pointwise_log_likelihood",
           "new_group_params", "predict_new_group", "prior_predictive", "align_groups"]


def align_groups(fit: Fit, data: GroupedData) -> np.ndarray:
    """Map ``data``'s group index to the fit's group order; error on unknown groups."""
    pos = {g: i for i, g in enumerate(fit.group_ids)}
    unknown = [g for g in data.group_ids if g not in pos]
    if unknown:
        raise InputError(f"group {unknown[0]!r} was not in the fitted data; use "
                         "new_group_params / predict_new_group for unseen groups")
    table = np.array([pos[g] for g in data.group_ids])
    return table[data.group_index]


def _thin(n_total: int, num_draws: int | None, seed: int) -> np.ndarray:
    if num_draws is None or num_draws >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, num_draws, replace=False))


def shared_draws(fit: Fit) -> dict[str, np.ndarray]:
    """The draws of the values ``mean_fn`` shares across groups (chains stacked, S draws):
    each common parameter (S,) and each other grouping factor's effects (S, J + 1, W),
    whose last row (zeros: the factor's population mean) serves levels the fit has not
    seen. Empty for a spec without them."""
    post = fit.idata.posterior
    out: dict[str, np.ndarray] = {}
    spec = fit.spec
    if spec.common is not None:
        beta = post["beta"].values.reshape(-1, len(spec.common))
        out.update({n: beta[:, i] for i, n in enumerate(spec.common_names)})
    for f in spec.factors:
        if f.effects_name in post:
            b = post[f.effects_name].values
            b = b.reshape((-1,) + b.shape[2:])
            out[f.effects_name] = np.concatenate([b, np.zeros_like(b[:, :1])], axis=1)
    return out


def _mean_from_theta(fit: Fit, theta: np.ndarray, group_index: np.ndarray,
                     covs: dict[str, np.ndarray], draws: np.ndarray | None = None
                     ) -> np.ndarray:
    """theta (S, G, P) or (S, P) natural; returns (S, n).

    ``draws``: the posterior draws (chains stacked) ``theta`` holds, for the values shared
    across groups (:func:`shared_draws`; ``None``: all of them, in order). One compiled
    program per model and array shapes, kept for the process (scoring many held-out folds
    of one size, or the same fold again, compiles once)."""
    covs_j = {k: jnp.asarray(v) for k, v in covs.items()}
    shared = {k: jnp.asarray(v if draws is None else v[draws])
              for k, v in shared_draws(fit).items()}
    run = _mean_program(fit.spec)
    return np.asarray(run(jnp.asarray(theta), jnp.asarray(group_index), covs_j, shared))


#: Compiled mean programs per spec: id(spec) -> (program, spec); the spec is kept alive
#: beside it so its id is not reused. The oldest go first beyond 8.
_MEAN_PROGRAMS: dict[int, tuple[Any, Any]] = {}


def _mean_program(spec: Any) -> Any:
    key = id(spec)
    if key not in _MEAN_PROGRAMS:
        names = spec.parameters.names

        def run(theta: Any, gi: Any, covs: Any, shared: Any) -> Any:
            def one(args: Any) -> Any:
                th, sh = args
                if th.ndim == 1:
                    p = {n: th[i] for i, n in enumerate(names)}
                else:
                    p = {n: th[gi, i] for i, n in enumerate(names)}
                return spec.mean_fn({**p, **sh}, covs)

            return jax.lax.map(one, (theta, shared), batch_size=64)

        while len(_MEAN_PROGRAMS) >= 8:
            _MEAN_PROGRAMS.pop(next(iter(_MEAN_PROGRAMS)))
        _MEAN_PROGRAMS[key] = (jax.jit(run), spec)
    return _MEAN_PROGRAMS[key][0]


def expected_mean(fit: Fit, data: GroupedData | None = None, *, num_draws: int | None = None,
                  seed: int = 0) -> np.ndarray:
    """Mean function at posterior draws for ``data`` (default: the fitted data), (S, n).

    For a generalised linear family (Bernoulli, Binomial, Poisson, negative binomial) this
    is the linear predictor (log odds, log rate), not the expected observation: map it
    with ``fit.spec.likelihood.expected_response``."""
    data = fit.data if data is None else data
    gi = align_groups(fit, data)
    theta = fit.theta_draws()
    idx = _thin(theta.shape[0], num_draws, seed)
    return _mean_from_theta(fit, theta[idx], gi, data.covariates, idx)


def _noise_at(fit: Fit, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: (v[idx][:, None] if np.ndim(v) else v) for k, v in fit.noise_draws().items()}


def conditional_predictive(fit: Fit, data: GroupedData, mean: np.ndarray, idx: np.ndarray,
                           residual_params: dict[str, np.ndarray] | None = None,
                           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Mean and noise of the one-step predictive distribution at draws ``idx``.

    i.i.d. residuals: the mean function ``mean`` (S, n) and the fitted noise. Dynamic (AR /
    GP) residuals: each observation's distribution given its group's earlier observations in
    ``data`` (:mod:`carpool.inference.dynamic`); ``residual_params`` are the residual
    parameters of ``data``'s groups per draw (default: the fitted groups, aligned by id).
    """
    noise = _noise_at(fit, idx)
    if not fit.spec.residual.is_dynamic:
        return mean, noise
    from carpool.inference.dynamic import fitted_residual_params, residual_moments

    if residual_params is None:
        pos = {g: i for i, g in enumerate(fit.group_ids)}
        residual_params = fitted_residual_params(fit, np.array([pos[g]
                                                                for g in data.group_ids]))
    residual_params = {k: v[idx] for k, v in residual_params.items()}
    sigma = np.asarray(noise["sigma"]).reshape(-1)
    m, sd = residual_moments(fit, data, mean, residual_params,
                             np.broadcast_to(sigma, (len(idx),)))
    name = fit.spec.likelihood.scale_covariate
    c = data.covariates[name][None, :] if name is not None else 1.0
    return np.asarray(mean) + m * c, {**noise, "sigma": sd}


def posterior_predictive(fit: Fit, data: GroupedData | None = None, *,
                         num_draws: int | None = None, seed: int = 0) -> np.ndarray:
    """Simulated observations for ``data``'s covariates, (S, n).

    One step ahead: each draw of ``y_t`` uses the recorded state at ``t`` and, with AR / GP
    residuals, the residuals of the group's earlier observations in ``data``."""
    data = fit.data if data is None else data
    theta = fit.theta_draws()
    idx = _thin(theta.shape[0], num_draws, seed)
    mean = _mean_from_theta(fit, theta[idx], align_groups(fit, data), data.covariates, idx)
    mean, noise = conditional_predictive(fit, data, mean, idx)
    return _sample_obs(fit, mean, noise, data, seed)


def _sample_obs(fit: Fit, mean: np.ndarray, noise: dict[str, np.ndarray], data: GroupedData,
                seed: int) -> np.ndarray:
    covs = {k: jnp.asarray(v)[None, :] for k, v in data.covariates.items()}
    d = fit.spec.likelihood.distribution(jnp.asarray(mean),
                                         {k: jnp.asarray(v) for k, v in noise.items()}, covs)
    return np.asarray(d.sample(jax.random.PRNGKey(seed)))


def pointwise_log_likelihood(fit: Fit, data: GroupedData | None = None) -> np.ndarray:
    """Log density of each observation at each draw, (chain, draw, n) (for LOO / scores).

    With AR / GP residuals, each term is the density given the group's earlier observations
    in ``data`` (the prediction-error decomposition), so the terms sum to the joint
    log-likelihood."""
    data = fit.data if data is None else data
    th = fit.idata.posterior["theta"].values
    C, D = th.shape[:2]
    mean = _mean_from_theta(fit, th.reshape((C * D,) + th.shape[2:]),
                            align_groups(fit, data), data.covariates)
    mean, noise = conditional_predictive(fit, data, mean, np.arange(C * D))
    covs = {k: jnp.asarray(v)[None, :] for k, v in data.covariates.items()}
    lp = fit.spec.likelihood.log_prob(jnp.asarray(data.y)[None, :], jnp.asarray(mean),
                                      {k: jnp.asarray(v) for k, v in noise.items()}, covs)
    return np.asarray(lp).reshape(C, D, -1)


def new_group_params(fit: Fit, num_groups: int = 1, *, seed: int = 0,
                     level: str | None = None, draws: np.ndarray | None = None) -> np.ndarray:
    """Natural parameters of ``num_groups`` NEW groups drawn from the population, (S, num, P).

    Hierarchical: ``z = mu + tau * chol(corr) eps`` per draw (around the level mean when
    ``level`` is given); pooled: the shared parameters; unpooled fits have no population and
    raise. ``draws`` (indices into the S posterior draws, chains stacked) draws new groups
    for those posterior draws only, so many new groups from a few draws stay cheap in memory.
    """
    post = fit.idata.posterior
    params = fit.spec.parameters
    pick = slice(None) if draws is None else np.asarray(draws, dtype=int)
    if fit.pooling == "pooled":
        th = fit.theta_draws()[pick]
        return np.repeat(th[:, None, :], num_groups, axis=1)
    if fit.pooling == "unpooled":
        raise InputError("an unpooled fit has no population distribution, so it cannot "
                         "predict a new group; use pooling='hierarchical' or 'pooled'")
    P = len(params)
    if level is None:
        centre = post["mu"].values.reshape(-1, P)
    else:
        if "level_population" not in post:
            raise InputError("this fit has no levels")
        levels = [str(v) for v in post.coords["level"].values]
        if level not in levels:
            raise InputError(f"unknown level {level!r}; have {levels}")
        lp = post["level_population"].values.reshape(-1, len(levels), P)
        centre = params.to_latent(lp[:, levels.index(level)], axis=-1)
    centre = centre[pick]
    tau = post["tau"].values.reshape(-1, P)[pick]
    corr = post["corr"].values.reshape(-1, P, P)[pick]
    L = np.linalg.cholesky(corr + 1e-9 * np.eye(P))
    eps = np.random.default_rng(seed).standard_normal((tau.shape[0], num_groups, P))
    z = centre[:, None, :] + tau[:, None, :] * np.einsum("sij,sgj->sgi", L, eps)
    return np.asarray(params.to_natural(z, axis=-1))


def prior_predictive(spec, data: GroupedData, config, *, num_draws: int = 200,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Draws from the prior: every latent site plus ``obs`` (num_draws, n) on ``data``."""
    from numpyro.infer import Predictive

    from carpool.pooling.model import build_model

    built = build_model(spec, data, config, layout="flat")
    pred = Predictive(built.model, num_samples=num_draws)
    out = pred(jax.random.PRNGKey(seed), observed=False)
    return {k: np.asarray(v) for k, v in out.items()}


def predict_new_group(fit: Fit, covariates: dict[str, np.ndarray], *,
                      level: str | None = None, num_draws: int | None = None,
                      seed: int = 0) -> np.ndarray:
    """Simulated observations of a NEW group (e.g. an unseen driver), (S, n).

    Each posterior draw gets its own new group's parameters from the population
    (:func:`new_group_params`), so the spread combines population heterogeneity, posterior
    uncertainty and observation noise. ``covariates`` maps the spec's covariate names to
    arrays of shape (n,).
    """
    missing = [c for c in fit.spec.covariates if c not in covariates]
    if missing:
        raise InputError(f"missing covariate(s) {missing} for model {fit.spec.name!r}")
    covs = {k: np.asarray(v, dtype=float) for k, v in covariates.items()}
    theta = new_group_params(fit, 1, seed=seed, level=level)[:, 0, :]  # (S, P)
    idx = _thin(theta.shape[0], num_draws, seed)
    n = len(next(iter(covs.values())))
    mean = _mean_from_theta(fit, theta[idx], np.zeros(n, dtype=np.int32), covs, idx)
    data = GroupedData(np.zeros(n), np.zeros(n, dtype=np.int32), ("new",), covs)
    noise = _noise_at(fit, idx)
    if fit.spec.residual.is_dynamic:
        # a new group's series has no observed past: residuals drawn from the process itself
        return _simulate_new_series(fit, mean, noise, data, idx, level, seed)
    return _sample_obs(fit, mean, noise, data, seed)


def _simulate_new_series(fit: Fit, mean: np.ndarray, noise: dict[str, np.ndarray],
                         data: GroupedData, idx: np.ndarray, level: str | None,
                         seed: int) -> np.ndarray:
    """Whole residual series of one new group per draw, from the fitted process, (S, n)."""
    from carpool.inference.dynamic import new_residual_params

    residual, lik = fit.spec.residual, fit.spec.likelihood
    rp = {k: v[idx] for k, v in new_residual_params(fit, 1, levels=[level], seed=seed).items()}
    step = residual.step_for(data.padded().covariates, int(data.group_sizes.max()))
    sigma = np.broadcast_to(np.asarray(noise["sigma"]).reshape(-1), (len(idx),))
    white = np.random.default_rng(seed).standard_normal((len(idx), 1, data.num_obs))

    def one(args):
        w, s_, p_ = args
        return residual.simulate(w, p_, s_, step)[0]

    r = np.asarray(jax.lax.map(one, (jnp.asarray(white), jnp.asarray(sigma),
                                     {k: jnp.asarray(v) for k, v in rp.items()})))
    c = (data.covariates[lik.scale_covariate][None, :] if lik.scale_covariate is not None
         else 1.0)
    y = np.asarray(mean) + r * c
    return np.maximum(y, lik.lower) if getattr(lik, "lower", None) is not None else y
