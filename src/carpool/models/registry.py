"""One registry of model specifications: every name ``carpool.fit``, the CLI and
``carpool.load`` accept.

A name is either a builder registered with :func:`register_spec` (the built-in ``linear``
and ``eight_schools``, or a user's) or a car-following model known to
:mod:`carpool.carfollowing` (built-in or registered there by the user), whose spec
:func:`~carpool.models.carfollowing.carfollowing_spec` builds. So registering a
car-following model is enough to fit it by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from carpool.errors import InputError
from carpool.pooling.spec import ModelSpec

__all__ = ["register_spec", "get_spec", "list_specs"]

_BUILDERS: dict[str, Callable[..., ModelSpec]] = {}


def register_spec(name: str, builder: Callable[..., ModelSpec]) -> None:
    """Register ``builder(**options) -> ModelSpec`` under ``name`` (used by ``carpool.load``
    to rebuild a saved fit's spec from its name and options)."""
    _BUILDERS[name] = builder


def get_spec(name: str, **options: Any) -> ModelSpec:
    """Build the spec of model ``name`` with ``options`` (e.g. ``priors=``, ``residual=``
    for car-following models)."""
    _load_builtins()
    if name in _BUILDERS:
        return _BUILDERS[name](**options)
    from carpool.carfollowing import list_models
    from carpool.models.carfollowing import carfollowing_spec

    if name in list_models():
        return carfollowing_spec(name, **options)
    raise InputError(f"unknown model {name!r}; known models: {list_specs()}")


def list_specs() -> list[str]:
    """Names of the model specs: built-in car-following models, ``linear``,
    ``eight_schools`` and any a user registered (with :func:`register_spec`, or as a
    car-following model with :func:`carpool.carfollowing.register_model`)."""
    _load_builtins()
    from carpool.carfollowing import list_models

    return sorted(set(_BUILDERS) | set(list_models()))


def _load_builtins() -> None:
    import carpool.models.eight_schools  # noqa: F401  (registers on import)
    import carpool.models.formula  # noqa: F401
    import carpool.models.linear  # noqa: F401
