"""Figures: files written, units on the axes, and the numbers drawn are the fit's numbers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import carpool  # noqa: E402
from carpool.compare.results import PriorSensitivity, SweepResult  # noqa: E402
from carpool.plots import (  # noqa: E402
    plot_corner,
    plot_forest,
    plot_population_correlation,
    plot_predictive,
    plot_prior_sensitivity,
    plot_sweep,
)
from carpool.testing import simulate_drivers, simulate_linear_groups  # noqa: E402

MODES = ("pooled", "unpooled", "hierarchical")
IDM_UNITS = {"v0": "m/s", "s0": "m", "T": "s", "a": "m/s^2", "b": "m/s^2"}


@pytest.fixture(scope="module")
def linear_fits():
    df, _ = simulate_linear_groups(num_groups=5, num_obs_per_group=[5, 10, 20, 40, 80],
                                   rng_seed=0)
    sampler = carpool.NutsSettings(chains=2, warmup=200, draws=200)
    return {m: carpool.fit(df, "linear", pooling=m, sampler=sampler, warn=False) for m in MODES}


@pytest.fixture(scope="module")
def idm_fit():
    df, _ = simulate_drivers(2, duration_s=10.0, rng_seed=1)
    return carpool.fit(df, "idm", pooling="pooled", warn=False,
                       sampler=carpool.NutsSettings(chains=1, warmup=100, draws=100))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def assert_written(path) -> None:
    png, svg = path.with_suffix(".png"), path.with_suffix(".svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    text = svg.read_text()
    assert "<svg" in text and len(text) > 10_000


def axis_labels(fig) -> str:
    return " | ".join(ax.get_xlabel() + " | " + ax.get_ylabel() for ax in fig.axes)


def visible_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


# ---------------------------------------------------------------------------------- forest
def test_forest_three_modes(linear_fits, tmp_path):
    fig = plot_forest(linear_fits, tmp_path / "forest")
    assert_written(tmp_path / "forest")
    axes = visible_axes(fig)
    assert len(axes) == 2  # one panel per parameter
    labels = axis_labels(fig)
    assert "intercept (y)" in labels and "slope (y per x)" in labels
    # the hierarchical dots are the posterior means, group by group
    theta = linear_fits["hierarchical"].idata.posterior["theta"].values.astype(float)
    for j, ax in enumerate(axes):
        (dots,) = [ln for ln in ax.lines if ln.get_label() == "hierarchical"]
        np.testing.assert_allclose(dots.get_xdata(), theta.mean(axis=(0, 1))[:, j])
    # the pooled fit is one vertical line at its mean, the same for every group
    pooled_mean = linear_fits["pooled"].idata.posterior["theta"].values.astype(float).mean(
        axis=(0, 1))
    (vline,) = [ln for ln in axes[0].lines if ln.get_label().startswith("pooled")]
    np.testing.assert_allclose(vline.get_xdata(), pooled_mean[0])
    assert [t.get_text() for t in axes[0].get_yticklabels()] == list(
        linear_fits["unpooled"].group_ids)


def test_forest_subsets_and_mismatch(linear_fits, idm_fit):
    assert len(visible_axes(plot_forest({"pooled": linear_fits["pooled"]}))) == 2
    assert len(visible_axes(plot_forest({"hierarchical": linear_fits["hierarchical"]}))) == 2
    with pytest.raises(ValueError, match="parameters"):
        plot_forest({"unpooled": linear_fits["unpooled"], "pooled": idm_fit})


# ---------------------------------------------------------------------------------- corner
def test_corner(linear_fits, tmp_path):
    fit = linear_fits["hierarchical"]
    fig = plot_corner(fit, "g02", tmp_path / "corner")
    assert_written(tmp_path / "corner")
    assert len(fig.axes) == 4
    labels = axis_labels(fig)
    assert "intercept (y)" in labels and "slope (y per x)" in labels
    upper = fig.axes[1]  # row 0, column 1
    theta = fit.idata.posterior["theta"].values[:, :, 2, :].reshape(-1, 2)
    r = np.corrcoef(theta, rowvar=False)[0, 1]  # identity transforms: latent = natural
    assert upper.texts[0].get_text() == f"r = {r:+.2f}"
    with pytest.raises(ValueError, match="unknown group 'nope'"):
        plot_corner(fit, "nope")


def test_corner_pooled_ignores_group(idm_fit):
    fig = plot_corner(idm_fit, "all", max_draws=50)
    assert len(fig.axes) == 25
    labels = axis_labels(fig)
    assert all(f"{n} ({u})" in labels for n, u in IDM_UNITS.items())
    scattered = fig.axes[5].collections[0].get_offsets()  # row 1, column 0
    assert len(scattered) == 50


# ----------------------------------------------------------------------------- correlation
def with_learned_corr(fit, rng_seed: int = 0):
    """The fit with correlation draws that vary (intercept-slope r around 0.5)."""
    idata = fit.idata.copy()
    shape = idata.posterior["corr"].shape[:2]
    r = np.clip(np.random.default_rng(rng_seed).normal(0.5, 0.2, shape), -0.99, 0.99)
    corr = np.broadcast_to(np.eye(2), shape + (2, 2)).copy()
    corr[..., 0, 1] = corr[..., 1, 0] = r
    idata.posterior["corr"] = (idata.posterior["corr"].dims, corr)
    return dataclasses.replace(fit, idata=idata)


def test_population_correlation(linear_fits, tmp_path):
    fit = with_learned_corr(linear_fits["hierarchical"])
    fig = plot_population_correlation(fit, tmp_path / "corr")
    assert_written(tmp_path / "corr")
    ax = fig.axes[0]
    mean = fit.idata.posterior["corr"].values.mean(axis=(0, 1))
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), mean)
    assert ax.images[0].get_clim() == (-1.0, 1.0)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["intercept", "slope"]
    assert "not learned" not in ax.get_title()
    assert ax.texts[1].get_text().startswith(f"{mean[0, 1]:+.2f}\n[")  # mean [interval]
    assert len(fig.axes) == 2  # heatmap and colour bar


def test_population_correlation_diagonal_and_wrong_modes(linear_fits):
    fit = linear_fits["hierarchical"]  # 5 groups: correlated="auto" keeps it diagonal
    assert np.allclose(fit.idata.posterior["corr"].values, np.eye(2))
    fig = plot_population_correlation(fit)
    assert "(not learned: diagonal population)" in fig.axes[0].get_title()
    np.testing.assert_allclose(np.asarray(fig.axes[0].images[0].get_array()), np.eye(2))
    for mode in ("pooled", "unpooled"):
        with pytest.raises(ValueError, match="only for hierarchical fits"):
            plot_population_correlation(linear_fits[mode])


# ------------------------------------------------------------------------------ predictive
def test_predictive_linear(linear_fits, tmp_path):
    fit = linear_fits["unpooled"]
    fig = plot_predictive(fit, "g01", tmp_path / "pred", num_draws=100)
    assert_written(tmp_path / "pred")
    (ax,) = fig.axes
    (observed,) = [ln for ln in ax.lines if ln.get_label().startswith("observed")]
    np.testing.assert_allclose(observed.get_ydata(), fit.data.y[fit.data.group_index == 1])
    with pytest.raises(ValueError, match="unknown group 'g99'"):
        plot_predictive(fit, "g99")


def test_predictive_car_following(idm_fit, tmp_path):
    fig = plot_predictive(idm_fit, "d01", tmp_path / "pred_cf", num_draws=50)
    assert_written(tmp_path / "pred_cf")
    ax_v, ax_a, ax_s = fig.axes
    assert ax_v.get_ylabel() == "next speed (m/s)"
    assert ax_a.get_ylabel() == "acceleration (m/s^2)"
    assert ax_s.get_ylabel() == "gap to leader (m)" and ax_s.get_xlabel() == "time (s)"
    data = idm_fit.data
    rows = data.group_index == 1
    gap, dt = data.covariates["gap"][rows], data.covariates["dt"][rows]
    for ax, want in ((ax_v, data.y[rows]), (ax_s, gap[1:])):
        (observed,) = [ln for ln in ax.lines if ln.get_label().startswith("observed")]
        np.testing.assert_allclose(observed.get_ydata()[: len(want)], want)
        np.testing.assert_allclose(observed.get_xdata(), np.cumsum(dt))
        assert ax.collections, "no predictive band drawn"


# ----------------------------------------------------------------------------------- sweep
def make_sweep(num_groups: int, *, ends: bool = True, learned: bool = True) -> SweepResult:
    """A hand-made two-parameter sweep: estimates move from the pooled to the unpooled value."""
    grid = np.array([0.02, 0.1, 0.5, 2.0])
    groups = [f"g{i}" for i in range(num_groups)]
    params = (("v0", "m/s", 30.0), ("T", "s", 1.5))
    rng = np.random.default_rng(1)
    est, end_rows = [], []
    for name, unit, centre in params:
        unpooled = centre * np.exp(rng.normal(0.0, 0.3, num_groups))
        for tau in grid:
            w = tau**2 / (tau**2 + 0.04)
            for g, u in zip(groups, unpooled, strict=True):
                m = centre + w * (u - centre)
                est.append({"tau": tau, "group": g, "parameter": name, "unit": unit,
                            "mean": m, "lo": 0.9 * m, "hi": 1.1 * m})
        end_rows += [{"group": g, "parameter": name, "unit": unit, "pooled": centre,
                      "unpooled": u} for g, u in zip(groups, unpooled, strict=True)]
    scores = pd.DataFrame({"tau": grid, "elpd_loo": [-120.0, -100.0, -95.0, -104.0],
                           "se": 5.0, "max_pareto_k": [0.3, 0.4, 0.5, 0.9]})
    learned_tau = pd.DataFrame({"parameter": ["v0", "T"], "mean": [0.3, 0.2],
                                "lo": [0.15, 0.1], "hi": [0.6, 0.4]})
    return SweepResult(grid, pd.DataFrame(est), scores,
                       learned_tau if learned else pd.DataFrame(),
                       pd.DataFrame(end_rows) if ends else pd.DataFrame())


def test_sweep(tmp_path):
    sweep = make_sweep(4)
    fig = plot_sweep(sweep, tmp_path / "sweep")
    assert_written(tmp_path / "sweep")
    ax_v0, ax_t, ax_score = fig.axes
    assert ax_v0.get_ylabel() == "v0 (m/s)" and ax_t.get_ylabel() == "T (s)"
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert ax_score.get_xlabel() == "population scale tau (latent sd)"
    assert ax_score.get_title() == "held-out score (PSIS-LOO elpd)"
    # one line per group, through the estimates
    g2 = [ln for ln in ax_v0.lines if ln.get_label() == "g2"]
    want = sweep.estimates.query("group == 'g2' and parameter == 'v0'")["mean"]
    np.testing.assert_allclose(g2[0].get_ydata(), want)
    # the learned tau's mean is a vertical line in its parameter's panel
    assert any(np.allclose(ln.get_xdata(), 0.2) for ln in ax_t.lines)
    # group legend for few groups
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "g0" in legend_texts and "pooled (tau -> 0)" in legend_texts


def test_sweep_many_groups_no_extras():
    fig = plot_sweep(make_sweep(12, ends=False, learned=False))
    assert not fig.legends  # no group legend past 10 groups, nothing else to explain
    assert len(fig.axes) == 3


# ----------------------------------------------------------------------------- sensitivity
def make_sensitivity(*, with_prior_predictive: bool, speeds: bool) -> PriorSensitivity:
    rng = np.random.default_rng(2)
    sizes = [4, 20, 100, 400]
    table = pd.DataFrame([
        {"group": f"d{g}", "parameter": name, "unit": unit, "num_obs": n, "weak": 1.0,
         "informative": 1.0, "shift": rng.normal(0.0, 2.0 / np.sqrt(n))}
        for name, unit in (("a", "m/s^2"), ("T", "s")) for g, n in enumerate(sizes)])
    if not with_prior_predictive:
        return PriorSensitivity(table)
    observed = rng.gamma(4.0, 2.0, 300) if speeds else rng.normal(0.0, 1.0, 300)
    draws = {"weak": rng.normal(8.0, 10.0, (50, 300)),
             "informative": rng.normal(8.0, 3.0, (50, 300))}
    return PriorSensitivity(table, draws, observed)


def test_prior_sensitivity(tmp_path):
    sens = make_sensitivity(with_prior_predictive=True, speeds=True)
    fig = plot_prior_sensitivity(sens, tmp_path / "sens")
    assert_written(tmp_path / "sens")
    ax_a, ax_t, ax_pp = visible_axes(fig)
    assert ax_a.get_title() == "a (m/s^2)" and ax_t.get_title() == "T (s)"
    assert ax_a.get_xscale() == "log"  # 4 to 400 observations
    offsets = ax_a.collections[0].get_offsets()
    want = sens.table[sens.table.parameter == "a"]
    np.testing.assert_allclose(offsets[:, 1], np.abs(want["shift"]))
    assert [t.get_text() for t in ax_a.texts] == ["d0", "d1", "d2", "d3"]
    assert ax_pp.get_xlabel() == "next speed (m/s)"
    assert len(ax_pp.get_legend().get_texts()) == 3


def test_prior_sensitivity_variants():
    fig = plot_prior_sensitivity(make_sensitivity(with_prior_predictive=False, speeds=True))
    assert len(visible_axes(fig)) == 2
    fig = plot_prior_sensitivity(make_sensitivity(with_prior_predictive=True, speeds=False))
    assert visible_axes(fig)[-1].get_xlabel() == "y"


def test_importing_plots_does_not_import_matplotlib():
    code = ("import sys, carpool, carpool.plots; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'; "
            "assert callable(carpool.plots.plot_forest)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_prior_sensitivity_gap_panel():
    from dataclasses import replace

    sens = make_sensitivity(with_prior_predictive=True, speeds=True)
    gaps = {k: 20.0 + np.asarray(v) for k, v in sens.prior_predictive.items()}
    sens = replace(sens, prior_predictive_gap=gaps, observed_gap=20.0 + sens.observed)
    axes = visible_axes(plot_prior_sensitivity(sens))
    assert len(axes) == 4
    assert axes[-1].get_xlabel().startswith("next gap") and "(m)" in axes[-1].get_xlabel()


def test_shrinkage_figure_switches_to_a_scatter_beyond_30_groups(tmp_path):
    from carpool.plots.shrinkage import MAX_NAMED_GROUPS, plot_shrinkage

    rng = np.random.default_rng(0)

    def table(num_groups):
        rows = []
        for name, unit in (("T", "s"), ("b", "m/s^2")):
            own = np.exp(rng.normal(0.0, 1.5, num_groups))
            rows += [{"group": f"d{g:02d}", "parameter": name, "unit": unit, "pooled": 1.0,
                      "unpooled": own[g], "hierarchical": own[g] ** 0.5}
                     for g in range(num_groups)]
        return pd.DataFrame(rows)

    many = plot_shrinkage(table(76), tmp_path / "many")
    ax = many.axes[0]
    # one unnamed point per group, log axes for a spread over 20x, no driver names as ticks
    assert ax.collections[0].get_offsets().shape == (76, 2)
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "unpooled estimate"
    assert "76 groups" in many._suptitle.get_text()
    assert (tmp_path / "many.png").is_file() and (tmp_path / "many.svg").is_file()
    few = plot_shrinkage(table(MAX_NAMED_GROUPS))
    labels = [t.get_text() for t in few.axes[0].get_xticklabels()]
    assert labels[:2] == ["d00", "d01"]
    plt.close("all")
