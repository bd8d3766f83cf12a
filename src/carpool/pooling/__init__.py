"""The pooling engine: one model specification -> pooled, unpooled or hierarchical models.

``build_model`` and ``choose_centring`` import NumPyro and load lazily, so that pure modules
(e.g. ``carpool.compare``) can use the specs without importing NumPyro.
"""

from typing import Any

from carpool.pooling.grouped import GroupedData, choose_layout
from carpool.pooling.likelihoods import AbstractLikelihood, Gaussian, StudentT
from carpool.pooling.spec import Hyperpriors, ModelSpec, PoolingConfig

__all__ = [
    "AbstractLikelihood", "BuiltModel", "CentringChoice", "Gaussian", "GroupedData",
    "Hyperpriors", "ModelSpec", "PoolingConfig", "StudentT", "build_model",
    "choose_centring", "choose_layout",
]

_LAZY = {
    "BuiltModel": "carpool.pooling.model",
    "build_model": "carpool.pooling.model",
    "CentringChoice": "carpool.pooling.centring",
    "choose_centring": "carpool.pooling.centring",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'carpool.pooling' has no attribute {name!r}")
