"""The data are an argument of the compiled sampler, and the persistent cache is configured."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from numpyro.infer.util import log_density

import carpool
from carpool.inference import compile_cache
from carpool.inference.run import resolve_spec
from carpool.pooling.centring import choose_centring
from carpool.pooling.model import build_model
from carpool.pooling.spec import Hyperpriors, PoolingConfig
from carpool.testing import simulate_drivers, simulate_linear_groups


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.cache_dir() is None
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
    assert compile_cache.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(compile_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.cache_dir() == tmp_path / "xdg" / "carpool" / "xla"


def test_a_fit_writes_its_program_to_the_cache(monkeypatch):
    """conftest points CARPOOL_COMPILATION_CACHE at the run's directory: after a fit JAX
    uses it (carpool set it, or kept it where already set) and the NUTS program (several
    seconds of compilation, over JAX's 1 s threshold) is stored there."""
    table, _ = simulate_linear_groups(3, 10, rng_seed=5)
    carpool.fit(table, "linear", pooling="pooled",
                sampler=carpool.NutsSettings(chains=1, warmup=20, draws=20), warn=False)
    where = Path(jax.config.jax_compilation_cache_dir)
    assert where == compile_cache.cache_dir()
    assert any(where.iterdir())
    # a directory set in JAX's own configuration is left as it is
    assert compile_cache.enable_compilation_cache() == str(where)


@pytest.mark.parametrize("pooling", ["pooled", "hierarchical"])
def test_one_model_runs_on_other_arrays_of_the_same_shape(pooling):
    """What makes one compiled program serve other data: the model built on data A, given
    data B's arrays, has exactly B's own log density (car-following, padded hierarchical
    layout with the automatic centring of A)."""
    a, _ = simulate_drivers(3, duration_s=8.0, rng_seed=1)
    b, _ = simulate_drivers(3, duration_s=8.0, rng_seed=2)
    spec = resolve_spec("idm")
    ga, gb = spec.prepare(a), spec.prepare(b)
    config = PoolingConfig(pooling=pooling, hyperpriors=Hyperpriors.default_for(3))
    centring = choose_centring(spec, ga, config).choice
    built_a = build_model(spec, ga, config, centring=centring)
    built_b = build_model(spec, gb, config, centring=centring)
    assert not np.allclose(np.asarray(built_a.arrays["y"]), np.asarray(built_b.arrays["y"]))
    from numpyro.infer import Predictive

    point = {k: v[0] for k, v in Predictive(built_b.model, num_samples=1)(
        jax.random.PRNGKey(0), observed=False).items() if k != "obs"}
    lp_b, _ = log_density(built_b.model, (), {"observed": True}, point)
    lp_a_on_b, _ = log_density(built_a.model, (), {"observed": True,
                                                   "arrays": built_b.arrays}, point)
    lp_a, _ = log_density(built_a.model, (), {"observed": True}, point)
    assert float(lp_a_on_b) == pytest.approx(float(lp_b), rel=1e-6)
    assert float(lp_a) != pytest.approx(float(lp_b), rel=1e-6)
