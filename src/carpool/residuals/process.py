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

The engine (fitting, summaries, prediction, simulation) never asks a process its kind: what
differs between processes (their time step, posterior variables and summary rows, the
parameters of fitted and new groups, simulation noise) is a method of the process here.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from carpool.errors import InputError
from carpool.priors import HalfNormal, LogNormal, Prior
from carpool.residuals.ar import ar_conditional, ar_forward, pacf_to_phi
from carpool.residuals.gp import (
    gp_conditional,
    gp_forward,
    gp_sliding_conditional,
    se_covariance,
)

__all__ = ["ResidualProcess", "IID", "AR", "GP", "AR_POOLING", "GP_HISTORY_STEPS", "GP_METHODS",
           "MAX_AR_ORDER", "SummaryBlock", "parse_residual", "residual_from_dict"]

AR_POOLING = ("shared", "class", "driver")
GP_METHODS = ("sliding", "window")
MAX_AR_ORDER = 8
#: Most past steps a GP noise draw conditions on (and the chunk length of long GP series),
#: see :meth:`GP.forward_noise`.
GP_HISTORY_STEPS = 50


class SummaryBlock(NamedTuple):
    """Summary rows of a process's parameters (:meth:`ResidualProcess.summary_blocks`).

    ``draws`` (chain, draw, k) gives one row per parameter, ``names`` and ``units`` (k each);
    (chain, draw, L, k) gives one set of k rows per entry of ``labels`` (L: levels or
    groups). ``kind`` is the rows' kind in the summary table.
    """

    kind: str
    labels: Sequence[Any] | None
    names: list[str]
    units: list[str]
    draws: np.ndarray


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

    # Hooks of the generic engine (fit, summary, prediction, simulation). The defaults are
    # those of a process without parameters and without a time step (:class:`IID`).

    @property
    def label(self) -> str:
        """Name with its configuration for titles, e.g. ``"ar2 (shared)"``."""
        return self.name

    @property
    def per_group(self) -> bool:
        """True when groups (drivers) may have parameters of their own, one summary row set
        each (rather than one shared set or one per level)."""
        return False

    def parse_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`parse_residual` that rebuild this process from its
        :attr:`name` (the options a registered spec keeps)."""
        return {}

    def step_for(self, padded_covariates: Mapping[str, Any], num_steps: int) -> Any:
        """The static ``dt`` argument of :meth:`conditional` / :meth:`simulate` /
        :meth:`one_step` for series laid out as padded rows: ``padded_covariates`` maps each
        covariate to a (G, T) array, ``num_steps`` is the longest series. ``None`` where the
        process needs no time step."""
        return None

    def row_params(self, params: Mapping[str, Any], step: Any, num_rows: int, dtype: Any
                   ) -> tuple[dict[str, Any], Any]:
        """``params`` (shared, or one entry per row) and ``step`` (:meth:`step_for`) as
        per-row arrays, each with leading axis ``num_rows``, for a function vmapped over
        padded rows; and the static (hashable) rest of the step. :meth:`row_args` inverts
        it on one row."""
        return {}, None

    def row_args(self, row: Mapping[str, Any], static: Any) -> tuple[dict[str, Any], Any]:
        """``(params, step)`` for :meth:`one_step` on one row of :meth:`row_params`."""
        return dict(row), None

    def posterior_coords(self) -> dict[str, list[Any]]:
        """Coordinates the posterior variables need beyond the fit's own (ArviZ)."""
        return {}

    def posterior_dims(self, name: str, ndim: int, group_dim: str) -> list[str] | None:
        """Dims of the posterior variable ``name`` whose value per draw has ``ndim`` axes;
        ``None`` for ArviZ's default names."""
        return None

    def per_draw(self, variables: Mapping[str, np.ndarray], *, num_groups: int,
                 level_index: np.ndarray | None) -> dict[str, np.ndarray]:
        """The parameters :meth:`conditional` needs (and derived ones) per posterior draw,
        chains stacked (S draws), from the posterior ``variables`` (name -> (chain, draw,
        ...); those of :meth:`posterior_variables` that the fit holds). Entries per group
        have shape (S, num_groups, ...) whatever the pooling (``level_index`` (G,) gives
        each group's level); shared ones (S, ...). Empty without parameters."""
        return {}

    def group_params(self, draws: Mapping[str, np.ndarray], groups: Any
                     ) -> dict[str, np.ndarray]:
        """The parameters of :meth:`conditional` from :meth:`per_draw` ``draws`` for the
        groups at positions ``groups``: an int (the group axis dropped), (G',) or, one row
        per draw, (S, G'); ``None`` for every group (the arrays of ``draws`` themselves).
        Shared entries are returned unchanged."""
        return dict(draws)

    def new_group_draws(self, draws: Mapping[str, np.ndarray],
                        variables: Mapping[str, np.ndarray], num_groups: int, *,
                        level_ids: Sequence[str], levels: Sequence[str | None] | None,
                        seed: int) -> dict[str, np.ndarray]:
        """Parameters of ``num_groups`` NEW groups per draw, in the layout of
        :meth:`group_params`: ``draws`` of :meth:`per_draw`, ``variables`` as there,
        ``levels`` each new group's level (one of ``level_ids``) where parameters depend on
        it, ``seed`` for draws from a population. Shared parameters apply to any group."""
        return dict(draws)

    def summary_blocks(self, variables: Mapping[str, np.ndarray], *,
                       group_ids: Sequence[Any], level_ids: Sequence[Any]
                       ) -> list[SummaryBlock]:
        """Rows of the fit summary for this process's parameters, from the posterior
        ``variables`` (as in :meth:`per_draw`)."""
        return []

    def history_steps(self, dt: float) -> int:
        """How many past residuals a noise draw of :meth:`forward_noise` conditions on at
        time step ``dt`` (s)."""
        return 0

    @abstractmethod
    def forward_noise(self, white: np.ndarray, params: Mapping[str, Any], sigma: np.ndarray,
                      dt: float, history: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Residual series (steps, D, N) (m/s^2 for car-following) carried forward from a
        known past, for the simulations: ``white`` standard normals (steps, D, N) for D draws
        and N series; ``params`` per draw (entries per series (D, N, ...), or (D, ...) for
        all series alike, as :meth:`group_params` gives them for one group; scalar ones
        (D,)), ``sigma`` (D,), ``dt`` the time step (s); ``history`` (D, N, H)
        the ``H = history_steps(dt)`` residuals before each series, most recent last, of
        which the last ``known`` (N,) are real (0: from the stationary distribution)."""


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

    def forward_noise(self, white, params, sigma, dt, history, known):
        return np.asarray(white) * np.asarray(sigma)[None, :, None]

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

    @property
    def label(self) -> str:
        return f"{self.name} ({self.pooling})"

    @property
    def per_group(self) -> bool:
        return self.pooling == "driver"

    def parse_options(self) -> dict[str, Any]:
        return {"ar_pooling": self.pooling}

    def row_params(self, params, step, num_rows, dtype):
        kappa = np.broadcast_to(np.asarray(params["kappa"]), (num_rows, self.order))
        return {"kappa": jnp.asarray(kappa, dtype)}, None

    def posterior_coords(self) -> dict[str, list[Any]]:
        return {"lag": list(range(1, self.order + 1))}

    def posterior_dims(self, name: str, ndim: int, group_dim: str) -> list[str] | None:
        # ar_pacf / ar_phi: (p,) shared, (K, p) per level, (G, p) per group; ar_mu, ar_tau (p,)
        lead = [] if ndim == 1 else ["level"] if self.pooling == "class" else [group_dim]
        return [*lead, "lag"]

    def per_draw(self, variables, *, num_groups, level_index):
        """``kappa`` (partial autocorrelations) and ``phi`` (coefficients), each
        (S, num_groups, p) whatever the pooling."""
        p = self.order
        out = {}
        for key, var in (("kappa", "ar_pacf"), ("phi", "ar_phi")):
            v = variables[var]
            S = v.shape[0] * v.shape[1]
            v = v.reshape((S,) + v.shape[2:])
            if v.ndim == 3 and self.pooling == "class":
                v = v[:, level_index, :]
            out[key] = np.broadcast_to(v.reshape(S, -1, p), (S, num_groups, p)).copy()
        return out

    def group_params(self, draws, groups):
        """``kappa`` (S, p) for one group, else (S, G', p)."""
        if groups is None:
            return {"kappa": draws["kappa"]}
        kappa, groups = draws["kappa"], np.asarray(groups, dtype=int)
        if groups.ndim == 2:  # each draw its own groups
            return {"kappa": kappa[np.arange(kappa.shape[0])[:, None], groups]}
        return {"kappa": kappa[:, groups]}

    def new_group_draws(self, draws, variables, num_groups, *, level_ids, levels, seed):
        """``kappa`` (S, num_groups, p). Per-class coefficients take each new group's level;
        per-driver coefficients of a hierarchical fit are drawn from their population,
        ``tanh(ar_mu + ar_tau eps)``; an unpooled fit has none (``InputError``)."""
        S, p = draws["kappa"].shape[0], self.order
        if self.pooling == "shared" or variables["ar_pacf"].ndim == 3:  # also: pooled
            return {"kappa": np.repeat(draws["kappa"][:, :1, :], num_groups, axis=1)}
        if self.pooling == "class":
            known = list(level_ids)
            levels = levels or [None] * num_groups
            if any(lv not in known for lv in levels):
                raise InputError(f"per-class AR coefficients need each new group's class, "
                                 f"one of {known}; got {levels}")
            pacf = variables["ar_pacf"].reshape(S, len(known), p)
            return {"kappa": pacf[:, [known.index(lv) for lv in levels], :]}
        if "ar_mu" not in variables:
            raise InputError("per-driver AR coefficients of an unpooled fit have no "
                             "population to draw a new driver's from")
        mu = variables["ar_mu"].reshape(S, 1, p)
        tau = variables["ar_tau"].reshape(S, 1, p)
        eps = np.random.default_rng(seed).standard_normal((S, num_groups, p))
        return {"kappa": np.tanh(mu + tau * eps)}

    def summary_blocks(self, variables, *, group_ids, level_ids):
        """Coefficients ``phi[k]`` and partial autocorrelations ``pacf[k]`` (per level or
        group where not shared); ``residual_population`` rows give the population's pacf
        ``tanh(ar_mu)``."""
        p = self.order
        names = [f"phi[{k}]" for k in range(1, p + 1)] + [f"pacf[{k}]" for k in range(1, p + 1)]
        both = np.concatenate([variables["ar_phi"], variables["ar_pacf"]], axis=-1)
        if both.ndim == 3:  # shared (or per driver in a pooled fit)
            return [SummaryBlock("residual", None, names, [""] * 2 * p, both)]
        labels = level_ids if self.pooling == "class" else group_ids
        blocks = [SummaryBlock("residual", labels, names, [""] * 2 * p, both)]
        if "ar_mu" in variables:
            blocks.append(SummaryBlock("residual_population", None,
                                       [f"pacf[{k}]" for k in range(1, p + 1)], [""] * p,
                                       np.tanh(variables["ar_mu"])))
        return blocks

    def history_steps(self, dt: float) -> int:
        return int(self.order)

    def forward_noise(self, white, params, sigma, dt, history, known):
        _, D, N = white.shape
        kappa = np.asarray(params["kappa"])
        kappa = np.broadcast_to(kappa[:, None, :] if kappa.ndim == 2 else kappa,
                                (D, N, self.order))
        return np.asarray(ar_forward(jnp.asarray(white), jnp.asarray(kappa, white.dtype),
                                     jnp.asarray(sigma, white.dtype)[:, None],
                                     jnp.asarray(history, white.dtype),
                                     jnp.asarray(known)[None, :]))

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

    def parse_options(self) -> dict[str, Any]:
        return {"gp_window_s": self.window_s, "gp_method": self.method}

    def step_for(self, padded_covariates, num_steps):
        """``(dt, window)``: the time step (s; a float when every group shares it, else
        (G,)) from the ``dt`` covariate, and the window in steps (:meth:`window_steps`)."""
        if "dt" not in padded_covariates:
            raise InputError("GP residuals need a 'dt' covariate (the time step, s)")
        dt = np.asarray(padded_covariates["dt"])[:, 0]
        if not np.all(dt > 0):
            raise InputError("GP residuals need positive time steps")
        window = self.window_steps(float(dt.min()), int(num_steps))
        shared = bool(np.allclose(dt, dt[0], rtol=1e-6, atol=0.0))
        return (float(dt[0]) if shared else jnp.asarray(dt)), window

    def row_params(self, params, step, num_rows, dtype):
        """Length scale, scale and the time step ``dt`` per row; the window is static."""
        dt, window = step
        rows = {k: jnp.full((num_rows,), float(v)) for k, v in params.items()}
        rows["dt"] = jnp.broadcast_to(jnp.asarray(dt, dtype), (num_rows,))
        return rows, window

    def row_args(self, row, static):
        params = dict(row)
        dt = params.pop("dt")
        return params, (dt, static)

    def per_draw(self, variables, *, num_groups, level_index):
        """``lengthscale`` (s) and ``scale`` (m/s^2), each (S,)."""
        return {"lengthscale": variables["gp_lengthscale"].reshape(-1),
                "scale": variables["gp_scale"].reshape(-1)}

    def summary_blocks(self, variables, *, group_ids, level_ids):
        draws = np.stack([variables["gp_lengthscale"], variables["gp_scale"]], axis=-1)
        return [SummaryBlock("residual", None, ["gp_lengthscale", "gp_scale"],
                             ["s", "m/s^2"], draws)]

    def history_steps(self, dt: float) -> int:
        return int(min(GP_HISTORY_STEPS, self.window_steps(dt, 10**9)))

    def forward_noise(self, white, params, sigma, dt, history, known):
        """Drawn in chunks of ``H`` steps, each conditioned on the chunk before it (exact for
        the joint of two neighbouring chunks); series sharing ``known`` are drawn together."""
        steps, D, _ = white.shape
        H = history.shape[-1]
        args = (jnp.asarray(params["lengthscale"], white.dtype),
                jnp.asarray(params["scale"], white.dtype), jnp.asarray(sigma, white.dtype))
        out = np.zeros(white.shape, white.dtype)
        for n in np.unique(known):  # series sharing how much history is known
            cols = np.flatnonzero(known == n)
            hist = jnp.asarray(history[:, cols, :], white.dtype)
            num_known = int(n)
            pieces = []
            for k in range(0, steps, H):
                w = np.zeros((H, D, cols.size), white.dtype)
                part = white[k:k + H][:, :, cols]
                w[:part.shape[0]] = part
                chunk = _gp_chunk(jnp.asarray(w), float(dt), *args, hist, num_known)
                pieces.append(np.asarray(chunk)[:part.shape[0]])
                hist, num_known = jnp.moveaxis(chunk, 0, -1), H
            out[:, :, cols] = np.concatenate(pieces)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "gp", "window_s": None if self.window_s is None else
                float(self.window_s), "lengthscale": self.lengthscale.to_dict(),
                "scale": self.scale.to_dict(), "method": self.method}


#: One compiled GP chunk per shape (dt and how much history is known are traced).
_gp_chunk = jax.jit(gp_forward)


def _filter_forward(white: Any, coefficients: Any, sd: Any, m: int) -> Any:
    """Series (G, T) from the lag filter ``r_t = sum_l C[k_t, l] r_{t-l} + sd[k_t] w_t``,
    ``k_t = min(t, m)``; ``coefficients`` (m+1, m) or (G, m+1, m), ``sd`` (m+1,) / (G, m+1).
    """
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

