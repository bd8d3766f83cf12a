"""The bundled tabular examples (carpool.data.load_table): Minnesota radon and eight schools."""

from __future__ import annotations

import importlib.util
import json
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

import carpool.data
from carpool.data import list_tables, load_table

BUNDLED = Path(carpool.data.__file__).resolve().parent / "bundled"


def test_radon_table() -> None:
    df = load_table("radon-mn")
    assert list(df.columns) == ["county", "floor", "log_radon", "log_uppm"]
    assert len(df) == 919
    assert df["county"].nunique() == 85
    assert sorted(df["county"].unique(), key=int) == [str(j) for j in range(1, 86)]
    assert set(df["floor"]) == {0, 1} and int(df["floor"].sum()) == 153
    assert df["log_radon"].notna().all() and df["log_uppm"].notna().all()
    # uranium is a county-level measurement: one value per county
    assert (df.groupby("county")["log_uppm"].nunique() == 1).all()
    # the first home as in posteriordb's radon_mn (county 1, basement)
    first = df.iloc[0]
    assert (first["county"], first["floor"]) == ("1", 0)
    assert first["log_radon"] == pytest.approx(0.0953101798043249, abs=0, rel=0)
    # posteriordb's response is log(activity + 0.1), activity in whole 0.1 pCi/L (README)
    activity = np.exp(df["log_radon"].to_numpy()) - 0.1
    assert np.abs(activity - np.round(activity, 1)).max() < 1e-9
    assert int((np.round(activity, 1) == 0).sum()) == 3


def test_eight_schools_table() -> None:
    from carpool.models.eight_schools import eight_schools_data

    df = load_table("eight-schools")
    assert df["school"].tolist() == list("ABCDEFGH")
    assert df["y"].tolist() == [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
    assert df.equals(eight_schools_data())  # the same numbers as the model module's


def test_names_and_errors() -> None:
    assert list_tables() == ["radon-mn", "eight-schools"]
    assert {"load_table", "list_tables"} <= set(carpool.data.__all__)
    with pytest.raises(ValueError, match="unknown table 'radon'.*radon-mn"):
        load_table("radon")
    mine = load_table("radon-mn")
    mine.loc[0, "log_radon"] = 99.0
    assert load_table("radon-mn").loc[0, "log_radon"] != 99.0  # a fresh table each call


def test_the_script_reproduces_the_file_and_the_licence_ships(tmp_path: Path) -> None:
    """make_radon_csv.py writes the bundled file byte for byte from a posteriordb-style zip
    holding the same numbers; the licence and attribution sit beside it and ship."""
    script = BUNDLED / "make_radon_csv.py"
    spec = importlib.util.spec_from_file_location("make_radon_csv", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    df = load_table("radon-mn")
    source = {"N": len(df), "J": 85, "county_idx": df["county"].astype(int).tolist(),
              "floor_measure": df["floor"].tolist(), "log_radon": df["log_radon"].tolist(),
              "log_uppm": df["log_uppm"].tolist()}
    archive = tmp_path / "radon_mn.json.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("radon_mn.json", json.dumps(source))
    text = module.radon_csv(module.read_radon(archive))
    assert text == (BUNDLED / "radon_mn.csv").read_text(encoding="utf-8")
    assert "shared" not in script.read_text()

    readme = (BUNDLED / "README.md").read_text()
    for fact in ("stan-dev/posteriordb", "BSD 3-Clause", "Gelman", "Hill",
                 "LICENCE-posteriordb.md", "make_radon_csv.py"):
        assert fact in readme
    assert "Stan Developers" in (BUNDLED / "LICENCE-posteriordb.md").read_text()
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"][
        "carpool"]
    for name in ("radon_mn.csv", "LICENCE-posteriordb.md", "README.md"):
        assert any(fnmatch(f"data/bundled/{name}", p) for p in patterns), name
    assert np.isfinite(df[["log_radon", "log_uppm"]].to_numpy()).all()
