"""Prior sensitivity: refit with weak and with informative hyperpriors, see who moves.

Groups with much data barely notice the population prior; groups with little data lean on the
population, so the hyperpriors (how different groups are allowed to be) move their estimates.
:func:`prior_sensitivity` measures that per group against its amount of data, and draws from
the prior predictive under each setting so users see what the priors imply before fitting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from carpool.compare.results import PriorSensitivity
from carpool.errors import InputError
from carpool.pooling.spec import Hyperpriors, PoolingConfig
from carpool.priors import HalfCauchy, HalfNormal

if TYPE_CHECKING:
    from carpool.inference.nuts import NutsSettings
    from carpool.inference.svi import SviSettings

__all__ = ["prior_sensitivity", "one_step_gap", "WEAK", "INFORMATIVE"]

#: Weak hyperpriors: tau ~ HalfCauchy(1) (Gelman 2006), uniform LKJ(1) correlation.
WEAK = Hyperpriors(tau=HalfCauchy(1.0), lkj_eta=1.0, tau_level=HalfCauchy(1.0))
#: Informative hyperpriors: tau ~ HalfNormal(0.1) (groups within ~20% of each other for log
#: parameters), LKJ(4) shrinking correlations towards 0.
INFORMATIVE = Hyperpriors(tau=HalfNormal(0.1), lkj_eta=4.0, tau_level=HalfNormal(0.1))


def one_step_gap(covariates: Mapping[str, np.ndarray], next_speed: np.ndarray) -> np.ndarray:
    """Gap (m) after one step of ``dt`` s from each observed state, given the next speed.

    Ballistic update (as in :func:`carpool.carfollowing.follow_leader`, with the leader's
    speed held over the step): ``gap + dt * (leader_speed - (speed + next_speed) / 2)``.
    ``next_speed`` has shape (..., n); the covariates (n,).
    """
    c = covariates
    return c["gap"] + c["dt"] * (c["leader_speed"] - (c["speed"] + next_speed) / 2.0)


def prior_sensitivity(
    data: Any,
    model: Any,
    *,
    weak: Hyperpriors = WEAK,
    informative: Hyperpriors = INFORMATIVE,
    pooling: PoolingConfig | None = None,
    sampler: NutsSettings | SviSettings | None = None,
    level: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    num_prior_samples: int = 200,
    seed: int = 0,
    log_fn: Callable[[str], Any] = lambda _: None,
) -> PriorSensitivity:
    """Fit the hierarchical model under ``weak`` and ``informative`` hyperpriors.

    Returns a :class:`~carpool.compare.results.PriorSensitivity`: per group and parameter the
    two posterior means and their distance in units of the weak fit's posterior sd, with the
    group's number of observations; and ``num_prior_samples`` prior predictive draws of the
    observations under each setting (``y``; for car-following the next speed in m/s).

    ``pooling`` is the hierarchical :class:`~carpool.pooling.spec.PoolingConfig` whose
    hyperpriors are replaced (``None``: the defaults); ``sampler``, ``level`` and
    ``model_options`` are as for :func:`carpool.fit`. ``seed`` seeds the prior predictive
    draws.
    """
    import carpool
    from carpool.inference.predict import prior_predictive
    from carpool.inference.run import as_config, resolve_spec

    base = as_config(PoolingConfig() if pooling is None else pooling, level)
    if base.pooling != "hierarchical":
        raise InputError("prior_sensitivity fits hierarchical models: give a hierarchical "
                         "PoolingConfig")
    spec = resolve_spec(model, **dict(model_options or {}))
    grouped = data if isinstance(data, carpool.GroupedData) else spec.prepare(data, level=level)
    fits = {}
    for name, hp in (("weak", weak), ("informative", informative)):
        log_fn(f"prior sensitivity: hierarchical fit with {name} hyperpriors")
        fits[name] = carpool.fit(grouped, spec, pooling=replace(base, hyperpriors=hp),
                                 sampler=sampler, warn=False)
    params = spec.parameters
    zw = params.to_latent(fits["weak"].idata.posterior["theta"].values, axis=-1)
    zi = params.to_latent(fits["informative"].idata.posterior["theta"].values, axis=-1)
    mw, mi, sw = zw.mean((0, 1)), zi.mean((0, 1)), zw.std((0, 1), ddof=1)
    sizes = grouped.group_sizes
    rows = [{"group": gid, "parameter": p.name, "unit": p.unit, "num_obs": int(sizes[g]),
             "weak": float(p.to_natural(mw[g, i])),
             "informative": float(p.to_natural(mi[g, i])),
             "shift": float(abs(mw[g, i] - mi[g, i]) / sw[g, i])}
            for g, gid in enumerate(grouped.group_ids) for i, p in enumerate(params)]
    draws = {}
    for name, hp in (("weak", weak), ("informative", informative)):
        draws[name] = prior_predictive(spec, grouped, replace(base, hyperpriors=hp),
                                       num_draws=num_prior_samples, seed=seed)["obs"]
    gaps, observed_gap = {}, None
    if {"gap", "dt", "leader_speed", "speed"} <= set(grouped.covariates):
        gaps = {k: one_step_gap(grouped.covariates, v) for k, v in draws.items()}
        observed_gap = one_step_gap(grouped.covariates, np.asarray(grouped.y))
    return PriorSensitivity(table=pd.DataFrame(rows), prior_predictive=draws,
                            observed=np.asarray(grouped.y), prior_predictive_gap=gaps,
                            observed_gap=observed_gap)
