"""The other half of the benchmark smoke runs (see tests/test_benchmarks.py)."""

from __future__ import annotations

import pytest
from test_benchmarks import SCRIPTS, run_smoke


@pytest.mark.parametrize("script", SCRIPTS[1::2])
def test_benchmark_smoke_more(script, tmp_path):
    run_smoke(script, tmp_path)
