"""The eight-schools posterior against posteriordb's reference draws.

Reference: stan-dev/posteriordb (BSD-3-Clause) @ 28f8d3d6e975315f42aa274a8399f21e07a43b30,
``eight_schools-eight_schools_noncentered``: Stan NUTS, 10 chains x 1,000 kept draws (thinned
by 10), adapt_delta 0.95, all R-hat < 1.001, bulk ESS ~10,000.

Tolerance: for each of mu, tau, theta[1..8] and for both the posterior mean and sd,
z = (ours - reference) / sqrt(MCSE_ours^2 + MCSE_ref^2) must satisfy |z| < 4.5. With 20
comparisons of approximately standard-normal z the chance of a false failure is ~1e-4, while
a real error of a fraction of a posterior sd (e.g. a wrong tau prior) gives |z| >> 10.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from mc import mcse_mean, mcse_sd

import carpool
from carpool.models.eight_schools import eight_schools_data

Z_MAX = 4.5


def _reference(data: str) -> dict[str, np.ndarray]:
    path = os.path.join(data, "posteriordb",
                        "draws_draws_eight_schools-eight_schools_noncentered.json.zip")
    with zipfile.ZipFile(path) as z:
        chains = json.loads(z.read(z.namelist()[0]))
    names = ["mu", "tau"] + [f"theta[{j}]" for j in range(1, 9)]
    return {n: np.array([c[n] for c in chains]) for n in names}  # (10, 1000)


def test_bundled_data_match_posteriordb(vendored_data):
    with zipfile.ZipFile(os.path.join(vendored_data, "posteriordb",
                                      "data_data_eight_schools.json.zip")) as z:
        ref = json.loads(z.read(z.namelist()[0]))
    df = eight_schools_data()
    assert df["y"].tolist() == ref["y"] and df["sigma"].tolist() == ref["sigma"]


@pytest.mark.filterwarnings("ignore::carpool.ConvergenceWarning")
def test_noncentred_posterior_matches_reference(vendored_data):
    ref = _reference(vendored_data)
    f = carpool.fit(eight_schools_data(), "eight_schools",
                    pooling=carpool.PoolingConfig(param="noncentred"),
                    sampler=carpool.NutsSettings(warmup=1000, draws=2500, target_accept=0.95,
                                                 seed=11))
    assert f.centring.choice == {"theta": "noncentred"}
    assert f.diagnostics["divergences"] <= 5  # rare at adapt 0.95 in the funnel's neck
    post = f.idata.posterior
    ours = {"mu": post["mu"].values[..., 0], "tau": post["tau"].values[..., 0]}
    for j in range(8):
        ours[f"theta[{j + 1}]"] = post["theta"].values[:, :, j, 0]
    assert_matches_reference(ours, ref)


def assert_matches_reference(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    """Posterior means and sds of every reference quantity within ``Z_MAX`` combined Monte
    Carlo standard errors (the module docstring's tolerance)."""
    for name, r in ref.items():
        o = ours[name]
        z_mean = (o.mean() - r.mean()) / np.hypot(mcse_mean(o), mcse_mean(r))
        z_sd = (o.std(ddof=1) - r.std(ddof=1)) / np.hypot(mcse_sd(o), mcse_sd(r))
        assert abs(z_mean) < Z_MAX, (name, o.mean(), r.mean(), z_mean)
        assert abs(z_sd) < Z_MAX, (name, o.std(), r.std(), z_sd)
