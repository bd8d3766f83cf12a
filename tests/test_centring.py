"""The automatic centring's pooled MAP under priors far from the data's scale."""

import numpy as np

from carpool.inference.run import resolve_spec
from carpool.pooling.centring import pooled_map_with_residual
from carpool.testing import simulate_drivers


def test_pooled_map_survives_the_reference_noise_prior():
    # The reference's noise prior Exponential(1e4) has its median at 7e-5 m/s^2, ~1,000x
    # below the simulated 0.1 m/s^2 noise; BFGS from there threw v0's latent to 83 and the
    # centring's eigendecomposition then failed (LinAlgError) before any sampling.
    df, _ = simulate_drivers(6, duration_s=6.0, rng_seed=1, classes=["car", "truck"])
    spec = resolve_spec("idm", priors="zhang-sun-2023")
    z, noise, _ = pooled_map_with_residual(spec, spec.prepare(df))
    assert np.all(np.isfinite(z)) and np.all(np.abs(z) < 10.0)  # latent prior Normal(0, 1)
    # the pooled noise estimate is of the data's order (0.1 m/s^2 simulated plus the
    # pooled model's misfit across 6 heterogeneous drivers), not the prior's 1e-4
    assert 0.05 < noise["sigma"] < 0.5
