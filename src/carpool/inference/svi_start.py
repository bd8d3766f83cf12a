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

import numpy as np

from carpool.pooling.grouped import GroupedData
from carpool.pooling.spec import ModelSpec, PoolingConfig

__all__ = ["LaplaceStart", "init_with_values", "laplace_start", "start_values"]

#: Floor of the starting population scale (latent units): a start at tau ~ 0 would make the
#: non-centred innovations' gradients vanish.
TAU_START_MIN = 0.05

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
                  newton_steps: int = 12,
                  pooled: tuple[np.ndarray, dict[str, float]] | None = None) -> LaplaceStart:
    """Pooled MAP, then ``newton_steps`` Newton steps with backtracking per group on the
    group's log-likelihood plus the parameters' latent prior (i.i.d. residuals).

    ``pooled``: the pooled MAP's latent values and noise (:func:`~carpool.pooling.centring.
    pooled_map`) where the caller has them already (the centring choice computes the same
    MAP: deterministic, from the prior centre), else computed here."""
    from carpool.pooling.centring import group_estimates, pooled_map

    params = spec.parameters
    G, P = data.num_groups, len(params)
    z0, noise = pooled if pooled is not None else pooled_map(spec, data)
    _, scale = params.latent_prior_arrays()
    zg, info = group_estimates(spec, data, z0, noise, newton_steps=newton_steps,
                               backtrack=True)
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
