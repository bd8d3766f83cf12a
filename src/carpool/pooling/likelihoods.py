"""Observation models: how outcomes scatter around the mean function.

A likelihood declares its learned noise parameters (each with a positive-support prior, or a
fixed value) and gives both a NumPyro distribution (for sampling) and a pure log-density (for
curvature checks and pointwise log-likelihoods). The observation scale may be multiplied by a
covariate, e.g. ``sd = sigma * dt`` for one-step speed predictions, or given per observation
(``sigma = 1`` fixed and ``scale_covariate = "sigma"`` for eight schools).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import jax.scipy.stats as jstats

from carpool.pooling.priors import HalfNormal, Prior

__all__ = ["AbstractLikelihood", "Gaussian", "StudentT", "likelihood_from_dict"]

Array = Any


class AbstractLikelihood(ABC):
    """Interface every likelihood implements."""

    kind: ClassVar[str]

    @abstractmethod
    def noise_priors(self) -> dict[str, Prior]:
        """Learned noise parameters and their priors (positive support)."""

    @abstractmethod
    def fixed_noise(self) -> dict[str, float]:
        """Noise parameters held fixed."""

    @abstractmethod
    def log_prob(self, y: Array, mean: Array, noise: Mapping[str, Array],
                 covariates: Mapping[str, Array]) -> Array:
        """Element-wise log density of ``y`` given ``mean`` (same shape)."""

    @abstractmethod
    def distribution(self, mean: Array, noise: Mapping[str, Array],
                     covariates: Mapping[str, Array]) -> Any:
        """The NumPyro distribution of the observations."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (see :func:`likelihood_from_dict`)."""


def _noise_value(value: Prior | float) -> tuple[Prior | None, float | None]:
    if isinstance(value, Prior):
        if value.support != "positive":
            raise ValueError(f"a noise scale prior needs positive support, got {value}")
        return value, None
    value = float(value)
    if not value > 0:
        raise ValueError(f"a fixed noise scale must be positive, got {value}")
    return None, value


@dataclass(frozen=True)
class Gaussian(AbstractLikelihood):
    """``y ~ Normal(mean, sigma * covariates[scale_covariate])``.

    Parameters
    ----------
    sigma
        A positive prior (learned, default HalfNormal(1)) or a fixed positive number.
    scale_covariate
        Name of a covariate multiplying sigma per observation, or ``None``.
    """

    sigma: Prior | float = HalfNormal(1.0)
    scale_covariate: str | None = None
    kind: ClassVar[str] = "gaussian"

    def __post_init__(self) -> None:
        _noise_value(self.sigma)

    def noise_priors(self) -> dict[str, Prior]:
        prior, _ = _noise_value(self.sigma)
        return {} if prior is None else {"sigma": prior}

    def fixed_noise(self) -> dict[str, float]:
        _, value = _noise_value(self.sigma)
        return {} if value is None else {"sigma": value}

    def _scale(self, noise: Mapping[str, Array], covariates: Mapping[str, Array]) -> Array:
        scale = noise["sigma"]
        if self.scale_covariate is not None:
            scale = scale * covariates[self.scale_covariate]
        return scale

    def log_prob(self, y, mean, noise, covariates):
        return jstats.norm.logpdf(y, mean, self._scale(noise, covariates))

    def distribution(self, mean, noise, covariates):
        import numpyro.distributions as dist

        return dist.Normal(mean, self._scale(noise, covariates))

    def to_dict(self) -> dict[str, Any]:
        sigma = self.sigma.to_dict() if isinstance(self.sigma, Prior) else float(self.sigma)
        return {"kind": self.kind, "sigma": sigma, "scale_covariate": self.scale_covariate}


@dataclass(frozen=True)
class StudentT(AbstractLikelihood):
    """``y ~ StudentT(df, mean, sigma * covariates[scale_covariate])``, robust to outliers."""

    df: float = 4.0
    sigma: Prior | float = HalfNormal(1.0)
    scale_covariate: str | None = None
    kind: ClassVar[str] = "student_t"

    def __post_init__(self) -> None:
        if not self.df > 0:
            raise ValueError(f"StudentT df must be positive, got {self.df}")
        _noise_value(self.sigma)

    noise_priors = Gaussian.noise_priors
    fixed_noise = Gaussian.fixed_noise
    _scale = Gaussian._scale

    def log_prob(self, y, mean, noise, covariates):
        return jstats.t.logpdf(y, self.df, mean, self._scale(noise, covariates))

    def distribution(self, mean, noise, covariates):
        import numpyro.distributions as dist

        return dist.StudentT(self.df, mean, self._scale(noise, covariates))

    def to_dict(self) -> dict[str, Any]:
        d = Gaussian.to_dict(self)  # type: ignore[arg-type]
        d.update(kind=self.kind, df=float(self.df))
        return d


def likelihood_from_dict(d: Mapping[str, Any]) -> AbstractLikelihood:
    """Inverse of ``to_dict`` for the built-in likelihoods."""
    sigma = d["sigma"]
    sigma = Prior.from_dict(sigma) if isinstance(sigma, Mapping) else float(sigma)
    if d["kind"] == "gaussian":
        return Gaussian(sigma, d.get("scale_covariate"))
    if d["kind"] == "student_t":
        return StudentT(float(d["df"]), sigma, d.get("scale_covariate"))
    raise ValueError(f"unknown likelihood kind {d['kind']!r}")
