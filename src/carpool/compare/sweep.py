"""The pooling dial: hierarchical fits with the population scale tau fixed on a grid.

At ``tau -> 0`` every group is forced onto the population mean (the pooled fit); as ``tau``
grows the population prior flattens and each group follows its own data (the unpooled fit).
Sweeping tau shows the whole path between the two, where the learned tau sits on it, and how
the held-out score (PSIS-LOO) varies along it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from carpool.compare.results import SweepResult
from carpool.compare.scores import loo_score
from carpool.errors import InputError
from carpool.pooling.spec import PoolingConfig

if TYPE_CHECKING:
    from carpool.inference.fit import Fit
    from carpool.inference.nuts import NutsSettings
    from carpool.inference.svi import SviSettings

__all__ = ["sweep", "sweep_fits", "DEFAULT_GRID"]

#: Default grid of fixed tau (latent scale: sd of log theta for log parameters, so 0.01 is
#: about 1% between-group variation and 3 about 20-fold).
DEFAULT_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def _estimates(fit: Fit, tau: float, hdi_prob: float) -> list[dict[str, Any]]:
    from carpool.inference.summary import stats_table

    st = stats_table(fit.idata.posterior["theta"].values, hdi_prob)
    rows = []
    for g, gid in enumerate(fit.group_ids):
        for i, p in enumerate(fit.spec.parameters):
            rows.append({"tau": float(tau), "group": gid, "parameter": p.name, "unit": p.unit,
                         "mean": float(st["mean"][g, i]), "lo": float(st["lo"][g, i]),
                         "hi": float(st["hi"][g, i])})
    return rows


def sweep_fits(fits: Sequence[Fit], *, learned: Fit | None = None, pooled: Fit | None = None,
               unpooled: Fit | None = None, hdi_prob: float = 0.94) -> SweepResult:
    """Assemble a :class:`SweepResult` from fixed-tau hierarchical fits (any order)."""
    from carpool.compare.comparison import population_scales
    from carpool.compare.shrinkage import _latent_means

    taus = []
    for f in fits:
        if f.pooling != "hierarchical" or not f.config.tau_is_fixed:
            raise InputError("sweep fits must be hierarchical with a fixed tau")
        t = np.unique(f.config.fixed_tau(f.spec.parameters))
        if t.size != 1:
            raise InputError("sweep fits must fix one tau for every parameter")
        taus.append(float(t[0]))
    order = np.argsort(taus)
    grid = np.asarray(taus)[order]
    est, scores = [], []
    for k in order:
        f = fits[k]
        est += _estimates(f, taus[k], hdi_prob)
        s = loo_score(f)
        scores.append({"tau": taus[k], "elpd_loo": s.elpd, "se": s.se,
                       "max_pareto_k": s.max_pareto_k})
    ends = pd.DataFrame()
    if pooled is not None and unpooled is not None:
        params = unpooled.spec.parameters
        zp, zu = _latent_means(pooled), _latent_means(unpooled)
        ends = pd.DataFrame([
            {"group": gid, "parameter": p.name, "unit": p.unit,
             "pooled": float(p.to_natural(zp[g, i])), "unpooled": float(p.to_natural(zu[g, i]))}
            for g, gid in enumerate(unpooled.group_ids) for i, p in enumerate(params)])
    learned_tau = population_scales(learned, hdi_prob) if learned is not None else pd.DataFrame()
    return SweepResult(grid=grid, estimates=pd.DataFrame(est), scores=pd.DataFrame(scores),
                       learned_tau=learned_tau, ends=ends)


def _fit_fixed_tau(data: Any, model: Any, config: PoolingConfig, tau: float,
                   options: Mapping[str, Any]) -> Fit:
    """One point of the dial (a task of its own: module level, so workers import it)."""
    import carpool

    return carpool.fit(data, model, pooling=replace(config, tau=tau), warn=False, **options)


def sweep(
    data: Any,
    model: Any,
    grid: Sequence[float] = DEFAULT_GRID,
    *,
    fits: Mapping[str, Fit] | None = None,
    pooling: PoolingConfig | None = None,
    sampler: NutsSettings | SviSettings | None = None,
    level: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    log_fn: Callable[[str], Any] = lambda _: None,
    executor: Any = None,
) -> SweepResult:
    """Fit the hierarchical model with tau fixed at each value of ``grid``.

    Parameters
    ----------
    data, model
        As for :func:`carpool.fit` (a table or grouped data; a model name or spec).
    grid
        Fixed population scales (latent scale), positive; the same tau for every parameter.
    fits
        Optional ``{"pooled": .., "unpooled": .., "hierarchical": ..}`` fits of the same data:
        the pooled and unpooled estimates mark the two ends of the dial and the learned tau
        of the hierarchical fit is marked on it.
    pooling
        The hierarchical :class:`~carpool.pooling.spec.PoolingConfig` whose ``tau`` the grid
        fixes (its hyperpriors, correlation, parameterisation, levels); ``None``: the
        defaults.
    sampler, level, model_options
        As for :func:`carpool.fit`, the same for every point of the grid.
    executor
        Where the grid's fits run: ``None`` in this process, one after another; or local
        worker processes, a scheduler address or a Dask client
        (:func:`carpool.batch.as_executor`). The fits are independent.
    """
    from carpool.parallel.executors import map_logged

    grid = [float(t) for t in grid]
    if not grid or min(grid) <= 0:
        raise InputError("the tau grid must be non-empty and positive")
    config = PoolingConfig() if pooling is None else pooling
    if config.pooling != "hierarchical" or config.tau_is_fixed:
        raise InputError("sweep sets 'tau' itself: give a hierarchical PoolingConfig with "
                         "tau='learned'")
    opts = {"sampler": sampler, "level": level, "model_options": model_options}
    fits = dict(fits or {})
    taus = sorted(grid)
    out = map_logged(executor, _fit_fixed_tau, [(data, model, config, t, opts) for t in taus],
                     [f"pooling dial: tau = {t:g} ({k + 1} of {len(taus)})"
                      for k, t in enumerate(taus)], log_fn, what="pooling dial")
    return sweep_fits(out, learned=fits.get("hierarchical"), pooled=fits.get("pooled"),
                      unpooled=fits.get("unpooled"))
