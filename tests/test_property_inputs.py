"""Property-based tests (hypothesis) of the readers and the CLI on malformed files.

Every malformed file (see ``tests/malformed.py``: missing or renamed columns, NaN/inf,
non-positive gaps, negative speeds, duplicated times, irregular steps, one-row drivers, wrong
types, empty files, huge values, non-UTF-8 bytes, random bytes, and corrupted USDOT platoon
files) must give one error line that names the problem (and the line / driver where there is
one): never a traceback, never a result. Examples are derandomised (a fixed seed per test),
so CI runs the same cases every time; ``benchmarks/bad_inputs.py`` runs more of them and
reports the count.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from malformed import is_one_line, malformed_files, malformed_wide_files, valid_table
from typer.testing import CliRunner

import carpool
from carpool.cli import app
from carpool.data import DataError, validate_trajectories

READER_EXAMPLES = 200
CLI_EXAMPLES = 60
FAST = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _write(folder: Path, content: bytes, name: str = "data.csv") -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def check_reader(path: Path, kind: str, needles: list[str]) -> None:
    """``read_trajectories`` raises a one-line DataError naming ``needles``."""
    with pytest.raises(DataError) as info:
        carpool.read_trajectories(path)
    message = str(info.value)
    assert is_one_line(message), (kind, message)
    for needle in needles:
        assert needle in message, (kind, needle, message)


def test_readers_reject_malformed_files(tmp_path):
    seen: Counter[str] = Counter()

    @settings(FAST, max_examples=READER_EXAMPLES)
    @given(st.one_of(malformed_files(), malformed_wide_files()))
    def check(case):
        kind, content, needles = case
        seen[kind] += 1
        check_reader(_write(tmp_path, content), kind, needles)

    check()
    print(f"readers: {sum(seen.values())} malformed files, 0 tracebacks, by kind {dict(seen)}")
    assert sum(seen.values()) >= READER_EXAMPLES * 0.9  # hypothesis ran them all
    assert len(seen) >= 15  # and most kinds of corruption


@pytest.fixture
def no_fit(monkeypatch):
    """A malformed file must fail before any fit (and any JAX work) starts."""
    def forbidden(*args, **kwargs):
        raise AssertionError("carpool.fit was reached with malformed input")

    monkeypatch.setattr(carpool, "fit", forbidden)


def test_cli_fit_rejects_malformed_files(tmp_path, no_fit):
    runner = CliRunner()
    seen: Counter[str] = Counter()

    @settings(FAST, max_examples=CLI_EXAMPLES)
    @given(st.one_of(malformed_files(), malformed_wide_files()))
    def check(case):
        kind, content, needles = case
        seen[kind] += 1
        data, out = _write(tmp_path, content), tmp_path / "fit.nc"
        result = runner.invoke(app, ["fit", str(data), "--out", str(out), "--no-progress"])
        assert result.exit_code == 2, (kind, result.exit_code, result.output,
                                       repr(result.exception))
        assert isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (kind, result.stderr)
        for needle in needles:
            assert needle in lines[0], (kind, needle, lines[0])
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    check()
    print(f"cli: {sum(seen.values())} malformed files, 0 tracebacks")
    assert sum(seen.values()) >= CLI_EXAMPLES * 0.9


def test_row_order_does_not_matter(tmp_path):
    """Unsorted rows are not an error: the reader sorts by driver then time (documented), so
    any permutation of a valid file reads to the same table."""

    @settings(FAST, max_examples=40)
    @given(valid_table(), st.randoms(use_true_random=False))
    def check(table, random):
        header, rows = table
        shuffled = rows[:]
        random.shuffle(shuffled)

        def text(rs: list[list[str]]) -> bytes:
            return ("\n".join(",".join(r) for r in [header, *rs]) + "\n").encode()

        a = carpool.read_trajectories(_write(tmp_path, text(rows), "a.csv"))
        b = carpool.read_trajectories(_write(tmp_path, text(shuffled), "b.csv"))
        pd.testing.assert_frame_equal(a, b)
        assert np.all(np.diff(a["time"].to_numpy())[a["driver"].to_numpy()[1:]
                                                   == a["driver"].to_numpy()[:-1]] > 0)

    check()


@settings(FAST, max_examples=60)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=3,
                max_size=6), st.sampled_from(["speed", "gap", "leader_speed", "time"]))
def test_validate_numeric_columns_accepts_or_names_the_value(values, column):
    """Any floats in a numeric column: either a valid table or one line naming the column."""
    n = len(values)
    frame = pd.DataFrame({"driver": ["a"] * n, "time": np.arange(n) * 0.1,
                          "speed": 10.0, "gap": 20.0, "leader_speed": 10.0})
    frame[column] = values
    try:
        out = validate_trajectories(frame)
    except DataError as error:
        assert is_one_line(str(error)) and column in str(error), str(error)
        return
    v = out[column].to_numpy()
    assert np.isfinite(v).all() and (np.abs(v) <= 1e13).all()
    if column == "gap":
        assert (v > 0).all()
