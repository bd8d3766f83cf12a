"""SBC that must fail (a negative control) and the IDM at reduced sizes.

Split from ``tests/test_sbc.py`` so pytest-xdist's ``--dist loadfile`` spreads the
compilations over both workers. Pass rule and power: see ``tests/test_sbc.py``.
"""

from __future__ import annotations

import pytest

from carpool.inference.sbc import SbcSettings, run_sbc
from carpool.models.registry import get_spec
from carpool.pooling.spec import Hyperpriors, PoolingConfig
from carpool.testing import simulate_drivers, simulate_linear_groups


def _config(pooling: str, num_groups: int) -> PoolingConfig:
    return PoolingConfig(pooling=pooling, correlated=False, param="noncentred",
                         hyperpriors=Hyperpriors.default_for(num_groups))


def test_sbc_detects_a_wrong_posterior():
    """Negative control: data from Normal(0, 5) coefficients, fitted with Normal(0, 0.2)
    priors; the true coefficients fall outside the shrunken posteriors, ranks pile at 0 and
    L, and the test must fail."""
    spec = get_spec("linear")
    data = spec.prepare(simulate_linear_groups(5, 10, rng_seed=0)[0])
    wrong = get_spec("linear", prior_scale=0.2)
    settings = SbcSettings(num_replications=30, warmup=150, num_ranks=49, thinning=2,
                           num_bins=10, seed=2)
    result = run_sbc(spec, data, _config("pooled", data.num_groups), settings,
                     fit_spec=wrong)
    assert not result.passes(alpha=0.01)
    assert result.table()["chi2_p"].min() < 1e-6


# The IDM in CI: pooled and unpooled at 40 replications (about 20 and 40 s here); the
# hierarchical IDM (its trees reach depth 8: minutes even reduced) and 60 replications of
# every mode are slow. At 40 replications of 50 ranks in 10 bins the chi-square test's
# power per quantity at the Bonferroni level against draws half as wide as they should be
# is 0.66 (pooled, 6 quantities) and 0.58 (unpooled, 16), from chi_square_power(40,
# num_ranks=49, alpha=0.01 / m, sd_ratio=0.5); an error that distorts every parameter
# fails the configuration if any one quantity fails: a reduced check for gross errors in
# the IDM's likelihood,
# transforms or pooling code. The documented run (benchmarks/sbc.py, docs/reliability.md)
# is the one with power for subtle ones (0.05-0.08 here against 30% too narrow).
@pytest.mark.slow  # ~25 s for the two modes: CI runs the statistical tests as a step
@pytest.mark.parametrize("pooling", ["pooled", "unpooled"])
def test_sbc_idm_reduced(pooling):
    _sbc_idm(pooling, num_replications=40, warmup=150)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["pooled", "unpooled", "hierarchical"])
def test_sbc_idm(pooling):
    _sbc_idm(pooling, num_replications=60, warmup=200)


def _sbc_idm(pooling: str, num_replications: int, warmup: int) -> None:
    spec = get_spec("idm")
    data = spec.prepare(simulate_drivers(3, duration_s=6.0, rng_seed=1)[0])
    settings = SbcSettings(num_replications=num_replications, warmup=warmup,
                           num_ranks=49, thinning=2, num_bins=10, seed=1)
    result = run_sbc(spec, data, _config(pooling, data.num_groups), settings)
    assert result.passes(alpha=0.01), result.table().sort_values("chi2_p").head()
