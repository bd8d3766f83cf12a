r"""Means linear in data features: a group's whole series scored from a few numbers.

Where a model's mean is ``mean = offset(x) + design(x) @ beta(theta)``, with ``offset`` and
``design`` functions of the data only and ``beta`` a function of the group's parameters
(the IDM with its fixed exponent is one: :class:`carpool.carfollowing.LinearForm`), the
Gaussian sum of squares of a group's ``n`` observations reduces to ``K`` numbers.
With the residual multiplier ``u_t`` (``1 / (sigma covariate)`` at the exactly observed
cells, 0 elsewhere), ``F = diag(u) design`` and ``r = u (y - offset)``, take the thin QR
decomposition ``F = Q R`` once (NumPy, float64). Then for every ``beta``

.. math::

    \sum_t u_t^2 (y_t - \text{mean}_t)^2 = \lVert r - F\beta \rVert^2
        = \underbrace{\lVert r - Q Q^\top r \rVert^2}_{\text{rss, data only}}
          + \lVert Q^\top r - R \beta \rVert^2 ,

exactly (``Q Q^T`` projects onto the span of ``F``). A gradient then costs ``K^2`` per
group, whatever the series length: for the hierarchical IDM (K = 8) on 39 drivers and
5,460 observations it halves the cost of the summed per-observation density (27-32 us
to 13-19 us a gradient, most of the rest being the priors and transforms;
``benchmarks/gradient_cost.py``). The orthogonal form is used rather than the normal
equations (``F^T F``, ``F^T r``) because the IDM's features span ten orders of magnitude
(``v^4`` against ``1 / s^2``) and its terms nearly cancel in steady following, which the
normal equations' quadratic form would pay for in float32 rounding; ``Q^T r - R beta`` has
the size of the residual itself.

:func:`linear_mean_check` compares the linear form with the model's ``mean_fn`` on the
data before a fit relies on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LinearMean", "censored_bucket", "linear_mean_check", "projected_statistics",
           "row_projected_terms"]


@dataclass(frozen=True)
class LinearMean:
    """``mean = offset(covariates) + design(covariates) @ coefficients(params)``.

    Parameters
    ----------
    offset
        ``offset(covariates) -> (...,)``: NumPy float64 arrays in, NumPy out; data only.
    design
        ``design(covariates) -> (..., K)``: NumPy, data only.
    coefficients
        ``coefficients(params) -> (..., K)``: natural-unit parameters ``{name: (...)}`` (the
        spec's parameter table), JAX-traceable.
    """

    offset: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    design: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    coefficients: Callable[[Mapping[str, Any]], Any]


def projected_statistics(residual: np.ndarray, design: np.ndarray, group_index: np.ndarray,
                         num_groups: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Per group ``(R (G, K, K), c (G, K), rss)`` of the weighted rows.

    Parameters
    ----------
    residual
        ``u (y - offset)`` per observation (n,): 0 where a row does not count.
    design
        ``u design`` per observation (n, K).
    group_index
        The group of each observation (n,), integers in ``[0, num_groups)``.

    Returns
    -------
    R, c, rss
        ``R`` upper triangular (rows past a short group's count are 0), ``c = Q^T r`` and the
        least-squares residual sum of squares summed over the groups, so that
        ``sum((residual - design @ beta_g)^2) = rss + sum_g |c_g - R_g beta_g|^2``.
    """
    residual = np.asarray(residual, dtype=float)
    design = np.asarray(design, dtype=float)
    n, K = design.shape
    R = np.zeros((num_groups, K, K))
    c = np.zeros((num_groups, K))
    rss = 0.0
    order = np.argsort(group_index, kind="stable")
    bounds = np.searchsorted(np.asarray(group_index)[order], np.arange(num_groups + 1))
    for g in range(num_groups):
        rows = order[bounds[g]:bounds[g + 1]]
        if rows.size == 0:
            continue
        Q, Rg = np.linalg.qr(design[rows], mode="reduced")  # Q (m, k), Rg (k, K), k <= K
        k = Rg.shape[0]
        R[g, :k] = Rg
        c[g, :k] = Q.T @ residual[rows]
        left = residual[rows] - Q @ c[g, :k]
        rss += float(left @ left)
    return R, c, rss


def linear_mean_check(linear: LinearMean, mean_fn: Any, names: list[str],
                      natural: np.ndarray, covariates: Mapping[str, np.ndarray],
                      group_index: np.ndarray, *, rtol: float = 1e-7) -> str | None:
    """``None`` where ``offset + design @ coefficients`` equals ``mean_fn`` at every
    observation for each parameter set in ``natural`` (S, G, P), else what differs.

    Computed in float64 (``jax.enable_x64``); ``rtol`` is relative to ``1 + |mean|``.
    """
    import jax
    import jax.numpy as jnp

    covs = {k: np.asarray(v, dtype=float) for k, v in covariates.items()}
    offset, design = linear.offset(covs), linear.design(covs)
    theta = np.asarray(natural, dtype=float)[:, np.asarray(group_index)]  # (S, n, P)
    # every parameter set in one compiled call: op by op, each of the model's operations
    # would be compiled on its own (measured 0.7-1 s for the IDM, against ~0.2 s)
    both = jax.jit(lambda p, c: (mean_fn(p, c), linear.coefficients(p)))
    with jax.enable_x64(True):
        params = {n: jnp.asarray(theta[..., i]) for i, n in enumerate(names)}
        exact, coef = (np.asarray(a) for a in both(
            params, {k: jnp.asarray(v) for k, v in covs.items()}))
    approx = offset + np.sum(design * coef, axis=-1)  # (S, n)
    err = np.abs(approx - exact) / (1.0 + np.abs(exact))
    if not np.all(np.isfinite(approx)) or not np.all(err <= rtol):
        at = np.unravel_index(int(np.nanargmax(np.where(np.isfinite(err), err, np.inf))),
                              err.shape)
        return (f"the linear form of the mean differs from mean_fn at observation "
                f"{int(at[1])}: {approx[at]!r} against {exact[at]!r}")
    return None


def row_projected_terms(spec: Any, y: np.ndarray, mask: np.ndarray,
                        covs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Each padded row's (G, T) ``projected_terms`` of ``spec``'s linear mean, stacked with
    a leading axis of rows: R (G, 1, K, K), c (G, 1, K), rss, count, const (G,) and the
    censored cells' rows padded to one :func:`censored_bucket` size. Used where each group
    is sampled on its own (:func:`carpool.inference.separate.fit_separately`); the caller
    checks that the linear mean holds on these data."""
    import jax

    lik, linear = spec.likelihood, spec.linear_mean
    G, T = y.shape
    size = None
    if getattr(lik, "lower", None) is not None:
        inside = np.asarray(mask, bool)
        most = int(np.max(np.sum(inside & (np.asarray(y) <= lik.lower), axis=1)))
        size = censored_bucket(most, T)
    rows = []
    for g in range(G):
        row_covs = {k: np.asarray(v[g], dtype=float) for k, v in covs.items()}
        rows.append(lik.projected_terms(y[g], mask[g], row_covs, linear.offset(row_covs),
                                        linear.design(row_covs), np.zeros(T, np.int32), 1,
                                        censored_size=size))
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(v) for v in leaves]), *rows)


def censored_bucket(count: int, length: int) -> int:
    """Censored positions kept per row: ``count`` rounded up to a power of 4 (at least
    16), at most the series ``length``. The size is part of the compiled program's shape,
    so coarse buckets let the calls of a batch (and later batches) share one program; the
    censored term on a few padded positions costs nothing next to the series' gradient."""
    size = 16
    while size < count:
        size *= 4
    return int(min(size, max(length, 1)))
