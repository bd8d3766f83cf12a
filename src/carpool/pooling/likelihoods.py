"""Observation models: how outcomes scatter around the mean function.

A likelihood declares its learned noise parameters (each with a positive-support prior, or a
fixed value) and gives both a NumPyro distribution (for sampling) and a pure log-density (for
curvature checks and pointwise log-likelihoods). The observation scale may be multiplied by a
covariate, e.g. ``sd = sigma * dt`` for one-step speed predictions, or given per observation
(``sigma = 1`` fixed and ``scale_covariate = "sigma"`` for eight schools).

The generalised linear families (:class:`Bernoulli`, :class:`Binomial`, :class:`Poisson`,
:class:`NegativeBinomial`) take the model's *linear predictor* ``eta`` as their ``mean``
argument and apply their inverse link themselves (logit or log), so a mean function stays
an unconstrained sum of terms whatever the observation family.
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
from carpool.priors import HalfNormal, LogNormal, Prior

__all__ = ["AbstractLikelihood", "Bernoulli", "Binomial", "Gaussian", "JointGaussian",
           "NegativeBinomial", "Poisson", "StudentT", "censored_positions",
           "likelihood_from_dict"]

Array = Any


class AbstractLikelihood(ABC):
    """Interface every likelihood implements."""

    kind: ClassVar[str]
    #: The link from the expected observation to the ``mean`` argument (the model's mean
    #: function): ``"identity"`` for the Gaussian family, ``"logit"`` / ``"log"`` for the
    #: generalised linear families, whose ``mean`` is a linear predictor.
    link: ClassVar[str] = "identity"

    def check_response(self, y: np.ndarray, covariates: Mapping[str, np.ndarray]
                       ) -> str | None:
        """A one-line description of the first observation this likelihood cannot score
        (naming its row in ``y``), or ``None`` when every one is valid.

        ``y`` is (n,) and ``covariates`` maps names to (n,) arrays (those the likelihood
        reads, e.g. :class:`Binomial`'s trials). Callers raise it as an ``InputError`` with
        their own context (the group, the file). Continuous families accept any finite
        value (the default)."""
        return None

    def needed_covariates(self) -> tuple[str, ...]:
        """Names of the covariates the likelihood itself reads (beside the mean function's):
        a scale covariate, :class:`Binomial`'s trials. A model's ``covariates`` must
        include them."""
        name = getattr(self, "scale_covariate", None)
        return () if name is None else (name,)

    def expected_response(self, mean: Array, noise: Mapping[str, Array],
                          covariates: Mapping[str, Array]) -> Array:
        """The expected observation ``E[y]`` given ``mean`` (the mean function's value):
        ``mean`` itself for identity-link families (ignoring any censoring), the inverse
        link (times the trials for :class:`Binomial`) for the generalised linear ones."""
        return mean

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

    def needed_covariates(self) -> tuple[str, ...]:
        return (self.second, self.base, self.loading, self.offset,
                *(() if self.scale_covariate is None else (self.scale_covariate,)))

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


# --- generalised linear families: ``mean`` is the linear predictor ``eta`` -------------------


def _log_sigmoid(x: Array) -> Array:
    import jax

    return jax.nn.log_sigmoid(x)


def _bernoulli_logpmf(y: Array, eta: Array) -> Array:
    """``log p(y | eta)`` of a Bernoulli with log odds ``eta``: ``log sigmoid(eta)`` at
    ``y = 1``, ``log sigmoid(-eta)`` at 0 (finite for any ``eta``; ``log(sigmoid(eta))``
    is ``-inf`` below ``eta ~ -88`` in float32)."""
    return y * _log_sigmoid(eta) + (1.0 - y) * _log_sigmoid(-eta)


def _binomial_logpmf(y: Array, eta: Array, trials: Array) -> Array:
    """``log p(y | eta, n)`` of a Binomial with ``n = trials`` and log odds ``eta``,
    including ``log C(n, y)``."""
    from jax.scipy.special import gammaln

    return (gammaln(trials + 1.0) - gammaln(y + 1.0) - gammaln(trials - y + 1.0)
            + y * _log_sigmoid(eta) + (trials - y) * _log_sigmoid(-eta))


def _poisson_logpmf(y: Array, eta: Array) -> Array:
    """``log p(y | eta)`` of a Poisson with log rate ``eta``: ``y eta - exp(eta) - log y!``
    (no ``log(exp(eta))``, which is ``-inf`` where ``exp`` underflows)."""
    from jax.scipy.special import gammaln

    return y * eta - jnp.exp(eta) - gammaln(y + 1.0)


def _negative_binomial_logpmf(y: Array, eta: Array, phi: Array) -> Array:
    """``log p(y | eta, phi)`` of a negative binomial with mean ``mu = exp(eta)`` and
    concentration ``phi``::

        log G(y + phi) - log G(phi) - log y! + phi log(phi / (phi + mu))
                                            + y log(mu / (phi + mu))

    with ``a = eta - log phi``: ``log(phi / (phi + mu)) = -softplus(a)`` and
    ``log(mu / (phi + mu)) = a - softplus(a)``, exact in log space for any ``eta`` (the
    direct form loses ``phi log(...)`` to cancellation once ``phi >> mu``)."""
    import jax
    from jax.scipy.special import gammaln

    a = eta - jnp.log(phi)
    sp = jax.nn.softplus(a)
    return (gammaln(y + phi) - gammaln(phi) - gammaln(y + 1.0) - phi * sp + y * (a - sp))


_GLM_CLASSES: dict[str, Any] = {}


def _glm_distribution(name: str) -> Any:
    """NumPyro distributions parameterised by the linear predictor, built once (lazily, so
    importing this module does not import NumPyro): ``"poisson"`` (``PoissonLogRate``) and
    ``"negative_binomial"`` (``NegativeBinomialLogMean``). They sample as NumPyro's
    Poisson / NegativeBinomial2 do and score with the log-space densities above, so their
    ``log_prob`` equals the likelihood's ``log_prob`` exactly."""
    if not _GLM_CLASSES:
        import numpyro.distributions as dist

        class PoissonLogRate(dist.Poisson):
            """``Poisson(exp(log_rate))`` scored in log space."""

            pytree_data_fields = ("log_rate",)

            def __init__(self, log_rate, *, validate_args=None):
                self.log_rate = log_rate
                super().__init__(jnp.exp(log_rate), validate_args=validate_args)

            def log_prob(self, value):
                return _poisson_logpmf(value, self.log_rate)

        class NegativeBinomialLogMean(dist.NegativeBinomial2):
            """``NegativeBinomial2(exp(log_mean), concentration)`` scored in log space."""

            pytree_data_fields = ("log_mean",)

            def __init__(self, log_mean, concentration, *, validate_args=None):
                self.log_mean = log_mean
                super().__init__(jnp.exp(log_mean), concentration,
                                 validate_args=validate_args)

            def log_prob(self, value):
                return _negative_binomial_logpmf(value, self.log_mean, self.concentration)

        _GLM_CLASSES.update(poisson=PoissonLogRate, negative_binomial=NegativeBinomialLogMean)
    return _GLM_CLASSES[name]


def _first_bad_row(what: str, y: np.ndarray, bad: np.ndarray) -> str | None:
    """``"<what>; row i has <y[i]>"`` for the first ``i`` where ``bad``, else ``None``."""
    rows = np.flatnonzero(bad)
    if rows.size == 0:
        return None
    i = int(rows[0])
    return f"{what}; row {i} has {float(y[i]):g}"


def _integer_valued(x: np.ndarray) -> np.ndarray:
    """Finite whole numbers (NaN and infinities are not)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & (x == np.round(x))


class _DiscreteFamily(AbstractLikelihood):
    """What the generalised linear families share: no per-observation scale covariate and
    no censoring (read by code written for the Gaussian family), and by default no noise
    parameters (the variance follows from the mean)."""

    scale_covariate: ClassVar[str | None] = None
    lower: ClassVar[float | None] = None

    def noise_priors(self) -> dict[str, Prior]:
        return {}

    def fixed_noise(self) -> dict[str, float]:
        return {}

    def _check_censoring(self, censored_at: Any) -> None:
        if censored_at is not None:
            raise InputError(f"the {type(self).__name__} likelihood is not censored")


def _as_response(y: Any) -> np.ndarray:
    return np.asarray(y, dtype=float).ravel()


@dataclass(frozen=True)
class Bernoulli(_DiscreteFamily):
    """``y ~ Bernoulli(sigmoid(eta))``: one yes / no outcome per observation, logit link.

    ``mean`` is the linear predictor ``eta``, the log odds of ``y = 1`` (a coefficient is a
    log odds ratio per unit of its covariate). There are no noise parameters: the variance
    ``p (1 - p)`` follows from ``p = sigmoid(eta)``. ``y`` must be 0 or 1 (unitless).
    """

    kind: ClassVar[str] = "bernoulli"
    link: ClassVar[str] = "logit"

    def log_prob(self, y, mean, noise, covariates):
        return _bernoulli_logpmf(y, mean)

    def distribution(self, mean, noise, covariates, censored_at=None):
        import numpyro.distributions as dist

        self._check_censoring(censored_at)
        return dist.BernoulliLogits(mean)

    def expected_response(self, mean, noise, covariates):
        import jax

        return jax.nn.sigmoid(mean)

    def check_response(self, y, covariates):
        y = _as_response(y)
        return _first_bad_row("a Bernoulli response must be 0 or 1", y,
                              ~((y == 0) | (y == 1)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}


@dataclass(frozen=True)
class Binomial(_DiscreteFamily):
    """``y ~ Binomial(n, sigmoid(eta))`` with ``n = covariates[trials_covariate]``: the
    number of successes in ``n`` trials per observation, logit link.

    ``mean`` is the linear predictor ``eta``, the log odds of success of each trial (a
    coefficient is a log odds ratio per unit of its covariate). No noise parameters: the
    variance ``n p (1 - p)`` follows from ``p = sigmoid(eta)``. :class:`Bernoulli` is the
    case ``n = 1``.

    Parameters
    ----------
    trials_covariate
        Name of the covariate holding each observation's number of trials ``n`` (a positive
        whole number, count). ``y`` must be a whole number in ``0 .. n`` (count).
    """

    trials_covariate: str = "trials"
    kind: ClassVar[str] = "binomial"
    link: ClassVar[str] = "logit"

    def __post_init__(self) -> None:
        if not isinstance(self.trials_covariate, str) or not self.trials_covariate:
            raise InputError(f"Binomial trials_covariate must be a covariate name, got "
                             f"{self.trials_covariate!r}")

    def needed_covariates(self) -> tuple[str, ...]:
        return (self.trials_covariate,)

    def log_prob(self, y, mean, noise, covariates):
        return _binomial_logpmf(y, mean, covariates[self.trials_covariate])

    def distribution(self, mean, noise, covariates, censored_at=None):
        import numpyro.distributions as dist

        self._check_censoring(censored_at)
        # whole numbers as integers: NumPyro's binomial sampler indexes a table by them
        trials = jnp.round(jnp.asarray(covariates[self.trials_covariate])).astype(jnp.int32)
        return dist.BinomialLogits(mean, total_count=trials)

    def expected_response(self, mean, noise, covariates):
        import jax

        return covariates[self.trials_covariate] * jax.nn.sigmoid(mean)

    def check_response(self, y, covariates):
        y = _as_response(y)
        if self.trials_covariate not in covariates:
            return (f"a Binomial response needs the number of trials per row in covariate "
                    f"{self.trials_covariate!r}, which the data lack")
        n = np.broadcast_to(_as_response(covariates[self.trials_covariate]), y.shape)
        problem = _first_bad_row(
            f"the Binomial trials ({self.trials_covariate!r}) must be positive whole "
            f"numbers", n, ~(_integer_valued(n) & (n >= 1)))
        if problem is not None:
            return problem
        return _first_bad_row(
            f"a Binomial response must be a whole number between 0 and the trials "
            f"({self.trials_covariate!r})", y, ~(_integer_valued(y) & (y >= 0) & (y <= n)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "trials_covariate": self.trials_covariate}


@dataclass(frozen=True)
class Poisson(_DiscreteFamily):
    """``y ~ Poisson(exp(eta))``: a count per observation, log link.

    ``mean`` is the linear predictor ``eta``, the log of the expected count (a coefficient
    is a log rate ratio per unit of its covariate; an exposure enters as an offset
    ``log(exposure)`` in the mean function). No noise parameters: the variance equals the
    mean, ``exp(eta)``; for counts that scatter more, use :class:`NegativeBinomial`. ``y``
    must be a non-negative whole number (count).
    """

    kind: ClassVar[str] = "poisson"
    link: ClassVar[str] = "log"

    def log_prob(self, y, mean, noise, covariates):
        return _poisson_logpmf(y, mean)

    def distribution(self, mean, noise, covariates, censored_at=None):
        self._check_censoring(censored_at)
        return _glm_distribution("poisson")(mean)

    def expected_response(self, mean, noise, covariates):
        return jnp.exp(mean)

    def check_response(self, y, covariates):
        y = _as_response(y)
        return _first_bad_row("a Poisson response must be a non-negative integer count", y,
                              ~(_integer_valued(y) & (y >= 0)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}


@dataclass(frozen=True)
class NegativeBinomial(_DiscreteFamily):
    """``y ~ NegativeBinomial(mu = exp(eta), phi)``: an overdispersed count, log link.

    ``mean`` is the linear predictor ``eta``, the log of the expected count ``mu``. The
    variance is ``mu + mu^2 / phi``: a Poisson mixed over a gamma-distributed rate whose
    coefficient of variation is ``1 / sqrt(phi)``. ``phi`` is in counts: the mean at which
    the extra-Poisson variance equals the Poisson variance; as ``phi -> inf`` the family
    tends to :class:`Poisson`. ``y`` must be a non-negative whole number (count).

    Parameters
    ----------
    phi
        The concentration: a positive prior (learned, the noise parameter ``"phi"``) or a
        fixed positive number. The default ``LogNormal(2, 2)`` (median ``e^2 ~ 7.4``, 95%
        within 0.15 .. 370) is a log-normal prior on the mixing coefficient of variation
        ``1 / sqrt(phi)`` as well (``LogNormal(-1, 1)``: median 0.37, 95% within
        0.05 .. 2.6), i.e. from nearly Poisson counts to heavily overdispersed ones, and
        it is a plain normal on ``log phi``, the coordinate NUTS samples. Why not
        ``Exponential(1)`` on ``phi`` (rstanarm's default): it puts 99.3% of its mass
        below ``phi = 5``, so counts of mean 20 with little overdispersion would be pulled
        to a variance several times too large; and a flat-tailed prior (``HalfCauchy``)
        lets the sampler wander to huge ``phi`` where near-Poisson data cannot tell them
        apart.
    """

    phi: Prior | float = LogNormal(2.0, 2.0)
    kind: ClassVar[str] = "negative_binomial"
    link: ClassVar[str] = "log"

    def __post_init__(self) -> None:
        _noise_value(self.phi)

    def noise_priors(self) -> dict[str, Prior]:
        prior, _ = _noise_value(self.phi)
        return {} if prior is None else {"phi": prior}

    def fixed_noise(self) -> dict[str, float]:
        _, value = _noise_value(self.phi)
        return {} if value is None else {"phi": value}

    def log_prob(self, y, mean, noise, covariates):
        return _negative_binomial_logpmf(y, mean, noise["phi"])

    def distribution(self, mean, noise, covariates, censored_at=None):
        self._check_censoring(censored_at)
        return _glm_distribution("negative_binomial")(mean, noise["phi"])

    def expected_response(self, mean, noise, covariates):
        return jnp.exp(mean)

    def check_response(self, y, covariates):
        y = _as_response(y)
        return _first_bad_row("a negative binomial response must be a non-negative integer "
                              "count", y, ~(_integer_valued(y) & (y >= 0)))

    def to_dict(self) -> dict[str, Any]:
        phi = self.phi.to_dict() if isinstance(self.phi, Prior) else float(self.phi)
        return {"kind": self.kind, "phi": phi}


def likelihood_from_dict(d: Mapping[str, Any]) -> AbstractLikelihood:
    """Inverse of ``to_dict`` for the built-in likelihoods."""
    def value(v: Any) -> Prior | float:
        return Prior.from_dict(v) if isinstance(v, Mapping) else float(v)

    if d["kind"] == "bernoulli":
        return Bernoulli()
    if d["kind"] == "binomial":
        return Binomial(str(d.get("trials_covariate", "trials")))
    if d["kind"] == "poisson":
        return Poisson()
    if d["kind"] == "negative_binomial":
        return NegativeBinomial(value(d["phi"]))
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
