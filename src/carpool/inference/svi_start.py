"""Where SVI starts: a Laplace approximation per group, so the optimiser only refines it.

With minibatches of B out of G groups, each group's variational parameters move only in the
G / B share of steps its group is drawn in; started at the prior centre they need thousands
of steps. Started at each group's own regularised estimate with the inverse curvature as
covariance (a per-group Laplace approximation around the pooled fit), the optimisation only
has to settle the population and the coupling between groups. The pieces are carpool's
centring machinery (:mod:`carpool.pooling.centring`): the pooled MAP and the row
log-likelihood of the padded layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from carpool.pooling.grouped import GroupedData
from carpool.pooling.spec import ModelSpec, PoolingConfig

__all__ = ["LaplaceStart", "init_with_values", "laplace_start", "start_values"]

#: Floor of the starting population scale (latent units): a start at tau ~ 0 would make the
#: non-centred innovations' gradients vanish.
TAU_START_MIN = 0.05

#: Step halvings per Newton step before a group keeps its current value.
BACKTRACK_HALVINGS = 8


@dataclass(frozen=True)
class LaplaceStart:
    """Per-group start of the guide (latent scale).

    Attributes
    ----------
    z
        Regularised estimate of each group, (G, P).
    cov
        Its covariance (inverse curvature of log-likelihood + population prior), (G, P, P).
    mu, tau
        Starting population mean and scale, (P,) each.
    noise
        Pooled MAP noise parameters (e.g. ``sigma``, m/s^2).
    """

    z: np.ndarray
    cov: np.ndarray
    mu: np.ndarray
    tau: np.ndarray
    noise: dict[str, float]


def laplace_start(spec: ModelSpec, data: GroupedData, config: PoolingConfig, *,
                  newton_steps: int = 12) -> LaplaceStart:
    """Pooled MAP, then ``newton_steps`` Newton steps with backtracking per group on the
    group's log-likelihood plus the parameters' latent prior (i.i.d. residuals)."""
    from carpool.pooling.centring import _psd, _row_loglik_fn, pooled_map

    params = spec.parameters
    G, P = data.num_groups, len(params)
    z0, noise = pooled_map(spec, data)
    pad = data.padded()
    y, mask = jnp.asarray(pad.y), jnp.asarray(pad.mask)
    covs = {k: jnp.asarray(v) for k, v in pad.covariates.items()}
    loc, scale = params.latent_prior_arrays()
    row = _row_loglik_fn(spec, noise)
    grad_hess = jax.jit(jax.vmap(lambda zg, yr, mr, cr: (
        jax.grad(row)(zg, yr, mr, cr, {}), jax.hessian(row)(zg, yr, mr, cr, {}))))
    loglik = jax.jit(jax.vmap(lambda zg, yr, mr, cr: row(zg, yr, mr, cr, {})))
    prior_prec = 1.0 / scale**2

    def objective(zg: np.ndarray) -> np.ndarray:
        ll = np.asarray(loglik(jnp.asarray(zg, dtype=y.dtype), y, mask, covs), dtype=float)
        value = ll - 0.5 * np.sum(prior_prec * (zg - loc) ** 2, axis=1)
        return np.where(np.isfinite(value), value, -np.inf)

    zg = np.broadcast_to(np.asarray(z0, dtype=float), (G, P)).copy()
    current = objective(zg)
    for _ in range(newton_steps):
        g, h = grad_hess(jnp.asarray(zg, dtype=y.dtype), y, mask, covs)
        g = np.asarray(g, dtype=float) - prior_prec * (zg - loc)
        info = _psd(-np.asarray(h, dtype=float)) + np.diag(prior_prec)
        step = np.clip(np.nan_to_num(np.linalg.solve(info, g[..., None])[..., 0]), -1.0, 1.0)
        # backtracking per group: a full Newton step from the pooled value overshoots
        # (it oscillated by +-1 per step on simulated IDM drivers), so halve it until the
        # group's objective improves
        t = np.ones(G)
        for _ in range(BACKTRACK_HALVINGS):
            trial = objective(zg + t[:, None] * step)
            better = trial >= current
            if better.all():
                break
            t = np.where(better, t, 0.5 * t)
        trial = objective(zg + t[:, None] * step)
        better = trial >= current
        zg = np.where(better[:, None], zg + t[:, None] * step, zg)
        current = np.where(better, trial, current)
    _, h = grad_hess(jnp.asarray(zg, dtype=y.dtype), y, mask, covs)
    info = _psd(-np.asarray(h, dtype=float))
    mu = np.median(zg, axis=0)
    if config.pooling != "hierarchical":
        tau = scale
    elif config.tau_is_fixed:
        tau = config.fixed_tau(params)
    else:
        tau = np.maximum(zg.std(axis=0), TAU_START_MIN)
    # the group's curvature plus the population prior around the start
    cov = np.linalg.inv(info + np.diag(1.0 / tau**2))
    if config.pooling == "pooled":
        zg = np.broadcast_to(z0, (G, P)).copy()
    return LaplaceStart(zg, cov, mu, tau, noise)


def init_with_values(values: dict[str, Any], fallback: Any) -> Any:
    """A NumPyro init strategy: ``values`` where given, else ``fallback`` (a strategy)."""
    return partial(_init_with_values, values=values, fallback=fallback)


def _init_with_values(site: Any = None, *, values: dict[str, Any], fallback: Any) -> Any:
    if site["type"] == "sample" and not site["is_observed"] and site["name"] in values:
        return values[site["name"]]
    return fallback(site)


def start_values(plated: Any, start: LaplaceStart) -> tuple[dict[str, Any], np.ndarray]:
    """Starting values of every latent site of ``plated`` (full size, G groups) and the
    covariance (G, K, K) of the concatenated local sites (K = sum of their widths), in the
    parameterisation the plated model samples (centred values, or innovations scaled by tau).
    """
    config = plated.config
    P = len(plated.spec.parameters)
    values: dict[str, Any] = dict(start.noise)
    sites = dict(plated.local_sites)
    z, cov = start.z, start.cov
    if config.pooling == "pooled":
        values["z"] = start.z[0]
        return values, np.zeros((z.shape[0], 0, 0))
    if config.pooling == "unpooled":
        values["z"] = z
        return values, cov
    values["mu"] = start.mu
    if not config.tau_is_fixed:
        values["tau"] = start.tau
    if "L_corr" in plated.global_sites:
        values["L_corr"] = np.eye(P)
    mu, tau = start.mu, start.tau
    if "z_dec" in sites:  # x = w mu + (z - mu) / tau^(1 - w)
        w = plated.weights
        d = tau ** (w - 1.0)
        values["z_dec"] = w * mu + (z - mu) * d
        return values, d[:, :, None] * cov * d[:, None, :]
    o = list(plated.order)
    n_nc = sites.get("z_nc", 0)
    d = np.concatenate([1.0 / tau[o[:n_nc]], np.ones(P - n_nc)])
    u = np.concatenate([(z[:, o[:n_nc]] - mu[o[:n_nc]]) / tau[o[:n_nc]], z[:, o[n_nc:]]], 1)
    if n_nc:
        values["z_nc"] = u[:, :n_nc]
    if n_nc < P:
        values["theta_c"] = u[:, n_nc:]
    cov_o = cov[:, o][:, :, o]
    return values, d[:, None] * cov_o * d[None, :]
