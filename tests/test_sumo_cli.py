"""``carpool export sumo`` and ``carpool simulate ring --engine sumo`` on the command line:
files written, the same drivers as the Python API, bad exports exit 2 with one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import carpool
from carpool.cli import app
from carpool.export import read_sumo_population, sumo_population
from carpool.testing import simulate_drivers

runner = CliRunner()


@pytest.fixture(scope="module")
def fit_files(tmp_path_factory):
    """A hierarchical IDM and an eight-schools fit (no IDM parameters), saved."""
    folder = tmp_path_factory.mktemp("fits")
    df, _ = simulate_drivers(4, duration_s=30.0, rng_seed=3)
    sampler = carpool.NutsSettings(chains=2, warmup=150, draws=150, seed=1)
    idm = carpool.fit(df, "idm", pooling="hierarchical", sampler=sampler, warn=False)
    schools = carpool.fit(carpool.load_table("eight-schools"), "eight_schools",
                          sampler=carpool.NutsSettings(chains=1, warmup=50, draws=50),
                          warn=False)
    df.to_csv(folder / "drivers.csv", index=False)
    return {"idm": idm.save(folder / "idm.nc"), "schools": schools.save(folder / "s.nc"),
            "data": folder / "drivers.csv", "driver": str(df["driver"].iloc[0])}


def test_export_writes_the_drivers_of_the_python_api(fit_files, tmp_path):
    out = tmp_path / "drivers.add.xml"
    result = runner.invoke(app, ["export", "sumo", str(fit_files["idm"]), "--vehicles", "25",
                                 "--seed", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    back = read_sumo_population(out)
    drawn = sumo_population(carpool.load(fit_files["idm"]), vehicles=25, seed=4)
    for name in ("v0", "s0", "T", "a", "b"):
        assert np.array_equal(back[name].to_numpy(), drawn[name].to_numpy()), name


@pytest.mark.parametrize(("args", "message"), [
    (["--vehicles", "0"], "vehicles"),
    (["--vehicles", "5", "--from", "everyone"], "everyone"),
])
def test_bad_exports_exit_2(fit_files, tmp_path, args, message):
    out = tmp_path / "d.add.xml"
    result = runner.invoke(app, ["export", "sumo", str(fit_files["idm"]), *args,
                                 "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and not out.exists()


def test_export_of_a_fit_without_idm_parameters_exits_2(fit_files, tmp_path):
    result = runner.invoke(app, ["export", "sumo", str(fit_files["schools"]), "--vehicles",
                                 "5", "--out", str(tmp_path / "d.add.xml")])
    assert result.exit_code == 2, result.output
    assert "error" in result.output


def test_export_to_an_unwritable_place_exits_2(fit_files, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["export", "sumo", str(fit_files["idm"]), "--vehicles", "5",
                                 "--out", str(blocker / "d.add.xml")])
    assert result.exit_code == 2, result.output


def test_ring_in_sumo_from_the_command_line(fit_files, tmp_path):
    pytest.importorskip("libsumo")
    out = tmp_path / "ring.csv"
    result = runner.invoke(app, ["simulate", "ring", str(fit_files["idm"]), "--engine", "sumo",
                                 "--num-vehicles", "10", "--length-m", "120",
                                 "--duration-s", "30", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert set(table.columns) >= {"vehicle", "time", "position", "speed", "gap"}
    assert table["vehicle"].nunique() == 10 and np.isfinite(table["speed"]).all()
    noisy = runner.invoke(app, ["simulate", "ring", str(fit_files["idm"]), "--engine", "sumo",
                                "--noise", "--out", str(tmp_path / "r2.csv")])
    assert noisy.exit_code == 2 and "deterministic" in noisy.output


def test_lane_drop_from_the_command_line(fit_files, tmp_path):
    pytest.importorskip("libsumo")
    out = tmp_path / "drop.csv"
    result = runner.invoke(app, ["simulate", "lane-drop", str(fit_files["idm"]),
                                 "--num-draws", "2", "--length-m", "800", "--drop-at-m", "600",
                                 "--duration-s", "120", "--warmup-s", "30", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert set(table["population"]) == {"heterogeneous", "homogeneous"}
    assert np.isfinite(table["discharge_flow_veh_h"]).all()
    assert out.with_suffix(".png").exists()
    bad = runner.invoke(app, ["simulate", "lane-drop", str(fit_files["idm"]), "--lanes", "1",
                              "--out", str(tmp_path / "d2.csv")])
    assert bad.exit_code == 2, bad.output


def test_follow_in_sumo_from_the_command_line(fit_files, tmp_path):
    pytest.importorskip("libsumo")
    out = tmp_path / "follow.csv"
    result = runner.invoke(app, ["simulate", "follow", str(fit_files["idm"]),
                                 str(fit_files["data"]), "--driver", fit_files["driver"],
                                 "--engine", "sumo", "--num-draws", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    bands = pd.read_csv(out)
    assert len(bands) and np.isfinite(bands.select_dtypes("number")).all().all()
