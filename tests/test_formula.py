"""The formula front end: known answers (eight schools, Minnesota radon), the engine's
common parameters and other grouping factors, reloading, new data, priors and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_eight_schools_reference import _reference, assert_matches_reference
from typer.testing import CliRunner

import carpool
from carpool.cli import app
from carpool.errors import InputError
from carpool.inference.predict import expected_mean, pointwise_log_likelihood
from carpool.models.eight_schools import eight_schools_data
from carpool.models.formula import formula_model, formula_priors
from carpool.pooling.model import build_model, linear_mean_usable
from carpool.priors import HalfCauchy, HalfNormal, Normal

runner = CliRunner()
RADON = "src/carpool/data/bundled/radon_mn.csv"


def _radon() -> pd.DataFrame:
    from pathlib import Path

    df = pd.read_csv(Path(__file__).parents[1] / RADON)
    df["county"] = df["county"].astype(str)
    return df


def _simulated(seed: int = 1, n: int = 400) -> pd.DataFrame:
    """``y = 1 + a_g + b_h + 0.5 x + 0.3 [c = b] + noise``: 15 groups g crossed with 5 h."""
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, 15, n), rng.integers(0, 5, n)
    x, c = rng.normal(size=n), rng.choice(list("abc"), n)
    y = (1 + rng.normal(0, 0.5, 15)[g] + rng.normal(0, 0.7, 5)[h] + 0.5 * x
         + 0.3 * (c == "b") + rng.normal(0, 0.4, n))
    return pd.DataFrame({"g": [f"g{i}" for i in g], "h": [f"h{i}" for i in h], "x": x,
                         "c": c, "y": y})


@pytest.mark.slow  # ~40 s: CI runs the formula's statistical tests as a separate step
@pytest.mark.filterwarnings("ignore::carpool.ConvergenceWarning")
def test_eight_schools_formula_matches_posteriordb(vendored_data):
    """``y ~ 1 + (1 | school)`` with known sigma and the reference's priors (mu ~ N(0, 5),
    tau ~ HalfCauchy(5)) is the posteriordb model; same tolerance as
    test_eight_schools_reference (|z| < 4.5 over 20 comparisons)."""
    ref = _reference(vendored_data)
    f = carpool.fit(eight_schools_data(), "y ~ 1 + (1 | school)",
                    priors={"Intercept": Normal(0.0, 5.0), "1|school": HalfCauchy(5.0)},
                    model_options={"known_sigma": "sigma"},
                    pooling=carpool.PoolingConfig(param="noncentred"),
                    sampler=carpool.NutsSettings(warmup=1000, draws=2500, target_accept=0.95,
                                                 seed=11))
    post = f.idata.posterior
    ours = {"mu": post["mu"].values[..., 0], "tau": post["tau"].values[..., 0]}
    for j in range(8):
        ours[f"theta[{j + 1}]"] = post["theta"].values[:, :, j, 0]
    assert_matches_reference(ours, ref)


@pytest.mark.slow  # ~20 s
@pytest.mark.filterwarnings("ignore::carpool.ConvergenceWarning")
def test_radon_close_to_lme4():
    """Varying intercepts and floor slopes by county against lme4's published fit, Gelman &
    Hill (2007) section 13.1, ``lmer(y ~ x + (1 + x | county))``: intercept 1.46 (se 0.05),
    floor -0.68 (se 0.09), county sds 0.35 and 0.34, residual sd 0.75.

    The book's response is log(activity) (a zero reading set to 0.1 pCi/L); the bundled
    ``log_radon`` (posteriordb's) is log(activity + 0.1), so it is undone first (REML on the
    result reproduces the book to the printed digits; see benchmarks/radon_vs_bambi.py).
    With weak default priors the posterior means should sit within half an lme4 standard
    error of the fixed effects (0.025, 0.045; their Monte Carlo error here is ~0.003) and
    within 0.02 of the residual sd (posterior sd 0.019). The county sds are posterior means
    of skewed quantities, not REML modes: within 0.06 for the intercept's (posterior sd
    0.05) and 0.12 for the weakly identified slope's (posterior sd ~0.13)."""
    df = _radon()
    activity = np.round(np.exp(df["log_radon"]) - 0.1, 1)
    df["y"] = np.log(np.maximum(activity, 0.1))
    f = carpool.fit(df, "y ~ floor + (1 + floor | county)",
                    sampler=carpool.NutsSettings(chains=2, warmup=500, draws=1000, seed=0),
                    warn=False)
    s = f.summary().set_index(["kind", "parameter"])["mean"]
    assert s[("population", "Intercept")] == pytest.approx(1.46, abs=0.025)
    assert s[("population", "floor")] == pytest.approx(-0.68, abs=0.045)
    assert s[("population_scale", "Intercept")] == pytest.approx(0.35, abs=0.06)
    assert s[("population_scale", "floor")] == pytest.approx(0.34, abs=0.12)
    assert s[("noise", "sigma")] == pytest.approx(0.75, abs=0.02)
    assert f.centring.choice  # the automatic choice ran on a formula spec
    assert linear_mean_usable(f.spec, f.data)  # Gaussian formulas score projected statistics


