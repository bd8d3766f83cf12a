"""The SVI guides against NumPyro's own implementations of the same guides.

carpool builds the global part of its structured guide itself (one compiled trace of the
model, ``carpool.inference.svi.global_start``) and the SVI state without NumPyro's
``SVI.init`` (which traces op by op). Both must be exactly what NumPyro's
``AutoMultivariateNormal`` and ``SVI.init`` give: same start, same order of the sites in
the latent vector, same log densities, same optimiser state, same draws.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.handlers import block, seed, substitute, trace
from numpyro.infer.autoguide import AutoMultivariateNormal

from carpool.inference import svi as svi_mod
from carpool.inference.svi_start import init_with_values
from carpool.pooling.model import GROUP_PLATE
from carpool.testing import simulate_linear_groups

G, P = 5, 3


def _tiny_model(observed=True, batch_size=None):
    """The plated models' structure in few operations (NumPyro's op-by-op set-up of the
    reference guide stays cheap): global mu, tau, an LKJ factor and a noise scale, one
    local site in the group plate, a likelihood."""
    mu = numpyro.sample("mu", dist.Normal(jnp.zeros(P), 1.0).to_event(1))
    tau = numpyro.sample("tau", dist.HalfNormal(jnp.ones(P)).to_event(1))
    L = numpyro.sample("L_corr", dist.LKJCholesky(P, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate(GROUP_PLATE, G, subsample_size=batch_size) as idx:
        z = numpyro.sample("z_nc", dist.Normal(jnp.zeros(P), 1.0).to_event(1))
        theta = mu + tau * (z @ L.T)
        numpyro.sample("obs", dist.Normal(theta, sigma).to_event(1),
                       obs=jnp.asarray(_Y)[idx] if observed else None)


_Y = np.random.default_rng(0).normal(size=(G, P))


@pytest.fixture(scope="module")
def plated_start():
    """A stand-in of a plated model, its starting values and local covariances."""
    plated = SimpleNamespace(model=_tiny_model, global_sites=("mu", "tau", "L_corr", "sigma"),
                             local_sites=(("z_nc", P),), data=SimpleNamespace(num_groups=G))
    values = {"mu": jnp.asarray([0.3, -0.2, 0.1]), "tau": jnp.asarray([0.5, 0.2, 1.5]),
              "sigma": jnp.asarray(0.7), "L_corr": jnp.eye(P),
              "z_nc": jnp.asarray(np.random.default_rng(1).normal(size=(G, P)),
                                  jnp.result_type(float))}
    cov = np.broadcast_to(0.1 * np.eye(P), (G, P, P)).copy()
    return plated, values, cov


@pytest.fixture(scope="module")
def numpyro_guide(plated_start):
    """NumPyro's AutoMultivariateNormal over the global sites, set up (op by op)."""
    plated, values, _ = plated_start
    guide = AutoMultivariateNormal(block(plated.model, expose=list(plated.global_sites)),
                                   init_loc_fn=init_with_values(values, svi_mod._median()),
                                   init_scale=0.01)
    with seed(rng_seed=0):
        guide(observed=True, batch_size=None)  # sets the guide up
    return guide


def test_global_start_is_numpyros(plated_start, numpyro_guide):
    plated, values, cov = plated_start
    ref = numpyro_guide
    sites, loc = svi_mod.global_start(plated, values, jax.random.PRNGKey(0))
    # the sites in the order of NumPyro's latent vector, each its unconstrained start
    assert [s.name for s in sites] == list(ref._init_locs)
    assert {"mu", "tau", "L_corr", "sigma"} <= {s.name for s in sites}
    expected = np.concatenate([np.ravel(v) for v in ref._init_locs.values()])
    np.testing.assert_allclose(loc, expected, rtol=0, atol=1e-6)
    assert sum(s.width for s in sites) == ref.latent_dim


def test_guide_density_and_draws_are_numpyros(plated_start, numpyro_guide):
    plated, values, cov = plated_start
    ref = numpyro_guide
    guide = svi_mod.StructuredGuide(plated, values, cov, 0.01, jax.random.PRNGKey(0))
    k = ref.latent_dim
    rng = np.random.default_rng(0)
    # some params away from the start: a random loc and a random lower-triangular scale
    g_loc = guide.global_loc0 + 0.1 * jnp.asarray(rng.normal(size=k), guide.global_loc0.dtype)
    g_tril = jnp.asarray(np.tril(0.05 * rng.normal(size=(k, k))) + 0.2 * np.eye(k),
                         dtype=g_loc.dtype)
    ours = {"global_loc": g_loc, "global_scale_tril": g_tril,
            "local_loc": guide.loc0, "local_scale_tril": guide.tril0}
    theirs = {"auto_loc": g_loc, "auto_scale_tril": g_tril}
    key = jax.random.PRNGKey(7)
    tr = trace(substitute(seed(guide, key), data=ours)).get_trace(observed=True,
                                                                   batch_size=None)
    tr_ref = trace(substitute(seed(ref, key), data=theirs)).get_trace(observed=True,
                                                                       batch_size=None)
    for s in guide.global_sites:  # each site's value and log density (its log-Jacobian)
        np.testing.assert_allclose(tr[s.name]["value"], tr_ref[s.name]["value"], atol=1e-6)
        np.testing.assert_allclose(tr[s.name]["fn"].log_prob(tr[s.name]["value"]),
                                   tr_ref[s.name]["fn"].log_prob(tr_ref[s.name]["value"]),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        tr["_global_latent"]["fn"].log_prob(tr["_global_latent"]["value"]),
        tr_ref["_auto_latent"]["fn"].log_prob(tr_ref["_auto_latent"]["value"]), rtol=1e-6)
    # posterior draws are NumPyro's draws with the global half of the key
    draws = guide.sample_posterior(key, ours, sample_shape=(5,))
    ref_draws = ref.sample_posterior(jax.random.split(key)[0], theirs, sample_shape=(5,))
    for s in guide.global_sites:
        np.testing.assert_allclose(draws[s.name], ref_draws[s.name], atol=1e-5)


