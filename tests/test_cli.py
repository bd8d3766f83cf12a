"""The ``carpool`` command line: input errors exit 2 with one line, the fit / summary JSON
contract, output files that a failed run leaves alone, and a light ``import carpool``.

Everything runs in-process through :class:`typer.testing.CliRunner`, except the import
check, which needs a fresh interpreter. One real (tiny) fit is shared by the module.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from cli_result import assert_one_error_line as _assert_one_error_line
from typer.testing import CliRunner

import carpool
from carpool import cli
from carpool.cli import app

SAMPLER = ["--draws", "50", "--warmup", "50", "--chains", "2", "--no-progress"]
HEADER = "driver,time,speed,gap,leader_speed\n"
IDM = ("v0", "s0", "T", "a", "b")
STATS = ("mean", "sd", "hdi_3%", "hdi_97%")
#: Driver ids written to the happy-path CSV: leading zeros, a number, a space, a dash.
DRIVER_IDS = ("007", "12", "A 3", "veh-4")
MODELS = ("idm", "gipps", "ovm", "fvdm", "linear_acc")

runner = CliRunner()


# ----------------------------------------------------------------------------- helpers
def _rows(drivers: tuple[str, ...] = ("a", "b"), n: int = 5, dt: float = 0.2) -> list[str]:
    """Valid data rows: drivers a (file lines 2-6) and b (lines 7-11) by default."""
    return [f"{d},{k * dt:.1f},10,20,10" for d in drivers for k in range(n)]


def _with_line(line: int, text: str) -> str:
    """The valid file with its 1-based file ``line`` (header = line 1) replaced."""
    rows = _rows()
    rows[line - 2] = text
    return HEADER + "\n".join(rows) + "\n"


GOOD = HEADER + "\n".join(_rows()) + "\n"


def _leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted atomic write would leave (``.<name>.*.tmp``)."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _fit(data: Path | str, out: Path | str, *extra: str, catch: bool = True):
    return runner.invoke(app, ["fit", str(data), "--out", str(out), *SAMPLER, *extra],
                         catch_exceptions=catch)


# ----------------------------------------------------------------------------- bad input
BAD_FILES = {
    # name: (file text, extra options, words the error line must contain)
    "missing_column_auto": (
        "driver,time,speed,leader_speed\n" + "a,0,10,10\na,0.2,10,10\na,0.4,10,10\n", [],
        ["missing_column_auto.csv", "missing required column 'gap'"]),
    "missing_column_carpool": (
        "driver,time,speed,leader_speed\n" + "a,0,10,10\na,0.2,10,10\na,0.4,10,10\n",
        ["--format", "carpool"], ["missing required column 'gap'"]),
    "nan_speed": (_with_line(9, "b,0.4,,20,10"), [],
                  ["line 9", "driver 'b'", "speed is nan", "NaN"]),
    "negative_gap": (_with_line(9, "b,0.4,10,-3,10"), [],
                     ["line 9", "driver 'b'", "gap -3 m is not positive"]),
    "non_uniform_step": (_with_line(9, "b,0.5,10,20,10"), [],
                         ["line 9", "driver 'b'", "non-uniform time step", "0.2 s", "0.3 s"]),
    "too_short": (GOOD + "c,0,10,20,10\nc,0.2,10,20,10\n", [],
                  ["line 12", "driver 'c'", "too short", "2 observation(s)", "at least 3"]),
    "empty": ("", [], ["empty.csv", "is empty"]),
    "header_only": (HEADER, [], ["header_only.csv", "no data rows"]),
    "text_in_gap": (_with_line(9, "b,0.4,10,far,10"), [],
                    ["line 9", "driver 'b'", "'gap'", "not numeric", "'far'"]),
    "one_row_per_driver": (HEADER + "a,0,10,20,10\nb,0,10,20,10\n", [],
                           ["line 2", "driver 'a'", "too short", "1 observation(s)"]),
}

BAD_OPTIONS = {
    # name: (extra options, words the error line must contain)
    "pooling": (["--pooling", "partial"], ["unknown pooling 'partial'", "hierarchical"]),
    "model": (["--model", "nope"], ["unknown model 'nope'", "idm"]),
    "priors": (["--priors", "nope"], ["unknown priors 'nope'", "zhang-sun-2023"]),
    "format": (["--format", "nope"], ["unknown format 'nope'", "carpool"]),
    "param": (["--param", "nope"], ["unknown param 'nope'", "noncentred"]),
    "level": (["--level", "class"], ["level column 'class'"]),
    "chains": (["--chains", "0"], ["chains", "0"]),
    "target_accept": (["--target-accept", "1.5"], ["target_accept", "1.5"]),
    "priors_for_model": (["--model", "ovm", "--priors", "zhang-sun-2023"],
                         ["zhang-sun-2023", "IDM"]),
    "residual": (["--residual", "ma3"], ["unknown residual 'ma3'", "ar1", "gp"]),
    "residual_ar_order": (["--residual", "ar9"], ["AR order", "9"]),
    "ar_pooling": (["--residual", "ar1", "--ar-pooling", "nope"],
                   ["unknown ar_pooling 'nope'", "driver"]),
    "ar_pooling_class_needs_level": (["--residual", "ar1", "--ar-pooling", "class"],
                                     ["ar_pooling='class'", "level"]),
    "gp_window_s": (["--residual", "gp", "--gp-window-s", "0"], ["gp_window_s", "positive"]),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_exits_2_with_one_line(tmp_path, name):
    text, extra, needles = BAD_FILES[name]
    data = tmp_path / f"{name}.csv"
    data.write_text(text)
    result = _fit(data, tmp_path / "fit.nc", *extra)
    _assert_one_error_line(result, *needles)
    assert not (tmp_path / "fit.nc").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_bad_option_exits_2_with_one_line(tmp_path, name):
    extra, needles = BAD_OPTIONS[name]
    data = tmp_path / "data.csv"
    data.write_text(GOOD)
    result = _fit(data, tmp_path / "fit.nc", *extra)
    _assert_one_error_line(result, *needles)
    assert not (tmp_path / "fit.nc").exists()


def test_sampler_options_show_the_librarys_defaults():
    """``--chains``, ``--warmup``, ``--draws``, ``--seed`` of every fitting command default
    to :class:`NutsSettings`' own values (the CLI repeats them so that ``--help`` shows
    them)."""
    import inspect

    defaults = carpool.NutsSettings()
    for command in (cli.fit, cli.compare, cli.sweep, cli.report, cli.batch_fit_command):
        params = inspect.signature(command).parameters
        for name in ("chains", "warmup", "draws", "seed"):
            assert params[name].default == getattr(defaults, name), (command.__name__, name)


def test_missing_data_file(tmp_path):
    result = _fit(tmp_path / "nonexistent.csv", tmp_path / "fit.nc")
    _assert_one_error_line(result, "not found", "nonexistent.csv")


def test_directory_as_data(tmp_path):
    result = _fit(tmp_path, tmp_path / "fit.nc")
    _assert_one_error_line(result, "is a directory")


@pytest.mark.parametrize("out", ["fit.txt", "fit", "fit.nc.bak"])
def test_out_must_end_in_nc(tmp_path, out):
    data = tmp_path / "data.csv"
    data.write_text(GOOD)
    result = _fit(data, tmp_path / out)
    _assert_one_error_line(result, "--out must end in .nc", out)
    assert not (tmp_path / out).exists()




@pytest.mark.parametrize("driver", ["[bold]", "[/x]"])
def test_error_line_keeps_bracketed_driver_ids(tmp_path, driver):
    data = tmp_path / "data.csv"
    data.write_text(HEADER + f"{driver},0,10,20,10\n{driver},0.2,10,-1,10\n"
                    f"{driver},0.4,10,20,10\n")
    result = _fit(data, tmp_path / "fit.nc")
    _assert_one_error_line(result, f"driver '{driver}'", "gap -1 m is not positive")


def test_error_line_keeps_bracketed_file_names(tmp_path):
    result = _fit(tmp_path / "run[v2].csv", tmp_path / "fit.nc")
    _assert_one_error_line(result, "run[v2].csv")


# ----------------------------------------------------------------------------- happy path
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One real hierarchical IDM fit of 4 simulated drivers through ``carpool fit``."""
    from carpool.testing import simulate_drivers

    folder = tmp_path_factory.mktemp("fit")
    df, _ = simulate_drivers(4, duration_s=20.0, rng_seed=3)
    simulated = sorted(df["driver"].unique())
    df["driver"] = df["driver"].map(dict(zip(simulated, DRIVER_IDS, strict=True)))
    data = folder / "data.csv"
    df.to_csv(data, index=False)
    out = folder / "fit.nc"
    result = _fit(data, out, "--model", "idm", "--pooling", "hierarchical", catch=False)
    return {"folder": folder, "data": data, "out": out, "result": result}


