"""What every CLI test checks of a user-input error (shared by the CLI test modules)."""

from __future__ import annotations


def assert_one_error_line(result, *needles: str) -> str:
    """Exit status 2, exactly one ``error:`` line on stderr naming ``needles``, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line
