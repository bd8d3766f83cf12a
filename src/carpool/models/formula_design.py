"""A model formula on a table -> design arrays, with the checks a user's data need.

The formula is parsed by `formulae <https://bambinos.github.io/formulae/>`_ (the parser of
Bambi): ``y ~ 1 + x + c + x:c + (1 + x | g) + (1 | h)``. carpool reads its common design
matrix ``X`` (n, K) and, for each group term ``expr | factor``, the factor's level per row.
A varying term's values are its common column(s), so every varying term must also be a
common term (``y ~ x + (x | g)``): carpool learns each varying term's population mean as
that common coefficient. ``(expr || g)`` (lme4's uncorrelated varying effects) is read as
``(expr | g)`` with the correlations of ``g``'s terms left out.

Categorical predictors use treatment (reference) coding, the first level in sorted order
as the reference: ``c[b]`` is level ``b`` against the reference level.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from carpool.errors import InputError

__all__ = ["FactorDesign", "FormulaDesign", "constant_within", "formula_design", "identifier",
           "new_data_design", "STATEFUL"]

#: formulae's stateful transforms (centring, scaling, splines and polynomials, whose knots
#: or moments come from the fitted data): not reproducible on new data from the formula alone.
STATEFUL = ("center", "scale", "standardize", "bs", "cr", "cc", "tp", "poly")


@dataclass(frozen=True)
class FactorDesign:
    """One grouping factor of a formula.

    Attributes
    ----------
    label
        The factor as written (``"county"``, ``"county:house"``).
    codes
        Each row's level, (n,) integers in ``0..J-1``.
    levels
        Level names, length J, sorted.
    columns
        Positions in the common design of the varying terms' columns.
    correlated
        ``False`` for ``( || )``, else ``None`` (the pooling configuration decides).
    """

    label: str
    codes: np.ndarray
    levels: tuple[str, ...]
    columns: tuple[int, ...]
    correlated: bool | None


@dataclass(frozen=True)
class FormulaDesign:
    """A formula evaluated on a table.

    Attributes
    ----------
    formula
        The formula as given.
    response
        The response's name (``"y"``; ``"p(k, n)"`` for a binomial proportion).
    y
        Response values, (n,) floats.
    trials
        Binomial trials per row for a ``p(successes, trials)`` response, else ``None``.
    labels
        Common design column labels (``"Intercept"``, ``"x"``, ``"c[b]"``), length K.
    names
        The same as Python identifiers (``"c_b"``), length K: parameter names.
    X
        Common design matrix, (n, K) floats.
    factors
        The grouping factors, in order of first appearance; the first one is the groups.
    variables
        Columns of the table the formula reads.
    categories
        Levels of each categorical column the common part reads (to rebuild the design of
        new data with the same coding).
    """

    formula: str
    response: str
    y: np.ndarray
    trials: np.ndarray | None
    labels: tuple[str, ...]
    names: tuple[str, ...]
    X: np.ndarray
    factors: tuple[FactorDesign, ...]
    variables: tuple[str, ...]
    categories: Mapping[str, list[str]]


def identifier(label: str) -> str:
    """A design column label as a Python identifier: ``"c[b]"`` -> ``"c_b"``,
    ``"x:c[b]"`` -> ``"x_c_b"``."""
    name = re.sub(r"\W+", "_", label).strip("_") or "term"
    return name if not name[0].isdigit() else f"t_{name}"


_UNCORRELATED = re.compile(r"\(([^()|]*)\|\|([^()|]*)\)")


def _split_uncorrelated(formula: str) -> tuple[str, set[str]]:
    """``(x || g)`` -> ``(x | g)``, and the factors written with ``||``."""
    factors = {m.group(2).strip().replace(" ", "") for m in _UNCORRELATED.finditer(formula)}
    return _UNCORRELATED.sub(r"(\1|\2)", formula), factors


def _rhs(formula: str) -> str:
    return formula.split("~", 1)[1] if "~" in formula else formula


def _parse(formula: str, df: pd.DataFrame) -> Any:
    import formulae

    for name in STATEFUL:
        if re.search(rf"\b{name}\s*\(", formula):
            raise InputError(f"formula {formula!r}: {name}() depends on the fitted data and "
                             "cannot be applied to new data the same way; compute the "
                             "column(s) first")
    try:
        variables = formulae.model_description(formula).var_names
    except Exception as exc:  # formulae's parse errors have several types
        raise InputError(f"formula {formula!r} does not parse: {exc}") from None
    known = _formulae_names()
    missing = sorted(v for v in variables if v not in df.columns and v not in known)
    if missing:
        raise InputError(f"formula {formula!r} names unknown column(s) {missing}; the table "
                         f"has {list(df.columns)}")
    return {v for v in variables if v in df.columns}


def _formulae_names() -> set[str]:
    """Names formulae resolves itself (transforms, contrasts such as ``Sum``), and NumPy's
    namespace, which formulae's formulas may call (``np.log(x)``)."""
    import formulae.transforms as transforms

    return ({n for n in dir(transforms) if not n.startswith("_")}
            | set(transforms.TRANSFORMS) | {"np", "numpy"})


