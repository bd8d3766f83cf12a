"""The eight-schools model (Rubin 1981; Gelman et al., BDA3 section 5.5).

``y_j ~ Normal(theta_j, sigma_j)`` with known standard errors ``sigma_j`` (a covariate), and
in hierarchical mode ``theta_j ~ Normal(mu, tau)``, ``mu ~ Normal(0, 5)``,
``tau ~ HalfCauchy(5)``: the posteriordb model ``eight_schools_noncentered``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from carpool.models.registry import register_spec
from carpool.parameters import Parameter, ParameterTable
from carpool.pooling.grouped import GroupedData
from carpool.pooling.likelihoods import Gaussian
from carpool.pooling.spec import Hyperpriors, ModelSpec
from carpool.priors import HalfCauchy, Normal

__all__ = ["eight_schools_spec", "eight_schools_data", "EIGHT_SCHOOLS_HYPERPRIORS"]

#: Rubin (1981), as in BDA3 Table 5.2 and posteriordb ``eight_schools``.
_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

#: The reference model's population-scale prior.
EIGHT_SCHOOLS_HYPERPRIORS = Hyperpriors(tau=HalfCauchy(5.0))


def _mean(params: Mapping[str, Any], covariates: Mapping[str, Any]) -> Any:
    return params["theta"] + 0.0 * covariates["sigma"]


def eight_schools_spec() -> ModelSpec:
    """One parameter ``theta`` (the school's effect, test points) with a Normal(0, 5) prior."""
    table = ParameterTable([
        Parameter("theta", "points", "identity", 0.0, Normal(0.0, 5.0),
                  "coaching effect on SAT-V score"),
    ])
    return ModelSpec(
        name="eight_schools",
        parameters=table,
        mean_fn=_mean,
        covariates=("sigma",),
        likelihood=Gaussian(sigma=1.0, scale_covariate="sigma"),
        group_dim="school",
        prepare_fn=_prepare,
        default_hyperpriors=EIGHT_SCHOOLS_HYPERPRIORS,
    )


def _prepare(table: pd.DataFrame, *, level: str | None = None) -> GroupedData:
    """Columns ``school``, ``y``, ``sigma``."""
    return GroupedData.from_frame(table, y="y", group="school", covariates=("sigma",),
                                  level=level)


def eight_schools_data() -> pd.DataFrame:
    """The data as a table: columns ``school`` (A..H), ``y``, ``sigma``."""
    return pd.DataFrame({"school": list("ABCDEFGH"), "y": _Y, "sigma": _SIGMA})


register_spec("eight_schools", eight_schools_spec)
