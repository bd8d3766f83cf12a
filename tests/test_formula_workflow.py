"""The workflow on formula fits: compare (PSIS-LOO, leave-last-rows-out and leave-groups-out
warm refits), sweep, pooling factors, the shrinkage figure and the report, in Python and
through ``carpool compare / report --formula``.

One small simulated table, ``y ~ x + z + (1 + x | g) + (1 | h)``: the groups ``g`` vary in
intercept and slope (a correlated population), ``z`` is a common term (posterior ``beta``)
and ``h`` is a crossed second grouping factor (``b_h``, ``tau_h``), so every kind of shared
site is on the held-out paths. Tiny samplers: these tests check the plumbing, not the
statistics (tests/test_compare.py and tests/test_formula.py do that). Refits from scratch
(where a warm start does not apply) are tests/test_compare.py's; here the fallback's
decision is tested, not its sampling (one more compiled program each, over the time budget
of this file).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from numpyro import handlers
from typer.testing import CliRunner

import carpool
from carpool.cli import app
from carpool.compare import Comparison, pooling_factors, shrinkage_table
from carpool.compare.words import plural, words_for
from carpool.inference import warm
from carpool.inference.nuts import NutsSettings
from carpool.pipeline import FitOptions, build_report, data_summary, fit_modes

FORMULA = "y ~ x + z + (1 + x | g) + (1 | h)"
PRIOR = "z=Normal(0, 2)"
SAMPLER = NutsSettings(chains=2, warmup=100, draws=100)
REFITS = NutsSettings(chains=2, warmup=60, draws=60)
#: the CLI runs the Python fixtures' fits and refits (same table, formula, prior, sampler
#: and seed), so their compiled programs come from the persistent compilation cache
TINY = ["--draws", "100", "--warmup", "100", "--chains", "2", "--seed", "0"]

runner = CliRunner()
#: tiny samplers do not converge; convergence is not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore::carpool.ConvergenceWarning")


def _table(num_groups: int = 6, rows: int = 10, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(num_groups), rows)
    n = g.size
    h = rng.integers(0, 3, n)
    x, z = rng.normal(size=n), rng.normal(size=n)
    y = (0.5 + rng.normal(0, 0.6, num_groups)[g] + (1 + rng.normal(0, 0.3, num_groups)[g]) * x
         + 0.7 * z + rng.normal(0, 0.4, 3)[h] + rng.normal(0, 0.5, n))
    return pd.DataFrame({"g": [f"g{i}" for i in g], "h": [f"h{i}" for i in h], "x": x,
                         "z": z, "y": y})


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return _table()


@pytest.fixture(scope="module")
def fits(table):
    return fit_modes(table, FitOptions(model=FORMULA, sampler=SAMPLER,
                                       priors={"z": carpool.Normal(0, 2)}))


@pytest.fixture(scope="module")
def comparison(fits):
    """Warm refits at their default settings (what `carpool compare` runs)."""
    return carpool.compare(fits, ldo_folds=2)


# ------------------------------------------------------------------ words
def test_words_of_formula_and_registered_models(fits):
    assert [plural(w) for w in ("county", "day", "class", "school", "match")] == [
        "counties", "days", "classes", "schools", "matches"]
    w = words_for(fits["hierarchical"].spec)
    assert (w.group, w.groups, w.lfo, w.ldo, w.response, w.formula) == (
        "group", "groups", "leave-last-rows-out", "leave-groups-out", "y", FORMULA)
    idm = words_for(carpool.get_spec("idm"))
    assert (idm.groups, idm.lfo, idm.ldo) == ("drivers", "leave-future-out",
                                              "leave-drivers-out")


# ------------------------------------------------------------------ warm starts
@pytest.mark.parametrize("mode", ["pooled", "unpooled", "hierarchical"])
def test_warm_start_rebuilds_common_and_factor_sites(fits, mode):
    """Every latent site of a formula model (``beta``, ``b_h`` or ``tau_h`` / ``eps_h``,
    the group sites) is rebuilt from the posterior, and substituted into the model it gives
    back the fit's factor effects."""
    fit = fits[mode]
    assert warm.missing_sites(fit) == []
    assert warm.warm_start_applies(fit, None)
    built = warm._build(fit, warm._whole(fit))
    raw = warm.raw_draws(fit, built)
    assert "beta" in raw
    assert ("b_h" in raw) == (mode == "unpooled")
    assert ({"tau_h", "eps_h"} <= set(raw)) == (mode == "hierarchical")
    post = fit.idata.posterior
    for chain, draw in ((0, 0), (1, 37)):
        point = {k: v[chain, draw] for k, v in raw.items()}
        trace = handlers.trace(handlers.substitute(handlers.seed(built.model, 0),
                                                   data=point)).get_trace()
        if "b_h" in post:
            np.testing.assert_allclose(trace["b_h"]["value"], post["b_h"].values[chain, draw],
                                       rtol=1e-5, atol=1e-6)


def test_unknown_site_falls_back_to_cold_refits(fits, monkeypatch):
    """A site the warm start cannot rebuild: ``warm_start_applies`` says no (compare then
    refits from scratch) and ``warm_refits`` raises a clear error, not NumPyro's."""
    monkeypatch.setattr(warm, "_shared_sites", lambda fit, built: {})
    fit = fits["hierarchical"]
    assert warm.missing_sites(fit) == ["beta", "eps_h", "tau_h"]
    assert not warm.warm_start_applies(fit, None)
    held = warm.HeldOut(np.ones(fit.data.num_obs, dtype=bool), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="cannot rebuild the site"):
        warm.warm_refits(fit, [held], REFITS)


