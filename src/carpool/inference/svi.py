"""Stochastic variational inference (SVI): a fast, approximate alternative to NUTS.

The model is the NUTS model itself (:func:`carpool.pooling.model.build_model`, padded
layout), called with ``batch_size``: each step uses a minibatch of that many groups
(drivers), with their latents and likelihood scaled by G / B. The guide is

- ``"meanfield"``: an independent normal per latent on the unconstrained scale (what
  NumPyro's ``AutoNormal`` is: the same start and family, set up like the structured
  guide's global part, :class:`StructuredGuide` with ``diagonal=True``), in carpool's
  per-parameter centring (centred where the data identify a driver's parameter,
  non-centred where they do not); or
- ``"structured"``: a full-covariance normal over the population and noise sites
  (what NumPyro's ``AutoMultivariateNormal`` is, set up in one compiled trace instead of
  op by op) and, independently, one full-covariance normal per group over that group's
  latents (:class:`StructuredGuide`); its SVI state is built directly
  (:func:`init_state`), without NumPyro's op-by-op ``SVI.init``.

The optimiser is Adam with gradient clipping (``ClippedAdam``, elements to +-10) and a learning
rate that decays geometrically to ``lr_final_fraction`` of its start over the run. The
result is a normal :class:`~carpool.inference.fit.Fit` whose posterior holds
``draws`` draws from the fitted guide in one chain; it is marked approximate (no R-hat,
ESS or divergences) and keeps the loss (negative ELBO) per step in the ``svi_loss`` group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

from carpool.errors import InputError
from carpool.inference.nuts import SamplerOutput, _CompileClock
from carpool.inference.svi_start import LaplaceStart, init_with_values, laplace_start, start_values
from carpool.pooling.grouped import GroupedData
from carpool.pooling.model import GROUP_PLATE, BuiltModel
from carpool.pooling.spec import ModelSpec, PoolingConfig

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["GUIDES", "SviSettings", "SviOutput", "fit_grouped_svi", "run_svi"]

log = logging.getLogger(__name__)

GUIDES = ("meanfield", "structured")

#: ClippedAdam clips each gradient element to +-CLIP_NORM: keeps the first steps from a poor
#: start (large likelihood gradients of many observations) from throwing the guide far away.
CLIP_NORM = 10.0


@dataclass(frozen=True)
class SviSettings:
    """Settings of an SVI fit.

    Parameters
    ----------
    num_steps
        Optimisation steps (each one minibatch of groups).
    learning_rate
        Adam's initial step size (on the unconstrained scale of the guide's parameters).
    batch_size
        Groups (drivers) per step; ``None`` uses every group (full batch).
    guide
        One of :data:`GUIDES`.
    draws
        Posterior draws taken from the fitted guide.
    seed
        Seed of the optimisation (subsampling, ELBO noise) and of the draws.
    lr_final_fraction
        The learning rate decays geometrically from ``learning_rate`` to this fraction of it
        over ``num_steps``.
    init_scale
        Initial standard deviation of each latent in the guide (unconstrained scale).
    """

    num_steps: int = 2000
    learning_rate: float = 0.03
    batch_size: int | None = None
    guide: str = "structured"
    draws: int = 1000
    seed: int = 0
    lr_final_fraction: float = 0.1
    init_scale: float = 0.01

    def __post_init__(self) -> None:
        for name in ("num_steps", "draws"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int | np.integer)
                                            or self.batch_size < 1):
            raise InputError(f"batch_size must be a positive integer or None, got "
                             f"{self.batch_size!r}")
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InputError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if self.guide not in GUIDES:
            raise InputError(f"unknown guide {self.guide!r}; choose one of {list(GUIDES)}")
        if not 0 < self.lr_final_fraction <= 1:
            raise InputError(f"lr_final_fraction must be in (0, 1], got "
                             f"{self.lr_final_fraction!r}")
        if not self.init_scale > 0:
            raise InputError(f"init_scale must be positive, got {self.init_scale!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": "svi", **self.__dict__}


@dataclass(frozen=True)
class SviOutput:
    """Guide draws in the sampler's layout (one chain), the loss per step and timings."""

    sampler: SamplerOutput
    losses: np.ndarray
    batch_size: int


