"""What the simulations need from a fit: its car-following model and noise scale (private)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from carpool.carfollowing.model import CarFollowingModel, get_model, list_models
from carpool.errors import InputError

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

_COVARIATES = ("speed", "gap", "leader_speed", "dt")


def carfollowing_model(fit: Fit) -> CarFollowingModel:
    """The fit's car-following model; ``ValueError`` for any other kind of model."""
    name = fit.spec.name
    if name not in list_models() or tuple(fit.spec.covariates)[:4] != _COVARIATES:
        raise InputError(f"the fit is of model {name!r}, not a car-following model; "
                         f"simulations need one of {list_models()}")
    model = get_model(name)
    if model.parameter_names != list(fit.parameter_names):
        raise InputError(f"the fit's parameters {list(fit.parameter_names)} do not match "
                         f"model {name!r} ({model.parameter_names})")
    return model


def sigma_draws(fit: Fit) -> np.ndarray:
    """Acceleration-noise scale sigma (m/s^2) per posterior draw, shape (S,)."""
    num_draws = fit.theta_draws().shape[0]
    noise = fit.noise_draws()
    if "sigma" not in noise:
        raise InputError(f"the fit's likelihood has no noise scale 'sigma' (has "
                         f"{sorted(noise)})")
    return np.broadcast_to(np.asarray(noise["sigma"], dtype=float), (num_draws,)).copy()
