"""Run NumPyro NUTS on a built model, timing warm-up and sampling honestly.

NumPyro's ``MCMC.run`` can return before the chains finish (JAX dispatches asynchronously):
every clock here is read only after ``jax.block_until_ready`` on the samples.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from carpool.errors import InputError
from carpool.pooling.model import BuiltModel

__all__ = ["TARGET_ACCEPT", "InterruptedWarning", "NutsSettings", "SamplerOutput", "run_nuts",
           "set_host_device_count", "warm_sampler"]

log = logging.getLogger(__name__)

EXTRA_FIELDS = ("diverging", "num_steps", "accept_prob", "energy", "potential_energy")


def set_host_device_count(n: int) -> None:
    """Let JAX use ``n`` CPU devices so chains run in parallel.

    Must be called before JAX initialises its backend (before the first JAX computation);
    the CLI does this for you.
    """
    import numpyro

    numpyro.set_host_device_count(int(n))


#: ``NutsSettings(target_accept=None)`` per pooling mode: hierarchical fits, whose curvature
#: varies more, target 0.95 (rstanarm's default for hierarchical models too; on the bundled
#: platoon 0.9 left 0-5 divergent transitions depending on the seed and 0.95 none, at the
#: same wall time: measured, 2 seeds each); pooled and unpooled fits NumPyro's 0.8.
TARGET_ACCEPT = {"hierarchical": 0.95, "pooled": 0.8, "unpooled": 0.8}


@dataclass(frozen=True)
class NutsSettings:
    """NUTS settings: what :func:`carpool.fit` samples with (the settings object's type
    picks the method; :class:`~carpool.inference.svi.SviSettings` for SVI).

    Parameters
    ----------
    chains
        Chains; 4 by default: fewer chains can miss a stuck chain (the reference PyMC fit
        of congested drivers had one chain at a population v0 of 20 m/s and one near 100).
    warmup
        Warm-up (adaptation) iterations per chain.
    draws
        Posterior draws kept per chain.
    seed
        Seed of the chains' starts and transitions.
    target_accept
        NUTS's target acceptance probability; ``None`` (default): :data:`TARGET_ACCEPT` of
        the fit's pooling mode (:meth:`for_pooling`).
    max_tree_depth
        Largest tree depth (at most ``2 ** max_tree_depth`` leapfrog steps per draw).
    dense_mass
        Learn a dense mass matrix in warm-up (default diagonal).
    init_radius
        Each chain starts at a uniform draw in ``(-init_radius, init_radius)`` of every
        latent's unconstrained space.
    """

    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    seed: int = 0
    target_accept: float | None = None
    max_tree_depth: int = 10
    dense_mass: bool = False
    init_radius: float = 0.5

    def __post_init__(self) -> None:
        for name in ("chains", "warmup", "draws"):
            if int(getattr(self, name)) < (0 if name == "warmup" else 1):
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.target_accept is not None and not 0 < self.target_accept < 1:
            raise InputError(f"target_accept must be in (0, 1), got {self.target_accept}")

    def for_pooling(self, pooling: str) -> NutsSettings:
        """These settings with ``target_accept=None`` resolved for ``pooling``."""
        if self.target_accept is not None:
            return self
        return replace(self, target_accept=TARGET_ACCEPT[pooling])

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SamplerOutput:
    """Samples grouped by chain, shape (chains, draws, ...) each, plus sampler statistics."""

    samples: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    timing: dict[str, float]
    chain_method: str


def _chain_method(chains: int) -> str:
    if chains == 1:
        return "sequential"
    return "parallel" if jax.local_device_count() >= chains else "sequential"


class _CompileClock:
    """Sums JAX's own compile-duration events (tracing, lowering, backend compile)."""

    _EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
               "/jax/core/compile/jaxpr_to_mlir_module_duration",
               "/jax/core/compile/backend_compile_duration")

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, event: str, duration: float, **_: Any) -> None:
        if event in self._EVENTS:
            self.seconds += duration

    def __enter__(self) -> _CompileClock:
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        jax.monitoring.unregister_event_duration_listener(self)

    def timing(self, total: float) -> dict[str, float]:
        """``compile_s``, ``sampling_s`` and ``total_s`` of a run that took ``total``
        seconds. A jitted function traced inside another's trace reports its own trace
        event inside the outer one, so the summed events can exceed the run (a report
        showed sampling -0.2 s): compile time is capped at the run's."""
        compile_s = min(self.seconds, total)
        return {"compile_s": compile_s, "sampling_s": total - compile_s, "total_s": total}


