"""The joint speed-and-gap likelihood (``likelihood="joint"``): its density, its data, its fits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

import carpool
from carpool.cli import app
from carpool.models.carfollowing import COVARIATES, JOINT_COVARIATES
from carpool.pooling.likelihoods import JointGaussian, likelihood_from_dict
from carpool.testing import simulate_drivers

LIK = JointGaussian("z", "base", "load", "offset", 0.7, 0.05, 0.02, scale_covariate="c")


def _covariates(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"z": rng.normal(10.0, 1.0, n), "base": rng.normal(10.0, 1.0, n),
            "load": -0.5 * rng.uniform(0.1, 0.2, n), "offset": rng.normal(8.0, 1.0, n),
            "c": rng.uniform(0.1, 0.2, n)}


def test_joint_density_is_the_bivariate_normal(rng):
    # known answer: the row density is scipy's bivariate normal with the covariance the
    # docstring states (exact up to float32 rounding: JAX computes in float32)
    n = 50
    covs = _covariates(rng, n)
    mean = rng.normal(8.0, 1.0, n)
    y = mean + rng.normal(0.0, 0.2, n)
    covs["z"] = covs["base"] + covs["load"] * (y - covs["offset"]) + rng.normal(0.0, 0.03, n)
    noise = {"sigma": 0.7, "sigma_first": 0.05, "sigma_second": 0.02}
    got = np.asarray(LIK.log_prob(y, mean, noise, covs))
    for i in range(n):
        c, ell = covs["c"][i], covs["load"][i]
        cov = np.array([[0.7**2 * c**2 + 0.05**2, 0.7**2 * ell * c**2],
                        [0.7**2 * ell * c**2, 0.7**2 * ell**2 * c**2 + 0.02**2]])
        centre = [mean[i], covs["base"][i] + ell * (mean[i] - covs["offset"][i])]
        want = stats.multivariate_normal(centre, cov).logpdf([y[i], covs["z"][i]])
        np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-4)


def test_joint_density_censored_rows(rng):
    lik = JointGaussian("z", "base", "load", "offset", 0.7, 0.05, 0.02, scale_covariate="c",
                        lower=0.0)
    covs = _covariates(rng, 3)
    mean = np.array([0.3, -0.1, 2.0])
    y = np.array([0.0, 0.0, 2.1])
    noise = {"sigma": 0.7, "sigma_first": 0.05, "sigma_second": 0.02}
    got = np.asarray(lik.log_prob(y, mean, noise, covs))
    c = covs["c"]
    sd_y = np.sqrt(0.7**2 * c**2 + 0.05**2)
    # a stop counts as P(Y <= 0) alone: the gap's linear update does not hold through one
    want = stats.norm.logcdf(-mean[:2] / sd_y[:2])
    np.testing.assert_allclose(got[:2], want, rtol=1e-4)
    np.testing.assert_allclose(got[2], np.asarray(LIK.log_prob(y, mean, noise, covs))[2])


def test_without_speed_error_the_gap_says_nothing_about_the_mean(rng):
    # with sigma_first -> 0 the gap's conditional density does not depend on the mean, so the
    # joint and the speed likelihood have the same gradient in the mean (the docstring's
    # claim): compare d/dmean of the joint with that of the speed term alone
    covs = _covariates(rng, 20)
    y = rng.normal(8.0, 1.0, 20)
    noise = {"sigma": 0.7, "sigma_first": 1e-9, "sigma_second": 0.02}

    def joint(mean):
        return jnp.sum(LIK.log_prob(y, mean, noise, covs))

    def speed(mean):
        return jnp.sum(jax.scipy.stats.norm.logpdf(y, mean, 0.7 * covs["c"]))

    mean = jnp.asarray(y + rng.normal(0.0, 0.1, 20))
    np.testing.assert_allclose(jax.grad(joint)(mean), jax.grad(speed)(mean), rtol=1e-4,
                               atol=1e-3)  # float32 cancellation; gradients are ~10
    # with a real speed error, the gap moves the gradient
    noisy = {**noise, "sigma_first": 0.1}
    g = jax.grad(lambda m: jnp.sum(LIK.log_prob(y, m, noisy, covs)))(mean)
    assert not np.allclose(g, jax.grad(speed)(mean), rtol=1e-2)


def test_round_trip_through_its_dict():
    lik = JointGaussian("z", "base", "load", "offset", carpool.HalfNormal(1.0), 0.05,
                        carpool.HalfNormal(0.1), scale_covariate="c", lower=0.0)
    assert likelihood_from_dict(lik.to_dict()) == lik
    assert set(lik.noise_priors()) == {"sigma", "sigma_second"}
    assert lik.fixed_noise() == {"sigma_first": 0.05}


def test_joint_spec_covariates_follow_the_ballistic_update():
    df, _ = simulate_drivers(3, duration_s=10.0, rng_seed=1)
    spec = carpool.get_spec("idm", likelihood="joint")
    assert spec.covariates == COVARIATES + JOINT_COVARIATES
    assert spec.options["likelihood"] == "joint"
    assert "likelihood" not in carpool.get_spec("idm").options  # old fits reload unchanged
    data = spec.prepare(df)
    covs = data.covariates
    # the simulator moves both cars by their mean speed over the step, so the next gap is
    # the constant-speed gap plus the loading times the speed change, exactly
    np.testing.assert_allclose(
        covs["next_gap"],
        covs["gap_constant_speed"] + covs["gap_loading"] * (data.y - covs["speed"]),
        atol=1e-9)
    with pytest.raises(ValueError, match="i.i.d. residuals"):
        carpool.get_spec("idm", likelihood="joint", residual="ar2")
    with pytest.raises(ValueError, match="unknown likelihood"):
        carpool.get_spec("idm", likelihood="gap")


@pytest.fixture(scope="module")
def joint_and_speed_fits():
    # acceleration noise of the size fitted on real drivers (0.6 m/s^2 on NGSIM)
    df, _ = simulate_drivers(4, duration_s=30.0, noise_sd=0.5, rng_seed=3)
    # recorded to 0.01 m/s and 0.01 m like the bundled NGSIM file: exactly consistent speeds
    # and gaps would drive both measurement errors to 0, where the posterior degenerates
    columns = ["speed", "gap", "leader_speed"]
    df[columns] = df[columns].round(2)
    settings = {"sampler": carpool.NutsSettings(chains=2, warmup=300, draws=300, seed=0),
                "warn": False, "progress_bar": False}
    joint = carpool.fit(df, "idm", pooling="pooled", model_options={"likelihood": "joint"},
                        **settings)
    speed = carpool.fit(df, "idm", pooling="pooled", **settings)
    return joint, speed


def test_joint_fit_agrees_with_the_speed_fit_on_consistent_data(joint_and_speed_fits):
    import arviz as az

    joint, speed = joint_and_speed_fits
    # simulated speeds carry no measurement error and the gaps are consistent with them, so
    # the learned speed error is far below the step's acceleration error (sigma dt = 0.1
    # m/s) and the gap adds next to nothing: the posterior means agree within 4 Monte Carlo
    # standard errors of their difference (plus 0.1 posterior sd for the little the gap
    # still adds through sigma_first)
    noise = joint.noise_draws()
    assert float(np.mean(noise["sigma_first"])) < 0.02  # m/s
    for name in joint.parameter_names:
        a = joint.idata.posterior["theta"].sel(parameter=name)
        b = speed.idata.posterior["theta"].sel(parameter=name)
        mcse = np.hypot(float(az.mcse(a.values)), float(az.mcse(b.values)))
        diff = abs(float(a.mean()) - float(b.mean()))
        assert diff < 4 * mcse + 0.1 * float(b.std()), (name, diff, mcse, float(b.std()))


def test_joint_fit_saves_reloads_and_scores(joint_and_speed_fits, tmp_path):
    joint, _ = joint_and_speed_fits
    path = joint.save(tmp_path / "joint.nc")
    back = carpool.load(path)
    assert isinstance(back.spec.likelihood, JointGaussian)
    assert back.spec.covariates == COVARIATES + JOINT_COVARIATES
    ll = carpool.pointwise_log_likelihood(back)
    assert ll.shape[-1] == back.data.num_obs and np.all(np.isfinite(ll))
    sims = carpool.posterior_predictive(back, num_draws=5)
    assert sims.shape == (5, back.data.num_obs)
    # the follow-the-leader simulation takes a joint fit like any IDM fit
    from carpool.simulate._fit import carfollowing_model

    assert carfollowing_model(back).name == "idm"


def test_cli_rejects_joint_with_a_dynamic_residual(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("driver,time,speed,gap,leader_speed\n"
                    + "\n".join(f"a,{k * 0.2:.1f},10,20,10" for k in range(5)) + "\n")
    result = CliRunner().invoke(app, ["fit", str(data), "--out", str(tmp_path / "f.nc"),
                                      "--likelihood", "joint", "--residual", "ar2"])
    assert result.exit_code == 2 and "i.i.d. residuals" in result.stderr
    result = CliRunner().invoke(app, ["fit", str(data), "--out", str(tmp_path / "f.nc"),
                                      "--likelihood", "gap"])
    assert result.exit_code == 2 and "unknown --likelihood 'gap'" in result.stderr
    assert not (tmp_path / "f.nc").exists()


@pytest.mark.parametrize("lower", [None, 0.0])
def test_summed_joint_density_equals_the_masked_sum(rng, lower):
    # the sampler scores summed_log_prob; it must be the same function of the parameters as
    # the masked sum of log_prob, value and gradient (float32 sums of ~100 terms: 1e-4)
    lik = JointGaussian("z", "base", "load", "offset", carpool.HalfNormal(1.0),
                        carpool.HalfNormal(0.1), carpool.HalfNormal(0.1),
                        scale_covariate="c", lower=lower)
    shape = (3, 40)
    covs = {k: v.reshape(shape) for k, v in _covariates(rng, 120).items()}
    y = rng.normal(0.5, 1.0, shape)  # about 30% at or below the bound 0
    covs["z"] = covs["base"] + covs["load"] * (y - covs["offset"]) + rng.normal(0, 0.05, shape)
    mask = rng.random(shape) < 0.8
    terms = jax.tree_util.tree_map(jnp.asarray, lik.observed_terms(y, mask, covs))
    covs_j = {k: jnp.asarray(v) for k, v in covs.items()}

    def both(mean, log_noise):
        noise = dict(zip(("sigma", "sigma_first", "sigma_second"), jnp.exp(log_noise),
                         strict=True))
        lp = lik.log_prob(jnp.asarray(y), mean, noise, covs_j)
        return (lik.summed_log_prob(terms, jnp.asarray(y), mean, noise),
                jnp.sum(jnp.where(jnp.asarray(mask), lp, 0.0)))

    mean = jnp.asarray(y + rng.normal(0.0, 0.3, shape))
    log_noise = jnp.log(jnp.asarray([0.7, 0.05, 0.03]))
    new, old = both(mean, log_noise)
    np.testing.assert_allclose(new, old, rtol=1e-4)
    g_new = jax.grad(lambda m, s: both(m, s)[0], argnums=(0, 1))(mean, log_noise)
    g_old = jax.grad(lambda m, s: both(m, s)[1], argnums=(0, 1))(mean, log_noise)
    for a, b in zip(g_new, g_old, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