@pytest.mark.filterwarnings("ignore::carpool.ConvergenceWarning")
def test_county_level_predictor_is_a_common_parameter(tmp_path):
    """``log_uppm`` (constant within county) is a common parameter: one value in every mode;
    Gelman & Hill's varying-intercept model with it (section 12.6) gives 0.72 (se 0.09) for
    the uranium coefficient and -0.67 for floor: within two of its ses."""
    f = carpool.fit(_radon(), "log_radon ~ floor + log_uppm + (1 | county)",
                    sampler=carpool.NutsSettings(chains=2, warmup=400, draws=400, seed=1),
                    warn=False)
    assert f.spec.parameters.names == ["Intercept"]
    assert f.spec.common_names == ["floor", "log_uppm"]
    beta = f.idata.posterior["beta"]
    assert beta.dims[-1] == "term"
    assert float(beta.sel(term="log_uppm").mean()) == pytest.approx(0.72, abs=0.18)
    assert float(beta.sel(term="floor").mean()) == pytest.approx(-0.67, abs=0.14)
    path = f.save(tmp_path / "radon.nc")
    back = carpool.load(path)  # no user code: the registry rebuilds the formula spec
    assert back.spec.common_names == ["floor", "log_uppm"]
    np.testing.assert_allclose(expected_mean(back), expected_mean(f), rtol=1e-5, atol=1e-6)
    new = _radon().head(6)
    np.testing.assert_allclose(expected_mean(back, back.spec.prepare(new)),
                               expected_mean(f)[:, :6], rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::carpool.ConvergenceWarning")
@pytest.mark.parametrize("pooling", ["hierarchical", "unpooled", "pooled"])
def test_crossed_factor_and_categorical_in_every_mode(pooling):
    """A crossed second factor (``(1 | h)``), a categorical predictor (treatment coding:
    ``c[b]``, ``c[c]`` against ``a``) and a slope, in each mode: the common coefficients are
    recovered (x: 0.5, c[b]: 0.3) within 4 posterior sds; pooled fits drop the factors."""
    df = _simulated()
    f = carpool.fit(df, "y ~ x + c + (1 | g) + (1 | h)", pooling=pooling,
                    sampler=carpool.NutsSettings(chains=1, warmup=300, draws=300, seed=0),
                    warn=False)
    post = f.idata.posterior
    assert list(post["beta"].coords["term"].values) == ["x", "c_b", "c_c"]
    for term, truth in (("x", 0.5), ("c_b", 0.3)):
        draws = post["beta"].sel(term=term).values
        assert abs(draws.mean() - truth) < 4 * draws.std() + 0.02, (term, draws.mean())
    assert ("b_h" in post) == (pooling != "pooled")
    assert ("tau_h" in post) == (pooling == "hierarchical")
    assert pointwise_log_likelihood(f).shape == (1, 300, len(df))


@pytest.mark.filterwarnings("ignore::carpool.ConvergenceWarning")
def test_new_groups_unseen_levels_and_stated_codings():
    """Sum coding and NumPy calls parse (``Sum`` and ``np`` are not columns); a new group
    is predicted from the population, an unseen level of the crossed factor takes that
    factor's population mean (index J, the zero row)."""
    from carpool.inference.predict import predict_new_group

    df = _simulated().assign(xp=lambda d: np.exp(d["x"]))
    spec, _ = formula_model(df, "y ~ np.log(xp) + C(c, Sum) + (1 | g)")
    assert spec.common_names == ["np_log_xp", "C_c_Sum_a", "C_c_Sum_b"]
    f = carpool.fit(df, "y ~ x + C(c, Sum) + (1 | g) + (1 | h)",
                    sampler=carpool.NutsSettings(chains=1, warmup=200, draws=200, seed=0),
                    warn=False)
    new = pd.DataFrame({"g": ["new"] * 3, "h": ["h0", "unseen", "h1"], "x": [0.0, 1.0, 2.0],
                        "c": ["a", "b", "c"]})
    data = f.spec.prepare(new)
    assert data.group_ids == ("new",)
    assert data.covariates["idx_h"].tolist() == [0.0, 5.0, 1.0]
    sims = predict_new_group(f, data.covariates, num_draws=100)
    assert sims.shape == (100, 3) and np.all(np.isfinite(sims))
    with pytest.raises(InputError, match="level 'd'"):
        f.spec.prepare(new.assign(c=["a", "b", "d"]))
    with pytest.raises(InputError, match="depends on the fitted data"):
        formula_model(df, "y ~ scale(x) + (1 | g)")


def test_nested_factor_and_uncorrelated_terms():
    df = _simulated()
    spec, data = formula_model(df, "y ~ x + (x || g) + (1 | g/h)")
    assert spec.parameters.names == ["Intercept", "x"]
    assert spec.options["uncorrelated"] is True
    assert [f.label for f in spec.factors] == ["g:h"]  # (1 | g/h) = (1 | g) + (1 | g:h)
    assert data.num_groups == 15
    config = carpool.inference.run.uncorrelated_if_asked(spec, "hierarchical")
    assert config.correlated is False


def test_projected_statistics_score_the_same_density():
    """The formula's linear mean (projected statistics) and the per-observation sum give
    the same log density at the same point (float64 would agree to ~1e-12; float32 to
    ~1e-4 relative of a ~1e3 log density)."""
    import jax
    from numpyro.infer.util import log_density

    spec, data = formula_model(_radon(), "log_radon ~ floor + log_uppm + (1 + floor | county)")
    config = carpool.PoolingConfig()
    fast = build_model(spec, data, config)
    assert fast.arrays["projected"] is not None
    slow_spec = spec.__class__(**{**spec.__dict__, "linear_mean": None})
    slow = build_model(slow_spec, data, config, layout=fast.layout)
    from numpyro.handlers import seed, trace

    point = {k: v["value"] for k, v in trace(seed(fast.model, jax.random.PRNGKey(0))).get_trace(
        observed=False).items() if v["type"] == "sample" and k != "obs"}
    a, _ = log_density(fast.model, (), {}, point)
    b, _ = log_density(slow.model, (), {}, point)
    assert float(a) == pytest.approx(float(b), rel=1e-4)


def test_default_priors_scale_with_the_data_and_can_be_overridden():
    df = _radon()
    table = formula_priors(df, "log_radon ~ floor + (1 + floor | county)")
    rows = dict(zip(table["term"], table["prior"], strict=True))
    sd = df["log_radon"].std(ddof=0)
    assert rows["Intercept"] == str(Normal(round(df["log_radon"].mean(), 4),
                                           round(2.5 * sd, 4)))
    assert rows["floor|county"] == str(HalfNormal(round(sd / df["floor"].std(ddof=0), 4)))
    doubled = df.assign(log_radon=2 * df["log_radon"])
    again = dict(zip(*formula_priors(doubled, "log_radon ~ floor + (1 + floor | county)")
                     [["term", "prior"]].T.values, strict=True))
    assert again["sigma"] != rows["sigma"]  # scaled to the response
    custom = formula_priors(df, "log_radon ~ floor + (1 + floor | county)",
                            priors={"floor": Normal(0, 1), "1|county": HalfNormal(0.3)})
    custom = dict(zip(custom["term"], custom["prior"], strict=True))
    assert custom["floor"] == "Normal(0, 1)" and custom["Intercept|county"] == "HalfNormal(0.3)"
    with pytest.raises(InputError, match="no term 'flor'"):
        formula_priors(df, "log_radon ~ floor + (1 | county)", priors={"flor": Normal(0, 1)})


def test_priors_command_prints_json(tmp_path):
    path = tmp_path / "radon.csv"
    _radon().to_csv(path, index=False)
    result = runner.invoke(app, ["priors", "log_radon ~ floor + (1 | county)", str(path),
                                 "--prior", "floor=Normal(0, 2)", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout[result.stdout.index("["):])
    assert {"term": "floor", "role": "common", "prior": "Normal(0, 2)"} in rows


@pytest.mark.parametrize(("formula", "family", "edit", "message"), [
    ("y ~ x + (1 | g) + z", "gaussian", None, "unknown column"),
    ("y ~ x + (1 | g", "gaussian", None, "does not parse"),
    ("y ~ x + (1 | g)", "gaussian", lambda d: d.assign(y=d["g"]), "must be numeric"),
    ("y ~ x + (1 | g)", "poisson", lambda d: d.assign(y=-1), "non-negative"),
    ("y ~ x + (1 | g)", "gaussian", lambda d: d.assign(g=[f"r{i}" for i in range(len(d))]),
     "one row"),
    ("y ~ x + gx + (1 + gx | g)", "gaussian",
     lambda d: d.assign(gx=d["g"].str[1:].astype(float)), "does not vary within any group"),
    ("y ~ 1 + (1 + x | g)", "gaussian", None, "not a common term"),
    ("y ~ x + (1 | g)", "gaussian", lambda d: d.assign(x=np.where(d.index == 7, np.nan, 1.0)),
     "missing a value at row 7"),
])
def test_bad_formulas_and_data_exit_2_with_one_line(tmp_path, formula, family, edit, message):
    df = _simulated(n=60)
    if edit is not None:
        df = edit(df)
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    result = runner.invoke(app, ["fit", str(path), "--formula", formula, "--family", family,
                                 "--out", str(tmp_path / "f.nc"), "--chains", "1",
                                 "--warmup", "10", "--draws", "10", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "f.nc").exists()


def test_unpooled_fit_warns_about_group_level_predictors():
    """A county-level predictor is confounded with unpooled county intercepts (radon's
    unpooled fit mixed at R-hat 1.25): the fit says so."""
    spec, _ = formula_model(_radon(), "log_radon ~ floor + log_uppm + (1 | county)")
    assert spec.options["group_level"] == ["log_uppm"]
    with pytest.warns(carpool.WeakIdentificationWarning, match="log_uppm"):
        carpool.fit(_radon(), "log_radon ~ floor + log_uppm + (1 | county)",
                    pooling="unpooled",
                    sampler=carpool.NutsSettings(chains=1, warmup=20, draws=20, seed=0))
