"""Regression models from one formula: ``y ~ 1 + x + (1 + x | g)`` on the pooling engine.

A formula model is a :class:`~carpool.pooling.spec.ModelSpec` like any other, so the three
pooling modes, the pooling dial ``tau``, comparison, sweeps and reports all apply:

- the **group parameters** are the terms that vary by the formula's first grouping factor
  (the groups): ``Intercept`` and ``x`` in ``(1 + x | g)``. Hierarchical: each group's
  values come from a population whose mean is the common coefficient of the same term,
  with scales tau and (``correlated``) an LKJ correlation; unpooled: each group's values
  alone, with the term's prior; pooled: one value shared by every group;
- the **common parameters** are the other common terms (:attr:`ModelSpec.common`), one
  value in every mode;
- other grouping factors (crossed ``(1 | a) + (1 | b)``, nested ``(1 | a/b)``) are
  :class:`~carpool.pooling.spec.GroupingFactor` effects around the common coefficients.

The mean is the linear predictor ``eta = X beta + ...``; the family's link maps it to the
response scale (identity for ``gaussian`` and ``student_t``, logit for ``bernoulli`` and
``binomial``, log for ``poisson`` and ``negative_binomial``).

Default priors are weakly informative and scaled to the data, as rstanarm and Bambi do
(:func:`default_priors`); :func:`formula_priors` lists them and ``priors=`` overrides any.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from carpool.errors import InputError
from carpool.models.formula_design import (
    FormulaDesign,
    constant_within,
    formula_design,
    identifier,
)
from carpool.models.registry import register_spec
from carpool.parameters import Parameter, ParameterTable
from carpool.pooling.grouped import GroupedData
from carpool.pooling.spec import GroupingFactor, Hyperpriors, ModelSpec
from carpool.priors import Exponential, HalfNormal, Normal, Prior

__all__ = ["FAMILIES", "default_priors", "formula_model", "formula_priors", "formula_spec"]

#: Families and their links.
FAMILIES = {"gaussian": "identity", "student_t": "identity", "bernoulli": "logit",
            "binomial": "logit", "poisson": "log", "negative_binomial": "log"}

#: Coefficient priors are Normal(centre, COEF_SCALE * s / sd(x)) with s the response's sd
#: (identity link) or 1 (logit and log links): rstanarm's and Bambi's weakly informative
#: default, a coefficient moving the mean by up to ~2.5 response sds per predictor sd.
COEF_SCALE = 2.5

#: Column prefix of a design column among the grouped data's covariates.
X_PREFIX = "x_"


def _likelihood(family: str, sigma_prior: Prior | None, known_sigma: str | None,
                phi_prior: Prior | None, df_t: float) -> Any:
    from carpool.pooling import likelihoods as lik

    if family == "gaussian":
        if known_sigma is not None:
            return lik.Gaussian(sigma=1.0, scale_covariate="se")
        return lik.Gaussian(sigma_prior)
    if family == "student_t":
        return lik.StudentT(df=df_t, sigma=sigma_prior)
    if family == "bernoulli":
        return lik.Bernoulli()
    if family == "binomial":
        return lik.Binomial(trials_covariate="trials")
    if family == "poisson":
        return lik.Poisson()
    if family == "negative_binomial":
        return lik.NegativeBinomial(phi=phi_prior) if phi_prior is not None \
            else lik.NegativeBinomial()
    raise InputError(f"unknown family {family!r}; choose one of {list(FAMILIES)}")


def default_priors(design: FormulaDesign, family: str) -> dict[str, Prior]:
    """carpool's data-scaled default priors of a formula's terms, by design label.

    - coefficients: ``Normal(0, 2.5 s / sd(x))``; the intercept ``Normal(m, 2.5 s)``, with
      ``m`` the response's mean on the link scale (identity: the mean; logit: the logit of
      the mean proportion; log: the log of the mean count) and ``s`` the response's sd
      (identity link) or 1 (logit, log);
    - each varying term's population scale ``"<label>|<factor>"``: ``HalfNormal(s / sd(x))``
      (``HalfNormal(s)`` for the intercept): groups typically differing by up to about
      one response sd (one unit on the link scale) per predictor sd;
    - ``sigma`` (Gaussian, Student-t): ``Exponential(1 / s)``, rstanarm's default.
    """
    y, X = design.y, design.X
    link = FAMILIES[family]
    if link == "identity":
        s = float(np.std(y)) or 1.0
        centre = float(np.mean(y))
    elif link == "logit":
        p = float(np.mean(y / design.trials)) if design.trials is not None else float(np.mean(y))
        p = min(max(p, 0.01), 0.99)
        s, centre = 1.0, math.log(p / (1 - p))
    else:
        s, centre = 1.0, math.log(max(float(np.mean(y)), 0.1))
    out: dict[str, Prior] = {}
    spread = {}
    for k, label in enumerate(design.labels):
        if label == "Intercept":
            out[label] = Normal(round(centre, 4), round(COEF_SCALE * s, 4))
            spread[k] = s
        else:
            sd_x = float(np.std(X[:, k]))
            out[label] = Normal(0.0, round(COEF_SCALE * s / sd_x, 4))
            spread[k] = s / sd_x
    for factor in design.factors:
        for k in factor.columns:
            out[f"{design.labels[k]}|{factor.label}"] = HalfNormal(round(spread[k], 4))
    if link == "identity":
        out["sigma"] = Exponential(round(1.0 / s, 6))
    return out


def _mean_fn(names: tuple[str, ...], factors: tuple[GroupingFactor, ...]) -> Any:
    """``eta = sum_k theta_k x_k`` over the design columns, plus each other factor's effects
    at each row's level."""
    import jax.numpy as jnp

    def mean(params: Mapping[str, Any], covariates: Mapping[str, Any]) -> Any:
        eta = sum(params[n] * covariates[X_PREFIX + n] for n in names)
        for f in factors:
            b = params.get(f.effects_name)
            if b is None:  # pooled: no effects
                continue
            idx = jnp.asarray(covariates[f.index]).astype(jnp.int32)
            for w, col in enumerate(f.columns):
                eta = eta + b[idx, w] * covariates[col]
        return eta

    return mean


