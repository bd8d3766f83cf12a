"""Residual processes within each group's series: i.i.d., AR(p), Gaussian process.

A model's observation is ``y_t = mean_t + r_t * c_t`` with ``c_t`` the likelihood's scale
covariate (``dt`` for car-following: ``r_t`` is then the acceleration error in m/s^2, since
``v(t + dt) = v(t) + (acc_t + r_t) dt``). The residual process says how the ``r_t`` of one
group's series depend on each other; series of different groups are independent, and a
process never crosses a group boundary.

Every process reduces, given the residuals of a series, to a conditional mean and standard
deviation of each ``r_t`` given the series' own past (the prediction-error decomposition), so
the likelihood stays ``y_t ~ Normal(mean_t + m_t c_t, s_t c_t)`` (left-censored where the
model censors) and every consumer (NUTS, pointwise log-likelihoods, LOO, held-out scores)
uses one code path. A censored step (a stop, ``y_t = 0``) enters the later steps' past as
the residual that brings the speed exactly to 0, a documented approximation.

Sites (NumPyro, sampled by :func:`carpool.pooling.build_model`):

========================= ===================== ===========================================
process / pooling         site                  shape / meaning
========================= ===================== ===========================================
AR ``shared``             ``ar_u``              (p,) latent, ``pacf = tanh(ar_u)``
AR ``class``              ``ar_u``              (K, p), one vector per level (e.g. car/truck)
AR ``driver``, unpooled   ``ar_u``              (G, p), independent per group
AR ``driver``, hierarch.  ``ar_mu``, ``ar_tau``  (p,), (p,) population of the latent pacf
                          ``ar_eta``            (G, p) non-centred group innovations
AR (all)                  ``ar_pacf``,          deterministic: partial autocorrelations and
                          ``ar_phi``            AR coefficients (shape of ``ar_u``)
GP                        ``gp_lengthscale``    () s
                          ``gp_scale``          () m/s^2 (the signal scale)
========================= ===================== ===========================================
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from carpool.errors import InputError
from carpool.priors import HalfNormal, LogNormal, Prior
from carpool.residuals.ar import ar_conditional, ar_forward, pacf_to_phi
from carpool.residuals.gp import gp_conditional, gp_sliding_conditional, se_covariance

__all__ = ["ResidualProcess", "IID", "AR", "GP", "AR_POOLING", "GP_METHODS", "MAX_AR_ORDER",
           "parse_residual", "residual_from_dict"]

AR_POOLING = ("shared", "class", "driver")
GP_METHODS = ("sliding", "window")
MAX_AR_ORDER = 8


class ResidualProcess(ABC):
    """Interface of the residual processes."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def name(self) -> str:
        """Short name as the user writes it (``"iid"``, ``"ar2"``, ``"gp"``)."""

    @property
    def is_dynamic(self) -> bool:
        return True

    @abstractmethod
    def sample_params(self, *, num_groups: int, level_index: Any, num_levels: int,
                      pooling: str) -> dict[str, Any]:
        """Sample this process's NumPyro sites; returns what :meth:`conditional` needs."""

    @abstractmethod
    def conditional(self, r: Any, params: Mapping[str, Any], sigma: Any, dt: Any
                    ) -> tuple[Any, Any]:
        """Conditional (mean, sd) of every ``r_t`` (G, T) given its past; see module doc."""

    @abstractmethod
    def simulate(self, white: Any, params: Mapping[str, Any], sigma: Any, dt: Any) -> Any:
        """Residual series (G, T) drawn from the process (from its stationary start) given
        standard normals ``white`` (G, T): the prior / posterior predictive draw."""

    @abstractmethod
    def map_x0(self) -> np.ndarray:
        """Start (prior centre) of the unconstrained shared parameters for a MAP search."""

    @abstractmethod
    def map_params(self, x: Any) -> tuple[dict[str, Any], Any]:
        """Shared parameters from unconstrained ``x`` and their log prior (with Jacobian):
        the pooled MAP behind the automatic centring (:mod:`carpool.pooling.centring`)."""

    @abstractmethod
    def posterior_variables(self) -> list[str]:
        """Names of the sampled or deterministic sites that go into the posterior."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    def one_step(self, y: Any, mean: Any, scale: Any, params: Mapping[str, Any], sigma: Any,
                 dt: Any) -> tuple[Any, Any]:
        """One-step predictive mean and sd of ``y``: ``(mean + m c, s)`` where ``(m, s)`` is
        :meth:`conditional` of the residuals ``r = (y - mean) / c`` and ``c = scale`` the
        likelihood's scale covariate (or 1). ``y``, ``mean``: (G, T), or one row (T,)."""
        is_row = jnp.ndim(y) == 1
        r = (y - mean) / scale
        m, s = self.conditional(r[None, :] if is_row else r, params, sigma, dt)
        if is_row:
            m, s = m[0], s[0]
        return mean + m * scale, s

    def check(self, pooling: str, has_levels: bool) -> None:  # noqa: B027 (optional hook)
        """Raise ``ValueError`` for a pooling configuration this process cannot use."""


