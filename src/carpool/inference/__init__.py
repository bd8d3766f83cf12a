"""Inference: NUTS, the Fit result, diagnostics, prediction, save / load."""

from carpool.inference.diagnostics import ConvergenceWarning, compute_diagnostics
from carpool.inference.fit import Fit, load
from carpool.inference.nuts import NutsSettings, run_nuts, set_host_device_count
from carpool.inference.predict import (
    new_group_params,
    pointwise_log_likelihood,
    posterior_predictive,
    prior_predictive,
)
from carpool.inference.run import fit

__all__ = [
    "ConvergenceWarning", "Fit", "NutsSettings", "compute_diagnostics", "fit", "load",
    "new_group_params", "pointwise_log_likelihood", "posterior_predictive",
    "prior_predictive", "run_nuts", "set_host_device_count",
]
