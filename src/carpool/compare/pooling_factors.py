"""Pooling factors: how far each group's estimate is pulled from its own data to the population.

For a group whose data alone give the latent estimate ``zhat_g`` with information ``I_g``
(P x P, the curvature of the group's log-likelihood) and a population prior
``N(mu, Sigma)`` with ``Sigma = diag(tau) C diag(tau)``, the group's posterior mean is, in the
Gaussian approximation,

    E[z_g] = (I - B_g) zhat_g + B_g mu,    B_g = (I + Sigma I_g)^-1.

``B_g`` is exactly the fraction of the way from the group's own (unpooled) estimate to the
population mean that the estimate moves; its diagonal is the *pooling factor* of each
parameter: 0 when the group stands alone (``Sigma I_g`` large: much data or a wide
population), 1 when it is fully pooled (no data, or ``tau = 0``). It is exact for the
normal-normal model (eight schools: ``B = s^2 / (s^2 + tau^2)``) and a local approximation
for non-linear mean functions. It is averaged over the posterior draws of ``tau`` and ``C``,
so the uncertainty of the population scale is carried through (Gelman & Pardoe 2006 define a
level-wide pooling factor in the same spirit). By construction a pooled fit has factor 1
everywhere and an unpooled fit 0.

The information is evaluated with :func:`carpool.pooling.centring.group_information` at each
group's own regularised estimate (damped Newton from the fit's estimate), with the noise
parameters at their posterior means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from carpool.errors import InputError

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["pooling_factors", "group_information_of", "pooling_factor_draws"]


def group_information_of(fit: Fit) -> np.ndarray:
    """Information of each group's data about its latent parameters, (G, P, P).

    The values every group shares besides the noise (a formula's common parameters, other
    grouping factors' effects: :func:`carpool.inference.predict.shared_draws`) are held at
    their posterior means."""
    from carpool.inference.predict import shared_draws
    from carpool.pooling.centring import group_information

    params = fit.spec.parameters
    z = params.to_latent(fit.idata.posterior["theta"].values, axis=-1).mean(axis=(0, 1))
    noise = {k: float(np.mean(v)) for k, v in fit.noise_draws().items()}
    lik_noise: dict[str, Any] = {k: v for k, v in noise.items()
                                 if k in fit.spec.likelihood.noise_priors()}
    lik_noise.update({k: np.mean(v, axis=0) for k, v in shared_draws(fit).items()})
    residual_params = None
    if fit.spec.residual.is_dynamic:
        rp = fit.spec.residual.group_params(fit.residual_draws(), None)
        residual_params = {k: np.mean(v, axis=0) for k, v in rp.items()}
    return group_information(fit.spec, fit.data, z, lik_noise,
                             residual_params=residual_params)


def pooling_factor_draws(info: np.ndarray, tau: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """Diagonal of ``(I + Sigma_s I_g)^-1`` per draw: (S, G, P).

    ``info`` (G, P, P); ``tau`` (S, P) latent population scales; ``corr`` (S, P, P).
    """
    S, P = tau.shape
    sigma = tau[:, :, None] * corr * tau[:, None, :]  # (S, P, P)
    m = np.eye(P)[None, None] + np.einsum("sij,gjk->sgik", sigma, info)
    inv = np.linalg.inv(m)
    return np.clip(np.diagonal(inv, axis1=-2, axis2=-1), 0.0, 1.0)


def pooling_factors(fit: Fit, *, unpooled: Fit | None = None, max_draws: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """Pooling factor of every group and parameter of ``fit``.

    Returns one row per group and parameter: ``group``, ``parameter``, ``unit``,
    ``num_obs``, ``pooling_factor`` (posterior mean over draws of tau and the correlation;
    0 = stands alone, 1 = fully pooled), ``lo`` / ``hi`` (its 5% and 95% quantiles over the
    draws) and, when ``unpooled`` (a fit of the same groups) is given, ``moved``: the empirical
    fraction ``(zhat_unpooled - z) / (zhat_unpooled - mu)`` of posterior means on the latent
    scale (noisy when the group's own estimate is close to the population mean).
    """
    params = fit.spec.parameters
    G, P = fit.data.num_groups, len(params)
    sizes = fit.data.group_sizes
    if fit.pooling == "pooled":
        pf = np.ones((1, G, P))
    elif fit.pooling == "unpooled":
        pf = np.zeros((1, G, P))
    else:
        post = fit.idata.posterior
        tau = post["tau"].values.reshape(-1, P)
        corr = post["corr"].values.reshape(-1, P, P)
        if tau.shape[0] > max_draws:
            idx = np.random.default_rng(seed).choice(tau.shape[0], max_draws, replace=False)
            tau, corr = tau[idx], corr[idx]
        pf = pooling_factor_draws(group_information_of(fit), tau, corr)
    moved = None
    if unpooled is not None and fit.pooling == "hierarchical":
        if list(unpooled.group_ids) != list(fit.group_ids):
            raise InputError("the unpooled fit must be of the same groups, in the same order")
        zu = params.to_latent(unpooled.idata.posterior["theta"].values, axis=-1).mean((0, 1))
        zh = params.to_latent(fit.idata.posterior["theta"].values, axis=-1).mean((0, 1))
        mu = fit.idata.posterior["mu"].values.reshape(-1, P).mean(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            moved = (zu - zh) / (zu - mu)
    mean, lo, hi = pf.mean(0), np.quantile(pf, 0.05, axis=0), np.quantile(pf, 0.95, axis=0)
    rows = []
    for g, gid in enumerate(fit.group_ids):
        for i, p in enumerate(params):
            row = {"group": gid, "parameter": p.name, "unit": p.unit,
                   "num_obs": int(sizes[g]), "pooling_factor": float(mean[g, i]),
                   "lo": float(lo[g, i]), "hi": float(hi[g, i])}
            if moved is not None:
                row["moved"] = float(moved[g, i])
            rows.append(row)
    return pd.DataFrame(rows)
