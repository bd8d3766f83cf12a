"""The other half of the benchmark smoke runs (see tests/test_benchmarks.py)."""

from __future__ import annotations

import json

import pytest
from test_benchmarks import BENCHMARKS, SCRIPTS, run_smoke


@pytest.mark.bench
@pytest.mark.parametrize("script", SCRIPTS[1::2])
def test_benchmark_smoke_more(script, tmp_path):
    run_smoke(script, tmp_path)


def test_compare_pymc_resumes_only_runs_with_the_same_settings(tmp_path, monkeypatch):
    """--resume keeps an earlier run's fits (and their means for the z comparison) only
    when the data and sampler settings match."""
    import argparse

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from compare_pymc import RUN_SETTINGS, finished_fits, max_z

    settings = dict(drivers=39, duration_s=28.0, chains=2, warmup=1000, draws=1000,
                    data_seed=11)
    assert set(settings) == set(RUN_SETTINGS)
    row = {"min_ess_bulk": 400.0, "max_rhat": 1.005, "divergences": 0, "steps_per_draw": 100}
    means = {"mu": [0.1], "tau": [0.2], "sigma": [0.3]}
    rows = [{"engine": "pymc", "seed": 0, **row, "population_means": means,
             "population_mcse": {k: [0.01] for k in means}},
            {"engine": "carpool", "seed": 0, **row, "population_means": means,
             "population_mcse": {k: [0.01] for k in means}},
            {"engine": "pymc", "seed": 1, **row}]  # written before means were stored
    path = tmp_path / "compare_pymc.json"
    path.write_text(json.dumps({"meta": {"args": settings}, "rows": rows}))

    kept, stats = finished_fits(str(path), argparse.Namespace(**settings))
    assert kept == rows and set(stats) == {("pymc", 0), ("carpool", 0), ("pymc", 1)}
    assert max_z(stats[("pymc", 0)], stats[("carpool", 0)]) == 0.0
    assert max_z(stats[("pymc", 1)], stats[("carpool", 0)]) is None
    other = argparse.Namespace(**{**settings, "draws": 500})
    assert finished_fits(str(path), other) == ([], {})
    assert finished_fits(str(tmp_path / "missing.json"), other) == ([], {})


def test_a_stopped_scale_run_keeps_its_finished_sizes_and_the_table_says_so(tmp_path,
                                                                           monkeypatch):
    """scale_drivers writes each hierarchical size as it finishes (marked incomplete), and
    the rendered table says the run was stopped; the final write drops the mark."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import scale_drivers
    from render_tables import render

    out = tmp_path / "scale.json"
    seen = []

    def fake_rows(sizes, iterations, duration_s, chains, seed, on_row=None):
        rows = []
        for n in sizes:
            rows.append({"drivers": n, "wall_s": 1.0})
            on_row(rows)
            seen.append(json.loads(out.read_text()))
        return rows

    monkeypatch.setattr(scale_drivers, "hierarchical_rows", fake_rows)
    monkeypatch.setattr("sys.argv", ["scale_drivers.py", "--sizes", "10,100", "--iterations",
                                     "5,5", "--skip", "unpooled", "--json", str(out)])
    scale_drivers.main()
    assert [len(r["hierarchical"]) for r in seen] == [1, 2]
    assert all(r["incomplete"] for r in seen)
    assert "stopped before it finished" in render(seen[0], "scale_drivers")
    final = json.loads(out.read_text())
    assert "incomplete" not in final and len(final["hierarchical"]) == 2
    assert "stopped" not in render(final, "scale_drivers")


def test_radon_vs_bambi_summary_without_bambi_and_resume(tmp_path, monkeypatch):
    """The summary averages the seeds (MCSE of the mean over seeds), leaves Bambi's columns
    and the ratios empty when Bambi did not run, and --resume keeps only fits made with the
    same sampler settings."""
    import argparse

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from radon_vs_bambi import POPULATION, kept_rows, summarise

    def row(engine, seed, mean):
        params = {p: {"mean": mean, "sd": 0.1, "mcse_mean": 0.003, "ess_bulk": 500.0,
                      "rhat": 1.0} for p in POPULATION["A"]}
        return {"engine": engine, "model": "A", "seed": seed, "build_s": 2.0,
                "sampling_s": 4.0, "wall_s": 6.0, "min_ess_bulk": 500.0, "ess_per_s": 125.0,
                "ess_per_wall_s": 500 / 6, "max_rhat": 1.0, "divergences": 0,
                "steps_per_draw": 15.0, "params": params}

    rows = [row("carpool", 0, 1.0), row("carpool", 1, 2.0)]
    out = summarise(rows, ["A"])
    est = {r["parameter"]: r for r in out["estimates"]}
    assert est["Intercept"]["carpool_mean"] == 1.5
    assert est["Intercept"]["carpool_mcse"] == pytest.approx(0.003 / 2 ** 0.5)
    assert est["Intercept"]["bambi"] is None and "z_carpool_bambi" not in est["Intercept"]
    assert est["Intercept"]["lme4_estimate"] == 1.46
    assert [r["engine"] for r in out["speed"]] == ["carpool"]
    assert out["ratios"][0]["ess_per_s_ratio"] is None

    both = summarise(rows + [row("bambi", 0, 1.5)], ["A"])
    assert both["ratios"][0]["wall_s_ratio"] == 1.0
    assert {r["parameter"]: r for r in both["estimates"]}["sigma"]["z_carpool_bambi"] == 0.0

    path = tmp_path / "radon.json"
    settings = {"chains": 4, "warmup": 1000, "draws": 1000}
    path.write_text(json.dumps({"meta": {"args": settings},
                                "rows": rows + [row("bambi", 0, 1.5)]}))
    kept = kept_rows(str(path), ["carpool"], argparse.Namespace(**settings))
    assert [r["engine"] for r in kept] == ["bambi"]
    other = argparse.Namespace(**{**settings, "draws": 500})
    assert kept_rows(str(path), ["carpool"], other) == []
