"""SBC that must fail (a negative control) and the IDM at a reduced size (slow).

Split from ``tests/test_sbc.py`` so pytest-xdist's ``--dist loadfile`` spreads the
compilations over both workers. Pass rule and power: see ``tests/test_sbc.py``.
"""

from __future__ import annotations

import pytest

from carpool.inference.sbc import SbcSettings, run_sbc
from carpool.pooling.spec import Hyperpriors, PoolingConfig, get_spec
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
    settings = SbcSettings(num_replications=30, num_warmup=150, num_ranks=49, thinning=2,
                           num_bins=10, seed=2)
    result = run_sbc(spec, data, _config("pooled", data.num_groups), settings,
                     fit_spec=wrong)
    assert not result.passes(alpha=0.01)
    assert result.table()["chi2_p"].min() < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["pooled", "unpooled", "hierarchical"])
def test_sbc_idm(pooling):
    spec = get_spec("idm")
    data = spec.prepare(simulate_drivers(3, duration_s=6.0, rng_seed=1)[0])
    settings = SbcSettings(num_replications=60, num_warmup=200, num_ranks=49, thinning=2,
                           num_bins=10, seed=1)
    result = run_sbc(spec, data, _config(pooling, data.num_groups), settings)
    assert result.passes(alpha=0.01), result.table().sort_values("chi2_p").head()
