"""The sampler's start: a uniform draw in the unconstrained space, searched again where a
chain never reached a finite log density (carpool.inference.nuts)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from carpool.inference.nuts import NutsSettings, run_nuts


def _built(model):
    # run_nuts reads only the model function and its data pytree
    return SimpleNamespace(model=lambda observed=True, arrays=None: model(), arrays={},
                           config=SimpleNamespace(pooling="pooled"))


def _nan_below(threshold: float):
    def model() -> None:
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.factor("wall", jnp.where(x < threshold, jnp.nan, 0.0))
    return model


def test_chains_start_inside_the_radius_and_sample_the_posterior():
    settings = NutsSettings(chains=2, warmup=200, draws=300, seed=1)
    out = run_nuts(_built(lambda: numpyro.sample("x", dist.Normal(3.0, 2.0))), settings)
    assert out.samples["x"].shape == (2, 300)
    assert np.all(np.isfinite(out.stats["potential_energy"]))
    # 600 draws of Normal(3, 2): the mean's Monte Carlo sd is ~0.15 at ESS ~200
    assert abs(out.samples["x"].mean() - 3.0) < 0.6


def test_a_start_with_no_finite_density_is_searched_again(caplog):
    # NaN below 0.4: a uniform start in (-0.5, 0.5) is valid with probability 0.1, so some
    # of the 4 chains start where every proposal is rejected; the searched start (up to 100
    # draws) finds the valid region for each
    settings = NutsSettings(chains=4, warmup=100, draws=100, seed=0)
    with caplog.at_level(logging.WARNING, logger="carpool.inference.nuts"):
        out = run_nuts(_built(_nan_below(0.4)), settings)
    assert "sampling again from a searched start" in caplog.text
    assert np.all(np.isfinite(out.stats["potential_energy"]))
    assert np.all(out.samples["x"] >= 0.4)


def test_a_model_with_no_finite_density_anywhere_warns():
    settings = NutsSettings(chains=1, warmup=10, draws=10, seed=0)
    with pytest.warns(RuntimeWarning, match="no start with a finite log density"):
        run_nuts(_built(_nan_below(np.inf)), settings)
