"""Input errors and internal errors are told apart.

The library raises :class:`carpool.errors.InputError` (a ``ValueError``) for a problem with
what the user passed; the command line reports those, and OSErrors about the user's paths,
as one ``error:`` line with exit status 2. Any other exception (a plain ``ValueError`` or
``KeyError`` out of carpool is a bug) is an internal error: one line that says so and names
a log file holding the traceback, exit status 1, never disguised as the user's input error.
"""

from __future__ import annotations

import errno
import re
import tempfile
from pathlib import Path

import pytest
from cli_result import assert_one_error_line as _one_error_line
from cli_result import one_stderr_line
from typer.testing import CliRunner

import carpool
from carpool.cli import app
from carpool.data import DataError
from carpool.errors import InputError, UnknownNameError
from carpool.inference.integrity import FitFileError

HEADER = "driver,time,speed,gap,leader_speed\n"
GOOD = HEADER + "".join(f"{d},{k * 0.2:.1f},10,20,10\n" for d in "ab" for k in range(5))

runner = CliRunner()


# ----------------------------------------------------------------------------- library
def test_input_error_is_a_value_error_and_exported():
    assert issubclass(InputError, ValueError)
    assert carpool.InputError is InputError
    assert "InputError" in dir(carpool)
    for cls in (DataError, FitFileError, UnknownNameError):
        assert issubclass(cls, InputError)
    assert issubclass(UnknownNameError, KeyError)  # lookups raised KeyError before


@pytest.mark.parametrize("call, needle", [
    (lambda: carpool.get_spec("nope"), "unknown model 'nope'"),
    (lambda: carpool.residuals.parse_residual("ma3"), "unknown residual 'ma3'"),
    (lambda: carpool.PoolingConfig(pooling="partial"), "unknown pooling 'partial'"),
    (lambda: carpool.NutsSettings(chains=0), "must be positive"),
    (lambda: carpool.HalfNormal(-1.0), "must be positive"),
])
def test_user_input_raises_input_error(call, needle):
    with pytest.raises(InputError, match=re.escape(needle)):
        call()


def test_unknown_names_are_input_errors_and_key_errors():
    from carpool.carfollowing import get_model

    with pytest.raises(UnknownNameError, match="unknown car-following model 'idn'") as info:
        get_model("idn")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert info.value.args[0].startswith("unknown car-following model 'idn'")