def _make_guide(plated: BuiltModel, settings: SviSettings, start: LaplaceStart) -> Any:
    values, cov = start_values(plated, start)
    values = {k: jnp.asarray(v, dtype=jnp.result_type(float)) for k, v in values.items()}
    return StructuredGuide(plated, values, cov, settings.init_scale,
                           jax.random.PRNGKey(settings.seed),
                           diagonal=settings.guide == "meanfield")


def _median() -> Any:
    from numpyro.infer.initialization import init_to_median

    return init_to_median(num_samples=15)


@dataclass(frozen=True)
class GlobalSite:
    """A latent site outside the group plate, as the structured guide samples it.

    ``unconstrained_shape``: the shape of its value on NumPyro's ``biject_to(support)``
    scale, whose ``width`` elements are a slice of the guide's global vector;
    ``event_dim``: the distribution's event dimensions; ``support``: its constraint."""

    name: str
    unconstrained_shape: tuple[int, ...]
    event_dim: int
    support: Any

    @property
    def width(self) -> int:
        return int(np.prod(self.unconstrained_shape, dtype=int))


def global_start(plated: BuiltModel, values: dict[str, Any], rng_key: Any
                 ) -> tuple[tuple[GlobalSite, ...], np.ndarray]:
    """The global sites of ``plated`` (in the model's order) and their unconstrained start, (K,).

    One compiled trace of the model: ``values`` where given, the median of 15 prior draws
    elsewhere (NumPyro's ``init_to_median``), each mapped to the unconstrained scale. This is
    what an ``AutoMultivariateNormal`` finds when it sets itself up, which NumPyro does op by
    op (one small compilation per operation: 17-27 s on 2 cores, whatever the data size).
    Raises ``ValueError`` where a site's support depends on traced values (it could not be
    kept outside the trace), or where the model has ``param`` or ``mutable`` sites.
    """
    from numpyro.distributions.transforms import biject_to
    from numpyro.handlers import seed, substitute, trace

    wanted = set(plated.global_sites)
    found: list[GlobalSite] = []
    others: list[str] = []

    def start(key: Any) -> Any:
        init = init_with_values(values, _median())
        tr = trace(substitute(seed(plated.model, key), substitute_fn=init)).get_trace(
            observed=True, batch_size=None)
        found.clear()
        others.clear()
        others.extend(n for n, site in tr.items() if site["type"] in ("param", "mutable"))
        parts = []
        for name in (n for n in tr if n in wanted):  # the model's order, as NumPyro's
            site = tr[name]
            u = biject_to(site["fn"].support).inv(site["value"])
            found.append(GlobalSite(name, tuple(jnp.shape(u)), int(site["fn"].event_dim),
                                    site["fn"].support))
            parts.append(jnp.reshape(u, -1))
        return jnp.concatenate(parts) if parts else jnp.zeros(0)

    loc = np.asarray(jax.jit(start)(rng_key))
    if others:
        raise ValueError(f"the model has param or mutable sites {others}")
    missing = wanted - {g.name for g in found}
    if missing:
        raise ValueError(f"global sites {sorted(missing)} are not in the model")
    for g in found:
        if _holds_tracer(g.support):
            raise ValueError(f"the support of {g.name!r} depends on traced values")
    return tuple(found), loc


def _holds_tracer(obj: Any, depth: int = 0) -> bool:
    """Whether a constraint object (or one it wraps) holds a JAX tracer."""
    if isinstance(obj, jax.core.Tracer):
        return True
    if depth > 4 or not hasattr(obj, "__dict__"):
        return False
    return any(_holds_tracer(v, depth + 1) for v in vars(obj).values())


