"""Comparison of pooling modes: pooling factors, scores, recommendation, sweep, sensitivity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import carpool
from carpool.compare import compare, pooling_factors, shrinkage_table
from carpool.compare.pooling_factors import pooling_factor_draws
from carpool.compare.recommend import held_out_caveats, recommend
from carpool.compare.scores import (
    PointwiseScore,
    group_folds,
    lfo_split,
    paired_difference,
    select_groups,
)
from carpool.testing import simulate_linear_groups

MODES = ("pooled", "unpooled", "hierarchical")

#: Three data sets, one per generating mode (8 groups, linear model, noise sd 0.5):
#: identical groups; very different groups with 60 observations each; moderately different
#: groups (intercept sd 0.5, slope sd 0.3) with 2 to 80 observations.
SCENARIOS = {
    "pooled": dict(num_groups=8, num_obs_per_group=30, intercept_sd=0.0, slope_sd=0.0),
    "unpooled": dict(num_groups=8, num_obs_per_group=60, intercept_sd=3.0, slope_sd=2.0),
    "hierarchical": dict(num_groups=8, num_obs_per_group=[2, 3, 4, 5, 10, 20, 40, 80],
                         intercept_sd=0.5, slope_sd=0.3),
}
SAMPLER = carpool.NutsSettings(chains=4, warmup=300, draws=300, seed=0)


def _fit_three(truth: str) -> dict[str, carpool.Fit]:
    df, _ = simulate_linear_groups(**SCENARIOS[truth], noise_sd=0.5, rng_seed=1)
    return {m: carpool.fit(df, "linear", pooling=m, sampler=SAMPLER, warn=False)
            for m in MODES}


class _ScenarioFits(dict):
    """The three modes fitted to a scenario on its first use: the default suite's tests read
    the hierarchical scenario only, the statistical (slow) tests all three."""

    def __missing__(self, truth: str) -> dict[str, carpool.Fit]:
        self[truth] = _fit_three(truth)
        return self[truth]


@pytest.fixture(scope="module")
def scenario_fits() -> dict[str, dict[str, carpool.Fit]]:
    """The statistical tests of the comparison (does it find the generating mode, do pooling
    factors behave as the theory says) are slow-marked: ~150 s of fitting and held-out
    refits, which CI runs in its slow step; the default suite keeps the contract and errors."""
    return _ScenarioFits()


# ---------------------------------------------------------------- pooling factors
@pytest.mark.slow
def test_pooling_factors_by_construction(scenario_fits):
    fits = scenario_fits["hierarchical"]
    assert (pooling_factors(fits["pooled"])["pooling_factor"] == 1).all()
    assert (pooling_factors(fits["unpooled"])["pooling_factor"] == 0).all()
    pf = pooling_factors(fits["hierarchical"], unpooled=fits["unpooled"])
    assert pf["pooling_factor"].between(0, 1, inclusive="neither").all()
    assert {"group", "parameter", "num_obs", "lo", "hi", "moved"} <= set(pf.columns)
    # groups with less data are pooled more: the intercept's factor falls with group size
    icpt = pf[pf.parameter == "intercept"]
    assert np.corrcoef(np.log(icpt.num_obs), icpt.pooling_factor)[0, 1] < -0.9


@pytest.mark.slow
def test_pooling_factors_at_the_extremes_of_the_dial(scenario_fits):
    fits = scenario_fits["unpooled"]
    # well-identified, very different groups: the hierarchical fit barely pools ...
    assert pooling_factors(fits["hierarchical"])["pooling_factor"].max() < 0.05
    # ... and identical groups pool strongly (tau learned near 0)
    pf_same = pooling_factors(scenario_fits["pooled"]["hierarchical"])["pooling_factor"]
    assert pf_same.median() > 0.2


def test_pooling_factor_is_the_normal_normal_shrinkage():
    """Eight schools: with I_g = 1/s_g^2 the factor is s_g^2 / (s_g^2 + tau^2), exactly."""
    s2 = np.array([15.0, 10, 16, 11, 9, 11, 10, 18]) ** 2
    tau = np.array([[0.5], [5.0], [20.0]])
    pf = pooling_factor_draws((1 / s2)[:, None, None], tau, np.ones((3, 1, 1)))
    np.testing.assert_allclose(pf[..., 0], s2[None] / (s2[None] + tau**2), rtol=1e-12)


def test_pooling_factor_with_correlation_is_the_matrix_weight():
    info = np.array([[[4.0, 1.0], [1.0, 2.0]]])
    tau, corr = np.array([[0.7, 1.3]]), np.array([[[1.0, 0.6], [0.6, 1.0]]])
    sigma = np.diag(tau[0]) @ corr[0] @ np.diag(tau[0])
    # posterior mean weight on the population mean: (I_g + Sigma^-1)^-1 Sigma^-1
    expected = np.linalg.solve(info[0] + np.linalg.inv(sigma), np.linalg.inv(sigma))
    np.testing.assert_allclose(pooling_factor_draws(info, tau, corr)[0, 0],
                               np.diag(expected), rtol=1e-10)


# ---------------------------------------------------------------- comparison
@pytest.mark.slow
@pytest.mark.parametrize("truth", list(SCENARIOS))
def test_compare_ranks_the_generating_mode_first(scenario_fits, truth):
    c = compare(scenario_fits[truth], lfo=False, ldo=False)
    assert c.recommendation["mode"] == truth, c.recommendation["reason"]
    assert c.table.loc[truth, "rank"] == 1
    assert sorted(c.table["rank"]) == [1, 2, 3]
    assert c.recommendation["reason"].startswith(truth)
    d = c.to_dict()
    json.dumps(d)
    assert set(d["modes"]) == set(MODES)
    assert d["modes"]["unpooled"]["ldo_rmse_speed"] is None


@pytest.mark.slow
def test_compare_heldout_scores(scenario_fits):
    """Leave-future-out and leave-groups-out on the hierarchical scenario (2 group folds)."""
    fits = scenario_fits["hierarchical"]
    lines = []
    c = compare(fits, ldo_folds=2, log_fn=lines.append,
                refit_sampler=carpool.NutsSettings(warmup=200, draws=200))
    t = c.table
    assert t[["lfo_elpd", "lfo_rmse_speed"]].notna().all().all()
    assert np.isnan(t.loc["unpooled", "ldo_elpd"]) and np.isnan(t.loc["unpooled",
                                                                      "ldo_rmse_speed"])
    assert t.loc[["pooled", "hierarchical"], "ldo_rmse_speed"].notna().all()
    # the noise sd is 0.5, so no honest one-step prediction beats it by much
    assert (t["lfo_rmse_speed"] > 0.35).all()
    # unseen groups are predicted from the population: worse than seen ones
    assert t.loc["hierarchical", "ldo_rmse_speed"] > t.loc["hierarchical", "lfo_rmse_speed"]
    # warm-started: one line per mode, its leave-future-out and 2 leave-groups-out refits
    # sharing one compiled sampler
    assert len(lines) == 3 and "warm-started" in c.refits
    d = c.to_dict()
    assert d["modes"]["hierarchical"]["ldo_rmse_speed"] > 0 and d["refits"] == c.refits


@pytest.mark.slow  # ~60 s, cold and warm refits compared: CI runs it in the slow step
def test_compare_refits_from_scratch_say_so(scenario_fits):
    """``warm_start=False`` refits each fold on its own data (one line per refit) and the
    scores agree with the warm-started ones within Monte Carlo error."""
    fits = scenario_fits["hierarchical"]
    sampler = carpool.NutsSettings(warmup=300, draws=300)
    lines = []
    cold = compare(fits, ldo_folds=2, log_fn=lines.append, refit_sampler=sampler,
                   warm_start=False)
    warm = compare(fits, ldo_folds=2, refit_sampler=sampler)
    assert len(lines) == 3 + 2 * 2 and "from scratch" in cold.refits
    # held-out log densities of ~50 observations from 1,200 draws: their Monte Carlo error
    # is well under a nat; 3 nats separates a wrong posterior (a mode's scores differ by
    # 10s of nats here) from sampling noise
    for col in ("lfo_elpd", "ldo_elpd"):
        a, b = warm.table[col].to_numpy(), cold.table[col].to_numpy()
        ok = ~np.isnan(a)
        np.testing.assert_allclose(a[ok], b[ok], atol=3.0)


def test_compare_rejects_bad_input(scenario_fits):
    fits = scenario_fits["hierarchical"]
    other, _ = simulate_linear_groups(4, 10, rng_seed=2)
    other_fit = carpool.fit(other, "linear", pooling="pooled", warn=False,
                            sampler=carpool.NutsSettings(chains=2, warmup=100, draws=100))
    with pytest.raises(ValueError, match="at least two"):
        compare([fits["pooled"]])
    with pytest.raises(ValueError, match="two pooled fits"):
        compare([fits["pooled"], fits["pooled"]])
    with pytest.raises(ValueError, match="same data"):
        compare([other_fit, fits["hierarchical"]])
    with pytest.raises(ValueError, match="unknown purpose"):
        compare(fits, purpose="waic")
    with pytest.raises(ValueError, match="needs its held-out score"):
        compare(fits, purpose="forecast", lfo=False)


def test_carpool_compare_is_callable_and_a_package(scenario_fits):
    import carpool.compare.scores  # noqa: F401  (importing a submodule must not hide it)

    assert callable(carpool.compare)
    assert carpool.compare.pooling_factors is pooling_factors
    c = carpool.compare(scenario_fits["hierarchical"], lfo=False, ldo=False)
    assert c.recommendation["mode"] in MODES and list(c.table.index) == list(MODES)


# ---------------------------------------------------------------- recommendation rule
def _score(lpd):
    return PointwiseScore(np.asarray(lpd, dtype=float))


def test_recommend_prefers_the_simplest_tied_mode():
    rng = np.random.default_rng(0)
    base = rng.normal(-1, 0.3, 200)
    # differences of zero mean: sum ~ N(0, 1), standard error ~1, within 2 se (seeded)
    tied = {"pooled": _score(base + rng.normal(0, 0.05, 200)),
            "unpooled": _score(base), "hierarchical": _score(base + rng.normal(0, 0.05, 200))}
    rec, ranking = recommend(tied, score_name="elpd_loo")
    assert rec["mode"] == "pooled" and ranking[0] == "pooled"
    clear = {"pooled": _score(base - 0.5), "unpooled": _score(base - 0.2),
             "hierarchical": _score(base)}
    rec, ranking = recommend(clear, score_name="elpd_loo")
    assert rec["mode"] == "hierarchical" and ranking == ["hierarchical", "unpooled", "pooled"]


def test_caveats_name_every_score_that_favours_another_mode():
    rng = np.random.default_rng(1)
    base = rng.normal(-1, 0.3, 200)
    # LOO favours hierarchical; both held-out scores favour pooled by 0.5 nats per point
    # (a sum of 100 +- ~0: far beyond 2 standard errors of the paired difference)
    scores = {
        "loo": {"pooled": _score(base - 0.5), "hierarchical": _score(base)},
        "lfo": {"pooled": _score(base + 0.5 + rng.normal(0, 0.01, 200)),
                "hierarchical": _score(base)},
        "ldo": {"pooled": _score(base + 0.5 + rng.normal(0, 0.01, 200)),
                "hierarchical": _score(base)},
    }
    caveats = held_out_caveats("hierarchical", scores, "drivers")
    assert len(caveats) == 2
    assert caveats[0].startswith("pooled is ahead on leave-future-out elpd (+100")
    assert "purpose='forecast'" in caveats[0]
    assert "leave-drivers-out elpd" in caveats[1] and "purpose='new-groups'" in caveats[1]
    assert held_out_caveats("pooled", scores, "drivers") == [
        "hierarchical is ahead on elpd_loo (+100 +/- 0), the score for purpose='describe'"]


@pytest.mark.slow
def test_compare_reason_names_the_held_out_scores(scenario_fits):
    fits = scenario_fits["pooled"]
    c = compare(fits, ldo=False, purpose="forecast",
                refit_sampler=carpool.NutsSettings(warmup=150, draws=150))
    assert c.recommendation["purpose"] == "forecast"
    assert "leave-future-out elpd" in c.recommendation["reason"]
    c = compare(fits, lfo=False, ldo=False)
    assert c.recommendation["purpose"] == "describe"


def test_paired_difference_standard_error():
    a, b = _score([1.0, 2.0, 3.0, 4.0]), _score([0.0, 2.0, 2.0, 4.0])
    d, se = paired_difference(a, b)
    assert d == pytest.approx(2.0)
    assert se == pytest.approx(np.sqrt(4 * np.var([1, 0, 1, 0], ddof=1)))


# ---------------------------------------------------------------- splits
def test_lfo_split_holds_out_the_end_of_each_series():
    df, _ = simulate_linear_groups(3, [2, 10, 21], rng_seed=0)
    data = carpool.get_spec("linear").prepare(df)
    train, test = lfo_split(data, 0.2)
    # the 2-observation group is too short to split: it stays whole in training
    assert list(train.group_sizes) == [2, 8, 16]
    assert test.group_ids == data.group_ids[1:] and list(test.group_sizes) == [2, 5]
    rows = np.flatnonzero(data.group_index == 2)
    np.testing.assert_array_equal(test.y[test.group_index == 1], data.y[rows[-5:]])
    with pytest.raises(ValueError, match="too short"):
        lfo_split(select_groups(data, [0]), 0.2)


def test_group_folds_partition_the_groups():
    folds = group_folds(7, 3, seed=1)
    assert len(folds) == 3
    assert sorted(np.concatenate(folds).tolist()) == list(range(7))
    df, _ = simulate_linear_groups(4, [3, 4, 5, 6], rng_seed=0)
    data = carpool.get_spec("linear").prepare(df)
    sub = select_groups(data, [3, 1])
    assert sub.group_ids == ("g03", "g01") and list(sub.group_sizes) == [6, 4]


# ---------------------------------------------------------------- the dial
@pytest.mark.slow
def test_sweep_end_points_match_pooled_and_unpooled(scenario_fits):
    fits = scenario_fits["unpooled"]
    data = fits["pooled"].data
    res = carpool.sweep(data, "linear", grid=[1e-3, 30.0], fits=fits, sampler=SAMPLER)
    assert list(res.grid) == [1e-3, 30.0]
    assert set(res.scores.columns) >= {"tau", "elpd_loo", "se"}
    shr = shrinkage_table(fits["pooled"], fits["unpooled"], fits["hierarchical"])
    sd = {m: fits[m].summary().query("kind == 'group'")["sd"].to_numpy()
          for m in ("unpooled",)}
    lo, hi = res.shrinkage_at(0), res.shrinkage_at(1)
    # At tau = 0.001 every group sits on the pooled estimate: within 0.1 of the pooled fit's
    # value (its posterior sd is ~0.02; Monte Carlo error ~0.002), far from the unpooled
    # values, which differ from it by ~3.
    assert np.abs(lo["hierarchical"] - lo["pooled"]).max() < 0.1
    # At tau = 30 each group follows its own data: within a quarter of the unpooled fit's
    # posterior sd (the unpooled fit's Normal(0, 5) prior shifts estimates by ~1% of an sd
    # with 60 observations; Monte Carlo error of a 1,200-draw mean is ~3% of an sd).
    assert (np.abs(hi["hierarchical"] - hi["unpooled"]).to_numpy() < 0.25 * sd["unpooled"]).all()
    assert not res.learned_tau.empty
    assert len(shr) == len(hi)


def test_sweep_rejects_bad_grids():
    with pytest.raises(ValueError, match="positive"):
        carpool.sweep(pd.DataFrame(), "linear", grid=[0.0, 1.0])
    with pytest.raises(ValueError, match="sets 'tau'"):
        carpool.sweep(pd.DataFrame(), "linear", grid=[1.0],
                      pooling=carpool.PoolingConfig(tau=1.0))


# ---------------------------------------------------------------- priors
@pytest.mark.slow  # ~65 s; in CI the report test (tests/test_cli_compare.py) runs the prior
# sensitivity end to end on saved fits
def test_prior_sensitivity_moves_small_groups_most():
    df, _ = simulate_linear_groups(6, [2, 3, 5, 40, 80, 160], intercept_sd=0.8, noise_sd=0.5,
                                   rng_seed=3)
    sens = carpool.prior_sensitivity(df, "linear", sampler=SAMPLER, num_prior_samples=50)
    t = sens.table
    icpt = t[t.parameter == "intercept"].set_index("group")
    # the informative prior (tau ~ HalfNormal(0.1)) pulls the 2-observation group far more
    # than the 160-observation one, which its data pin down
    assert icpt.loc["g00", "shift"] > 3 * icpt.loc["g05", "shift"]
    assert icpt.loc["g05", "shift"] < 0.5
    assert set(sens.prior_predictive) == {"weak", "informative"}
    assert sens.prior_predictive["weak"].shape == (50, len(df))
    # weak hyperpriors imply a wider spread of outcomes than informative ones
    assert sens.prior_predictive["weak"].std() > sens.prior_predictive["informative"].std()


def test_every_mode_round_trips_through_netcdf(scenario_fits, tmp_path):
    for mode, f in scenario_fits["hierarchical"].items():
        back = carpool.load(f.save(tmp_path / f"{mode}.nc"))
        assert back.group_ids == f.group_ids and back.pooling == mode
        np.testing.assert_allclose(back.theta_draws(), f.theta_draws())


def test_new_group_params_for_chosen_posterior_draws(scenario_fits):
    from carpool.inference.predict import new_group_params

    fits = scenario_fits["hierarchical"]
    pooled, hier = fits["pooled"], fits["hierarchical"]
    np.testing.assert_array_equal(new_group_params(pooled, 2, draws=[4])[0, 1],
                                  pooled.theta_draws()[4])
    out = new_group_params(hier, 4000, draws=np.array([3]), seed=1)
    assert out.shape == (1, 4000, 2)
    # 4,000 new groups of posterior draw 3 scatter around that draw's population mean with
    # that draw's tau: their mean is within 4 standard errors of it
    mu = hier.idata.posterior["mu"].values.reshape(-1, 2)[3]
    tau = hier.idata.posterior["tau"].values.reshape(-1, 2)[3]
    assert (np.abs(out[0].mean(0) - mu) < 4 * tau / np.sqrt(4000)).all()
    np.testing.assert_allclose(out[0].std(0), tau, rtol=0.1)


def test_one_step_gap_is_the_ballistic_update():
    from carpool.compare.sensitivity import one_step_gap

    covs = {"gap": np.array([20.0, 5.0]), "dt": np.array([0.2, 0.1]),
            "speed": np.array([10.0, 4.0]), "leader_speed": np.array([12.0, 0.0])}
    # leader 12 m/s, follower 10 -> 11 m/s over 0.2 s: the gap opens by 0.2 * (12 - 10.5)
    np.testing.assert_allclose(one_step_gap(covs, np.array([11.0, 2.0])),
                               [20.0 + 0.2 * 1.5, 5.0 - 0.1 * 3.0])
    assert one_step_gap(covs, np.zeros((7, 2))).shape == (7, 2)
