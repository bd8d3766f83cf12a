"""Serialisable prior distributions.

A :class:`Prior` is a small frozen record (family name + numbers) rather than a NumPyro
distribution object, so that a model specification can be written to JSON inside a netCDF
file and read back without pickle. :meth:`Prior.to_numpyro` builds the distribution when the
model is traced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from carpool.errors import InputError

__all__ = ["Prior", "Normal", "HalfNormal", "HalfCauchy", "Exponential", "StudentT", "LogNormal"]

# family -> (NumPyro class name, ordered parameter names, support)
_FAMILIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "normal": ("Normal", ("loc", "scale"), "real"),
    "student_t": ("StudentT", ("df", "loc", "scale"), "real"),
    "half_normal": ("HalfNormal", ("scale",), "positive"),
    "half_cauchy": ("HalfCauchy", ("scale",), "positive"),
    "exponential": ("Exponential", ("rate",), "positive"),
    "lognormal": ("LogNormal", ("loc", "scale"), "positive"),
}


@dataclass(frozen=True)
class Prior:
    """A prior distribution given by family and parameters.

    Parameters
    ----------
    family
        One of ``normal``, ``student_t``, ``half_normal``, ``half_cauchy``, ``exponential``,
        ``lognormal``.
    params
        The family's parameters by name, e.g. ``{"loc": 0.0, "scale": 1.0}``.
    """

    family: str
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in _FAMILIES:
            raise InputError(
                f"unknown prior family {self.family!r}; choose one of {sorted(_FAMILIES)}"
            )
        _, names, _ = _FAMILIES[self.family]
        if set(self.params) != set(names):
            raise InputError(
                f"prior {self.family!r} needs parameters {list(names)}, got {sorted(self.params)}"
            )
        for name, value in self.params.items():
            value = float(value)
            if value != value:  # NaN
                raise InputError(f"prior {self.family!r} parameter {name!r} is NaN")
            if name in ("scale", "rate", "df") and value <= 0:
                raise InputError(
                    f"prior {self.family!r} parameter {name!r} must be positive, got {value}"
                )

    @property
    def support(self) -> str:
        """``"real"`` or ``"positive"``."""
        return _FAMILIES[self.family][2]

    def to_numpyro(self) -> Any:
        """Build the NumPyro distribution (imported lazily)."""
        import numpyro.distributions as dist

        cls_name, names, _ = _FAMILIES[self.family]
        return getattr(dist, cls_name)(*(float(self.params[n]) for n in names))

    def median(self) -> float:
        """Median of the distribution (used as a typical value, e.g. a reference tau)."""
        import math

        p = self.params
        if self.family in ("normal", "student_t"):
            return float(p["loc"])
        if self.family == "half_normal":
            return 0.6744897501960817 * p["scale"]
        if self.family == "half_cauchy":
            return float(p["scale"])
        if self.family == "exponential":
            return math.log(2.0) / p["rate"]
        if self.family == "lognormal":
            return math.exp(p["loc"])
        raise AssertionError(self.family)  # pragma: no cover

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "params": {k: float(v) for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prior:
        return cls(d["family"], dict(d["params"]))

    def __str__(self) -> str:
        args = ", ".join(f"{v:g}" for v in self.params.values())
        return f"{_FAMILIES[self.family][0]}({args})"


def Normal(loc: float = 0.0, scale: float = 1.0) -> Prior:
    """Normal(loc, scale): for latent (unconstrained) parameters and population means."""
    return Prior("normal", {"loc": loc, "scale": scale})


def StudentT(df: float, loc: float = 0.0, scale: float = 1.0) -> Prior:
    """Student-t(df, loc, scale): a heavier-tailed alternative to :func:`Normal`."""
    return Prior("student_t", {"df": df, "loc": loc, "scale": scale})


def HalfNormal(scale: float = 1.0) -> Prior:
    """Half-normal(scale), positive: population scales (tau) and noise scales (sigma)."""
    return Prior("half_normal", {"scale": scale})


def HalfCauchy(scale: float = 1.0) -> Prior:
    """Half-Cauchy(scale), positive: a heavy-tailed scale prior (Gelman 2006)."""
    return Prior("half_cauchy", {"scale": scale})


def Exponential(rate: float = 1.0) -> Prior:
    """Exponential(rate), positive; ``rate`` is the inverse mean (PyMC's and NumPyro's
    parameterisation)."""
    return Prior("exponential", {"rate": rate})


def LogNormal(loc: float = 0.0, scale: float = 1.0) -> Prior:
    """Log-normal(loc, scale) of the log, positive and zero-avoiding: population scales
    with few groups."""
    return Prior("lognormal", {"loc": loc, "scale": scale})
