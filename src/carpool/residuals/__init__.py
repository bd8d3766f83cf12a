"""Residual processes within each group's series: i.i.d., AR(p) and Gaussian process.

``carpool.fit(df, "idm", model_options={"residual": "ar2"})`` (or ``"gp"``) models the
acceleration error of each driver as a stationary AR(p) process or a squared-exponential
Gaussian process over time, in every pooling mode. The maths is pure JAX
(:mod:`carpool.residuals.ar`, :mod:`carpool.residuals.gp`); :mod:`carpool.residuals.process`
holds the process objects that the pooling engine samples. See ``docs/residuals.md``.
"""

from carpool.residuals.ar import ar_autocovariance, ar_conditional, ar_forward, pacf_to_phi
from carpool.residuals.gp import (
    gp_conditional,
    gp_forward,
    gp_sliding_conditional,
    se_covariance,
    sliding_coefficients,
)
from carpool.residuals.process import (
    AR,
    AR_POOLING,
    GP,
    GP_METHODS,
    IID,
    MAX_AR_ORDER,
    ResidualProcess,
    parse_residual,
    residual_from_dict,
)

__all__ = [
    "AR", "AR_POOLING", "GP", "GP_METHODS", "IID", "MAX_AR_ORDER", "ResidualProcess",
    "ar_autocovariance",
    "ar_conditional", "ar_forward", "gp_conditional", "gp_forward", "gp_sliding_conditional",
    "pacf_to_phi",
    "parse_residual", "residual_from_dict", "se_covariance", "sliding_coefficients",
]