def _one_chain(built: BuiltModel, settings: NutsSettings, *, search_start: bool = False
               ) -> Any:
    """``one(rng_key, arrays) -> (samples, extra fields)``: warm-up and draws of one chain.

    The data enter as the argument ``arrays`` (:attr:`BuiltModel.arrays`), not as constants
    of the program: its XLA computation depends only on the model's structure, the settings
    and the arrays' shapes, so JAX's persistent compilation cache
    (:mod:`carpool.inference.compile_cache`) serves every later fit of that structure and
    shape (refits, held-out folds, sweep points, tests) without compiling again.

    The chain starts at a uniform draw in ``(-init_radius, init_radius)`` of every latent
    site's unconstrained space (NumPyro's ``init_to_uniform``), from the first half of
    ``split(rng_key)``; NUTS runs on the second. NumPyro's own start (``search_start=True``)
    searches up to 100 such draws for a finite potential *and gradient* in a loop of its
    own, which puts one more copy of the model's gradient into the program: 3-4 s of the
    hierarchical IDM's 8-9 s of XLA compilation (measured, ``docs/speed.md``). The start
    is not checked here; :func:`run_nuts` checks the chains' potential energies and runs
    the searching program where a chain never reached a finite one.
    """
    from numpyro.infer import MCMC
    from numpyro.infer.util import initialize_model

    def searched(rng_key: Any, arrays: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        mcmc = MCMC(_kernel(settings, model=built.model), num_warmup=settings.warmup,
                    num_samples=settings.draws, num_chains=1, progress_bar=False)
        mcmc.run(rng_key, observed=True, arrays=arrays, extra_fields=EXTRA_FIELDS)
        return mcmc.get_samples(), mcmc.get_extra_fields()

    def drawn(rng_key: Any, arrays: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        kwargs = {"observed": True, "arrays": arrays}
        # the model's potential and its map to constrained values and deterministic sites;
        # initialize_model's own start search is unused, so it is dead code in the program
        info = initialize_model(rng_key, built.model, model_kwargs=kwargs, dynamic_args=True)
        key_start, key_run = jax.random.split(rng_key)
        names = sorted(info.param_info.z)
        keys = jax.random.split(key_start, len(names))
        r = settings.init_radius
        start = {n: jax.random.uniform(k, jnp.shape(info.param_info.z[n]),
                                       jnp.result_type(info.param_info.z[n]), -r, r)
                 for n, k in zip(names, keys, strict=True)}
        mcmc = MCMC(_kernel(settings, potential_fn=info.potential_fn(**kwargs)),
                    num_warmup=settings.warmup,
                    num_samples=settings.draws, num_chains=1, progress_bar=False)
        mcmc.run(key_run, init_params=start, extra_fields=EXTRA_FIELDS)
        constrain = info.postprocess_fn(**kwargs)
        return jax.lax.map(constrain, mcmc.get_samples()), mcmc.get_extra_fields()

    return searched if search_start else drawn


def warm_sampler(built: BuiltModel, settings: NutsSettings) -> Any:
    """``run(arrays, start, inverse_mass, seed) -> SamplerOutput``: NUTS on ``built``'s model
    from given per-chain starts (unconstrained, (chains, ...) per site) with a fixed diagonal
    inverse mass matrix, warm-up adapting the step size only (from NumPyro's heuristic
    start). The program is compiled on the first call and serves every later call whose
    arrays have the same shapes (held-out refits, :mod:`carpool.inference.warm`)."""
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.util import initialize_model

    settings = settings.for_pooling(built.config.pooling)

    def one(rng_key: Any, start: Any, arrays: Any, inverse_mass: Any
            ) -> tuple[dict[str, Any], dict[str, Any]]:
        kwargs = {"observed": True, "arrays": arrays}
        info = initialize_model(rng_key, built.model, model_kwargs=kwargs, dynamic_args=True)
        kernel = NUTS(potential_fn=info.potential_fn(**kwargs),
                      target_accept_prob=settings.target_accept,
                      max_tree_depth=settings.max_tree_depth, inverse_mass_matrix=inverse_mass,
                      adapt_mass_matrix=False, find_heuristic_step_size=True)
        mcmc = MCMC(kernel, num_warmup=settings.warmup, num_samples=settings.draws,
                    num_chains=1, progress_bar=False)
        mcmc.run(rng_key, init_params=start, extra_fields=EXTRA_FIELDS)
        return jax.lax.map(info.postprocess_fn(**kwargs), mcmc.get_samples()), \
            mcmc.get_extra_fields()

    method = _chain_method(settings.chains)
    compiled = (jax.pmap(one, in_axes=(0, 0, None, None)) if method == "parallel"
                else jax.jit(one))

    def run(arrays: Any, start: Any, inverse_mass: Any, seed: int) -> SamplerOutput:
        keys = jax.random.split(jax.random.PRNGKey(seed), settings.chains)
        with _CompileClock() as clock:
            t0 = time.perf_counter()
            if method == "parallel":
                samples, stats = compiled(keys, start, arrays, inverse_mass)
            else:
                per = [compiled(k, jax.tree.map(lambda v, i=i: v[i], start), arrays,
                                inverse_mass) for i, k in enumerate(keys)]
                samples, stats = jax.tree.map(lambda *v: jnp.stack(v), *per)
            jax.block_until_ready((samples, stats))
            total = time.perf_counter() - t0
        timing = clock.timing(total)
        return SamplerOutput(samples={k: np.asarray(v) for k, v in samples.items()},
                             stats={k: np.asarray(v) for k, v in stats.items()},
                             timing=timing, chain_method=method)

    return run


def _kernel(settings: NutsSettings, *, model: Any = None, potential_fn: Any = None) -> Any:
    """NumPyro's NUTS kernel with ``settings``, on a model (started by NumPyro's
    ``init_to_uniform`` search) or on a potential function (started where the caller says)."""
    from numpyro.infer import NUTS
    from numpyro.infer.initialization import init_to_uniform

    return NUTS(model, potential_fn=potential_fn, target_accept_prob=settings.target_accept,
                max_tree_depth=settings.max_tree_depth, dense_mass=settings.dense_mass,
                init_strategy=init_to_uniform(radius=settings.init_radius))


def chain_keys(settings: NutsSettings) -> Any:
    """One PRNG key per chain, ``split(PRNGKey(seed), chains)`` (NumPyro's own split)."""
    return jax.random.split(jax.random.PRNGKey(settings.seed), settings.chains)


def run_nuts(built: BuiltModel, settings: NutsSettings, *, progress_bar: bool = False
             ) -> SamplerOutput:
    """Sample ``built`` with NUTS; returns NumPy arrays and timings in seconds.

    Warm-up and sampling run in one compiled program per chain (one compilation for all
    chains). Parallel chains (``jax.local_device_count() >= chains``) run as one
    ``jax.pmap`` over the chains' keys; otherwise chains run one after another (see
    :func:`_run_chain_by_chain`). Chain ``i`` gets the ``i``-th key of
    :func:`chain_keys`. With ``progress_bar=True`` NumPyro's own ``MCMC`` runs the chains
    (it draws the bars) and the data are constants of its program.

    Each chain starts at a uniform draw of the unconstrained space (:func:`_one_chain`).
    Where a chain's potential energy is not finite at some draw (it never left a start
    where the log density is not finite: NUTS rejects every proposal from it), all chains
    are sampled again from NumPyro's searched start, with a logged warning; if a chain is
    still stuck, a ``RuntimeWarning`` names it. ``timing`` then sums both runs.

    ``timing`` has ``compile_s`` (JAX tracing + compilation, from JAX's own compile events;
    where the persistent compilation cache held the program, only its tracing and loading,
    1-2 s for the hierarchical IDM),
    ``sampling_s`` (warm-up + draws, the rest of the wall time) and ``total_s``; all read
    after blocking on the samples. :func:`carpool.fit` adds ``centring_s`` (the automatic
    centring choice) to ``total_s``. ``target_accept=None`` is resolved for the model's
    pooling mode (:meth:`NutsSettings.for_pooling`).
    """
    from carpool.inference.compile_cache import enable_compilation_cache

    enable_compilation_cache()
    settings = settings.for_pooling(built.config.pooling)
    out = _sample(built, settings, progress_bar=progress_bar)
    stuck = _stuck_chains(out)
    if stuck and not progress_bar:
        # a chain whose uniform start had no finite potential stays there (every proposal
        # from an infinite or NaN energy is rejected): sample again from NumPyro's searched
        # start (up to 100 draws until the potential and its gradient are finite)
        log.warning("chain(s) %s never reached a finite potential from their start; "
                    "sampling again from a searched start", stuck)
        again = _sample(built, settings, search_start=True)
        timing = {k: out.timing[k] + again.timing[k] for k in out.timing}
        out = SamplerOutput(again.samples, again.stats, timing, again.chain_method)
        stuck = _stuck_chains(out)
    if stuck:
        import warnings

        warnings.warn(f"chain(s) {stuck} found no start with a finite log density (100 "
                      "random starts); their draws are not from the posterior: check the "
                      "priors against the data's scale", RuntimeWarning, stacklevel=3)
    return out


def _stuck_chains(out: SamplerOutput) -> list[int]:
    """Chains with a non-finite potential energy at some draw: NUTS accepts only finite
    energies, so such a chain never left a start where the log density was not finite."""
    pe = out.stats.get("potential_energy")
    if pe is None:
        return []
    pe = np.asarray(pe).reshape(pe.shape[0], -1)
    return [int(c) for c in np.flatnonzero(~np.all(np.isfinite(pe), axis=1))]


def _sample(built: BuiltModel, settings: NutsSettings, *, progress_bar: bool = False,
            search_start: bool = False) -> SamplerOutput:
    """One run of every chain (see :func:`run_nuts`)."""
    method = _chain_method(settings.chains)
    if method == "sequential" and settings.chains > 1 and not progress_bar:
        return _run_chain_by_chain(built, settings, search_start=search_start)
    one = _one_chain(built, settings, search_start=search_start)
    with _CompileClock() as clock:
        t0 = time.perf_counter()
        if progress_bar:
            samples, stats = _run_numpyro_mcmc(built, settings, method)
        elif settings.chains == 1:
            samples, stats = jax.jit(one)(chain_keys(settings)[0], built.arrays)
            samples, stats = jax.tree.map(lambda x: x[None], (samples, stats))
        else:
            samples, stats = jax.pmap(one, in_axes=(0, None))(chain_keys(settings),
                                                              built.arrays)
        jax.block_until_ready((samples, stats))
        total = time.perf_counter() - t0
    timing = clock.timing(total)
    log.info("NUTS done: %s", timing)
    return SamplerOutput(
        samples={k: np.asarray(v) for k, v in samples.items()},
        stats={k: np.asarray(v) for k, v in stats.items()},
        timing=timing,
        chain_method=method,
    )


def _run_numpyro_mcmc(built: BuiltModel, settings: NutsSettings, method: str
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """NumPyro's ``MCMC`` with its progress bars; samples grouped by chain."""
    from numpyro.infer import MCMC

    mcmc = MCMC(_kernel(settings, model=built.model), num_warmup=settings.warmup,
                num_samples=settings.draws, num_chains=settings.chains,
                chain_method=method, progress_bar=True)
    mcmc.run(jax.random.PRNGKey(settings.seed), observed=True, extra_fields=EXTRA_FIELDS)
    return mcmc.get_samples(group_by_chain=True), mcmc.get_extra_fields(group_by_chain=True)


class InterruptedWarning(UserWarning):
    """Sampling was interrupted; the fit holds only the chains that finished."""


def _run_chain(run_one: Any, rng_key: Any, arrays: Any
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    out = run_one(rng_key, arrays)
    jax.block_until_ready(out)
    return out


def _run_chain_by_chain(built: BuiltModel, settings: NutsSettings, *,
                        search_start: bool = False) -> SamplerOutput:
    """Sequential chains one at a time, so an interrupt keeps the finished ones.

    One jitted program samples one chain (warm-up and draws) and is compiled once for all
    chains; chain ``i`` gets the ``i``-th key of ``split(PRNGKey(seed), chains)``. On a
    KeyboardInterrupt (Ctrl-C, or SIGTERM where the CLI turns it into one) after at least
    one chain finished, the finished chains are returned with an
    :class:`InterruptedWarning`; before that, the interrupt propagates. Python handles a
    signal between bytecodes, so one that arrives while a chain samples takes effect when
    that chain has finished.
    """
    import warnings

    run_one = jax.jit(_one_chain(built, settings, search_start=search_start))
    keys = chain_keys(settings)
    chains: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with _CompileClock() as clock:
        t0 = time.perf_counter()
        try:
            for key in keys:
                chains.append(_run_chain(run_one, key, built.arrays))
        except KeyboardInterrupt:
            if not chains:
                raise
            warnings.warn(f"sampling was interrupted: the fit holds the {len(chains)} of "
                          f"{settings.chains} chains that finished; R-hat needs at least "
                          "2 chains, so refit for a result you can check",
                          InterruptedWarning, stacklevel=4)
        total = time.perf_counter() - t0
    timing = clock.timing(total)
    log.info("NUTS chain by chain done (%d chains): %s", len(chains), timing)
    samples = {k: np.stack([np.asarray(c[0][k]) for c in chains]) for k in chains[0][0]}
    stats = {k: np.stack([np.asarray(c[1][k]) for c in chains]) for k in chains[0][1]}
    return SamplerOutput(samples=samples, stats=stats, timing=timing,
                         chain_method="sequential")
