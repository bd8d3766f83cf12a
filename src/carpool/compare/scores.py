"""Scores of a fit: PSIS-LOO and held-out prediction (leave-future-out, leave-groups-out).

Every score is kept *pointwise* (one value per observation) so that two pooling modes scored on
the same observations can be compared with the standard error of their paired difference
(Vehtari, Gelman & Gabry 2017), as ArviZ's ``compare`` does for LOO.

- :func:`loo_score`: PSIS-LOO from the fit's pointwise log-likelihood (ArviZ ``loo``), with
  the Pareto k diagnostics (k > 0.7: the estimate is unreliable at that observation).
- :func:`lfo_split` / :func:`heldout_score`: leave-future-out within each group: the model is
  refitted on the first 80% of each group's series and predicts the last 20%.
- :func:`group_folds` / :func:`new_group_score`: leave-groups-out: the model is refitted
  without some groups and predicts them as *new* groups from the population (pooled and
  hierarchical fits; an unpooled fit has no population and cannot).

Held-out log predictive density at observation i: ``log mean_s p(y_i | draw s)``; RMSE is of
the posterior-predictive mean of ``y`` (for car-following, the next speed in m/s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from carpool.errors import InputError
from carpool.pooling.grouped import GroupedData
from carpool.verdicts import PARETO_K_MAX

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["PointwiseScore", "loo_score", "lfo_split", "heldout_score", "group_folds",
           "select_groups", "new_group_score", "paired_difference", "PARETO_K_LIMIT"]

#: Pareto k above which PSIS-LOO is unreliable at an observation (Vehtari et al. 2024).
PARETO_K_LIMIT = PARETO_K_MAX  # the name compare's callers know


@dataclass(frozen=True)
class PointwiseScore:
    """Log predictive density per observation (n,), and squared errors of the predictive mean.

    ``elpd`` is the sum of ``lpd``; ``se`` its standard error ``sqrt(n var(lpd))``.
    """

    lpd: np.ndarray
    sq_err: np.ndarray | None = None
    pareto_k: np.ndarray | None = None
    p_loo: float = float("nan")

    @property
    def elpd(self) -> float:
        return float(np.sum(self.lpd))

    @property
    def se(self) -> float:
        n = self.lpd.size
        return float(math.sqrt(n * np.var(self.lpd, ddof=1))) if n > 1 else float("nan")

    @property
    def rmse(self) -> float:
        return float("nan") if self.sq_err is None else float(np.sqrt(np.mean(self.sq_err)))

    @property
    def max_pareto_k(self) -> float:
        return float("nan") if self.pareto_k is None else float(np.max(self.pareto_k))

    @property
    def num_high_k(self) -> int:
        return 0 if self.pareto_k is None else int(np.sum(~(self.pareto_k <= PARETO_K_MAX)))


def paired_difference(a: PointwiseScore, b: PointwiseScore) -> tuple[float, float]:
    """``elpd(a) - elpd(b)`` and the standard error of the paired difference."""
    if a.lpd.shape != b.lpd.shape:
        raise ValueError("scores must be on the same observations to be compared")
    d = a.lpd - b.lpd
    se = float(math.sqrt(d.size * np.var(d, ddof=1))) if d.size > 1 else float("nan")
    return float(d.sum()), se


def loo_score(fit: Fit) -> PointwiseScore:
    """PSIS-LOO of ``fit`` on its own data (ArviZ ``loo``, pointwise)."""
    import warnings

    import arviz as az
    import xarray as xr

    from carpool.inference.predict import pointwise_log_likelihood

    ll = pointwise_log_likelihood(fit)
    idata = az.InferenceData(
        posterior=fit.idata.posterior[["theta"]],
        log_likelihood=xr.Dataset({"y": (("chain", "draw", "obs"), ll)}),
    )
    with warnings.catch_warnings():
        # the high-k warning is reported by the caller, with the count and advice
        warnings.simplefilter("ignore", UserWarning)
        res = az.loo(idata, pointwise=True)
    return PointwiseScore(lpd=np.asarray(res["loo_i"].values, dtype=float),
                          pareto_k=np.asarray(res["pareto_k"].values, dtype=float),
                          p_loo=float(res["p_loo"]))


# --------------------------------------------------------------------------- splits
def lfo_split(data: GroupedData, fraction: float = 0.2, *, min_train: int = 2
              ) -> tuple[GroupedData, GroupedData]:
    """Split each group's series into its first ``1 - fraction`` and last ``fraction``.

    Observations are taken in their stored order within each group (time order for
    trajectories); at least one is held out per group. A group too short to keep
    ``min_train`` observations for fitting stays whole in the training part (it is then not
    scored); ``ValueError`` if no group is long enough.
    """
    test = lfo_rows(data, fraction, min_train=min_train)
    return data.subset(~test), select_groups(data, np.unique(data.group_index[test]),
                                             rows=test)


def lfo_rows(data: GroupedData, fraction: float = 0.2, *, min_train: int = 2) -> np.ndarray:
    """The held-out observations of :func:`lfo_split`, boolean (n,)."""
    if not 0 < fraction < 1:
        raise InputError(f"the held-out fraction must be in (0, 1), got {fraction}")
    test = np.zeros(data.num_obs, dtype=bool)
    for g in range(data.num_groups):
        rows = np.flatnonzero(data.group_index == g)
        k = max(1, int(math.ceil(fraction * rows.size)))
        if rows.size - k >= min_train:
            test[rows[-k:]] = True
    if not test.any():
        raise InputError(f"every group is too short to hold out its last {fraction:.0%} and "
                         f"keep {min_train} observations to fit")
    return test


def select_groups(data: GroupedData, groups: list[int] | np.ndarray, *,
                  rows: np.ndarray | None = None) -> GroupedData:
    """The observations of the groups at positions ``groups``, re-indexed in that order.

    ``rows`` (boolean, (n,)) further restricts the observations kept.
    """
    groups = [int(g) for g in groups]
    remap = np.full(data.num_groups, -1, dtype=np.int32)
    remap[groups] = np.arange(len(groups), dtype=np.int32)
    keep = remap[data.group_index] >= 0
    if rows is not None:
        keep &= np.asarray(rows, dtype=bool)
    level_index = None if data.level_index is None else data.level_index[groups]
    return GroupedData(data.y[keep], remap[data.group_index[keep]],
                       tuple(data.group_ids[g] for g in groups),
                       {k: v[keep] for k, v in data.covariates.items()},
                       level_index, data.level_ids)


def group_folds(num_groups: int, num_folds: int = 5, *, seed: int = 0) -> list[np.ndarray]:
    """Random partition of group positions into ``min(num_folds, num_groups)`` folds."""
    if num_groups < 2:
        raise InputError("leave-groups-out needs at least 2 groups")
    k = max(2, min(int(num_folds), num_groups))
    perm = np.random.default_rng(seed).permutation(num_groups)
    return [np.sort(f) for f in np.array_split(perm, k)]


# --------------------------------------------------------------------------- scoring
def _score_draws(fit: Fit, theta: np.ndarray, group_index: np.ndarray, data: GroupedData,
                 *, seed: int = 0, residual_params: dict[str, np.ndarray] | None = None,
                 history: GroupedData | None = None) -> PointwiseScore:
    """Pointwise log predictive density and squared error given parameter draws.

    ``theta``: natural parameters, (S, G, P) indexed by ``group_index`` or (S, P) shared.
    With AR / GP residuals each held-out observation is predicted one step ahead given its
    group's earlier observations: those of ``data`` before it and, when ``history`` is given
    (the training part of the same series), all of ``history``'s observations of its group.
    ``residual_params`` are the residual parameters of ``data``'s groups per draw.
    """
    if fit.spec.residual.is_dynamic and history is not None:
        from carpool.inference.dynamic import with_history

        combined, is_test = with_history(history, data)
        gi = np.concatenate([np.full(int((~is_test).sum()), -1), group_index])
        # the history rows of a group take the same parameter rows as its test rows
        table = {int(g): int(i) for g, i in zip(data.group_index, group_index, strict=True)}
        gi[~is_test] = [table[int(g)] for g in combined.group_index[~is_test]]
        full = _score_draws(fit, theta, gi, combined, seed=seed,
                            residual_params=residual_params)
        return PointwiseScore(lpd=full.lpd[is_test], sq_err=full.sq_err[is_test])
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    from carpool.inference.predict import _mean_from_theta, conditional_predictive

    S, n = theta.shape[0], data.num_obs
    if fit.spec.residual.is_dynamic:
        mean = _mean_from_theta(fit, theta, group_index, data.covariates)
        mean, noise = conditional_predictive(fit, data, mean, np.arange(S), residual_params)
        y, covariates = data.y, data.covariates
    else:
        # rows padded to a power of two (repeating the last), so held-out folds of similar
        # size share compiled programs; the padding is dropped below
        size = max(256, 1 << (n - 1).bit_length())
        rows = np.minimum(np.arange(size), n - 1)
        y, gi = data.y[rows], np.asarray(group_index)[rows]
        covariates = {k: np.asarray(v)[rows] for k, v in data.covariates.items()}
        mean = _mean_from_theta(fit, theta, gi, covariates)
        mean, noise = conditional_predictive(fit, data, mean, np.arange(S), residual_params)
    noise = {k: jnp.asarray(v) for k, v in noise.items()}
    covs = {k: jnp.asarray(v)[None, :] for k, v in covariates.items()}
    lik = fit.spec.likelihood
    lp = lik.log_prob(jnp.asarray(y)[None, :], jnp.asarray(mean), noise, covs)
    lpd = np.asarray(logsumexp(lp, axis=0) - math.log(S))[:n]
    sims = lik.distribution(jnp.asarray(mean), noise, covs).sample(jax.random.PRNGKey(seed))
    pred = np.asarray(jnp.mean(sims, axis=0))[:n]
    return PointwiseScore(lpd=lpd, sq_err=(pred - data.y) ** 2)


def heldout_score(fit: Fit, test: GroupedData, *, seed: int = 0) -> PointwiseScore:
    """Score ``fit`` (fitted on the training part) on held-out observations of its groups.

    With AR / GP residuals the held-out block of each group is predicted one step at a time
    behind the group's training observations (``fit.data``), which must come first in time.
    """
    from carpool.inference.predict import align_groups

    return _score_draws(fit, fit.theta_draws(), align_groups(fit, test), test, seed=seed,
                        history=fit.data)


def new_group_score(fit: Fit, test: GroupedData, *, seed: int = 0) -> PointwiseScore:
    """Score ``fit`` on groups it has never seen, each predicted as a new group.

    Every posterior draw gets its own new-group parameters from the population
    (:func:`carpool.inference.predict.new_group_params`), so the predictive spread includes
    the between-group heterogeneity. With levels, a test group of a level the fit knows is
    drawn around that level's mean. Raises ``ValueError`` for an unpooled fit.
    """
    from carpool.inference.predict import new_group_params

    fit_levels = (set(fit.data.level_ids) if "level_population" in fit.idata.posterior
                  else set())
    thetas, levels = [], []
    for g in range(test.num_groups):
        level = None
        if test.level_index is not None and fit_levels:
            name = test.level_ids[test.level_index[g]]
            level = name if name in fit_levels else None
        thetas.append(new_group_params(fit, 1, seed=seed + g, level=level)[:, 0, :])
        levels.append(None if test.level_index is None
                      else test.level_ids[test.level_index[g]])
    theta = np.stack(thetas, axis=1)  # (S, G_test, P)
    residual_params = None
    if fit.spec.residual.is_dynamic:
        from carpool.inference.dynamic import new_residual_params

        residual_params = new_residual_params(fit, test.num_groups, levels=levels, seed=seed)
    return _score_draws(fit, theta, test.group_index, test, seed=seed,
                        residual_params=residual_params)