class StructuredGuide:
    """A full-covariance normal over the global (population, noise) sites and an independent
    full-covariance normal per group over that group's latents.

    Within a driver the IDM's parameters are strongly correlated a posteriori (a larger
    ``a`` with a smaller ``T`` fits about as well), which a mean-field guide cannot
    represent: it reports each parameter's *conditional* spread, too narrow. Call it like
    the model; :meth:`sample_posterior` draws every site for all groups.

    The global part is what NumPyro's ``AutoMultivariateNormal`` is (a normal over the
    concatenated unconstrained sites in the model's order; each site's value its support's
    ``biject_to`` with the log-Jacobian in a ``Delta``), built from :func:`global_start`
    so that setting it up costs one compilation. :meth:`initial_params` gives the
    starting values of its params, for :func:`init_state`.

    Parameters
    ----------
    plated
        The plate-over-groups model.
    values
        Starting values by site (full size), see :func:`~carpool.inference.svi_start.
        start_values`.
    cov
        Starting covariance of each group's concatenated local sites, (G, K, K).
    init_scale
        Starting standard deviation of the global sites (unconstrained scale); with
        ``diagonal`` of every latent, as ``AutoNormal`` starts.
    rng_key
        Key of the prior draws that start global sites without a value.
    diagonal
        The mean-field guide: independent normals (params ``global_scale`` and
        ``local_scale``, softplus-positive as ``AutoNormal``'s) instead of the two
        full-covariance parts; ``cov`` is then unused.
    """

    def __init__(self, plated: BuiltModel, values: dict[str, Any], cov: np.ndarray,
                 init_scale: float, rng_key: Any = None, *, diagonal: bool = False) -> None:
        self.plated = plated
        self.diagonal = bool(diagonal)
        self.width = sum(k for _, k in plated.local_sites)
        dtype = jnp.result_type(float)
        if self.width:
            self.loc0 = jnp.concatenate([jnp.reshape(values[n], (-1, k))
                                         for n, k in plated.local_sites], axis=1)
            jitter = 1e-8 * np.eye(self.width)
            self.tril0 = jnp.asarray(np.linalg.cholesky(cov + jitter), dtype=dtype)
            # AutoNormal's start: every latent at init_scale
            self.scale0 = jnp.full(self.loc0.shape, init_scale, dtype)
        self.global_sites: tuple[GlobalSite, ...] = ()
        if plated.global_sites:
            key = jax.random.PRNGKey(0) if rng_key is None else rng_key
            self.global_sites, loc = global_start(plated, values, key)
            self.global_loc0 = jnp.asarray(loc, dtype=dtype)
            self.global_tril0 = jnp.asarray(init_scale * np.eye(loc.size), dtype=dtype)
            self.global_scale0 = jnp.full((loc.size,), init_scale, dtype)

    def initial_params(self) -> dict[str, tuple[Any, Any]]:
        """``{param name: (starting value, constraint)}`` of every param of the guide."""
        from numpyro.distributions import constraints

        out: dict[str, tuple[Any, Any]] = {}
        if self.global_sites:
            out["global_loc"] = (self.global_loc0, constraints.real)
            out.update({"global_scale": (self.global_scale0, constraints.softplus_positive)}
                       if self.diagonal else
                       {"global_scale_tril": (self.global_tril0,
                                              constraints.scaled_unit_lower_cholesky)})
        if self.width:
            out["local_loc"] = (self.loc0, constraints.real)
            out.update({"local_scale": (self.scale0, constraints.softplus_positive)}
                       if self.diagonal else
                       {"local_scale_tril": (self.tril0,
                                             constraints.scaled_unit_lower_cholesky)})
        return out

    def __call__(self, observed: bool = True, batch_size: int | None = None) -> dict[str, Any]:
        import numpyro.distributions as dist
        from numpyro.distributions import constraints

        out = self._global_sites() if self.global_sites else {}
        if not self.width:
            return out
        G = self.plated.data.num_groups
        loc = numpyro.param("local_loc", self.loc0)
        if self.diagonal:
            scale = numpyro.param("local_scale", self.scale0,
                                  constraint=constraints.softplus_positive)
        else:
            tril = numpyro.param("local_scale_tril", self.tril0,
                                 constraint=constraints.scaled_unit_lower_cholesky)
        with numpyro.plate(GROUP_PLATE, G, subsample_size=batch_size) as idx:
            d = (dist.Normal(loc[idx], scale[idx]).to_event(1) if self.diagonal else
                 dist.MultivariateNormal(loc[idx], scale_tril=tril[idx]))
            u = numpyro.sample("_local_latent", d, infer={"is_auxiliary": True})
            out.update(self._split(u, numpyro.sample))
        return out

    def _global_sites(self) -> dict[str, Any]:
        import numpyro.distributions as dist
        from numpyro.distributions import constraints
        from numpyro.distributions.util import sum_rightmost

        loc = numpyro.param("global_loc", self.global_loc0)
        if self.diagonal:
            scale = numpyro.param("global_scale", self.global_scale0,
                                  constraint=constraints.softplus_positive)
            d = dist.Normal(loc, scale).to_event(1)
        else:
            tril = numpyro.param("global_scale_tril", self.global_tril0,
                                 constraint=constraints.scaled_unit_lower_cholesky)
            d = dist.MultivariateNormal(loc, scale_tril=tril)
        u = numpyro.sample("_global_latent", d, infer={"is_auxiliary": True})
        out = {}
        for site, part, (value, transform) in self._unpack(u):
            ldj = -transform.log_abs_det_jacobian(part, value)
            ldj = sum_rightmost(ldj, jnp.ndim(ldj) - jnp.ndim(value) + site.event_dim)
            out[site.name] = numpyro.sample(
                site.name, dist.Delta(value, log_density=ldj, event_dim=site.event_dim))
        return out

    def _unpack(self, u: Any) -> list[tuple[GlobalSite, Any, tuple[Any, Any]]]:
        """Each global site's unconstrained part of ``u`` (..., K) and (value, transform)."""
        from numpyro.distributions.transforms import biject_to

        batch, start, out = jnp.shape(u)[:-1], 0, []
        for site in self.global_sites:
            part = jnp.reshape(u[..., start:start + site.width],
                               batch + site.unconstrained_shape)
            transform = biject_to(site.support)
            out.append((site, part, (transform(part), transform)))
            start += site.width
        return out

    def _split(self, u: Any, sample_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
        import numpyro.distributions as dist

        out, start = {}, 0
        for name, k in self.plated.local_sites:
            part = u[..., start:start + k]
            out[name] = part if sample_fn is None else sample_fn(
                name, dist.Delta(part, event_dim=1))
            start += k
        return out

    def sample_posterior(self, rng_key: Any, params: dict[str, Any], *args: Any,
                         sample_shape: tuple[int, ...] = (), **kwargs: Any) -> dict[str, Any]:
        """Draws of every latent site for all groups, each (*sample_shape, ...)."""
        key_g, key_l = jax.random.split(rng_key)
        out = {}
        if self.global_sites:
            loc = params["global_loc"]
            # the key NumPyro's seed handler gives the latent site: the draws are those
            # of AutoMultivariateNormal.sample_posterior with the same key
            eps = jax.random.normal(jax.random.split(key_g)[1],
                                    tuple(sample_shape) + loc.shape, loc.dtype)
            u = (loc + params["global_scale"] * eps if self.diagonal else
                 loc + jnp.squeeze(jnp.matmul(params["global_scale_tril"], eps[..., None]),
                                   axis=-1))
            out.update({site.name: value for site, _, (value, _) in self._unpack(u)})
        if self.width:
            loc = params["local_loc"]
            eps = jax.random.normal(key_l, tuple(sample_shape) + loc.shape, loc.dtype)
            out.update(self._split(
                loc + params["local_scale"] * eps if self.diagonal else
                loc + jnp.einsum("gij,...gj->...gi", params["local_scale_tril"], eps)))
        return out


def init_state(svi: Any, guide: StructuredGuide, rng_key: Any) -> Any:
    """The SVI state at the guide's :meth:`~StructuredGuide.initial_params`, without
    NumPyro's ``SVI.init``.

    ``SVI.init`` traces the guide and the model once op by op to find their params (on
    2 cores, seconds per trace of the hierarchical IDM: every operation compiles on its
    own). The plated models have no params (:func:`global_start` checks) and the guide's
    are known, so the state is built directly, as ``SVI.init`` builds it: each param on
    its constraint's unconstrained scale, the optimiser's state, ``svi.constrain_fn`` to
    map back, and the first of three keys split from ``rng_key``.
    """
    from functools import partial

    from numpyro.distributions.transforms import biject_to
    from numpyro.infer.svi import SVIState
    from numpyro.infer.util import transform_fn

    rng_key = jax.random.split(rng_key, 3)[0]
    init = guide.initial_params()
    transforms = {n: biject_to(c) for n, (_, c) in init.items()}
    svi.constrain_fn = partial(transform_fn, transforms)
    params = jax.jit(lambda v: {n: transforms[n].inv(x) for n, x in v.items()})(
        {n: x for n, (x, _) in init.items()})
    return SVIState(svi.optim.init(params), None, rng_key)


def run_svi(plated: BuiltModel, settings: SviSettings, *,
            pooled: tuple[np.ndarray, dict[str, float]] | None = None) -> SviOutput:
    """Fit the guide by SVI and draw ``draws`` posterior samples from it.

    The guide starts at a per-group Laplace approximation
    (:mod:`carpool.inference.svi_start`) around the pooled MAP (``pooled``, its latent
    values and noise, where the caller has it). Timings (s, read after blocking on the results):
    ``start_s`` (that start and the guide's set-up), ``compile_s`` (compiling the whole
    optimisation loop, one ``lax.scan``, plus JAX's compile events while drawing),
    ``optimise_s`` (running it), ``draws_s`` (guide draws and their latent values),
    ``sampling_s`` (optimisation plus draws) and ``total_s``; ``step_ms`` is the
    optimisation time per step.
    """
    from numpyro.infer import SVI, Predictive, Trace_ELBO
    from numpyro.optim import ClippedAdam

    G = plated.data.num_groups
    batch = None if settings.batch_size is None or settings.batch_size >= G \
        else int(settings.batch_size)
    decay = settings.lr_final_fraction ** (1.0 / settings.num_steps)
    lr0 = settings.learning_rate
    optim = ClippedAdam(step_size=lambda i: lr0 * decay**i, clip_norm=CLIP_NORM)
    t_start = time.perf_counter()
    guide = _make_guide(plated, settings, laplace_start(plated.spec, plated.data,
                                                        plated.config, pooled=pooled))
    svi = SVI(plated.model, guide, optim, Trace_ELBO())
    key_run, key_draw, key_z = jax.random.split(jax.random.PRNGKey(settings.seed), 3)
    state = init_state(svi, guide, key_run)

    def step(state: Any, _: Any) -> tuple[Any, Any]:
        return svi.stable_update(state, observed=True, batch_size=batch)

    start_s = time.perf_counter() - t_start
    t0 = time.perf_counter()
    run = jax.jit(lambda s: jax.lax.scan(step, s, None, length=settings.num_steps))
    compiled = run.lower(state).compile()
    t_compiled = time.perf_counter()
    state, losses = jax.block_until_ready(compiled(state))
    params = svi.get_params(state)
    losses = np.asarray(losses)
    t1 = time.perf_counter()
    with _CompileClock() as clock:
        draws = guide.sample_posterior(key_draw, params, observed=True, batch_size=None,
                                       sample_shape=(settings.draws,))
        if plated.config.pooling == "hierarchical":  # z is deterministic given the draws
            draws["z"] = Predictive(plated.latents, posterior_samples=draws,
                                    return_sites=["z"])(key_z, observed=False,
                                                        batch_size=None)["z"]
        samples = jax.block_until_ready(draws)
        t2 = time.perf_counter()
    if not np.all(np.isfinite(losses[-max(1, len(losses) // 10):])):
        raise InputError("SVI diverged (non-finite loss); lower learning_rate")
    optimise = t1 - t_compiled
    compile_s = (t_compiled - t0) + clock.seconds
    timing = {"start_s": start_s, "compile_s": compile_s, "optimise_s": optimise,
              "draws_s": t2 - t1 - clock.seconds, "sampling_s": optimise + t2 - t1
              - clock.seconds, "total_s": start_s + t2 - t0,
              "step_ms": 1e3 * optimise / settings.num_steps}
    log.info("SVI done: %s", timing)
    sampler = SamplerOutput(
        samples={k: np.asarray(v)[None] for k, v in samples.items()},
        stats={}, timing=timing, chain_method="svi")
    return SviOutput(sampler, losses, G if batch is None else batch)


def loss_trace_dataset(losses: np.ndarray, batch_size: int) -> Any:
    """The loss per step as an xarray Dataset (dim ``step``), for the ``svi_loss`` group."""
    import xarray as xr

    return xr.Dataset({"loss": (("step",), np.asarray(losses, dtype=float))},
                      coords={"step": np.arange(len(losses))},
                      attrs={"batch_size": int(batch_size),
                             "description": "negative ELBO per SVI step (nats; minibatch "
                                            "estimate scaled to all groups)"})


def fit_grouped_svi(spec: ModelSpec, grouped: GroupedData, config: PoolingConfig,
                    settings: SviSettings) -> Fit:
    """Fit by SVI on prepared data: carpool's automatic centring, the plated model, the
    guide, then a :class:`~carpool.inference.fit.Fit` marked approximate."""
    from carpool.inference.fit import Fit, to_inference_data
    from carpool.pooling.centring import choose_centring, pooled_map_with_residual
    from carpool.pooling.model import build_plated_model

    spec.parameters.check_priors()
    config = config.with_defaults(spec, grouped.num_groups)
    if spec.residual.is_dynamic:  # before the centring step, which is not free
        raise InputError(f"{spec.residual.name} residuals need NUTS (a NutsSettings "
                         "sampler); SVI supports the i.i.d. residual only")
    t0 = time.perf_counter()
    # one pooled MAP for the centring choice and the guide's start (deterministic)
    pooled = pooled_map_with_residual(spec, grouped, seed=settings.seed)
    centring = choose_centring(spec, grouped, config, seed=settings.seed, pooled=pooled)
    centring_s = time.perf_counter() - t0
    weights = (centring.weight_matrix(spec.parameters.names, grouped.num_groups)
               if centring.weights else None)
    plated = build_plated_model(spec, grouped, config, centring=centring.choice,
                                weights=weights)
    out = run_svi(plated, settings, pooled=pooled[:2])
    out.sampler.timing["centring_s"] = centring_s
    out.sampler.timing["total_s"] += centring_s
    idata = to_inference_data(plated, out.sampler, centring, settings)
    idata.add_groups({"svi_loss": loss_trace_dataset(out.losses, out.batch_size)})
    idata.posterior.attrs["carpool_method"] = "svi"
    idata.posterior.attrs["carpool_approximate"] = (
        f"variational approximation ({settings.guide} guide): no R-hat, ESS or divergences")
    return Fit(idata, spec, config, grouped, centring)