@dataclass(frozen=True)
class IID(ResidualProcess):
    """Independent residuals: the likelihood's own noise (the default)."""

    kind: ClassVar[str] = "iid"

    @property
    def name(self) -> str:
        return "iid"

    @property
    def is_dynamic(self) -> bool:
        return False

    def sample_params(self, **_: Any) -> dict[str, Any]:
        return {}

    def conditional(self, r, params, sigma, dt):
        return jnp.zeros_like(r), jnp.broadcast_to(sigma, r.shape)

    def simulate(self, white, params, sigma, dt):
        return sigma * white

    def map_x0(self) -> np.ndarray:
        return np.zeros(0)

    def map_params(self, x):
        return {}, 0.0

    def posterior_variables(self) -> list[str]:
        return []

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "iid"}


@dataclass(frozen=True)
class AR(ResidualProcess):
    """AR(p) residuals within each series, stationary by construction.

    Parameters
    ----------
    order
        ``p``, 1 to :data:`MAX_AR_ORDER`.
    pooling
        Who shares the coefficients: ``"shared"`` (one vector for all groups), ``"class"``
        (one per level, e.g. car / truck; needs ``level=``), or ``"driver"`` (pooled like
        the model's other group parameters: shared in a pooled fit, independent per group
        in an unpooled one, drawn from a learned population in a hierarchical one).
    first_scale, higher_scale
        Prior scales of the latent partial autocorrelations ``atanh(kappa_k)``: lag 1
        ``Normal(0, first_scale)`` (1.5: 95% of the mass within kappa_1 in +-0.995, since
        acceleration errors sampled at 5-10 Hz are often strongly autocorrelated), higher
        lags ``Normal(0, higher_scale)`` (0.5: mostly within +-0.76, shrinking the higher
        orders towards an AR(1)).
    tau
        Prior of the population scale of the latent partial autocorrelations
        (``pooling="driver"`` in a hierarchical fit).
    """

    order: int = 1
    pooling: str = "shared"
    first_scale: float = 1.5
    higher_scale: float = 0.5
    tau: Prior = HalfNormal(0.5)
    kind: ClassVar[str] = "ar"

    def __post_init__(self) -> None:
        if not (isinstance(self.order, int | np.integer) and 1 <= self.order <= MAX_AR_ORDER):
            raise InputError(f"AR order must be an integer 1..{MAX_AR_ORDER}, got {self.order!r}")
        if self.pooling not in AR_POOLING:
            raise InputError(f"unknown AR pooling {self.pooling!r}; choose one of "
                             f"{list(AR_POOLING)}")
        if not (self.first_scale > 0 and self.higher_scale > 0):
            raise InputError("AR prior scales must be positive")
        object.__setattr__(self, "order", int(self.order))

    @property
    def name(self) -> str:
        return f"ar{self.order}"

    def check(self, pooling: str, has_levels: bool) -> None:
        if self.pooling == "class" and not has_levels:
            raise InputError("per-class AR coefficients (ar_pooling='class') need a level "
                             "column (level='class')")

    def _prior(self) -> Any:
        import numpyro.distributions as dist

        scales = jnp.asarray([self.first_scale] + [self.higher_scale] * (self.order - 1))
        return dist.Normal(0.0, scales)

    def sample_params(self, *, num_groups, level_index, num_levels, pooling):
        import numpyro
        import numpyro.distributions as dist

        p, prior = self.order, self._prior()
        if self.pooling == "shared" or (self.pooling == "driver" and pooling == "pooled"):
            u = numpyro.sample("ar_u", prior.to_event(1))
            kappa = jnp.tanh(u)
            per_group = kappa
        elif self.pooling == "class":
            u = numpyro.sample("ar_u", prior.expand((num_levels, p)).to_event(2))
            kappa = jnp.tanh(u)
            per_group = kappa[level_index]
        elif pooling == "unpooled":
            u = numpyro.sample("ar_u", prior.expand((num_groups, p)).to_event(2))
            kappa = per_group = jnp.tanh(u)
        else:
            mu = numpyro.sample("ar_mu", prior.to_event(1))
            tau = numpyro.sample("ar_tau", self.tau.to_numpyro().expand((p,)).to_event(1))
            eta = numpyro.sample("ar_eta", dist.Normal(0.0, 1.0).expand((num_groups, p))
                                 .to_event(2))
            kappa = per_group = jnp.tanh(mu + tau * eta)
        numpyro.deterministic("ar_pacf", kappa)
        numpyro.deterministic("ar_phi", pacf_to_phi(kappa))
        return {"kappa": per_group}

    def conditional(self, r, params, sigma, dt):
        return ar_conditional(r, params["kappa"], sigma)

    def simulate(self, white, params, sigma, dt):
        G, _ = white.shape
        kappa = jnp.broadcast_to(params["kappa"], (G, self.order))
        history = jnp.zeros((G, self.order), white.dtype)
        return ar_forward(white.T, kappa, sigma, history, 0).T

    def map_x0(self) -> np.ndarray:
        return np.zeros(self.order)

    def map_params(self, x):
        return {"kappa": jnp.tanh(x)}, jnp.sum(self._prior().log_prob(x))

    def posterior_variables(self) -> list[str]:
        extra = ["ar_mu", "ar_tau"] if self.pooling == "driver" else []
        return ["ar_pacf", "ar_phi", *extra]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "ar", "order": self.order, "pooling": self.pooling,
                "first_scale": float(self.first_scale),
                "higher_scale": float(self.higher_scale), "tau": self.tau.to_dict()}


