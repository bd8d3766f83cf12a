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

import jax.numpy as jnp
import jax.scipy.stats as jstats
import numpy as np

from carpool.errors import InputError
from carpool.priors import HalfNormal, Prior

__all__ = ["AbstractLikelihood", "Gaussian", "JointGaussian", "StudentT",
           "censored_positions", "likelihood_from_dict"]

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
                     covariates: Mapping[str, Array], censored_at: Any = None) -> Any:
        """The NumPyro distribution of the observations.

        ``censored_at``: :func:`censored_positions` of the observations this distribution
        will score, for a censored likelihood (``None``: found per evaluation).
        """

    def censored_at(self, y: Array, mask: Array | None = None) -> Any:
        """:func:`censored_positions` of ``y`` for a censored likelihood, else ``None``."""
        return None

    def observed_terms(self, y: Array, mask: Array | None,
                       covariates: Mapping[str, Array]) -> dict[str, Any] | None:
        """Data-only parts of :meth:`summed_log_prob` for the observations ``y``, computed
        once (NumPy), or ``None`` where the likelihood has no summed form (the sampler then
        scores :meth:`distribution`)."""
        return None

    def summed_log_prob(self, terms: Mapping[str, Any], y: Array, mean: Array,
                        noise: Mapping[str, Array]) -> Array:
        """``sum(log_prob(y, mean, noise, covariates))`` over the observations inside the
        mask, from :meth:`observed_terms` of the same ``y``, ``mask`` and covariates."""
        raise NotImplementedError(f"{type(self).__name__} has no summed log density")

    def projected_terms(self, y: Array, mask: Array | None, covariates: Mapping[str, Array],
                        offset: Array, design: Array, group_index: Array, num_groups: int,
                        *, censored_size: int | None = None) -> dict[str, Any] | None:
        """Data-only terms of :meth:`projected_log_prob` for a mean linear in data features
        (:mod:`carpool.pooling.linear_mean`), or ``None`` where the likelihood has no such
        form."""
        return None

    def projected_log_prob(self, terms: Mapping[str, Any], coefficients: Array,
                           noise: Mapping[str, Array]) -> Array:
        """The summed log density from :meth:`projected_terms` and each group's mean
        coefficients (G, K) (or (K,), shared by every group)."""
        raise NotImplementedError(f"{type(self).__name__} has no projected log density")

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (see :func:`likelihood_from_dict`)."""


def _noise_value(value: Prior | float) -> tuple[Prior | None, float | None]:
    if isinstance(value, Prior):
        if value.support != "positive":
            raise InputError(f"a noise scale prior needs positive support, got {value}")
        return value, None
    value = float(value)
    if not value > 0:
        raise InputError(f"a fixed noise scale must be positive, got {value}")
    return None, value


def _censored_logpdf(y: Array, mean: Array, scale: Array, lower: float | None) -> Array:
    lp = jstats.norm.logpdf(y, mean, scale)
    if lower is None:
        return lp
    from jax.scipy.special import log_ndtr

    # observations at the bound carry only "at most the bound": P(Y <= lower)
    return jnp.where(y <= lower, log_ndtr((lower - mean) / scale), lp)


def censored_positions(y: Array, mask: Array | None, lower: float, *, min_size: int = 8
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Where ``y`` is censored: ``(positions, valid)``, flat indices into ``y.ravel()`` of the
    observations ``y <= lower`` (inside ``mask`` where given), as int32 (K,), and float32
    (K,) weights, 1 for a position and 0 for padding.

    K is the count rounded up to a power of two (at least ``min_size``), so data sets with a
    similar share of censored observations share array shapes and hence compiled programs.
    Padding points at position 0 with weight 0.

    Why: the censored term ``log Phi((lower - mean) / scale)`` costs several times a normal
    log-density per element (and its gradient more), and evaluating it for every observation
    under a ``where`` doubled the hierarchical IDM's gradient (5,460 observations of which 41
    at 0 m/s; benchmarks/gradient_cost.py). With the positions known, it runs on those K only.
    """
    y = np.asarray(y)
    hit = y <= lower
    if mask is not None:
        hit &= np.asarray(mask, dtype=bool)
    found = np.flatnonzero(hit.ravel())
    size = max(min_size, 1 << int(np.ceil(np.log2(max(found.size, 1)))))
    positions = np.zeros(size, dtype=np.int32)
    positions[:found.size] = found
    valid = np.zeros(size, dtype=np.float32)
    valid[:found.size] = 1.0
    return positions, valid