def test_init_state_is_svi_init(plated_start):
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.optim import Adam

    plated, values, cov = plated_start
    guide = svi_mod.StructuredGuide(plated, values, cov, 0.01, jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(3)
    svi_ref = SVI(plated.model, guide, Adam(1e-2), Trace_ELBO())
    state_ref = svi_ref.init(key, observed=True, batch_size=None)
    svi = SVI(plated.model, guide, Adam(1e-2), Trace_ELBO())
    state = svi_mod.init_state(svi, guide, key)
    np.testing.assert_array_equal(state.rng_key, state_ref.rng_key)
    assert state.mutable_state is None and state_ref.mutable_state is None
    ours, theirs = svi.get_params(state), svi_ref.get_params(state_ref)
    assert set(ours) == set(theirs)
    for name in ours:  # constrained values, and the unconstrained ones the optimiser holds
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(state.optim_state), jax.tree.leaves(state_ref.optim_state),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # one step of each gives the same loss
    _, loss = svi.update(state, observed=True, batch_size=None)
    _, loss_ref = svi_ref.update(state_ref, observed=True, batch_size=None)
    assert float(loss) == pytest.approx(float(loss_ref), rel=1e-6)


def _group_plate(observed=True, batch_size=None):
    return numpyro.plate(GROUP_PLATE, G, subsample_size=batch_size)


def test_diagonal_guide_is_autonormal(plated_start):
    """The mean-field guide (``diagonal=True``) is NumPyro's AutoNormal: the same starting
    locs and scales, and the same ELBO at the start."""
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.optim import Adam

    plated, values, cov = plated_start
    guide = svi_mod.StructuredGuide(plated, values, cov, 0.05, jax.random.PRNGKey(0),
                                    diagonal=True)
    ref = AutoNormal(plated.model, init_loc_fn=init_with_values(values, svi_mod._median()),
                     init_scale=0.05, create_plates=_group_plate)
    key = jax.random.PRNGKey(5)
    svi_ref = SVI(plated.model, ref, Adam(1e-2), Trace_ELBO())
    state_ref = svi_ref.init(key, observed=True, batch_size=None)
    svi = SVI(plated.model, guide, Adam(1e-2), Trace_ELBO())
    params = svi.get_params(svi_mod.init_state(svi, guide, key))
    theirs = svi_ref.get_params(state_ref)
    names = [s.name for s in guide.global_sites]
    np.testing.assert_allclose(
        params["global_loc"],
        np.concatenate([np.ravel(theirs[f"{n}_auto_loc"]) for n in names]), atol=1e-6)
    np.testing.assert_allclose(params["local_loc"], theirs["z_nc_auto_loc"], atol=1e-6)
    np.testing.assert_allclose(params["global_scale"], 0.05, rtol=1e-5)
    np.testing.assert_allclose(params["local_scale"], theirs["z_nc_auto_scale"], rtol=1e-5)
    # the same family: the ELBO at the start agrees within Monte Carlo error (20,000
    # particles each; the per-particle sd of the loss is 3.2 nats here (measured over 50
    # single-particle losses), so the difference of the two estimates has a standard
    # error of 0.032 and 0.15 is 4.6 of them; a wrong Jacobian or scale moves it by nats)
    elbo = Trace_ELBO(num_particles=20000)
    kw = {"observed": True, "batch_size": None}
    loss = elbo.loss(jax.random.PRNGKey(1), params, plated.model, guide, **kw)
    loss_ref = elbo.loss(jax.random.PRNGKey(2), theirs, plated.model, ref, **kw)
    assert float(loss) == pytest.approx(float(loss_ref), abs=0.15)


def _fake_plated(model, sites):
    return SimpleNamespace(model=model, global_sites=tuple(sites))


def test_global_start_refuses_param_sites():
    def model(observed=True, batch_size=None):
        w = numpyro.param("w", jnp.ones(2))
        numpyro.sample("x", dist.Normal(w.sum(), 1.0))

    with pytest.raises(ValueError, match="param or mutable sites"):
        svi_mod.global_start(_fake_plated(model, ["x"]), {}, jax.random.PRNGKey(0))


def test_global_start_refuses_a_traced_support():
    def model(observed=True, batch_size=None):
        top = numpyro.sample("top", dist.LogNormal(0.0, 1.0))
        numpyro.sample("x", dist.Uniform(0.0, top))  # support (0, top): not a constant

    with pytest.raises(ValueError, match="support of 'x' depends on traced values"):
        svi_mod.global_start(_fake_plated(model, ["top", "x"]), {}, jax.random.PRNGKey(0))


@pytest.mark.slow  # a whole SVI fit (~18 s) for a cost, not a result
def test_svi_fit_computes_the_pooled_map_once(monkeypatch):
    """The centring choice and the guide's start share one pooled MAP (deterministic)."""
    import carpool
    from carpool.pooling import centring

    calls = []
    real = centring.pooled_map_with_residual

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(centring, "pooled_map_with_residual", counted)
    df, _ = simulate_linear_groups(num_groups=6, num_obs_per_group=10, rng_seed=4)
    carpool.fit(df, "linear", sampler=carpool.SviSettings(num_steps=20, draws=10), warn=False)
    assert len(calls) == 1