@dataclass(frozen=True)
class GP(ResidualProcess):
    """Squared-exponential GP residuals plus white noise within each series.

    Parameters
    ----------
    window_s
        Seconds of the series each likelihood term sees (see :mod:`carpool.residuals.gp`).
        ``method="sliding"``: each residual is conditioned on the previous ``window_s``
        seconds (nearest-neighbour / Vecchia approximation of the whole-series GP).
        ``method="window"``: the series is cut into independent windows of ``window_s``
        seconds, as in the reference. ``None`` = the whole series (exact; cost grows with
        the cube of the longest series).
    method
        ``"sliding"`` (default) or ``"window"``.
    lengthscale
        Prior of the length scale, s: LogNormal(log 2, 0.75), 95% within 0.46-8.7 s
        (below one time step the GP is indistinguishable from the white noise; above the
        window it is indistinguishable from the mean function).
    scale
        Prior of the GP's signal scale, m/s^2 (HalfNormal(0.5)).
    """

    window_s: float | None = 10.0
    lengthscale: Prior = LogNormal(math.log(2.0), 0.75)
    scale: Prior = HalfNormal(0.5)
    method: str = "sliding"
    kind: ClassVar[str] = "gp"

    def __post_init__(self) -> None:
        if self.window_s is not None and not self.window_s > 0:
            raise InputError(f"GP window must be positive seconds, got {self.window_s}")
        if self.method not in GP_METHODS:
            raise InputError(f"unknown GP method {self.method!r}; choose one of "
                             f"{list(GP_METHODS)}")
        for prior in (self.lengthscale, self.scale):
            if prior.support != "positive":
                raise InputError(f"GP priors need positive support, got {prior}")

    @property
    def name(self) -> str:
        return "gp"

    def window_steps(self, dt: float, num_steps: int) -> int:
        """The window in steps for time step ``dt`` (s) and series up to ``num_steps``:
        the window length (``"window"``) or the number of predecessors (``"sliding"``)."""
        longest = num_steps if self.method == "window" else max(num_steps - 1, 1)
        if self.window_s is None:
            return int(longest)
        return int(max(1 if self.method == "sliding" else 2,
                       min(longest, round(self.window_s / dt))))

    def sample_params(self, **_: Any) -> dict[str, Any]:
        import numpyro

        return {"lengthscale": numpyro.sample("gp_lengthscale", self.lengthscale.to_numpyro()),
                "scale": numpyro.sample("gp_scale", self.scale.to_numpyro())}

    def conditional(self, r, params, sigma, dt):
        dt_value, window = dt
        fn = gp_sliding_conditional if self.method == "sliding" else gp_conditional
        return fn(r, dt_value, params["lengthscale"], params["scale"], sigma, window)

    def simulate(self, white, params, sigma, dt):
        dt_value, window = dt
        if self.method == "sliding":  # draws from the same nearest-neighbour factorisation
            from carpool.residuals.gp import sliding_coefficients

            coefficients, sd = sliding_coefficients(window, dt_value, params["lengthscale"],
                                                    params["scale"], sigma)
            return _filter_forward(white, coefficients, sd, window)
        G, T = white.shape
        num_windows = -(-T // window)
        w = jnp.concatenate([white, jnp.zeros((G, num_windows * window - T), white.dtype)], 1)
        K = se_covariance(window, dt_value, params["lengthscale"], params["scale"], sigma)
        L = jnp.linalg.cholesky(K.astype(white.dtype))  # (W, W) or (G, W, W)
        blocks = w.reshape(G, num_windows, window)
        r = (jnp.einsum("ij,gnj->gni", L, blocks) if L.ndim == 2
             else jnp.einsum("gij,gnj->gni", L, blocks))
        return r.reshape(G, -1)[:, :T]

    def map_x0(self) -> np.ndarray:
        return np.log([self.lengthscale.median(), self.scale.median()])

    def map_params(self, x):
        ell, scale = jnp.exp(x[0]), jnp.exp(x[1])
        lp = (self.lengthscale.to_numpyro().log_prob(ell) + x[0]
              + self.scale.to_numpyro().log_prob(scale) + x[1])
        return {"lengthscale": ell, "scale": scale}, lp

    def posterior_variables(self) -> list[str]:
        return ["gp_lengthscale", "gp_scale"]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "gp", "window_s": None if self.window_s is None else
                float(self.window_s), "lengthscale": self.lengthscale.to_dict(),
                "scale": self.scale.to_dict(), "method": self.method}


