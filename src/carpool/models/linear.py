"""Varying-intercept / varying-slope linear regression (the radon model).

``y = intercept_g + slope_g * x + noise``, e.g. log radon in house i of county g against the
floor of measurement (Gelman & Hill 2007, ch. 12-13).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from carpool.models.registry import register_spec
from carpool.parameters import Parameter, ParameterTable
from carpool.pooling.grouped import GroupedData
from carpool.pooling.likelihoods import Gaussian
from carpool.pooling.spec import ModelSpec
from carpool.priors import HalfNormal, Normal

__all__ = ["linear_spec"]


def _linear_mean(params: Mapping[str, Any], covariates: Mapping[str, Any]) -> Any:
    return params["intercept"] + params["slope"] * covariates["x"]


def _prepare(table: pd.DataFrame, *, level: str | None = None, group: str = "group",
             x: str = "x", y: str = "y") -> GroupedData:
    """Columns ``group``, ``x``, ``y`` (names configurable), optional level column."""
    df = table.rename(columns={x: "x"}) if x != "x" else table
    return GroupedData.from_frame(df, y=y, group=group, covariates=("x",), level=level)


def linear_spec(prior_scale: float = 5.0, noise_scale: float = 1.0) -> ModelSpec:
    """Spec of ``y ~ Normal(intercept_g + slope_g x, sigma)``.

    Parameters
    ----------
    prior_scale
        Scale of the Normal(0, prior_scale) priors on intercept and slope (units of y and of
        y per unit x).
    noise_scale
        Scale of the HalfNormal prior on sigma (units of y).
    """
    table = ParameterTable([
        Parameter("intercept", "y", "identity", 0.0, Normal(0.0, prior_scale),
                  "value of y at x = 0"),
        Parameter("slope", "y per x", "identity", 0.0, Normal(0.0, prior_scale),
                  "change of y per unit x"),
    ])
    return ModelSpec(
        name="linear",
        parameters=table,
        mean_fn=_linear_mean,
        covariates=("x",),
        likelihood=Gaussian(HalfNormal(noise_scale)),
        options={"prior_scale": prior_scale, "noise_scale": noise_scale},
        prepare_fn=_prepare,
    )


register_spec("linear", linear_spec)
