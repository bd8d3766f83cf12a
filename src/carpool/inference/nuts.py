"""Run NumPyro NUTS on a built model, timing warm-up and sampling honestly.

NumPyro's ``MCMC.run`` can return before the chains finish (JAX dispatches asynchronously):
every clock here is read only after ``jax.block_until_ready`` on the samples.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from carpool.pooling.model import BuiltModel

__all__ = ["NutsSettings", "SamplerOutput", "run_nuts", "set_host_device_count"]

log = logging.getLogger(__name__)

EXTRA_FIELDS = ("diverging", "num_steps", "accept_prob", "energy", "potential_energy")


def set_host_device_count(n: int) -> None:
    """Let JAX use ``n`` CPU devices so chains run in parallel.

    Must be called before JAX initialises its backend (before the first JAX computation);
    the CLI does this for you.
    """
    import numpyro

    numpyro.set_host_device_count(int(n))


@dataclass(frozen=True)
class NutsSettings:
    """Sampler settings.

    ``num_chains`` defaults to 4: fewer chains can miss a stuck chain (the reference PyMC fit
    of congested drivers had one chain at a population v0 of 20 m/s and one near 100).
    """

    num_chains: int = 4
    num_warmup: int = 1000
    num_samples: int = 1000
    seed: int = 0
    target_accept: float = 0.8
    max_tree_depth: int = 10
    dense_mass: bool = False
    init_radius: float = 0.5

    def __post_init__(self) -> None:
        for name in ("num_chains", "num_warmup", "num_samples"):
            if int(getattr(self, name)) < (0 if name == "num_warmup" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.target_accept < 1:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept}")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SamplerOutput:
    """Samples grouped by chain, shape (chains, draws, ...) each, plus sampler statistics."""

    samples: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    timing: dict[str, float]
    chain_method: str


def _chain_method(num_chains: int) -> str:
    if num_chains == 1:
        return "sequential"
    return "parallel" if jax.local_device_count() >= num_chains else "sequential"


def run_nuts(built: BuiltModel, settings: NutsSettings, *, progress_bar: bool = False
             ) -> SamplerOutput:
    """Sample ``built`` with NUTS; returns NumPy arrays and timings in seconds.

    ``timing`` has ``compile_s`` (compiling the log-density gradient, measured separately),
    ``warmup_s`` (adaptation, including the sampler's own compilation), ``sampling_s`` and
    ``total_s``.
    """
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.initialization import init_to_uniform

    compile_s = _gradient_compile_seconds(built, settings.seed)
    kernel = NUTS(
        built.model,
        target_accept_prob=settings.target_accept,
        max_tree_depth=settings.max_tree_depth,
        dense_mass=settings.dense_mass,
        init_strategy=init_to_uniform(radius=settings.init_radius),
    )
    method = _chain_method(settings.num_chains)
    mcmc = MCMC(kernel, num_warmup=settings.num_warmup, num_samples=settings.num_samples,
                num_chains=settings.num_chains, chain_method=method,
                progress_bar=progress_bar)
    key = jax.random.PRNGKey(settings.seed)
    t0 = time.perf_counter()
    if settings.num_warmup > 0:
        mcmc.warmup(key, observed=True, extra_fields=EXTRA_FIELDS)
        jax.block_until_ready(mcmc.post_warmup_state)
        key = mcmc.post_warmup_state.rng_key
    t1 = time.perf_counter()
    mcmc.run(key, observed=True, extra_fields=EXTRA_FIELDS)
    samples = mcmc.get_samples(group_by_chain=True)
    stats = mcmc.get_extra_fields(group_by_chain=True)
    jax.block_until_ready((samples, stats))
    t2 = time.perf_counter()
    timing = {"compile_s": compile_s, "warmup_s": t1 - t0, "sampling_s": t2 - t1,
              "total_s": compile_s + t2 - t0}
    log.info("NUTS done: %s", timing)
    return SamplerOutput(
        samples={k: np.asarray(v) for k, v in samples.items()},
        stats={k: np.asarray(v) for k, v in stats.items()},
        timing=timing,
        chain_method=method,
    )


def _gradient_compile_seconds(built: BuiltModel, seed: int) -> float:
    """Seconds to compile the model's log-density gradient (ahead of time, then discarded)."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model

    info = initialize_model(jax.random.PRNGKey(seed), built.model,
                                model_kwargs={"observed": True})
    x0, unravel = ravel_pytree(info.param_info.z)
    fn = jax.jit(jax.value_and_grad(lambda x: info.potential_fn(unravel(x))))
    t = time.perf_counter()
    fn.lower(x0).compile()
    return time.perf_counter() - t
