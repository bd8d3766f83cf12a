"""``carpool compare`` (its JSON contract), ``carpool report`` and ``carpool sweep`` input errors.

The car-following runs use 4 simulated drivers and tiny samplers: they check the plumbing and
the contract, not the statistics (tests/test_compare.py does that).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carpool.cli import app
from carpool.testing import simulate_drivers

runner = CliRunner()
TINY = ["--draws", "60", "--warmup", "60", "--chains", "2"]
MODE_KEYS = {"elpd_loo", "se", "lfo_rmse_speed", "ldo_rmse_speed"}


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory) -> Path:
    df, _ = simulate_drivers(4, duration_s=16.0, rng_seed=5)
    path = tmp_path_factory.mktemp("cmp") / "drivers.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def saved_fits(trajectories, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("fits")
    paths = []
    for mode in ("pooled", "unpooled", "hierarchical"):
        out = folder / f"{mode}.nc"
        r = runner.invoke(app, ["fit", str(trajectories), "--out", str(out), "--model",
                                "linear_acc", "--pooling", mode, "--no-progress", *TINY],
                          catch_exceptions=False)
        assert r.exit_code == 0, r.output
        paths.append(out)
    return paths


def _one_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_compare_json_contract(saved_fits):
    """The three saved modes; leave-drivers-out over 2 folds, no LFO refits. (Fitting the
    modes from a data file goes through the same `carpool fit` code the fixture runs.)"""
    r = runner.invoke(app, ["compare", *map(str, saved_fits), "--json", "--folds", "2",
                            "--no-lfo"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out["modes"]) == {"pooled", "unpooled", "hierarchical"}
    for mode, scores in out["modes"].items():
        assert set(scores) >= MODE_KEYS
        assert isinstance(scores["elpd_loo"], float) and scores["se"] > 0
        assert scores["lfo_rmse_speed"] is None  # not computed (--no-lfo)
        if mode == "unpooled":
            assert scores["ldo_rmse_speed"] is None
        else:
            assert scores["ldo_rmse_speed"] > 0
    assert out["recommendation"]["mode"] in out["modes"]
    assert out["recommendation"]["reason"].startswith(out["recommendation"]["mode"])
    assert "warm-started" in out["refits"]


def test_compare_no_warm_start_refits_from_scratch(saved_fits):
    """``--no-warm-start``: every held-out refit from scratch, and the JSON says so (pooled
    and unpooled: only the pooled mode refits, 2 leave-drivers-out folds)."""
    r = runner.invoke(app, ["compare", *map(str, saved_fits[:2]), "--json", "--folds", "2",
                            "--no-lfo", "--no-warm-start"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert "from scratch" in out["refits"] and "warm" not in out["refits"]


def test_compare_table_names_the_recommendation(saved_fits):
    r = runner.invoke(app, ["compare", *map(str, saved_fits[:2]), "--no-lfo", "--no-ldo"],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "recommendation:" in r.stdout and "elpd_loo" in r.stdout


@pytest.mark.parametrize("args, needles", [
    (["a.nc", "b.csv"], ("either one data file or saved fits",)),
    (["a.csv", "b.csv"], ("one data file",)),
    (["missing.nc", "other.nc"], ("no such fit file",)),
])
def test_compare_input_errors(tmp_path, args, needles):
    (tmp_path / "b.csv").write_text("driver,time,speed,gap,leader_speed\n")
    (tmp_path / "a.csv").write_text("driver,time,speed,gap,leader_speed\n")
    r = runner.invoke(app, ["compare", *[str(tmp_path / a) for a in args]])
    _one_error(r, *needles)


def test_compare_one_saved_fit_is_an_error(saved_fits):
    _one_error(runner.invoke(app, ["compare", str(saved_fits[0]), "--no-lfo", "--no-ldo"]),
               "at least two")


def test_compare_unknown_purpose(saved_fits):
    _one_error(runner.invoke(app, ["compare", *map(str, saved_fits), "--purpose", "waic",
                                   "--no-lfo", "--no-ldo"]), "unknown purpose")


@pytest.mark.parametrize("grid", ["0.1,abc", "0,1", "-1"])
def test_sweep_bad_grid(trajectories, tmp_path, grid):
    _one_error(runner.invoke(app, ["sweep", str(trajectories), "--out", str(tmp_path / "s"),
                                   "--grid", grid]), "--grid")


def test_report_needs_html(trajectories, tmp_path):
    _one_error(runner.invoke(app, ["report", str(trajectories), "--out",
                                   str(tmp_path / "r.pdf")]), ".html")


def test_report_over_saved_fits(saved_fits, tmp_path):
    out = tmp_path / "report.html"
    r = runner.invoke(app, ["report", *map(str, saved_fits), "--out", str(out), "--no-sweep",
                            "--no-ldo", "--no-lfo", "--sensitivity"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert "Recommended" in html and html.count("<img") >= 6
    assert "Prior sensitivity" in html
    assert "http://" not in html.replace("http://www.w3.org", "")


def test_report_needs_all_three_modes(saved_fits, tmp_path):
    _one_error(runner.invoke(app, ["report", *map(str, saved_fits[:2]), "--out",
                                   str(tmp_path / "r.html")]), "missing hierarchical")


def test_report_from_a_compare_folder_refits_nothing(saved_fits, tmp_path, monkeypatch):
    folder = tmp_path / "compared"
    r = runner.invoke(app, ["compare", *map(str, saved_fits), "--folds", "2", "--no-lfo",
                            "--out", str(folder)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in folder.iterdir()) == [
        "comparison.json", "hierarchical.nc", "pooled.nc", "unpooled.nc"]
    reason = json.loads((folder / "comparison.json").read_text())["recommendation"]["reason"]

    def no_work(*args, **kwargs):
        raise AssertionError("report --from fitted or compared again")

    import carpool.compare
    import carpool.inference.run

    monkeypatch.setattr(carpool.inference.run, "_fit_nuts", no_work)
    monkeypatch.setattr(carpool.compare, "compare", no_work)
    out = tmp_path / "report.html"
    r = runner.invoke(app, ["report", "--from", str(folder), "--out", str(out)],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert out.exists() and out.stat().st_size > 10_000
    assert " ".join(reason.split()[:6]) in " ".join(r.stdout.split())


@pytest.mark.parametrize("args,needles", [
    (["--from", "{tmp}/nowhere"], ["--from", "no such folder"]),
    (["--from", "{tmp}"], ["no fits"]),
    (["--from", "{tmp}", "{data}"], ["not both"]),
    ([], ["--from FOLDER"]),
])
def test_report_from_input_errors(trajectories, tmp_path, args, needles):
    args = [a.format(tmp=tmp_path, data=trajectories) for a in args]
    r = runner.invoke(app, ["report", *args, "--out", str(tmp_path / "r.html")])
    _one_error(r, *needles)
