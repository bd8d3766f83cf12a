"""Car-following physics: pure JAX acceleration functions, a model registry and rollouts.

Built-in models (registered on import): ``"idm"`` (:data:`IDM`), ``"gipps"``
(:data:`GIPPS`), ``"ovm"`` (:data:`OVM`), ``"fvdm"`` (:data:`FVDM`) and ``"linear_acc"``
(:data:`LINEAR_ACC`, the constant-time-gap controller of commercial ACC systems). Units throughout:
metres, seconds, m/s, m/s^2. This package never imports NumPyro.

>>> from carpool.carfollowing import get_model, list_models
>>> list_models()
['fvdm', 'gipps', 'idm', 'linear_acc', 'ovm']
>>> idm = get_model("idm")
>>> round(float(idm.acceleration(idm.reference_params(), speed=0.0, gap=100.0,
...                              leader_speed=0.0)), 3)
1.499
"""

from carpool.carfollowing.gipps import (
    GIPPS,
    GIPPS_B_HAT_PARAMETER,
    GIPPS_PLAUSIBLE_RANGES,
    gipps_acceleration,
    gipps_target_speed,
)
from carpool.carfollowing.idm import (
    IDM,
    IDM_DELTA,
    IDM_PHYSICAL_RANGES,
    IDM_PLAUSIBLE_RANGES,
    IDM_ZHANG_SUN_REFERENCE,
    idm_acceleration,
    idm_desired_gap,
    idm_equilibrium_gap,
)
from carpool.carfollowing.linear_acc import (
    LINEAR_ACC,
    LINEAR_ACC_PLAUSIBLE_RANGES,
    linear_acc_acceleration,
)
from carpool.carfollowing.model import (
    AccelerationFn,
    CarFollowingModel,
    LinearForm,
    as_model,
    get_model,
    list_models,
    register_model,
)
from carpool.carfollowing.ovm import (
    FVDM,
    FVDM_PLAUSIBLE_RANGES,
    OVM,
    OVM_PLAUSIBLE_RANGES,
    fvdm_acceleration,
    optimal_velocity,
    ovm_acceleration,
)
from carpool.carfollowing.rollout import (
    Rollout,
    equilibrium_gap,
    equilibrium_speed,
    follow_leader,
)

__all__ = [
    "AccelerationFn",
    "CarFollowingModel",
    "FVDM",
    "FVDM_PLAUSIBLE_RANGES",
    "GIPPS",
    "GIPPS_B_HAT_PARAMETER",
    "GIPPS_PLAUSIBLE_RANGES",
    "IDM",
    "IDM_DELTA",
    "IDM_PHYSICAL_RANGES",
    "IDM_PLAUSIBLE_RANGES",
    "IDM_ZHANG_SUN_REFERENCE",
    "LINEAR_ACC",
    "LINEAR_ACC_PLAUSIBLE_RANGES",
    "LinearForm",
    "OVM",
    "OVM_PLAUSIBLE_RANGES",
    "Rollout",
    "as_model",
    "equilibrium_gap",
    "equilibrium_speed",
    "follow_leader",
    "fvdm_acceleration",
    "get_model",
    "gipps_acceleration",
    "gipps_target_speed",
    "idm_acceleration",
    "idm_desired_gap",
    "idm_equilibrium_gap",
    "linear_acc_acceleration",
    "list_models",
    "optimal_velocity",
    "ovm_acceleration",
    "register_model",
]
