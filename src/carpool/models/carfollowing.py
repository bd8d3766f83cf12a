"""Car-following models as pooling specs: the one-step-ahead speed observation model.

For each driver's series, with state (speed v, gap s, leader speed v_l) at time t and step dt::

    v(t + dt) ~ Normal(v(t) + acc(theta_driver; v, s, v_l) * dt, sigma * dt)

(Zhang & Sun 2023): sigma (m/s^2) is the scale of the acceleration error. A next speed of
exactly 0 m/s (a stop) is treated as left-censored at 0: the model's Gaussian step would often
go negative there, and real speeds are clipped, not negative. The physics comes
from :mod:`carpool.carfollowing` (IDM, Gipps, OVM, FVDM or a user's registered model).

The physics modules declare each parameter's unit, latent transform and reference value
but no prior; the priors of the car-following parameters live here.

Prior presets (``priors=``):

``"default"``
    Weakly informative, centred on published reference values (see each model's parameter
    table): latent log-parameters ~ Normal(0, sd) with the sds of
    :data:`DEFAULT_LATENT_PRIOR_SD` (0.4-0.5 for the IDM and Gipps), chosen so that the
    central 95% interval ``reference * exp(+-1.96 sd)`` covers the model's plausible
    ranges; population scales tau ~ HalfNormal(0.5) (drivers typically within ~+-50% of the
    population median), LKJ(2) correlation, noise sigma ~ HalfNormal(1) m/s^2. A model of
    your own takes the priors on its parameter table (``Parameter(..., prior=...)``); a
    parameter with neither a prior there nor a built-in default is an error naming it.
``"treiber-kesting-2013"`` (IDM only)
    Literature-based priors for human drivers: population log-means centred on the highway
    values of Treiber & Kesting (2013, Table 11.2: v0 120 km/h, T 1.0 s, s0 2 m,
    a 1.0 m/s^2, b 1.5 m/s^2) with latent sd 0.3 (95% within x/ 1.8 of them), and
    population scales tau ~ HalfNormal(0.3) (drivers typically within +-30% of the
    population median; Treiber & Kesting simulate heterogeneous traffic with spreads of
    that order). What it buys and costs on the bundled NGSIM drivers:
    docs/human-drivers.md.
``"zhang-sun-2023"`` (IDM only)
    The reference paper's priors, for reproduction: parameters normalised by
    (v0, s0, T, a, b) = (33 m/s, 2 m, 1.6 s, 1.5 m/s^2, 1.67 m/s^2), population log-means
    Normal(0, 1), LKJ eta = 2, population scales Exponential(100) and noise scale
    Exponential(1e4). Exponential(lambda) is PyMC's *rate* parameterisation, so these are
    strongly shrinking priors (prior mean scale 0.01 and noise 1e-4 m/s^2). On congested data
    they let v0 wander: the reference PyMC fit of 39 highD drivers had one chain near a
    population v0 of 20 m/s and another near 100 m/s (R-hat 1.83).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import pandas as pd

from carpool.carfollowing import (
    FVDM,
    GIPPS,
    IDM,
    IDM_ZHANG_SUN_REFERENCE,
    LINEAR_ACC,
    OVM,
    CarFollowingModel,
    as_model,
)
from carpool.errors import InputError
from carpool.parameters import Parameter, ParameterTable
from carpool.pooling.grouped import GroupedData
from carpool.pooling.likelihoods import Gaussian, JointGaussian
from carpool.pooling.spec import Hyperpriors, ModelSpec
from carpool.priors import Exponential, HalfNormal, Normal

__all__ = ["carfollowing_spec", "default_priors", "trajectories_to_grouped", "PRIOR_PRESETS",
           "COVARIATES", "DEFAULT_LATENT_PRIOR_SD", "LIKELIHOODS", "JOINT_COVARIATES"]

PRIOR_PRESETS = ("default", "treiber-kesting-2013", "zhang-sun-2023")
#: Default latent priors of the built-in models: ``{model: {parameter: sd}}``, each
#: log-transformed parameter ``natural = reference * exp(z)`` with ``z ~ Normal(0, sd)``.
#: Each sd is chosen so that the central 95% interval ``reference * exp(+-1.96 sd)`` covers
#: the model's ``plausible_ranges`` (sources in the physics modules). Gipps' ``b_hat`` is a
#: constant unless freed with ``GIPPS.free(GIPPS_B_HAT_PARAMETER)``.
DEFAULT_LATENT_PRIOR_SD: dict[str, dict[str, float]] = {
    "idm": {"v0": 0.4, "s0": 0.5, "T": 0.4, "a": 0.4, "b": 0.4},
    "gipps": {"a": 0.4, "b": 0.45, "V": 0.4, "s0": 0.5, "tau": 0.45, "b_hat": 0.4},
    "ovm": {"kappa": 0.75, "v0": 0.55, "s0": 0.5, "s_c": 0.5, "w": 0.55},
    "fvdm": {"kappa": 0.85, "lam": 0.85, "v0": 0.55, "s0": 0.5, "s_c": 0.5, "w": 0.55},
    "linear_acc": {"k_gap": 0.9, "k_speed": 1.0, "s0": 0.5, "T": 0.4},
}
#: The built-in models by name: their defaults apply to models with the same name and
#: acceleration function (so also to ``IDM.fix(...)`` and ``GIPPS.free(...)``).
_BUILT_IN = {m.name: m for m in (IDM, GIPPS, OVM, FVDM, LINEAR_ACC)}
#: Highway IDM values of Treiber & Kesting (2013, Table 11.2): v0 m/s (120 km/h), s0 m, T s,
#: a and b m/s^2.
IDM_TREIBER_KESTING_REFERENCE = {"v0": 120.0 / 3.6, "s0": 2.0, "T": 1.0, "a": 1.0, "b": 1.5}
#: Latent sd of the v0 prior centred at a user's speed limit: 95% within x/ 1.34 of it.
SPEED_LIMIT_SD = 0.15
COVARIATES = ("speed", "gap", "leader_speed", "dt")
#: ``likelihood=``: ``"speed"`` scores the next speed, ``"joint"`` the next speed and gap.
LIKELIHOODS = ("speed", "joint")
#: What the joint likelihood adds to :data:`COVARIATES`: the next gap (m), the gap after a
#: step at constant speed (m) and the gap's loading on the acceleration, ``-dt / 2`` (s).
JOINT_COVARIATES = ("next_gap", "gap_constant_speed", "gap_loading")
#: Prior sds (HalfNormal) of the joint likelihood's measurement errors: next speed (m/s)
#: and next gap (m). Trajectory data smoothed and rounded to 0.01 have errors of this order
#: or smaller; the data learn them.
JOINT_MEASUREMENT_SD = {"speed": 0.1, "gap": 0.1}


def trajectories_to_grouped(
    table: pd.DataFrame,
    *,
    level: str | None = None,
    columns: Mapping[str, str] | None = None,
    min_observations: int = 3,
    resample: bool = False,
    covariates: Sequence[str] = COVARIATES,
) -> GroupedData:
    """Validate a trajectory table and turn it into one-step observations per driver.

    Parameters
    ----------
    table
        The carpool trajectory format (``driver, time, speed, gap, leader_speed[, class]``);
        see :func:`carpool.data.validate_trajectories` for the checks and ``columns``.
    level
        Column naming a level above drivers, e.g. ``"class"`` (car / truck).
    covariates
        :data:`COVARIATES`, optionally with any of :data:`JOINT_COVARIATES` (the joint
        likelihood's).

    Returns
    -------
    GroupedData
        ``y`` = next speed (m/s), covariates ``speed`` (m/s), ``gap`` (m),
        ``leader_speed`` (m/s), ``dt`` (s) and those asked for; groups = drivers.
    """
    from carpool.data import one_step_pairs, validate_trajectories

    clean = validate_trajectories(table, columns=columns, min_observations=min_observations,
                                  resample=resample)
    if level is not None and level not in clean.columns:
        raise InputError(f"level column {level!r} is not in the data (have "
                         f"{list(clean.columns)})")
    pairs = one_step_pairs(clean)
    unknown = sorted(set(covariates) - set(COVARIATES) - set(JOINT_COVARIATES))
    if unknown:
        raise InputError(f"unknown car-following covariates {unknown}")
    # the leader moves by its mean speed over the step (trapezoid), the follower by its speed
    leader_step = 0.5 * (pairs["leader_speed"] + pairs["next_leader_speed"]) * pairs["dt"]
    pairs["gap_constant_speed"] = pairs["gap"] + leader_step - pairs["speed"] * pairs["dt"]
    pairs["gap_loading"] = -0.5 * pairs["dt"]
    return GroupedData.from_frame(pairs, y="next_speed", group="driver",
                                  covariates=tuple(covariates), level=level)


def _one_step_mean(model: Any, params: Mapping[str, Any], covs: Mapping[str, Any]) -> Any:
    acc = model.acceleration(params, covs["speed"], covs["gap"], covs["leader_speed"])
    return covs["speed"] + acc * covs["dt"]


def _offset(covs: Mapping[str, Any]) -> Any:
    return covs["speed"]


def _design(model: Any, covs: Mapping[str, Any]) -> Any:
    features = model.acceleration_features(covs["speed"], covs["gap"], covs["leader_speed"])
    return features * covs["dt"][..., None]


def _linear_mean(model: Any) -> Any:
    """The one-step mean ``v + dt features @ coefficients`` where the model has a linear
    form (:class:`carpool.carfollowing.LinearForm`), else ``None``."""
    if model.linear_form is None:
        return None
    from carpool.pooling.linear_mean import LinearMean

    return LinearMean(_offset, partial(_design, model), model.acceleration_coefficients)


def _reference_table(parameters: ParameterTable, reference: Mapping[str, float], sd: float,
                     source: str) -> ParameterTable:
    """Log-normal priors ``Normal(0, sd)`` on the latent scale around a published set of
    reference values (natural units)."""
    return ParameterTable([
        Parameter(p.name, p.unit, "log", reference[p.name], Normal(0.0, sd),
                  f"{p.name} centred on {reference[p.name]:.3g} {p.unit} ({source})")
        for p in parameters
    ])


def _attach_defaults(model: CarFollowingModel) -> ParameterTable:
    """The model's parameter table, the built-in default prior on each parameter without one
    (parameters that have a prior keep it)."""
    built_in = _BUILT_IN.get(model.name)
    defaults = (DEFAULT_LATENT_PRIOR_SD.get(model.name, {})
                if built_in is not None and model.acceleration_fn is built_in.acceleration_fn
                else {})
    return ParameterTable(
        p.with_prior(Normal(0.0, defaults[p.name]))
        if p.prior is None and p.name in defaults and p.transform == "log" else p
        for p in model.parameters
    )


def _require_priors(model: CarFollowingModel, table: ParameterTable) -> None:
    missing = [p.name for p in table if p.prior is None]
    if missing:
        raise InputError(
            f"car-following model {model.name!r}: parameters {missing} have no prior; give "
            "each a latent prior in the model's table, e.g. Parameter(..., "
            "prior=carpool.Normal(0.0, 0.5))")


def default_priors(model: CarFollowingModel | str) -> ParameterTable:
    """The parameter table of ``model`` with the ``"default"`` preset's latent priors.

    A prior given on the model's table wins; a parameter without one takes the built-in
    default of :data:`DEFAULT_LATENT_PRIOR_SD` (built-in models only). ``InputError`` names
    the parameters that have neither.
    """
    cf = as_model(model)
    table = _attach_defaults(cf)
    _require_priors(cf, table)
    return table


def carfollowing_spec(model: str = "idm", priors: str = "default", residual: str = "iid",
                      ar_pooling: str = "shared", gp_window_s: float | None = 10.0,
                      gp_method: str = "sliding", speed_limit: float | None = None,
                      likelihood: str = "speed") -> ModelSpec:
    """The pooling spec of a registered car-following model.

    Parameters
    ----------
    model
        A name from :func:`carpool.carfollowing.list_models` (``"idm"``, ``"gipps"``,
        ``"ovm"``, ``"fvdm"``, or one the user registered).
    priors
        A preset from :data:`PRIOR_PRESETS` (see the module docstring). With
        ``"default"``, priors given on the model's parameter table win over the built-in
        defaults (:func:`default_priors`); a parameter with neither is an ``InputError``.
    residual
        The acceleration error within each driver's series: ``"iid"``, ``"ar1"`` ..
        ``"ar8"`` or ``"gp"`` (see :mod:`carpool.residuals`).
    ar_pooling
        Who shares the AR coefficients: ``"shared"``, ``"class"`` or ``"driver"``.
    gp_window_s, gp_method
        The GP residual's likelihood: each residual conditioned on the previous
        ``gp_window_s`` seconds (``"sliding"``, default) or independent windows of that
        length (``"window"``, as in the reference); ``None``: each whole series, exact.
    speed_limit
        m/s. Centres the prior of the desired speed v0 (its population mean in a
        hierarchical fit) at this value with latent sd :data:`SPEED_LIMIT_SD` (95% within
        x/ 1.34): below free-flow speed the data barely identify v0, and without it v0
        restates a motorway default (the fit warns). Needs a model with a ``v0``.
    likelihood
        ``"speed"`` (default): the next speed, ``Normal(v + acc dt, sigma dt)``, censored
        at 0 m/s. ``"joint"``: the next speed and the next gap together, Zhang & Sun's
        joint model: the acceleration error ``e ~ Normal(0, sigma)`` moves the speed by
        ``e dt`` and the gap by ``-e dt^2 / 2`` (the ballistic update), plus measurement
        errors of the speed (m/s) and gap (m) with HalfNormal priors of sd
        :data:`JOINT_MEASUREMENT_SD` (:class:`~carpool.pooling.likelihoods.JointGaussian`).
        i.i.d. residuals only. Where speeds and gaps are consistent (the gap changes by
        the speed difference), the gap adds nothing beyond what the speed says: it ties
        the fit to the gap the driver keeps only through the speed's measurement error.
        What it changes on the bundled NGSIM drivers: docs/human-drivers.md.
    """
    from carpool.residuals import parse_residual

    process = parse_residual(residual, ar_pooling=ar_pooling, gp_window_s=gp_window_s,
                             gp_method=gp_method)
    cf = as_model(model)
    if priors not in PRIOR_PRESETS:
        raise InputError(f"unknown priors {priors!r}; choose one of {list(PRIOR_PRESETS)}")
    table = _attach_defaults(cf)
    sigma = HalfNormal(1.0)
    hyper = None  # carpool's defaults for the number of drivers
    if priors == "zhang-sun-2023":
        if cf.name != "idm":
            raise InputError("the 'zhang-sun-2023' priors are defined for the IDM only")
        table = _reference_table(cf.parameters, IDM_ZHANG_SUN_REFERENCE, 1.0,
                                 "Zhang & Sun 2023")
        sigma = Exponential(1e4)
        hyper = Hyperpriors(tau=Exponential(100.0), lkj_eta=2.0, tau_level=Exponential(100.0))
    elif priors == "treiber-kesting-2013":
        if cf.name != "idm":
            raise InputError("the 'treiber-kesting-2013' priors are defined for the IDM only")
        table = _reference_table(cf.parameters, IDM_TREIBER_KESTING_REFERENCE, 0.3,
                                 "Treiber & Kesting 2013, Table 11.2, highway")
        hyper = Hyperpriors(tau=HalfNormal(0.3))
    if speed_limit is not None:
        if "v0" not in table.names:
            raise InputError(f"speed_limit sets the prior of v0, and model {cf.name!r} has "
                             "no v0")
        if not speed_limit > 0:
            raise InputError(f"speed_limit must be a positive speed in m/s, got "
                             f"{speed_limit:g}")
        table = ParameterTable([
            Parameter("v0", p.unit, "log", float(speed_limit), Normal(0.0, SPEED_LIMIT_SD),
                      f"desired speed, prior centred at the speed limit {speed_limit:g} m/s")
            if p.name == "v0" else p for p in table
        ])
    _require_priors(cf, table)
    if likelihood not in LIKELIHOODS:
        raise InputError(f"unknown likelihood {likelihood!r}; choose one of {list(LIKELIHOODS)}")
    covariates = COVARIATES
    observation: Gaussian | JointGaussian = Gaussian(sigma, scale_covariate="dt", lower=0.0)
    if likelihood == "joint":
        if process.is_dynamic:
            raise InputError(f"the joint speed-and-gap likelihood is defined with i.i.d. "
                             f"residuals; got residual {process.name!r}")
        covariates = COVARIATES + JOINT_COVARIATES
        observation = JointGaussian(
            "next_gap", "gap_constant_speed", "gap_loading", "speed", sigma,
            HalfNormal(JOINT_MEASUREMENT_SD["speed"]), HalfNormal(JOINT_MEASUREMENT_SD["gap"]),
            scale_covariate="dt", lower=0.0)
    return ModelSpec(
        name=cf.name,
        parameters=table,
        mean_fn=partial(_one_step_mean, cf),
        covariates=covariates,
        likelihood=observation,
        options={"priors": priors, "residual": process.name, "ar_pooling": ar_pooling,
                 "gp_window_s": gp_window_s, "gp_method": gp_method,
                 **({} if speed_limit is None else {"speed_limit": float(speed_limit)}),
                 **({} if likelihood == "speed" else {"likelihood": likelihood})},
        group_dim="driver",
        prepare_fn=partial(trajectories_to_grouped, covariates=covariates),
        default_hyperpriors=hyper,
        residual=process,
        linear_mean=_linear_mean(cf),
        physical_ranges={k: v for k, v in cf.physical_ranges.items() if k in table.names},
    )