def _linear_mean(names: tuple[str, ...]) -> Any:
    """The formula's mean as a :class:`~carpool.pooling.linear_mean.LinearMean`: the design
    columns times the coefficients, so a Gaussian fit scores each group from its projected
    statistics."""
    from carpool.pooling.linear_mean import LinearMean

    def offset(covs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.zeros_like(covs[X_PREFIX + names[0]])

    def design(covs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.stack([covs[X_PREFIX + n] for n in names], axis=-1)

    def coefficients(params: Mapping[str, Any]) -> Any:
        import jax.numpy as jnp

        return jnp.stack(jnp.broadcast_arrays(*(params[n] for n in names)), axis=-1)

    return LinearMean(offset, design, coefficients)


def formula_spec(formula: str, family: str = "gaussian", *, parameters: list[dict[str, Any]],
                 common: list[dict[str, Any]] | None = None,
                 factors: list[dict[str, Any]] | None = None,
                 hyperpriors: dict[str, Any] | None = None, known_sigma: str | None = None,
                 group: str = "group", names: list[str] | None = None,
                 categories: Mapping[str, list[str]] | None = None,
                 variables: list[str] | None = None, likelihood: dict[str, Any] | None = None,
                 uncorrelated: bool = False, group_level: list[str] | None = None
                 ) -> ModelSpec:
    """The spec of a formula model from its saved options (what :func:`carpool.load`
    calls): the formula, family, parameter tables and factors as
    :func:`formula_model` made them, so a saved fit reloads without the data or user code.
    ``uncorrelated``: the groups' terms were written ``( || )``, a diagonal population.
    ``group_level``: common terms constant within every group (group-level predictors),
    which unpooled group intercepts absorb."""
    from carpool.pooling.likelihoods import likelihood_from_dict

    table = ParameterTable.from_list(parameters)
    common_table = ParameterTable.from_list(common) if common else None
    grouping = tuple(GroupingFactor.from_dict(f) for f in factors or ())
    all_names = tuple(names or [*table.names, *(common_table.names if common_table else [])])
    lik = (likelihood_from_dict(likelihood) if likelihood is not None
           else _likelihood(family, None, known_sigma, None, 4.0))
    linear = (_linear_mean(all_names)
              if not grouping and family == "gaussian" else None)
    covariates = tuple([X_PREFIX + n for n in all_names]
                       + [f.index for f in grouping]
                       + (["se"] if known_sigma else [])
                       + (["trials"] if family == "binomial" else []))
    options = {"formula": formula, "family": family, "parameters": parameters,
               "common": common, "factors": factors, "hyperpriors": hyperpriors,
               "known_sigma": known_sigma, "group": group, "names": list(all_names),
               "categories": dict(categories or {}), "variables": list(variables or []),
               "likelihood": lik.to_dict(), "uncorrelated": bool(uncorrelated),
               "group_level": list(group_level or [])}
    return ModelSpec(
        name="formula",
        parameters=table,
        mean_fn=_mean_fn(all_names, grouping),
        covariates=covariates,
        likelihood=lik,
        options=options,
        group_dim=identifier(group),
        prepare_fn=lambda table, level=None, **_: new_data(options, table),
        default_hyperpriors=(Hyperpriors.from_dict(hyperpriors) if hyperpriors else None),
        linear_mean=linear,
        common=common_table,
        factors=grouping,
    )


def new_data(options: Mapping[str, Any], df: pd.DataFrame) -> GroupedData:
    """Grouped data of new rows ``df`` for a fitted formula model (its spec's ``options``),
    for prediction: the design with the fitted data's coding
    (:func:`~carpool.models.formula_design.new_data_design`), the groups as named in
    ``df`` (new groups allowed: predict them with
    :func:`~carpool.inference.predict.predict_new_group`), the other factors' levels mapped
    to the fitted ones (an unseen level takes its factor's population mean). The response
    may be absent (zeros)."""
    from carpool.models.formula_design import new_data_design

    if not isinstance(df, pd.DataFrame):
        raise InputError(f"new data for a formula model must be a table, got "
                         f"{type(df).__name__}")
    names = options["names"]
    X = new_data_design(options["formula"], options["categories"], options["variables"], df)
    covs: dict[str, np.ndarray] = {X_PREFIX + n: X[:, k] for k, n in enumerate(names)}
    group = options["group"]
    for d in options.get("factors") or []:
        f = GroupingFactor.from_dict(d)
        keys = _factor_keys(df, f.label)
        position = {level: j for j, level in enumerate(f.levels)}
        covs[f.index] = np.array([position.get(k, len(f.levels)) for k in keys], dtype=float)
    if options.get("known_sigma"):
        covs["se"] = df[options["known_sigma"]].to_numpy(dtype=float)
    lhs = options["formula"].split("~", 1)[0].strip()
    y = np.zeros(len(df))
    if options["family"] == "binomial":
        inner = lhs[lhs.index("(") + 1:lhs.rindex(")")]
        successes, trials = (part.strip() for part in inner.split(","))
        covs["trials"] = df[trials].to_numpy(dtype=float)
        lhs = successes
    if lhs in df.columns:
        y = df[lhs].to_numpy(dtype=float)
    keys = _factor_keys(df, group)
    codes, uniques = pd.factorize(pd.Series(keys), sort=False)
    return GroupedData(y=y, group_index=codes, group_ids=tuple(uniques), covariates=covs)


def _factor_keys(df: pd.DataFrame, label: str) -> list[str]:
    """Each row's level of the factor ``label`` (``"a"`` or ``"a:b"``) as formulae names
    levels."""
    columns = label.split(":")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"new data lack grouping column(s) {missing}")
    parts = [df[c].astype(str).to_numpy() for c in columns]
    return [":".join(row) for row in zip(*parts, strict=True)]


def formula_model(df: pd.DataFrame, formula: str, *, family: str = "gaussian",
                  priors: Mapping[str, Prior] | None = None, known_sigma: str | None = None,
                  student_df: float = 4.0) -> tuple[ModelSpec, GroupedData]:
    """The spec and grouped data of ``formula`` on the table ``df``.

    Parameters
    ----------
    df
        One row per observation.
    formula
        ``"y ~ 1 + x + (1 + x | g)"`` (formulae syntax, with lme4's ``||``); a binomial
        response is ``p(successes, trials)``.
    family
        One of :data:`FAMILIES`.
    priors
        Overrides of :func:`default_priors` by label: a term (``"x"``, ``"Intercept"``,
        ``"c[b]"``), a varying term's population scale (``"x|g"``, ``"1|g"`` or
        ``"Intercept|g"``), ``"sigma"`` (Gaussian, Student-t) or ``"phi"`` (negative
        binomial).
    known_sigma
        Gaussian only: a column of known observation standard errors (eight schools).
    student_df
        Degrees of freedom of the Student-t family.
    """
    if family not in FAMILIES:
        raise InputError(f"unknown family {family!r}; choose one of {list(FAMILIES)}")
    if known_sigma is not None:
        if family != "gaussian":
            raise InputError("known_sigma applies to the gaussian family only")
        if known_sigma not in df.columns:
            raise InputError(f"known_sigma column {known_sigma!r} is not in the table")
    design = formula_design(df, formula,
                            numeric_response=FAMILIES[family] == "identity")
    if family == "binomial" and design.trials is None:
        raise InputError("the binomial family needs a p(successes, trials) response, e.g. "
                         "'p(k, n) ~ x + (1 | g)'")
    if family != "binomial" and design.trials is not None:
        raise InputError(f"a p(successes, trials) response needs family 'binomial', not "
                         f"{family!r}")
    primary = design.factors[0]
    if FAMILIES[family] == "identity" and known_sigma is None:
        for f in design.factors:
            sizes = np.bincount(f.codes, minlength=len(f.levels))
            if sizes.max() == 1:
                raise InputError(
                    f"every group of {f.label!r} has one row: with a learned residual scale "
                    f"its varying effects cannot be told from the residual (give known "
                    f"standard errors with known_sigma, as for eight schools)")
    group_col = primary.label
    names = design.names
    defaults = default_priors(design, family)
    chosen = _merge_priors(defaults, priors or {}, design)
    varying = list(primary.columns)
    rest = [k for k in range(len(names)) if k not in varying]

    def parameter(k: int) -> Parameter:
        return Parameter(names[k], "", "identity", 0.0, chosen[design.labels[k]],
                         f"{design.labels[k]} (formula term)")

    table = ParameterTable([parameter(k) for k in varying])
    common = ParameterTable([parameter(k) for k in rest]) if rest else None
    tau = {names[k]: chosen[f"{design.labels[k]}|{primary.label}"] for k in varying}
    hyper = Hyperpriors(tau=tau)
    factors = []
    covs = {X_PREFIX + n: design.X[:, k] for k, n in enumerate(names)}
    for f in design.factors[1:]:
        fname = identifier(f.label)
        covs[f"idx_{fname}"] = f.codes.astype(float)
        factors.append(GroupingFactor(
            name=fname, label=f.label, index=f"idx_{fname}", levels=f.levels,
            terms=tuple(names[k] for k in f.columns),
            columns=tuple(X_PREFIX + names[k] for k in f.columns),
            scale_priors=tuple(chosen[f"{design.labels[k]}|{f.label}"] for k in f.columns),
            unpooled_scale=tuple(float(chosen[design.labels[k]].params.get("scale", 1.0))
                                 for k in f.columns),
            correlated=f.correlated is not False))
    if known_sigma is not None:
        se = df[known_sigma].to_numpy(dtype=float)
        bad = np.flatnonzero(~(se > 0))
        if bad.size:
            raise InputError(f"known_sigma column {known_sigma!r} must be positive; row "
                             f"{bad[0]} has {se[bad[0]]}")
        covs["se"] = se
    if design.trials is not None:
        covs["trials"] = design.trials
    lik = _likelihood(family, chosen.get("sigma"), known_sigma, chosen.get("phi"), student_df)
    problem = lik.check_response(design.y, covs)
    if problem is not None:
        row = re.search(r"row (\d+)", problem)
        where = (f" (group {primary.levels[primary.codes[int(row.group(1))]]!r})"
                 if row is not None else "")
        raise InputError(f"{problem}{where}")
    group_level = [names[k] for k in rest if "Intercept" in [design.labels[j] for j in varying]
                   and constant_within(design.X[:, k], primary.codes, len(primary.levels))]
    spec = formula_spec(
        formula, family, parameters=table.to_list(),
        common=None if common is None else common.to_list(),
        factors=[f.to_dict() for f in factors], hyperpriors=hyper.to_dict(),
        known_sigma=known_sigma, group=group_col, names=list(names),
        categories=design.categories, variables=list(design.variables),
        likelihood=lik.to_dict(), uncorrelated=primary.correlated is False,
        group_level=group_level)
    data = GroupedData(y=design.y, group_index=primary.codes, group_ids=primary.levels,
                       covariates=covs)
    return spec, data


def _merge_priors(defaults: Mapping[str, Prior], given: Mapping[str, Prior],
                  design: FormulaDesign) -> dict[str, Prior]:
    """``given`` over ``defaults``; ``"1|g"`` is read as ``"Intercept|g"``; unknown keys
    raise."""
    out = dict(defaults)
    for key, prior in given.items():
        k = key.replace(" ", "")
        if k.startswith("1|"):
            k = "Intercept" + k[1:]
        if k == "phi":
            out[k] = prior
            continue
        if k not in out:
            raise InputError(f"priors: no term {key!r} in the formula; terms are "
                             f"{sorted(out)}")
        if not isinstance(prior, Prior):
            raise InputError(f"priors[{key!r}] must be a carpool.priors prior, got {prior!r}")
        out[k] = prior
    return out


def formula_priors(df: pd.DataFrame, formula: str, *, family: str = "gaussian",
                   priors: Mapping[str, Prior] | None = None,
                   known_sigma: str | None = None) -> pd.DataFrame:
    """The priors a formula fit would use on ``df``: columns ``term`` (the label to
    override it with in ``priors=``), ``role`` (``group`` for the groups' varying terms,
    whose prior is the population mean's in a hierarchical fit; ``common``; ``scale``, a
    varying term's population scale; ``noise``) and ``prior``."""
    spec, _ = formula_model(df, formula, family=family, priors=priors,
                            known_sigma=known_sigma)
    rows = []
    for p in spec.parameters:
        rows.append((p.description.split(" (")[0], "group", str(p.prior)))
    for p in spec.common or ():
        rows.append((p.description.split(" (")[0], "common", str(p.prior)))
    hyper = spec.default_hyperpriors
    group = spec.options["group"]
    labels = dict(zip(spec.options["names"], _labels(spec), strict=True))
    for name in spec.parameters.names:
        rows.append((f"{labels[name]}|{group}", "scale", str(hyper.tau_prior(name))))
    for f in spec.factors:
        for name, prior in zip(f.terms, f.scale_priors, strict=True):
            rows.append((f"{labels[name]}|{f.label}", "scale", str(prior)))
    for name, prior in spec.likelihood.noise_priors().items():
        rows.append((name, "noise", str(prior)))
    return pd.DataFrame(rows, columns=["term", "role", "prior"])


def _labels(spec: ModelSpec) -> list[str]:
    by_name = {p.name: p.description.split(" (")[0]
               for p in [*spec.parameters, *(spec.common or ())]}
    return [by_name[n] for n in spec.options["names"]]


register_spec("formula", formula_spec)
