"""Figures (matplotlib, imported lazily: importing this package imports no plotting code).

Every function takes its inputs and an optional ``path`` (writes ``path.png`` and
``path.svg``) and returns the matplotlib figure.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "plot_corner",
    "plot_follow_bands",
    "plot_forest",
    "plot_population_correlation",
    "plot_predictive",
    "plot_prior_sensitivity",
    "plot_shrinkage",
    "plot_sweep",
    "plot_time_space",
]

_MODULE_OF = {
    "plot_corner": "corner",
    "plot_follow_bands": "simulation",
    "plot_forest": "forest",
    "plot_population_correlation": "correlation",
    "plot_predictive": "predictive",
    "plot_prior_sensitivity": "sensitivity",
    "plot_shrinkage": "shrinkage",
    "plot_sweep": "sweep",
    "plot_time_space": "simulation",
}


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