def formula_design(df: pd.DataFrame, formula: str, *, numeric_response: bool = True
                   ) -> FormulaDesign:
    """Evaluate ``formula`` on ``df``; raise :class:`~carpool.errors.InputError` naming the
    problem (and the row and group where there is one) for bad formulas and data.

    ``numeric_response``: the response must be a numeric column (Gaussian and Student-t
    families), not a category.
    """
    import formulae

    if "~" not in formula:
        raise InputError(f"formula {formula!r} has no '~': write 'response ~ terms'")
    parsed, uncorrelated = _split_uncorrelated(formula)
    variables = _parse(parsed, df)
    lhs = formula.split("~", 1)[0].strip()
    response_cols = [v for v in variables if re.search(rf"\b{re.escape(v)}\b", lhs)]
    for col in response_cols:
        if numeric_response and not pd.api.types.is_numeric_dtype(df[col]):
            raise InputError(f"response {col!r} must be numeric, got dtype {df[col].dtype} "
                             f"(row 0 has {df[col].iloc[0]!r})")
    _check_missing(df, sorted(variables), formula)
    try:
        dm = formulae.design_matrices(parsed, df, na_action="error")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"formula {formula!r} cannot be evaluated on the table: {exc}"
                         ) from None
    if dm.group is None or not dm.group.terms:
        raise InputError(f"formula {formula!r} has no group term such as (1 | group); "
                         "carpool models grouped data")
    response = np.asarray(dm.response.design_matrix, dtype=float)
    trials = None
    if response.ndim == 2:
        response, trials = response[:, 0], response[:, 1]
    common = dm.common
    labels = tuple(common.as_dataframe().columns)
    names = _unique_names(labels)
    X = np.asarray(common.design_matrix, dtype=float)
    term_columns = {term: tuple(range(sl.start, sl.stop)) for term, sl in common.slices.items()}
    factors: dict[str, dict[str, Any]] = {}
    for key, term in dm.group.terms.items():
        expr, factor = (part.strip() for part in key.split("|", 1))
        common_term = "Intercept" if expr == "1" else expr
        if common_term not in term_columns:
            shown = "1" if expr == "1" else expr
            raise InputError(
                f"varying term {shown!r} of ({shown} | {factor}) is not a common term: "
                f"carpool learns each varying term's population mean as its common "
                f"coefficient, so write it on both sides, e.g. 'y ~ {shown} + ({shown} | "
                f"{factor})'")
        entry = factors.setdefault(factor, {"columns": [], "term": term})
        entry["columns"].extend(term_columns[common_term])
    designs = []
    for label, entry in factors.items():
        term = entry["term"]
        indicator = np.asarray(term.factor.data)
        codes = np.argmax(indicator, axis=1).astype(np.int64)
        designs.append(FactorDesign(label, codes, tuple(str(g) for g in term.groups),
                                    tuple(entry["columns"]),
                                    False if label.replace(" ", "") in uncorrelated else None))
    categories = {v: sorted(df[v].astype(str).unique().tolist()) for v in sorted(variables)
                  if not pd.api.types.is_numeric_dtype(df[v])
                  and v not in response_cols}
    design = FormulaDesign(formula, str(dm.response.name), response, trials, labels, names, X,
                           tuple(designs), tuple(sorted(variables)), categories)
    _check_variation(design, df)
    return design


