"""Simulation-based calibration, reduced for CI (the full run: ``benchmarks/sbc.py``).

Pass rule: every quantity's chi-square p-value above 0.01 / m (Bonferroni over the m
quantities of a configuration), so a correct sampler fails a configuration with probability
at most 1%; all runs are seeded, so CI sees the same ranks every time. Power at the CI size
(N = 60 replications, 50 ranks in 10 bins, level 0.01 / 15), from
:func:`carpool.inference.sbc.chi_square_power`: 0.88 per quantity against a posterior half
as wide as it should be, 0.25 against one shifted by half a posterior sd; the full run
(N = 200, 100 ranks) has 0.88 against 30% too narrow and 0.98 against a half-sd shift. A
gross error fails: see the negative control in ``tests/test_sbc_controls.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from carpool.inference.sbc import (
    SbcSettings,
    chi_square_power,
    chi_square_uniformity,
    rank_of_truth,
    run_sbc,
)
from carpool.models.registry import get_spec
from carpool.pooling.spec import Hyperpriors, PoolingConfig
from carpool.testing import simulate_linear_groups

CI = SbcSettings(num_replications=60, warmup=150, num_ranks=49, thinning=2, num_bins=10,
                 seed=1)


def _config(pooling: str, num_groups: int) -> PoolingConfig:
    return PoolingConfig(pooling=pooling, correlated=False, param="noncentred",
                         hyperpriors=Hyperpriors.default_for(num_groups))


@pytest.fixture(scope="module")
def linear_design():
    spec = get_spec("linear")
    return spec, spec.prepare(simulate_linear_groups(5, 10, rng_seed=0)[0])


def test_ranks_count_the_draws_below():
    draws = np.array([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0], [3.0, 8.0]])  # (L=4, 2)
    np.testing.assert_array_equal(rank_of_truth(np.array([2.5, 4.0]), draws), [3, 0])
    np.testing.assert_array_equal(rank_of_truth(np.array([9.0, 6.5]), draws), [4, 2])


def test_chi_square_accepts_uniform_and_rejects_piled_ranks():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 50, 2000)
    assert chi_square_uniformity(uniform, 49, 10)[1] > 0.01
    piled = np.minimum(rng.integers(0, 50, 2000), rng.integers(0, 50, 2000))  # too high truth
    assert chi_square_uniformity(piled, 49, 10)[1] < 1e-6


def test_power_rises_with_miscalibration_and_size_is_right():
    # under the null the rejection rate is the level: 2000 trials at 0.05 have a Monte Carlo
    # sd of 0.005, so 0.05 +- 0.02 is four sd
    assert abs(chi_square_power(100, alpha=0.05, num_trials=2000) - 0.05) < 0.02
    weak = chi_square_power(100, alpha=0.01, sd_ratio=0.9, num_trials=500)
    strong = chi_square_power(100, alpha=0.01, sd_ratio=0.5, num_trials=500)
    assert strong > 0.95 and weak < strong


@pytest.mark.slow  # ~30 s for the three modes: CI runs the statistical tests as a step
@pytest.mark.parametrize("pooling", ["pooled", "unpooled", "hierarchical"])
def test_sbc_linear(linear_design, pooling):
    spec, data = linear_design
    result = run_sbc(spec, data, _config(pooling, data.num_groups), CI)
    table = result.table()
    assert len(table) == {"pooled": 3, "unpooled": 11, "hierarchical": 15}[pooling]
    assert result.passes(alpha=0.01), table.sort_values("chi2_p").head()
    assert (result.divergences > 0).mean() <= 0.1  # a few replications may diverge once


def test_chunks_on_an_executor_give_the_same_ranks(linear_design):
    # each replication has its own key and data: splitting them into tasks (here 3 chunks,
    # each compiling once, on the in-process executor the batch layer also uses) must not
    # change a single rank
    from carpool.parallel.executors import SerialExecutor

    spec, data = linear_design
    small = SbcSettings(num_replications=6, warmup=60, num_ranks=19, thinning=1,
                        num_bins=4, seed=2)
    config = _config("pooled", data.num_groups)
    whole = run_sbc(spec, data, config, small)
    split = run_sbc(spec, data, config, small, executor=SerialExecutor(), num_chunks=3)
    for name, ranks in whole.ranks.items():
        np.testing.assert_array_equal(split.ranks[name], ranks)
