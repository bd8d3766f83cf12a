"""carpool: pooled, unpooled and hierarchical Bayesian models of grouped data.

The flagship use is calibrating car-following models (IDM and kin) for many drivers at once;
any grouped data fit from one formula, ``carpool.fit(table, "y ~ x + (1 + x | group)")``.
Public names are loaded on first use, so ``import carpool`` stays fast (no JAX, NumPyro,
ArviZ or matplotlib until needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "carpool.inference.run",
    "load": "carpool.inference.fit",
    "Fit": "carpool.inference.fit",
    "NutsSettings": "carpool.inference.nuts",
    "SviSettings": "carpool.inference.svi",
    "set_host_device_count": "carpool.inference.nuts",
    "ConvergenceWarning": "carpool.inference.diagnostics",
    "WeakIdentificationWarning": "carpool.inference.diagnostics",
    "prior_contraction": "carpool.inference.diagnostics",
    "plausibility": "carpool.inference.plausibility",
    "PlausibilityWarning": "carpool.inference.plausibility",
    "read_trajectories": "carpool.data",
    "load_example": "carpool.data",
    "load_table": "carpool.data",
    "DataError": "carpool.data",
    "InputError": "carpool.errors",
    "posterior_predictive": "carpool.inference.predict",
    "prior_predictive": "carpool.inference.predict",
    "new_group_params": "carpool.inference.predict",
    "predict_new_group": "carpool.inference.predict",
    "pointwise_log_likelihood": "carpool.inference.predict",
    "ModelSpec": "carpool.pooling.spec",
    "PoolingConfig": "carpool.pooling.spec",
    "Hyperpriors": "carpool.pooling.spec",
    "register_spec": "carpool.models.registry",
    "get_spec": "carpool.models.registry",
    "list_specs": "carpool.models.registry",
    "GroupedData": "carpool.pooling.grouped",
    "Parameter": "carpool.parameters",
    "ParameterTable": "carpool.parameters",
    "Prior": "carpool.priors",
    "Normal": "carpool.priors",
    "HalfNormal": "carpool.priors",
    "HalfCauchy": "carpool.priors",
    "Exponential": "carpool.priors",
    "LogNormal": "carpool.priors",
    "Gaussian": "carpool.pooling.likelihoods",
    "StudentT": "carpool.pooling.likelihoods",
    "Bernoulli": "carpool.pooling.likelihoods",
    "Binomial": "carpool.pooling.likelihoods",
    "Poisson": "carpool.pooling.likelihoods",
    "NegativeBinomial": "carpool.pooling.likelihoods",
    "GroupingFactor": "carpool.pooling.spec",
    "formula_priors": "carpool.models.formula",
    "compare": "carpool.compare",
    "sweep": "carpool.compare.sweep",
    "prior_sensitivity": "carpool.compare.sensitivity",
    "pooling_factors": "carpool.compare.pooling_factors",
    "refit": "carpool.inference.run",
    "fit_separately": "carpool.inference.separate",
    "load_separate": "carpool.inference.separate",
    "simulate": "carpool.simulate",
    "residuals": "carpool.residuals",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        # carpool.compare is a callable package (see carpool/compare/__init__.py)
        value = module if _EXPORTS[name] == f"carpool.{name}" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'carpool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