def test_fit_writes_the_netcdf(fitted):
    result = fitted["result"]
    assert result.exit_code == 0, result.output
    assert fitted["out"].is_file() and fitted["out"].stat().st_size > 0
    assert "4 drivers" in result.stdout
    assert "saved" in result.stdout
    assert "Traceback" not in result.output
    # stderr holds only warnings (tiny sampler settings), never errors
    assert all(line.startswith("warning: ") for line in result.stderr.splitlines())
    assert _leftovers(fitted["folder"]) == []


def _strict_json(text: str) -> dict:
    def no_constant(name: str) -> None:
        raise AssertionError(f"{name} is not valid JSON")

    return json.loads(text, parse_constant=no_constant)


def _check_stats(block: dict, names: tuple[str, ...]) -> None:
    assert list(block) == list(names), list(block)
    for name in names:
        stats = block[name]
        assert set(STATS) <= set(stats), (name, stats)
        for key in STATS:
            assert isinstance(stats[key], float) and math.isfinite(stats[key]), (name, key)
        assert stats["sd"] > 0
        assert stats["hdi_3%"] < stats["hdi_97%"]


def test_summary_json_contract(fitted):
    result = runner.invoke(app, ["summary", str(fitted["out"]), "--json"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    d = _strict_json(result.stdout)

    assert d["model"] == "idm"
    assert d["pooling"] == "hierarchical"
    _check_stats(d["population"], IDM)
    for name in IDM:  # natural units: every IDM parameter is positive
        assert d["population"][name]["hdi_3%"] > 0
    assert set(d["groups"]) == set(DRIVER_IDS)  # ids exactly as written in the CSV
    for driver in DRIVER_IDS:
        _check_stats(d["groups"][driver], IDM)
    _check_stats(d["noise"], ("sigma",))
    assert d["noise"]["sigma"]["mean"] > 0

    diag = d["diagnostics"]
    assert isinstance(diag["max_rhat"], float) and math.isfinite(diag["max_rhat"])
    assert diag["max_rhat"] > 0.9
    assert isinstance(diag["min_ess_bulk"], float) and diag["min_ess_bulk"] > 0
    assert isinstance(diag["divergences"], int) and diag["divergences"] >= 0
    assert diag["chains"] == 2 and diag["draws"] == 50  # the options got through

    timing = d["timing"]
    for key in ("compile_s", "sampling_s"):
        assert isinstance(timing[key], float) and timing[key] >= 0


def test_summary_table(fitted):
    result = runner.invoke(app, ["summary", str(fitted["out"])], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "idm" in result.stdout and "max R-hat" in result.stdout
    assert "Traceback" not in result.output


def test_fit_with_an_ar1_residual(tmp_path, monkeypatch):
    """``--residual ar1`` reaches the saved fit; the summary shows the AR coefficient."""
    from carpool.testing import simulate_drivers

    df, _ = simulate_drivers(3, duration_s=10.0, rng_seed=1)
    data, out = tmp_path / "data.csv", tmp_path / "fit.nc"
    df.to_csv(data, index=False)
    result = _fit(data, out, "--pooling", "pooled", "--residual", "ar1", catch=False)
    assert result.exit_code == 0, result.output
    assert carpool.load(out).spec.residual.name == "ar1"

    monkeypatch.setattr(cli.console, "width", 250)  # no wrapping of the table
    table = runner.invoke(app, ["summary", str(out)], catch_exceptions=False)
    assert table.exit_code == 0, table.output
    assert "residual ar1" in table.stdout and "phi[1]" in table.stdout
    assert "pacf[1]" in table.stdout
    d = _strict_json(runner.invoke(app, ["summary", str(out), "--json"],
                                   catch_exceptions=False).stdout)
    assert d["residual"]["kind"] == "ar" and d["residual"]["order"] == 1
    _check_stats(d["residual_parameters"], ("phi[1]", "pacf[1]"))


@pytest.mark.parametrize("bad", ["data", "pooling"])
def test_failed_fit_keeps_the_existing_output(fitted, tmp_path, bad):
    out = tmp_path / "fit.nc"
    original = fitted["out"].read_bytes()
    out.write_bytes(original)
    data = tmp_path / "data.csv"
    if bad == "data":  # fails while reading
        data.write_text(_with_line(9, "b,0.4,10,-3,10"))
        result = _fit(data, out)
    else:  # fails after reading, in the library
        data.write_text(GOOD)
        result = _fit(data, out, "--pooling", "partial")
    assert result.exit_code == 2
    assert out.read_bytes() == original
    assert _leftovers(tmp_path) == []


@pytest.fixture
def fake_fit(fitted, monkeypatch):
    """``carpool.fit`` replaced by the saved fit, to test what ``fit`` does after sampling."""
    loaded = carpool.load(fitted["out"])
    monkeypatch.setattr(carpool, "fit", lambda *args, **kwargs: loaded)
    return loaded


def test_failed_write_keeps_the_existing_output(fitted, fake_fit, tmp_path, monkeypatch):
    def broken_write(path, *args, **kwargs):
        Path(path).write_bytes(b"half a netCDF")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fake_fit.idata, "to_netcdf", broken_write)
    out = tmp_path / "fit.nc"
    original = fitted["out"].read_bytes()
    out.write_bytes(original)
    data = tmp_path / "data.csv"
    data.write_text(GOOD)
    result = _fit(data, out)
    assert result.exit_code != 0
    assert out.read_bytes() == original
    assert _leftovers(tmp_path) == []


def test_warnings_are_printed_verbatim(fitted, tmp_path, monkeypatch):
    from carpool.inference.diagnostics import ConvergenceWarning

    loaded = carpool.load(fitted["out"])
    message = "max R-hat 1.150 at theta[d01, T] (> 1.01): chains disagree"

    def warning_fit(*args, **kwargs):
        import warnings

        warnings.warn(message, ConvergenceWarning, stacklevel=2)
        return loaded

    monkeypatch.setattr(carpool, "fit", warning_fit)
    data = tmp_path / "data.csv"
    data.write_text(GOOD)
    result = _fit(data, tmp_path / "fit.nc", catch=False)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"warning: {message}"]


def test_unwritable_out_folder_is_an_input_error(fake_fit, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    data = tmp_path / "data.csv"
    data.write_text(GOOD)
    result = _fit(data, tmp_path / "afile" / "fit.nc")
    _assert_one_error_line(result, "afile")


# ----------------------------------------------------------------------------- summary, models
def test_summary_of_a_text_file(tmp_path):
    fake = tmp_path / "x.nc"
    fake.write_text("this is not a netCDF file\n")
    result = runner.invoke(app, ["summary", str(fake)])
    _assert_one_error_line(result, "x.nc", "not a carpool fit file")


def test_summary_of_a_plain_netcdf(tmp_path):
    import numpy as np
    import xarray as xr

    plain = tmp_path / "plain.nc"
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(plain, engine="h5netcdf")
    result = runner.invoke(app, ["summary", str(plain)])
    _assert_one_error_line(result, "plain.nc", "not a carpool fit file")


@pytest.mark.parametrize("name", ["empty.nc", "folder.nc", "missing.nc"])
def test_summary_of_other_non_fits(tmp_path, name):
    path = tmp_path / name
    if name == "empty.nc":
        path.write_bytes(b"")
    elif name == "folder.nc":
        path.mkdir()
    result = runner.invoke(app, ["summary", str(path)])
    _assert_one_error_line(result, name)


def test_models_lists_the_car_following_models():
    result = runner.invoke(app, ["models"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in MODELS:
        assert name in result.stdout, name


def test_models_shows_parameter_units(monkeypatch):
    monkeypatch.setattr(cli.console, "width", 250)  # one table row per model, no wrapping
    result = runner.invoke(app, ["models"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for cell in ("v0 [m/s]", "s0 [m]", "T [s]", "a [m/s^2]", "kappa [1/s]"):
        assert cell in result.stdout, cell


@pytest.mark.parametrize("args", [["--help"], ["fit", "--help"], ["summary", "--help"]])
def test_help(args):
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout
    if args == ["--help"]:
        for command in ("fit", "summary", "models", "demo"):
            assert command in result.stdout
    if args[0] == "fit":
        assert "--pooling" in result.stdout and "--out" in result.stdout


# ----------------------------------------------------------------------------- import cost
HEAVY = ("matplotlib", "jax", "numpyro", "arviz")


@pytest.mark.parametrize("code", [
    "import carpool",
    "import carpool.cli",
    # what `carpool --help` runs
    "import sys; sys.argv = ['carpool', '--help']\n"
    "from carpool.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass",
])
def test_import_stays_light(code):
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