def _censored_logpdf_at(y: Array, mean: Array, scale: Array, lower: float,
                        censored_at: tuple[Array, Array]) -> Array:
    """:func:`_censored_logpdf` with the censored observations given by
    :func:`censored_positions` of ``y``; equal to it for that ``y``."""
    from jax.scipy.special import log_ndtr

    shape = jnp.broadcast_shapes(jnp.shape(y), jnp.shape(mean), jnp.shape(scale))
    lp = jnp.where(y <= lower, 0.0, jstats.norm.logpdf(y, mean, scale))
    positions, valid = censored_at
    mean_c = jnp.broadcast_to(mean, shape).reshape(-1)[positions]
    scale_c = jnp.broadcast_to(scale, shape).reshape(-1)[positions]
    tail = valid * log_ndtr((lower - mean_c) / scale_c)
    return jnp.broadcast_to(lp, shape).reshape(-1).at[positions].add(tail).reshape(shape)


def _observed_cells(y: np.ndarray, mask: Array | None, lower: float | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(inside, exact)``: the cells inside ``mask`` (all where ``None``) and, of those,
    the exactly observed ones (above ``lower`` where the likelihood is censored)."""
    inside = np.ones(y.shape, bool) if mask is None else np.asarray(mask, bool)
    return inside, (inside if lower is None else inside & (y > lower))


def _censored_terms(y: np.ndarray, mask: Array | None, lower: float | None,
                    c: np.ndarray) -> dict[str, Any]:
    """The ``observed_terms`` entries of a censored likelihood: ``censored``
    (:func:`censored_positions`) and ``c_censored``, the scale covariate there; empty
    where ``lower`` is ``None``."""
    if lower is None:
        return {}
    positions, valid = censored_positions(y, mask, lower)
    return {"censored": (positions, valid), "c_censored": c.ravel()[positions]}


_CENSORED_CLASS: Any = None


def censored_normal(mean: Array, scale: Array, lower: float, censored_at: Any = None) -> Any:
    """A NumPyro Normal left-censored at ``lower``: samples are ``max(lower, normal)``.

    ``censored_at``: :func:`censored_positions` of the values it will score (the observed
    data), which then pay the censored term only where they are censored; ``None`` finds
    them per evaluation (any values).
    """
    global _CENSORED_CLASS
    if _CENSORED_CLASS is None:
        import jax
        import numpyro.distributions as dist
        from numpyro.distributions.util import promote_shapes

        class CensoredNormal(dist.Distribution):
            support = dist.constraints.real
            reparametrized_params = ["loc", "scale"]

            def __init__(self, loc, scale, lower, censored_at=None, validate_args=None):
                self.loc, self.scale = promote_shapes(loc, scale)
                self.lower = lower
                self.censored_at = censored_at
                batch = jax.lax.broadcast_shapes(jnp.shape(loc), jnp.shape(scale))
                super().__init__(batch_shape=batch, validate_args=validate_args)

            def sample(self, key, sample_shape=()):
                eps = jax.random.normal(key, sample_shape + self.batch_shape)
                return jnp.maximum(self.lower, self.loc + self.scale * eps)

            def log_prob(self, value):
                if self.censored_at is None:
                    return _censored_logpdf(value, self.loc, self.scale, self.lower)
                return _censored_logpdf_at(value, self.loc, self.scale, self.lower,
                                           self.censored_at)

        _CENSORED_CLASS = CensoredNormal
    return _CENSORED_CLASS(mean, scale, lower, censored_at)


@dataclass(frozen=True)
class Gaussian(AbstractLikelihood):
    """``y ~ Normal(mean, sigma * covariates[scale_covariate])``, optionally left-censored.

    Parameters
    ----------
    sigma
        A positive prior (learned, default HalfNormal(1)) or a fixed positive number.
    scale_covariate
        Name of a covariate multiplying sigma per observation, or ``None``.
    lower
        Left-censoring bound, or ``None``. Observations ``y <= lower`` count with probability
        ``P(Y <= lower)`` instead of a density: e.g. a follower's next speed is clipped at
        0 m/s when it stops, and treating those zeros as exact Gaussian values biased the
        IDM fit of stop-and-go data (94% intervals covered 79% of true values in 20
        simulated drivers; measured before censoring was added).
    """

    sigma: Prior | float = HalfNormal(1.0)
    scale_covariate: str | None = None
    lower: float | None = None
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
        return _censored_logpdf(y, mean, self._scale(noise, covariates), self.lower)

    def distribution(self, mean, noise, covariates, censored_at=None):
        import numpyro.distributions as dist

        scale = self._scale(noise, covariates)
        if self.lower is not None:
            return censored_normal(mean, scale, self.lower, censored_at)
        return dist.Normal(mean, scale)

    def censored_at(self, y, mask=None):
        return None if self.lower is None else censored_positions(y, mask, self.lower)

    def observed_terms(self, y, mask, covariates):
        """``inv_c`` (1 / scale covariate at the exactly observed cells, 0 elsewhere),
        ``weight`` (1 there, else 0), ``count`` (their number), ``const`` (their
        ``-log c - log(2 pi) / 2``, summed) and, when censored, ``censored``
        (:func:`censored_positions`) and ``c_censored`` (the covariate there)."""
        y = np.asarray(y, dtype=float)
        inside, exact = _observed_cells(y, mask, self.lower)
        if self.scale_covariate is None:
            c = np.ones(y.shape)
        else:
            c = np.broadcast_to(np.asarray(covariates[self.scale_covariate], float), y.shape)
            bad = np.flatnonzero(inside.ravel() & ~(c.ravel() > 0))
            if bad.size:
                raise InputError(f"the scale covariate {self.scale_covariate!r} must be "
                                 f"positive; observation {int(bad[0])} has {c.ravel()[bad[0]]}")
        safe_c = np.where(inside, c, 1.0)
        terms: dict[str, Any] = {
            "inv_c": np.where(exact, 1.0 / safe_c, 0.0),
            "weight": exact.astype(float),
            "count": float(exact.sum()),
            "const": float(-np.sum(np.where(exact, np.log(safe_c), 0.0))
                           - 0.5 * np.log(2 * np.pi) * exact.sum()),
        }
        return {**terms, **_censored_terms(y, mask, self.lower, safe_c)}

    def summed_log_prob(self, terms, y, mean, noise):
        """The Gaussian log density summed with the data-only work done once: per cell one
        subtraction, two products and a square (no logarithm or division of a per-cell
        scale), the censored ``log Phi`` term at the censored cells only. Equal to the
        masked sum of :meth:`log_prob` up to float rounding (tested); the hierarchical
        IDM's gradient is ~2x cheaper for it (benchmarks/gradient_cost.py)."""
        sigma = jnp.asarray(noise["sigma"])
        r = (y - mean) * terms["inv_c"]
        if sigma.ndim == 0:
            total = -0.5 * jnp.sum(r * r) / (sigma * sigma) - terms["count"] * jnp.log(sigma)
        else:  # a per-cell scale, e.g. a residual process's conditional sd
            r = r / sigma
            total = -0.5 * jnp.sum(r * r) - jnp.sum(terms["weight"] * jnp.log(sigma))
        total = total + terms["const"]
        if self.lower is None:
            return total
        from jax.scipy.special import log_ndtr

        positions, valid = terms["censored"]
        shape = jnp.shape(r)
        mean_c = jnp.broadcast_to(mean, shape).reshape(-1)[positions]
        sigma_c = sigma if sigma.ndim == 0 else jnp.broadcast_to(sigma, shape).reshape(-1)[
            positions]
        tail = valid * log_ndtr((self.lower - mean_c) / (sigma_c * terms["c_censored"]))
        return total + jnp.sum(tail)

    def projected_terms(self, y, mask, covariates, offset, design, group_index, num_groups,
                        *, censored_size=None):
        """:meth:`observed_terms`' ``count`` and ``const``, the projected statistics ``R``
        (G, K, K), ``c`` (G, K) and ``rss`` of the exactly observed cells
        (:func:`~carpool.pooling.linear_mean.projected_statistics`), and where censored the
        censored cells' ``offset`` and ``design`` rows, group, scale covariate and a
        ``valid`` weight (padded to ``censored_size``, default :func:`censored_positions`'
        size). All arrays flat (n,) / (n, K) over the same observations."""
        from carpool.pooling.linear_mean import projected_statistics

        y = np.asarray(y, dtype=float).ravel()
        terms = self.observed_terms(y, mask, {k: np.asarray(v).ravel()
                                              for k, v in covariates.items()})
        offset = np.asarray(offset, dtype=float).ravel()
        design = np.asarray(design, dtype=float).reshape(y.size, -1)
        u = terms["inv_c"]
        R, c, rss = projected_statistics(u * (y - offset), u[:, None] * design,
                                         np.asarray(group_index).ravel(), num_groups)
        out: dict[str, Any] = {"R": R, "c": c, "rss": rss, "count": terms["count"],
                               "const": terms["const"]}
        if self.lower is not None:
            positions, valid = terms["censored"]
            n = int(valid.sum())
            size = positions.size if censored_size is None else int(censored_size)
            if size < n:
                raise ValueError(f"censored_size {size} is below the {n} censored cells")
            at = np.zeros(size, np.int64)
            at[:n] = positions[:n]
            ok = np.zeros(size)
            ok[:n] = 1.0
            out["censored"] = {
                "offset": np.where(ok > 0, offset[at], 0.0),
                "design": np.where(ok[:, None] > 0, design[at], 0.0),
                "group": np.where(ok > 0, np.asarray(group_index).ravel()[at], 0).astype(
                    np.int32),
                "c": np.ones(size),  # the scale covariate there (padding: 1)
                "valid": ok,
            }
            out["censored"]["c"][:n] = terms["c_censored"][:n]
        return out

    def projected_log_prob(self, terms, coefficients, noise):
        """The Gaussian log density summed over every observation from
        :meth:`projected_terms`: ``K^2`` work per group for the exact cells, the censored
        ``log Phi`` term at the censored cells. Equal to the masked sum of :meth:`log_prob`
        up to float rounding (tested). A scalar noise scale only (i.i.d. residuals)."""
        sigma = jnp.asarray(noise["sigma"])
        c = terms["c"]
        beta = jnp.broadcast_to(coefficients, c.shape)
        # matrix-vector products, not element-wise products summed over K: XLA's reduction
        # over a minor axis of 8 was 6x slower on the CPU (batched over drivers and chains)
        d = c - (terms["R"] @ beta[..., None])[..., 0]
        quad = terms["rss"] + jnp.sum(d * d)
        total = -0.5 * quad / (sigma * sigma) - terms["count"] * jnp.log(sigma) + terms[
            "const"]
        if self.lower is None:
            return total
        from jax.scipy.special import log_ndtr

        cens = terms["censored"]
        if beta.shape[0] == 1:  # one group (a separate fit's row): no gather
            mean_c = cens["offset"] + cens["design"] @ beta[0]
        else:
            mean_c = cens["offset"] + jnp.sum(cens["design"] * beta[cens["group"]], axis=-1)
        tail = cens["valid"] * log_ndtr((self.lower - mean_c) / (sigma * cens["c"]))
        return total + jnp.sum(tail)

    def to_dict(self) -> dict[str, Any]:
        sigma = self.sigma.to_dict() if isinstance(self.sigma, Prior) else float(self.sigma)
        return {"kind": self.kind, "sigma": sigma, "scale_covariate": self.scale_covariate,
                "lower": self.lower}


@dataclass(frozen=True)
class StudentT(AbstractLikelihood):
    """``y ~ StudentT(df, mean, sigma * covariates[scale_covariate])``, robust to outliers."""

    df: float = 4.0
    sigma: Prior | float = HalfNormal(1.0)
    scale_covariate: str | None = None
    kind: ClassVar[str] = "student_t"

    def __post_init__(self) -> None:
        if not self.df > 0:
            raise InputError(f"StudentT df must be positive, got {self.df}")
        _noise_value(self.sigma)

    noise_priors = Gaussian.noise_priors
    fixed_noise = Gaussian.fixed_noise
    _scale = Gaussian._scale

    def log_prob(self, y, mean, noise, covariates):
        return jstats.t.logpdf(y, self.df, mean, self._scale(noise, covariates))

    def distribution(self, mean, noise, covariates, censored_at=None):
        import numpyro.distributions as dist

        return dist.StudentT(self.df, mean, self._scale(noise, covariates))

    def to_dict(self) -> dict[str, Any]:
        sigma = self.sigma.to_dict() if isinstance(self.sigma, Prior) else float(self.sigma)
        return {"kind": self.kind, "sigma": sigma, "scale_covariate": self.scale_covariate,
                "df": float(self.df)}


_JOINT_CLASS: Any = None


def _joint_distribution(likelihood: JointGaussian, mean: Array, noise: Mapping[str, Array],
                        covariates: Mapping[str, Array]) -> Any:
    """The NumPyro distribution of :class:`JointGaussian`: it samples the first observation
    (its marginal, censored where the likelihood is) and scores the pair."""
    global _JOINT_CLASS
    if _JOINT_CLASS is None:
        import jax
        import numpyro.distributions as dist

        class JointGaussianFirst(dist.Distribution):
            support = dist.constraints.real

            def __init__(self, lik, loc, noise, covariates, validate_args=None):
                self.lik, self.loc, self.noise, self.covariates = lik, loc, noise, covariates
                scale = lik.first_scale(noise, covariates)
                self.scale = scale
                batch = jax.lax.broadcast_shapes(jnp.shape(loc), jnp.shape(scale))
                super().__init__(batch_shape=batch, validate_args=validate_args)

            def sample(self, key, sample_shape=()):
                eps = jax.random.normal(key, sample_shape + self.batch_shape)
                y = self.loc + self.scale * eps
                return y if self.lik.lower is None else jnp.maximum(self.lik.lower, y)

            def log_prob(self, value):
                return self.lik.log_prob(value, self.loc, self.noise, self.covariates)

        _JOINT_CLASS = JointGaussianFirst
    return _JOINT_CLASS(likelihood, mean, noise, covariates)


@dataclass(frozen=True)
class JointGaussian(AbstractLikelihood):
    """Two observations per row that share one error: ``y`` and a second one, ``z``.

    With ``e ~ Normal(0, sigma)`` the shared error, ``c`` the scale covariate and ``l`` the
    loading covariate (both per row)::

        y = mean + c e + u,                               u ~ Normal(0, sigma_first)
        z = base + l (mean - offset) + l c e + w,         w ~ Normal(0, sigma_second)

    so ``(y, z)`` is bivariate normal with variances ``sigma^2 c^2 + sigma_first^2`` and
    ``sigma^2 l^2 c^2 + sigma_second^2`` and covariance ``sigma^2 l c^2``. The density of a
    row is that of ``y`` times that of ``z`` given ``y``; a ``y`` at or below ``lower``
    counts as ``P(Y <= lower)`` alone (a car that stops within the step does not follow the
    linear update of ``z``: its gap says nothing more). ``sigma_first`` and
    ``sigma_second`` are measurement errors: with ``sigma_first = 0`` the conditional mean
    of ``z`` does not depend on ``mean``, and ``z`` adds nothing to what ``y`` says about
    the parameters. Data whose ``y`` and ``z`` agree exactly (unrounded simulations) drive
    both measurement errors to 0, where the posterior degenerates and the sampler stalls;
    recorded data are rounded (the bundled NGSIM file to 0.01 m/s and 0.01 m), which keeps
    them away from 0.

    The car-following joint likelihood (Zhang & Sun's ``joint`` model) is this with ``y`` the
    next speed, ``c = dt``, ``z`` the next gap, ``base`` the gap after a step at constant
    speed, ``offset`` the speed and ``l = -dt / 2`` (the ballistic update: a follower's
    acceleration error ``e`` moves its speed by ``e dt`` and its position by
    ``e dt^2 / 2``; see :func:`carpool.models.carfollowing_spec`).

    Parameters
    ----------
    second, base, loading, offset
        Covariate names: the second observation ``z``, its ``base``, the loading ``l`` and
        the ``offset`` subtracted from the mean.
    sigma, sigma_first, sigma_second
        Positive priors (learned) or fixed positive numbers.
    scale_covariate
        The covariate ``c`` multiplying ``sigma``, or ``None`` (1).
    lower
        Left-censoring bound of ``y``, or ``None``.
    """

    second: str
    base: str
    loading: str
    offset: str
    sigma: Prior | float = HalfNormal(1.0)
    sigma_first: Prior | float = HalfNormal(0.1)
    sigma_second: Prior | float = HalfNormal(0.1)
    scale_covariate: str | None = None
    lower: float | None = None
    kind: ClassVar[str] = "joint_gaussian"

    def __post_init__(self) -> None:
        for value in (self.sigma, self.sigma_first, self.sigma_second):
            _noise_value(value)

    def _noise(self) -> dict[str, Prior | float]:
        return {"sigma": self.sigma, "sigma_first": self.sigma_first,
                "sigma_second": self.sigma_second}

    def noise_priors(self) -> dict[str, Prior]:
        return {k: v for k, v in self._noise().items() if isinstance(v, Prior)}

    def fixed_noise(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._noise().items() if not isinstance(v, Prior)}

    def _c(self, covariates: Mapping[str, Array]) -> Array:
        return 1.0 if self.scale_covariate is None else covariates[self.scale_covariate]

    def first_scale(self, noise: Mapping[str, Array], covariates: Mapping[str, Array]
                    ) -> Array:
        """The marginal sd of ``y``: ``sqrt(sigma^2 c^2 + sigma_first^2)``."""
        shared = noise["sigma"] * self._c(covariates)
        return jnp.sqrt(shared * shared + noise["sigma_first"] ** 2)

    def log_prob(self, y, mean, noise, covariates):
        shared = noise["sigma"] * self._c(covariates)
        load = covariates[self.loading]
        var_y = shared * shared + noise["sigma_first"] ** 2
        cov = load * shared * shared
        r_y = y - mean
        r_z = covariates[self.second] - (covariates[self.base]
                                         + load * (mean - covariates[self.offset]))
        lp_y = jstats.norm.logpdf(r_y, 0.0, jnp.sqrt(var_y))
        # var_z - cov^2 / var_y without its cancellation (in float32 it loses every digit
        # when sigma_first << sigma c)
        cond_var = noise["sigma_second"] ** 2 + (load * shared) ** 2 * (
            noise["sigma_first"] ** 2 / var_y)
        lp_z = jstats.norm.logpdf(r_z, cov / var_y * r_y, jnp.sqrt(cond_var))
        if self.lower is None:
            return lp_y + lp_z
        from jax.scipy.special import log_ndtr

        lp_y_c = log_ndtr((self.lower - mean) / jnp.sqrt(var_y))
        return jnp.where(y <= self.lower, lp_y_c, lp_y + lp_z)

    def distribution(self, mean, noise, covariates, censored_at=None):
        return _joint_distribution(self, mean, noise, covariates)

    def observed_terms(self, y, mask, covariates):
        """``weight`` (1 at the exactly observed cells inside the mask, else 0), ``count``,
        the covariates the density reads (``c``, ``load``, ``z_base``: the second
        observation minus its base plus ``load * offset``), and where censored
        ``censored`` (:func:`censored_positions`) and ``c_censored``. Padding cells get
        harmless values (``c = 1``)."""
        y = np.asarray(y, dtype=float)
        inside, exact = _observed_cells(y, mask, self.lower)

        def cov(name: str) -> np.ndarray:
            return np.broadcast_to(np.asarray(covariates[name], float), y.shape)

        c = np.ones(y.shape) if self.scale_covariate is None else cov(self.scale_covariate)
        c = np.where(inside, c, 1.0)
        load = np.where(inside, cov(self.loading), 0.0)
        z_base = cov(self.second) - cov(self.base) + load * cov(self.offset)
        terms: dict[str, Any] = {"weight": exact.astype(float), "count": float(exact.sum()),
                                 "c": c, "load": load,
                                 "z_base": np.where(inside, z_base, 0.0)}
        return {**terms, **_censored_terms(y, mask, self.lower, c)}

    def summed_log_prob(self, terms, y, mean, noise):
        """:meth:`log_prob` summed over the exactly observed cells, the censored term at the
        censored cells only (its ``log Phi`` costs several normal densities per cell).
        Equal to the masked sum of :meth:`log_prob` up to float rounding (tested)."""
        shared = noise["sigma"] * terms["c"]
        var_y = shared * shared + noise["sigma_first"] ** 2
        load = terms["load"]
        r_y = y - mean
        r_z = terms["z_base"] - load * mean
        cond_var = noise["sigma_second"] ** 2 + (load * shared) ** 2 * (
            noise["sigma_first"] ** 2 / var_y)
        d = r_z - load * shared * shared / var_y * r_y
        per_cell = r_y * r_y / var_y + jnp.log(var_y) + d * d / cond_var + jnp.log(cond_var)
        total = -0.5 * jnp.sum(terms["weight"] * per_cell) - terms["count"] * jnp.log(
            2 * jnp.pi)
        if self.lower is None:
            return total
        from jax.scipy.special import log_ndtr

        positions, valid = terms["censored"]
        shape = jnp.shape(r_y)
        mean_c = jnp.broadcast_to(mean, shape).reshape(-1)[positions]
        scale_c = jnp.sqrt((noise["sigma"] * terms["c_censored"]) ** 2
                           + noise["sigma_first"] ** 2)
        return total + jnp.sum(valid * log_ndtr((self.lower - mean_c) / scale_c))

    def to_dict(self) -> dict[str, Any]:
        def value(v: Prior | float) -> Any:
            return v.to_dict() if isinstance(v, Prior) else float(v)

        return {"kind": self.kind, "second": self.second, "base": self.base,
                "loading": self.loading, "offset": self.offset,
                **{k: value(v) for k, v in self._noise().items()},
                "scale_covariate": self.scale_covariate, "lower": self.lower}


def likelihood_from_dict(d: Mapping[str, Any]) -> AbstractLikelihood:
    """Inverse of ``to_dict`` for the built-in likelihoods."""
    def value(v: Any) -> Prior | float:
        return Prior.from_dict(v) if isinstance(v, Mapping) else float(v)

    sigma = value(d["sigma"])
    if d["kind"] == "joint_gaussian":
        return JointGaussian(d["second"], d["base"], d["loading"], d["offset"], sigma,
                             value(d["sigma_first"]), value(d["sigma_second"]),
                             d.get("scale_covariate"), d.get("lower"))
    if d["kind"] == "gaussian":
        return Gaussian(sigma, d.get("scale_covariate"), d.get("lower"))
    if d["kind"] == "student_t":
        return StudentT(float(d["df"]), sigma, d.get("scale_covariate"))
    raise InputError(f"unknown likelihood kind {d['kind']!r}")