def _unique_names(labels: Sequence[str]) -> tuple[str, ...]:
    names: list[str] = []
    for label in labels:
        name = identifier(label)
        base, k = name, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return tuple(names)


def _check_missing(df: pd.DataFrame, variables: Sequence[str], formula: str) -> None:
    for v in variables:
        bad = np.flatnonzero(df[v].isna().to_numpy())
        if bad.size:
            raise InputError(f"column {v!r} is missing a value at row {bad[0]} (formula "
                             f"{formula!r}); drop or fill such rows first")


def _check_variation(design: FormulaDesign, df: pd.DataFrame) -> None:
    """Terms that cannot be estimated: a common column without variation beside the
    intercept, and a varying term that varies within no group."""
    X = design.X
    for k, label in enumerate(design.labels):
        if label != "Intercept" and np.ptp(X[:, k]) == 0:
            raise InputError(f"term {label!r} has the same value ({X[0, k]:g}) in every row: "
                             "it cannot be told from the intercept")
    for factor in design.factors:
        for k in factor.columns:
            label = design.labels[k]
            if label == "Intercept":
                continue
            if constant_within(X[:, k], factor.codes, len(factor.levels)):
                raise InputError(
                    f"varying term {label!r} of ({label} | {factor.label}) does not vary "
                    f"within any group of {factor.label!r} (a group-level predictor): its "
                    f"group slopes cannot be told from the intercepts; use it as a common "
                    f"term only")


def constant_within(x: np.ndarray, codes: np.ndarray, num_groups: int) -> bool:
    """Whether ``x`` (n,) takes one value within every group of ``codes`` (n,)."""
    lo = np.full(num_groups, np.inf)
    hi = np.full(num_groups, -np.inf)
    np.minimum.at(lo, codes, x)
    np.maximum.at(hi, codes, x)
    return bool(np.all(hi == lo))


def new_data_design(design_formula: str, categories: Mapping[str, Sequence[str]],
                    variables: Sequence[str], df: pd.DataFrame) -> np.ndarray:
    """The common design matrix (n, K) of new rows ``df`` with the fitted data's coding.

    The new rows are evaluated after one template row per level of each categorical column
    (``categories``), so the levels, their order and the reference level are those of the
    fitted data whatever levels the new rows hold.
    """
    import formulae

    parsed, _ = _split_uncorrelated(design_formula)
    rhs = re.sub(r"\([^()]*\|[^()]*\)", "", _rhs(parsed))
    rhs = re.sub(r"\+\s*(\+|$)", r"\1", rhs.strip()).strip().rstrip("+").strip() or "1"
    needed = [v for v in variables if v in rhs_variables(rhs)]
    missing = [v for v in needed if v not in df.columns]
    if missing:
        raise InputError(f"new data lack column(s) {missing} of the formula")
    for v, levels in categories.items():
        if v in needed:
            unknown = sorted(set(df[v].astype(str)) - set(levels))
            if unknown:
                raise InputError(f"column {v!r} has level {unknown[0]!r}, not in the fitted "
                                 f"data (levels {list(levels)})")
    size = max([len(v) for v in categories.values()] + [1])
    template = {}
    for v in needed:
        if v in categories:
            levels = list(categories[v])
            template[v] = [levels[i % len(levels)] for i in range(size)]
        else:
            template[v] = [float(df[v].iloc[0])] * size
    frame = pd.concat([pd.DataFrame(template), df[needed].astype(
        {v: str for v in needed if v in categories})], ignore_index=True)
    frame["carpool_response_"] = 0.0  # formulae reads two-sided formulas only
    dm = formulae.design_matrices(f"carpool_response_ ~ {rhs}", frame, na_action="error")
    return np.asarray(dm.common.design_matrix, dtype=float)[size:]


def rhs_variables(rhs: str) -> set[str]:
    """Columns read by a right-hand side (formulae's reading)."""
    import formulae

    return set(formulae.model_description(f"y ~ {rhs}").var_names) - {"y"}
