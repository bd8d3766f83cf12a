"""``carpool.fit``: one call from a table (or grouped data) to a :class:`Fit`."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from typing import Any

from carpool.errors import InputError
from carpool.inference.diagnostics import (
    WeakIdentificationWarning,
    warn_if_bad,
    weakly_identified,
)
from carpool.inference.fit import Fit, to_inference_data
from carpool.inference.nuts import NutsSettings, run_nuts
from carpool.inference.plausibility import warn_implausible
from carpool.models.registry import get_spec
from carpool.pooling.centring import choose_centring
from carpool.pooling.grouped import GroupedData
from carpool.pooling.model import build_model
from carpool.pooling.spec import Hyperpriors, ModelSpec, PoolingConfig

__all__ = ["METHODS", "fit", "fit_grouped", "refit", "resolve_spec", "with_residual"]

#: Inference methods of :func:`fit`: NUTS (MCMC) or SVI (variational, approximate).
METHODS = ("nuts", "svi")

log = logging.getLogger(__name__)


def resolve_spec(model: str | ModelSpec, **options: Any) -> ModelSpec:
    """A spec object, or a registered model built by name with ``options``."""
    if isinstance(model, ModelSpec):
        if options:
            raise InputError("spec options apply to registered model names, not to a ModelSpec")
        return model
    return get_spec(model, **options)


def fit(
    data: Any,
    model: str | ModelSpec,
    *,
    pooling: str = "hierarchical",
    tau: str | float | Mapping[str, float] | tuple[float, ...] = "learned",
    correlated: bool | str = "auto",
    hyperpriors: Hyperpriors | None = None,
    param: str | Mapping[str, str] = "auto",
    level: str | None = None,
    layout: str = "auto",
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    seed: int = 0,
    target_accept: float | None = None,
    max_tree_depth: int = 10,
    progress_bar: bool = False,
    model_options: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    residual: Any = None,
    warn: bool = True,
    method: str = "nuts",
    num_steps: int | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    guide: str | None = None,
) -> Fit:
    """Fit ``model`` to ``data`` with NUTS (or SVI) in one of the three pooling modes.

    Parameters
    ----------
    data
        :class:`~carpool.pooling.grouped.GroupedData`, or a table the model's ``prepare_fn``
        understands (trajectories for car-following models; ``group, x, y`` for ``linear``).
    model
        A :class:`~carpool.pooling.spec.ModelSpec` or a registered name (``"idm"``,
        ``"linear"``, ``"eight_schools"``, ...); ``model_options`` go to its builder.
    pooling, tau, correlated, hyperpriors, param
        See :class:`~carpool.pooling.spec.PoolingConfig`. ``hyperpriors=None`` takes the
        model's own defaults, else :meth:`~carpool.pooling.spec.Hyperpriors.default_for` the
        number of groups.
    level
        Column naming a level above the groups (e.g. ``"class"``): learns level means.
    chains, warmup, draws, seed, target_accept, max_tree_depth
        NUTS settings (:class:`~carpool.inference.nuts.NutsSettings`). ``target_accept=None``
        is 0.8 for pooled / unpooled fits and 0.95 for hierarchical ones, whose curvature
        varies more (rstanarm's default for hierarchical models too). On the bundled platoon
        0.9 left 0-5 divergent transitions depending on the seed and 0.95 none, at the same
        wall time (measured, 2 seeds each).
    residual
        The residual process within each group's series: ``"iid"`` (default), ``"ar1"`` ..
        ``"ar8"``, ``"gp"``, or a :mod:`carpool.residuals` process object (e.g.
        ``AR(2, pooling="driver")``); ``None`` keeps the model's own.
    warn
        Emit :class:`~carpool.inference.diagnostics.ConvergenceWarning` on bad diagnostics.
    method
        ``"nuts"`` (default, exact up to Monte Carlo error) or ``"svi"``: stochastic
        variational inference, approximate and much faster for thousands of drivers (see
        ``docs/svi.md`` for its accuracy and when to switch). With ``"svi"``, ``draws`` is
        the number of draws taken from the fitted approximation and ``seed`` seeds the
        optimisation; ``chains``, ``warmup``, ``target_accept``, ``max_tree_depth`` and
        ``layout`` are unused.
    num_steps, learning_rate, batch_size, guide
        SVI only (:class:`~carpool.inference.svi.SviSettings`; ``None`` takes its default):
        optimisation steps, Adam's initial step size, drivers per minibatch (``None``: all)
        and the guide (``"structured"`` or ``"meanfield"``).
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    svi_options = {k: v for k, v in {"num_steps": num_steps, "learning_rate": learning_rate,
                                     "batch_size": batch_size, "guide": guide}.items()
                   if v is not None}
    if method == "nuts" and svi_options:
        raise InputError(f"{sorted(svi_options)} apply to method='svi' only")
    spec = resolve_spec(model, **dict(model_options or {}))
    if residual is not None:
        spec = with_residual(spec, residual)
    grouped = data if isinstance(data, GroupedData) else spec.prepare(
        data, level=level, **dict(data_options or {}))
    config = PoolingConfig(pooling=pooling, tau=tau, correlated=correlated,
                           hyperpriors=hyperpriors, param=param,
                           use_levels=level is not None).with_defaults(spec,
                                                                       grouped.num_groups)
    if method == "svi":
        from carpool.inference.svi import SviSettings, fit_grouped_svi

        result = fit_grouped_svi(spec, grouped, config, SviSettings(
            num_draws=draws, seed=seed, **svi_options))
        if warn:
            _warn(result)
        return result
    settings = NutsSettings(num_chains=chains, num_warmup=warmup, num_samples=draws,
                            seed=seed,
                            target_accept=target_accept or (0.95 if pooling == "hierarchical"
                                                            else 0.8),
                            max_tree_depth=max_tree_depth)
    return fit_grouped(spec, grouped, config, settings, layout=layout,
                       progress_bar=progress_bar, warn=warn)


def with_residual(spec: ModelSpec, residual: Any) -> ModelSpec:
    """``spec`` with another residual process (a name such as ``"ar2"`` or a process)."""
    from dataclasses import replace

    from carpool.residuals import parse_residual

    opts = dict(spec.options)
    process = parse_residual(residual, ar_pooling=opts.get("ar_pooling", "shared"),
                             gp_window_s=opts.get("gp_window_s", 10.0),
                             gp_method=opts.get("gp_method", "sliding"))
    if "residual" in opts:  # keep a registered spec rebuildable by name when loaded
        opts["residual"] = process.name
        opts.update(process.parse_options())
    return replace(spec, residual=process, options=opts)


def fit_grouped(spec: ModelSpec, grouped: GroupedData, config: PoolingConfig,
                settings: NutsSettings, *, layout: str = "auto", progress_bar: bool = False,
                warn: bool = True) -> Fit:
    """The core of :func:`fit` on prepared data with explicit configuration objects."""
    spec.parameters.check_priors()
    config = config.with_defaults(spec, grouped.num_groups)
    t0 = time.perf_counter()
    centring = choose_centring(spec, grouped, config, seed=settings.seed)
    centring_s = time.perf_counter() - t0
    log.info("centring: %s", centring.choice)
    weights = (centring.weight_matrix(spec.parameters.names, grouped.num_groups)
               if centring.weights else None)
    built = build_model(spec, grouped, config, centring=centring.choice, layout=layout,
                        weights=weights)
    out = run_nuts(built, settings, progress_bar=progress_bar)
    out.timing["centring_s"] = centring_s
    out.timing["total_s"] += centring_s
    idata = to_inference_data(built, out, centring, settings)
    result = Fit(idata, spec, config, grouped, centring)
    if warn:
        _warn(result)
    return result


def _warn(result: Fit) -> None:
    warn_if_bad(result.diagnostics)
    for message in weakly_identified(result):
        warnings.warn(message, WeakIdentificationWarning, stacklevel=4)
    warn_implausible(result)


def refit(fit_: Fit, data: GroupedData | None = None, *, warn: bool = False,
          **changes: Any) -> Fit:
    """Fit ``fit_``'s model again with the same spec, pooling and NUTS settings.

    ``data`` replaces the data (held-out folds); ``changes`` override fields of the
    :class:`~carpool.pooling.spec.PoolingConfig` (``pooling``, ``tau``, ``hyperpriors``, ...)
    or of the :class:`~carpool.inference.nuts.NutsSettings` (``num_warmup``, ``seed``, ...).
    A variational fit is refitted by SVI with its saved
    :class:`~carpool.inference.svi.SviSettings` (changes to its fields apply, NUTS-only ones
    are ignored).
    """
    from dataclasses import fields, replace

    from carpool.inference.svi import SviSettings, fit_grouped_svi

    config_fields = {f.name for f in fields(PoolingConfig)}
    settings_fields = {f.name for f in fields(NutsSettings)}
    svi_fields = {f.name for f in fields(SviSettings)}
    unknown = set(changes) - config_fields - settings_fields - svi_fields
    if unknown:
        raise InputError(f"refit: unknown option(s) {sorted(unknown)}")
    config = replace(fit_.config, **{k: v for k, v in changes.items() if k in config_fields})
    if fit_.method == "svi":
        svi_settings = SviSettings(**{k: v for k, v in {**fit_.settings, **changes}.items()
                                      if k in svi_fields})
        result = fit_grouped_svi(fit_.spec, fit_.data if data is None else data, config,
                                 svi_settings)
        if warn:
            _warn(result)
        return result
    saved = {k: v for k, v in fit_.settings.items() if k in settings_fields}
    settings = NutsSettings(**{**saved, **{k: v for k, v in changes.items()
                                           if k in settings_fields}})
    if "target_accept" not in changes and "pooling" in changes:
        settings = replace(settings, target_accept=(0.95 if config.pooling == "hierarchical"
                                                    else 0.8))
    layout = fit_.settings.get("layout", "auto")
    return fit_grouped(fit_.spec, fit_.data if data is None else data, config, settings,
                       layout=layout, warn=warn)
