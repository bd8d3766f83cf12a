"""One-step predictions under dynamic (AR / GP) residuals, from posterior draws.

With a dynamic residual the predictive distribution of ``y_t`` depends on the residuals of the
same group's earlier observations: ``y_t | past ~ Normal(mean_t + m_t c_t, s_t c_t)`` (see
:mod:`carpool.residuals.process`). The functions here compute ``(m_t, s_t)`` for flat
``(S, n)`` arrays of posterior draws by laying each group's series out as a row (the padded
layout), optionally behind a *history* (the observations before a held-out block), and
mapping back. They serve pointwise log-likelihoods (LOO), held-out scores and posterior
predictive draws; i.i.d. residuals never come here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from carpool.pooling.grouped import GroupedData

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["fitted_residual_params", "new_residual_params", "residual_moments",
           "with_history"]


def fitted_residual_params(fit: Fit, groups: np.ndarray) -> dict[str, np.ndarray]:
    """Residual parameters per draw for the fitted groups at positions ``groups`` (G',):
    AR ``kappa`` (S, G', p) (or (S, p) for one group given as an int); GP ``lengthscale``,
    ``scale`` (S,)."""
    return fit.spec.residual.group_params(fit.residual_draws(), groups)


def new_residual_params(fit: Fit, num_groups: int, *, levels: list[str | None] | None = None,
                        seed: int = 0) -> dict[str, np.ndarray]:
    """Residual parameters of NEW groups per draw (AR: (S, num, p); GP: (S,)).

    Shared AR coefficients and GP parameters apply to any group. Per-class coefficients
    take the group's level (``levels``, one name per new group). Per-driver coefficients of
    a hierarchical fit are drawn from their population, ``tanh(ar_mu + ar_tau eps)``; an
    unpooled fit has no population and raises ``ValueError``.
    """
    return fit.spec.residual.new_group_draws(fit.residual_draws(), fit.residual_variables(),
                                             num_groups, level_ids=fit.data.level_ids,
                                             levels=levels, seed=seed)


def with_history(history: GroupedData, test: GroupedData) -> tuple[GroupedData, np.ndarray]:
    """``test`` behind the observations of its groups in ``history`` (matched by group id).

    Returns the combined data (``test``'s groups, in its order; each group's history rows
    first, then its test rows) and the boolean mask of the test rows in it.
    """
    pos = {g: i for i, g in enumerate(test.group_ids)}
    keep = np.array([history.group_ids[g] in pos for g in history.group_index], dtype=bool)
    h_index = np.array([pos[history.group_ids[g]] for g in history.group_index[keep]],
                       dtype=np.int32)
    combined = GroupedData(
        np.concatenate([history.y[keep], test.y]),
        np.concatenate([h_index, test.group_index]),
        test.group_ids,
        {k: np.concatenate([history.covariates[k][keep], v])
         for k, v in test.covariates.items()},
        test.level_index, test.level_ids)
    is_test = np.concatenate([np.zeros(int(keep.sum()), bool), np.ones(test.num_obs, bool)])
    return combined, is_test


def residual_moments(fit: Fit, data: GroupedData, mean: np.ndarray,
                     params: dict[str, np.ndarray], sigma: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Conditional mean ``m`` and sd ``s`` of each residual given its group's past.

    Parameters
    ----------
    data
        Observations (each group's series in time order), n of them, G groups.
    mean
        Mean function at each draw, (S, n).
    params
        Residual parameters per draw for ``data``'s groups (:func:`fitted_residual_params`
        or :func:`new_residual_params`).
    sigma
        The innovation / white-noise scale per draw, (S,).

    Returns
    -------
    m, s
        (S, n) each, in the residual's units (m/s^2 for car-following).
    """
    residual = fit.spec.residual
    lik = fit.spec.likelihood
    c = (data.covariates[lik.scale_covariate] if lik.scale_covariate is not None
         else np.ones(data.num_obs))
    r = (np.asarray(data.y)[None, :] - np.asarray(mean)) / c[None, :]
    gi, pos = data.group_index, data.positions()
    G, T = data.num_groups, int(data.group_sizes.max())
    step = residual.step_for(data.padded().covariates, T)
    S = r.shape[0]
    r_pad = np.zeros((S, G, T), dtype=r.dtype)
    r_pad[:, gi, pos] = r
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (S,))

    def one(args: tuple[Any, ...]) -> tuple[jax.Array, jax.Array]:
        r_s, sigma_s, rp_s = args
        return residual.conditional(r_s, rp_s, sigma_s, step)

    rp_j = {k: jnp.asarray(v) for k, v in params.items()}
    m_pad, s_pad = jax.lax.map(one, (jnp.asarray(r_pad), jnp.asarray(sigma), rp_j),
                               batch_size=64)
    m_pad, s_pad = np.asarray(m_pad), np.asarray(s_pad)
    return m_pad[:, gi, pos], s_pad[:, gi, pos]