# ------------------------------------------------------------------ compare
def test_compare_scores_every_mode_warm(comparison, fits):
    t = comparison.table
    assert list(t.index) == ["pooled", "unpooled", "hierarchical"]
    assert np.isfinite(t[["elpd_loo", "lfo_elpd", "lfo_rmse_speed"]].to_numpy()).all()
    assert np.isfinite(t.loc[["pooled", "hierarchical"], "ldo_elpd"]).all()
    assert np.isnan(t.loc["unpooled", "ldo_elpd"])
    assert "warm-started" in comparison.refits and "from scratch" not in comparison.refits
    assert comparison.recommendation["mode"] in t.index
    assert "driver" not in comparison.recommendation["reason"]
    pf = comparison.pooling_factors
    assert set(pf["parameter"]) == {"Intercept", "x"}
    assert len(pf) == 2 * fits["hierarchical"].data.num_groups


# ------------------------------------------------------------------ pooling, sweep, figure
def test_pooling_factors_and_shrinkage_figure(fits, tmp_path):
    pf = pooling_factors(fits["hierarchical"], unpooled=fits["unpooled"])
    assert pf["pooling_factor"].between(0, 1).all() and "moved" in pf
    table = shrinkage_table(fits["pooled"], fits["unpooled"], fits["hierarchical"])
    assert set(table["parameter"]) == {"Intercept", "x"}
    from carpool.plots.shrinkage import plot_shrinkage

    plot_shrinkage(table, tmp_path / "shrinkage")
    assert (tmp_path / "shrinkage.png").stat().st_size > 0


def test_sweep_of_a_formula(table, fits):
    result = carpool.sweep(table, FORMULA, (0.5,), fits=fits, sampler=SAMPLER,
                           pooling=fits["hierarchical"].config)
    assert list(result.grid) == [0.5]
    assert np.isfinite(result.scores["elpd_loo"]).all()
    assert set(result.estimates["parameter"]) == {"Intercept", "x"}
    assert len(result.ends) == 2 * fits["hierarchical"].data.num_groups


def test_report_of_a_formula(fits, comparison, tmp_path):
    result = build_report(None, tmp_path / "r.html", FitOptions(model=FORMULA),
                          fits=fits, comparison=comparison, grid=(),
                          figures_dir=tmp_path / "fig")
    text = result.path.read_text(encoding="utf-8")
    assert f"carpool: {FORMULA}, three pooling modes" in text.replace("&lt;", "<")
    summary = data_summary(fits["hierarchical"])
    assert summary["common terms (one value for all groups)"] == "z"
    assert summary["other grouping factor h"].startswith("3 levels")
    assert "leave-last-rows-out" in text and "leave-groups-out" in text
    assert not re.search(r"driver|next speed|m/s", re.sub(r'data:[^"]*', "", text))
    assert "common (all groups)" in text  # beta's row in each fit's table
    for name in ("shrinkage", "forest", "correlation", "corner", "predictive"):
        assert (tmp_path / "fig" / f"{name}.png").exists(), name


# ------------------------------------------------------------------ CLI
def test_cli_compare_and_report_with_a_formula(table, comparison, tmp_path):
    """``carpool compare TABLE --formula ... --prior ... --out DIR``, then ``carpool report
    --from DIR``: exit 0, the fits (the Python fixture's), the comparison and the report
    written. PSIS-LOO only: the held-out refits are the Python comparison's."""
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    folder = tmp_path / "cmp"
    r = runner.invoke(app, ["compare", str(path), "--formula", FORMULA, "--prior", PRIOR,
                            "--no-lfo", "--no-ldo", "--out", str(folder), *TINY],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "leave-last-rows-out" in r.stdout and "recommendation" in r.stdout
    assert {p.name for p in folder.iterdir()} == {
        "pooled.nc", "unpooled.nc", "hierarchical.nc", "comparison.json"}
    hier = carpool.load(folder / "hierarchical.nc")
    assert hier.spec.common_names == ["z"]
    assert list(hier.spec.common)[0].prior.to_dict() == carpool.Normal(0, 2).to_dict()
    saved = Comparison.load(folder / "comparison.json")
    assert list(saved.table.index) == list(comparison.table.index)
    np.testing.assert_allclose(saved.table["elpd_loo"], comparison.table["elpd_loo"],
                               rtol=1e-4)
    out = tmp_path / "report.html"
    r = runner.invoke(app, ["report", "--from", str(folder), "--out", str(out)],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    text = out.read_text(encoding="utf-8")
    assert FORMULA in text and "common (all groups)" in text


def test_cli_sweep_with_a_formula(table, tmp_path):
    """``carpool sweep TABLE --formula ...``: the Python sweep's fits, its files written."""
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    r = runner.invoke(app, ["sweep", str(path), "--formula", FORMULA, "--prior", PRIOR,
                            "--grid", "0.5", "--out", str(tmp_path / "dial"), *TINY],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    estimates = pd.read_csv(tmp_path / "dial" / "sweep.csv")
    assert set(estimates["parameter"]) == {"Intercept", "x"}
    assert (tmp_path / "dial" / "sweep.png").exists()


def test_cli_formula_needs_a_table(tmp_path):
    fit_file = tmp_path / "a.nc"
    fit_file.write_text("")
    r = runner.invoke(app, ["compare", str(fit_file), "--formula", "y ~ x + (1 | g)"])
    assert r.exit_code == 2 and "--formula fits a table" in r.stderr
