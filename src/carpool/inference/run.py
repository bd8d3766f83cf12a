"""``carpool.fit``: one call from a table (or grouped data) to a :class:`Fit`."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from carpool.errors import InputError
from carpool.inference.diagnostics import (
    WeakIdentificationWarning,
    warn_if_bad,
    weakly_identified,
)
from carpool.inference.fit import Fit, to_inference_data
from carpool.inference.fit_cache import cached_fit
from carpool.inference.nuts import NutsSettings, run_nuts
from carpool.inference.plausibility import warn_implausible
from carpool.models.registry import get_spec
from carpool.pooling.centring import choose_centring
from carpool.pooling.grouped import GroupedData
from carpool.pooling.model import build_model
from carpool.pooling.spec import ModelSpec, PoolingConfig

if TYPE_CHECKING:
    from carpool.inference.svi import SviSettings

__all__ = ["as_config", "fit", "fit_grouped", "refit", "resolve_spec", "with_residual"]

log = logging.getLogger(__name__)


def resolve_spec(model: str | ModelSpec, **options: Any) -> ModelSpec:
    """A spec object, or a registered model built by name with ``options``.

    ``residual`` is an option of every model (a name such as ``"ar2"`` or a
    :mod:`carpool.residuals` process): it replaces the spec's residual process
    (:func:`with_residual`), a :class:`ModelSpec` object's too. A spec object takes no other
    option.
    """
    residual = options.pop("residual", None)
    if isinstance(model, ModelSpec):
        if options:
            raise InputError("spec options apply to registered model names, not to a ModelSpec")
        spec = model
    else:
        spec = get_spec(model, **options)
    return spec if residual is None else with_residual(spec, residual)


def as_config(pooling: str | PoolingConfig, level: str | None = None) -> PoolingConfig:
    """``pooling`` as a :class:`PoolingConfig` (a mode name: its defaults), learning level
    means when ``level`` names a level column."""
    config = pooling if isinstance(pooling, PoolingConfig) else PoolingConfig(pooling=pooling)
    return replace(config, use_levels=True) if level is not None else config


def fit(
    data: Any,
    model: str | ModelSpec,
    *,
    pooling: str | PoolingConfig = "hierarchical",
    sampler: NutsSettings | SviSettings | None = None,
    level: str | None = None,
    layout: str = "auto",
    model_options: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    progress_bar: bool = False,
    warn: bool = True,
    family: str | None = None,
    priors: Mapping[str, Any] | None = None,
) -> Fit:
    """Fit ``model`` to ``data`` with NUTS (or SVI) in one of the three pooling modes.

    Parameters
    ----------
    data
        :class:`~carpool.pooling.grouped.GroupedData`, or a table the model's ``prepare_fn``
        understands (trajectories for car-following models; ``group, x, y`` for ``linear``;
        any table for a formula).
    model
        A :class:`~carpool.pooling.spec.ModelSpec`, a registered name (``"idm"``,
        ``"linear"``, ``"eight_schools"``, ...) or a formula such as
        ``"y ~ 1 + x + (1 + x | g)"`` (:mod:`carpool.models.formula`: the terms varying by
        the first grouping factor are the group parameters; ``( || )`` makes their
        population uncorrelated).
    pooling
        ``"pooled"``, ``"unpooled"``, ``"hierarchical"`` (with the defaults of
        :class:`~carpool.pooling.spec.PoolingConfig`), or a
        :class:`~carpool.pooling.spec.PoolingConfig` for a fixed population scale ``tau``,
        the population's ``correlated``, ``hyperpriors`` or the parameterisation ``param``.
        Its ``hyperpriors=None`` takes the model's own defaults, else
        :meth:`~carpool.pooling.spec.Hyperpriors.default_for` the number of groups.
    sampler
        :class:`~carpool.inference.nuts.NutsSettings` (``None``: its defaults) or
        :class:`~carpool.inference.svi.SviSettings`; the type picks the method. NUTS is
        exact up to Monte Carlo error; SVI (stochastic variational inference) is
        approximate and much faster for thousands of drivers (see ``docs/svi.md`` for its
        accuracy and when to switch). ``NutsSettings(target_accept=None)`` targets
        :data:`~carpool.inference.nuts.TARGET_ACCEPT` of the pooling mode (0.95
        hierarchical, 0.8 otherwise).
    level
        Column naming a level above the groups (e.g. ``"class"``): learns level means.
    layout
        The likelihood's data layout (``"auto"``, ``"flat"`` or ``"padded"``, see
        :func:`~carpool.pooling.model.build_model`); NUTS only.
    model_options
        Options of the registered model's builder (e.g. ``priors``, ``speed_limit``). Every
        model takes ``residual``: the residual process within each group's series,
        ``"iid"`` (default), ``"ar1"`` .. ``"ar8"``, ``"gp"``, or a :mod:`carpool.residuals`
        process object (e.g. ``AR(2, pooling="driver")``), a spec object's too
        (:func:`resolve_spec`).
    data_options
        Options of the model's ``prepare_fn`` (how a table becomes grouped data).
    progress_bar
        Show NumPyro's progress bars (NUTS).
    warn
        Emit :class:`~carpool.inference.diagnostics.ConvergenceWarning` on bad diagnostics.
    family, priors
        Formulas only: the family (``"gaussian"`` (default), ``"student_t"``,
        ``"bernoulli"``, ``"binomial"``, ``"poisson"``, ``"negative_binomial"``) and prior
        overrides by term (:func:`carpool.models.formula.formula_model`; its other options,
        e.g. ``known_sigma``, go in ``model_options``).
    """
    from carpool.inference.svi import SviSettings, fit_grouped_svi

    sampler = NutsSettings() if sampler is None else sampler
    if not isinstance(sampler, NutsSettings | SviSettings):
        raise InputError(f"sampler must be NutsSettings or SviSettings, got "
                         f"{type(sampler).__name__}")
    if is_formula(model):
        spec, grouped = formula_fit_inputs(data, model, family=family, priors=priors,
                                           **dict(model_options or {}))
        if level is not None:
            raise InputError("levels apply to registered models; a formula states its "
                             "grouping factors itself")
        pooling = uncorrelated_if_asked(spec, pooling)
    else:
        if family is not None or priors is not None:
            raise InputError("family and priors apply to formulas; a registered model "
                             "takes its priors in model_options")
        spec = resolve_spec(model, **dict(model_options or {}))
        grouped = data if isinstance(data, GroupedData) else spec.prepare(
            data, level=level, **dict(data_options or {}))
    config = as_config(pooling, level).with_defaults(spec, grouped.num_groups)
    group_level = spec.options.get("group_level") if is_formula(model) else None
    if group_level and config.pooling == "unpooled" and warn:
        warnings.warn(f"{group_level} are constant within each group: unpooled group "
                      "intercepts absorb them, so only their priors identify them (expect "
                      "poor mixing); fit them hierarchically or pooled",
                      WeakIdentificationWarning, stacklevel=2)
    if isinstance(sampler, SviSettings):
        result = fit_grouped_svi(spec, grouped, config, sampler)
        if warn:
            _warn(result)
        return result
    return fit_grouped(spec, grouped, config, sampler, layout=layout,
                       progress_bar=progress_bar, warn=warn)


def is_formula(model: Any) -> bool:
    """Whether ``model`` is a formula (a string with ``~``) rather than a model name."""
    return isinstance(model, str) and "~" in model


def formula_fit_inputs(data: Any, formula: str, *, family: str | None = None,
                       priors: Mapping[str, Any] | None = None, **options: Any
                       ) -> tuple[ModelSpec, GroupedData]:
    """The spec and grouped data of ``formula`` on the table ``data``."""
    import pandas as pd

    from carpool.models.formula import formula_model

    if not isinstance(data, pd.DataFrame):
        raise InputError(f"a formula needs a table (pandas DataFrame), got "
                         f"{type(data).__name__}")
    return formula_model(data, formula, family=family or "gaussian", priors=priors,
                         **options)


def uncorrelated_if_asked(spec: ModelSpec, pooling: str | PoolingConfig
                          ) -> str | PoolingConfig:
    """A formula's ``( || group)``: the pooling configuration with a diagonal population
    (where the configuration leaves ``correlated`` to ``"auto"``)."""
    if not spec.options.get("uncorrelated"):
        return pooling
    config = as_config(pooling)
    return replace(config, correlated=False) if config.correlated == "auto" else config


def with_residual(spec: ModelSpec, residual: Any) -> ModelSpec:
    """``spec`` with another residual process (a name such as ``"ar2"`` or a process)."""
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
    settings = settings.for_pooling(config.pooling)
    result = cached_fit(spec, grouped, config, settings, layout,
                        lambda: _fit_nuts(spec, grouped, config, settings, layout,
                                          progress_bar))
    if warn:
        _warn(result)
    return result


def _fit_nuts(spec: ModelSpec, grouped: GroupedData, config: PoolingConfig,
              settings: NutsSettings, layout: str, progress_bar: bool) -> Fit:
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
    return Fit(idata, spec, config, grouped, centring)


def _warn(result: Fit) -> None:
    warn_if_bad(result.diagnostics)
    for message in weakly_identified(result):
        warnings.warn(message, WeakIdentificationWarning, stacklevel=4)
    warn_implausible(result)


def refit(fit_: Fit, data: GroupedData | None = None, *,
          pooling: str | PoolingConfig | None = None,
          sampler: NutsSettings | SviSettings | None = None, warn: bool = False) -> Fit:
    """Fit ``fit_``'s model again: the same spec, pooling configuration and sampler settings.

    ``data`` replaces the data (held-out folds). ``pooling`` (a mode name or a
    :class:`~carpool.pooling.spec.PoolingConfig`) replaces the pooling configuration, and
    ``sampler`` the settings saved with the fit (:attr:`~carpool.inference.fit.Fit.sampler`;
    its type picks NUTS or SVI). A NUTS sampler's ``target_accept=None`` keeps the fit's
    own ``target_accept`` while the pooling mode stays, else takes the new mode's default.
    """
    from carpool.inference.svi import SviSettings, fit_grouped_svi

    config = fit_.config if pooling is None else as_config(pooling)
    saved = fit_.sampler
    sampler = saved if sampler is None else sampler
    data = fit_.data if data is None else data
    if isinstance(sampler, SviSettings):
        result = fit_grouped_svi(fit_.spec, data, config, sampler)
        if warn:
            _warn(result)
        return result
    same_mode = config.pooling == fit_.config.pooling
    if sampler is saved and not same_mode:
        sampler = replace(sampler, target_accept=None)  # the new mode's default
    elif sampler.target_accept is None and same_mode and isinstance(saved, NutsSettings):
        sampler = replace(sampler, target_accept=saved.target_accept)
    layout = fit_.settings.get("layout", "auto")
    return fit_grouped(fit_.spec, data, config, sampler, layout=layout, warn=warn)
