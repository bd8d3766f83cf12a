"""Comparing pooling modes: scores, pooling factors, shrinkage, the pooling dial, priors."""

import sys
import types

from carpool.compare.comparison import compare, population_scales
from carpool.compare.pooling_factors import pooling_factors
from carpool.compare.results import Comparison, PriorSensitivity, SweepResult
from carpool.compare.sensitivity import prior_sensitivity
from carpool.compare.shrinkage import shrinkage_table
from carpool.compare.sweep import sweep, sweep_fits

__all__ = ["compare", "population_scales", "pooling_factors", "shrinkage_table", "sweep",
           "sweep_fits", "prior_sensitivity", "Comparison", "SweepResult", "PriorSensitivity"]


class _CallableModule(types.ModuleType):
    """``carpool.compare`` is both this package and the function :func:`compare`.

    Importing any submodule sets the package as the attribute ``carpool.compare`` (the import
    system does that), which would hide a function of that name; making the package callable
    keeps ``carpool.compare(fits)`` and ``carpool.compare.sweep(...)`` both working.
    """

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