def test_unknown_format_and_corrupt_parquet_are_input_errors(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text(GOOD)
    with pytest.raises(InputError, match="unknown format 'nope'"):
        carpool.read_trajectories(data, format="nope")
    corrupt = tmp_path / "data.parquet"
    corrupt.write_bytes(b"PAR1" + bytes(range(200)) + b"PAR1")
    with pytest.raises(DataError, match="data.parquet: not a readable Parquet file"):
        carpool.read_trajectories(corrupt)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(GOOD)
    return path


@pytest.fixture
def log_dir(tmp_path, monkeypatch) -> Path:
    """The temporary folder the CLI writes its error logs to, empty at the start."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _fit(data: Path, *extra: str):
    return runner.invoke(app, ["fit", str(data), "--out", str(data.with_suffix(".nc")),
                               "--draws", "10", "--warmup", "10", "--chains", "1",
                               "--no-progress", *extra])


def _internal_error(result, log_dir: Path, *in_log: str) -> str:
    """Exit status 1, one line saying internal error (not the user's input), the traceback
    in the log file that line names; returns the log's text."""
    line = one_stderr_line(result, 1)
    assert line.startswith("internal error (a bug in carpool; please report it with the "
                           "traceback in "), line
    assert not line.startswith("error:") and "input" not in line.lower(), line
    match = re.search(r"traceback in (\S+\.log)\)", line)
    assert match, line
    log = Path(match.group(1))
    assert log.parent == log_dir and log.name.startswith("carpool-error-"), log
    assert [p.name for p in log_dir.iterdir()] == [log.name]
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text
    for needle in in_log:
        assert needle in text, (needle, text)
    return text


def test_user_input_error_still_exits_2_with_one_line(data, log_dir):
    _one_error_line(_fit(data, "--pooling", "partial"), "unknown pooling 'partial'")
    _one_error_line(_fit(data, "--model", "nope"), "unknown model 'nope'")
    _one_error_line(_fit(data, "--format", "nope"), "unknown format 'nope'")
    _one_error_line(_fit(data.with_name("missing.csv")), "missing.csv")
    assert list(log_dir.iterdir()) == []  # no log for the user's errors


def test_input_error_from_the_library_exits_2(data, log_dir, monkeypatch):
    def bad(*args, **kwargs):
        raise InputError("driver 'b' at line 9: something the user should fix\nmore")

    monkeypatch.setattr(carpool, "fit", bad)
    _one_error_line(_fit(data), "driver 'b' at line 9")
    assert list(log_dir.iterdir()) == []


def test_plain_value_error_is_an_internal_error(data, log_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(carpool, "read_trajectories", broken)
    result = _fit(data)
    text = _internal_error(result, log_dir, "boom", "ValueError", "in broken")
    assert "ValueError: boom" in result.stderr
    assert text.startswith(f"carpool {carpool.__version__}, Python ")
    assert not data.with_suffix(".nc").exists()


def test_key_error_in_the_fit_is_an_internal_error(data, log_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("x")

    monkeypatch.setattr(carpool, "fit", broken)
    _internal_error(_fit(data), log_dir, "KeyError: 'x'")
    assert not data.with_suffix(".nc").exists()


def test_internal_error_in_summary(tmp_path, log_dir, monkeypatch):
    def broken(path, *args, **kwargs):
        raise TypeError("boom in load")

    monkeypatch.setattr(carpool, "load", broken)
    result = runner.invoke(app, ["summary", str(tmp_path / "fit.nc")])
    _internal_error(result, log_dir, "boom in load")


@pytest.mark.parametrize("exc", [
    PermissionError(errno.EACCES, "Permission denied", "data.csv"),
    IsADirectoryError(errno.EISDIR, "Is a directory", "data.csv"),
    OSError(errno.EIO, "Input/output error"),  # while reading the user's file
])
def test_oserror_reading_the_users_file_exits_2(data, log_dir, monkeypatch, exc):
    def unreadable(*args, **kwargs):
        raise exc

    monkeypatch.setattr(carpool, "read_trajectories", unreadable)
    _one_error_line(_fit(data), exc.strerror)
    assert list(log_dir.iterdir()) == []


def test_other_oserror_is_an_internal_error(data, log_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "I/O error in our own cache")

    monkeypatch.setattr(carpool, "fit", broken)
    _internal_error(_fit(data), log_dir, "our own cache")


def test_no_writable_log_folder_prints_the_traceback(data, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "a-file" / "folder"))

    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(carpool, "read_trajectories", broken)
    result = _fit(data)
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    first = result.stderr.splitlines()[0]
    assert first.startswith("internal error (a bug in carpool; please report it with the "
                            "traceback below (no log file could be written)): "), first
    assert "Traceback" in result.stderr and "boom" in result.stderr


def test_keyboard_interrupt_is_unchanged(data, log_dir, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(carpool, "fit", interrupted)
    result = _fit(data)
    assert result.exit_code == 130, (result.exit_code, result.output, result.exception)
    assert "interrupted by SIGINT" in result.stderr
    assert list(log_dir.iterdir()) == []


def test_the_command_lines_own_exits_pass_through(data, log_dir, monkeypatch):
    import typer

    def exits(*args, **kwargs):
        raise typer.Exit(3)

    monkeypatch.setattr(carpool, "fit", exits)
    result = _fit(data)
    assert result.exit_code == 3, (result.exit_code, result.output, result.exception)
    assert "internal error" not in result.output
    assert list(log_dir.iterdir()) == []
