"""What every CLI test checks of a user-input error (shared by the CLI test modules)."""

from __future__ import annotations


def one_stderr_line(result, status: int) -> str:
    """Exit ``status`` by ``SystemExit``, no traceback shown, exactly one line on stderr:
    that line."""
    assert result.exit_code == status, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def assert_one_error_line(result, *needles: str) -> str:
    """Exit status 2, exactly one ``error:`` line on stderr naming ``needles``, no traceback."""
    line = one_stderr_line(result, 2)
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line