def _filter_forward(white: Any, coefficients: Any, sd: Any, m: int) -> Any:
    """Series (G, T) from the lag filter ``r_t = sum_l C[k_t, l] r_{t-l} + sd[k_t] w_t``,
    ``k_t = min(t, m)``; ``coefficients`` (m+1, m) or (G, m+1, m), ``sd`` (m+1,) / (G, m+1).
    """
    import jax

    G, _ = white.shape
    coefficients = jnp.broadcast_to(coefficients, (G,) + coefficients.shape[-2:])
    sd = jnp.broadcast_to(sd, (G, sd.shape[-1]))

    def step(carry, w):
        lags, t = carry
        k = jnp.minimum(t, m)
        value = jnp.sum(coefficients[:, k, :] * lags, axis=-1) + sd[:, k] * w
        return (jnp.concatenate([value[:, None], lags[:, :-1]], axis=-1), t + 1), value

    init = (jnp.zeros((G, m), white.dtype), jnp.asarray(0))
    return jax.lax.scan(step, init, white.T)[1].T


def parse_residual(residual: str | ResidualProcess | None = "iid", *, ar: int | None = None,
                   ar_pooling: str = "shared", gp_window_s: float | None = 10.0,
                   gp_method: str = "sliding") -> ResidualProcess:
    """A residual process from the user's words.

    ``"iid"``; ``"ar1"`` .. ``"ar8"`` (or ``ar=p``); ``"gp"``. ``ar_pooling``,
    ``gp_window_s`` and ``gp_method`` configure the AR and GP processes (see :class:`AR`,
    :class:`GP`).
    """
    if isinstance(residual, ResidualProcess):
        return residual
    if ar is not None:
        if residual not in (None, "iid", f"ar{ar}", "ar"):
            raise InputError(f"ar={ar} conflicts with residual={residual!r}")
        return AR(int(ar), ar_pooling)
    name = "iid" if residual is None else str(residual).strip().lower()
    if name == "iid":
        return IID()
    if name == "gp":
        return GP(gp_window_s, method=gp_method)
    m = re.fullmatch(r"ar\(?(\d+)\)?", name)
    if m:
        return AR(int(m.group(1)), ar_pooling)
    raise InputError(f"unknown residual {residual!r}; choose 'iid', 'ar1' .. "
                     f"'ar{MAX_AR_ORDER}' or 'gp'")


def residual_from_dict(d: Mapping[str, Any] | None) -> ResidualProcess:
    """Inverse of ``to_dict``."""
    if not d or d["kind"] == "iid":
        return IID()
    if d["kind"] == "ar":
        return AR(int(d["order"]), d["pooling"], float(d["first_scale"]),
                  float(d["higher_scale"]), Prior.from_dict(d["tau"]))
    if d["kind"] == "gp":
        return GP(d["window_s"], Prior.from_dict(d["lengthscale"]),
                  Prior.from_dict(d["scale"]), d.get("method", "window"))
    raise InputError(f"unknown residual kind {d['kind']!r}")

