"""Every benchmark script runs in its smoke mode (tiny sizes), so the scripts never rot.

Marked ``bench``: the README's test command leaves them out and CI runs them as a step of
their own (``pytest -m bench``). Half the scripts here, half in test_benchmarks_more.py:
``--dist loadfile`` gives each file to one worker, and the smoke runs (most of them a small
fit with its compilation) would otherwise be the step's longest file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# heaviest smoke runs first (seconds measured in a CI run on 2 cores), dealt alternately to the
# two files so each worker gets about half
_COST = {"svi_vs_nuts.py": 136, "compare_cost.py": 120, "defaults.py": 53,
         "residuals_fit.py": 46, "scale_drivers.py": 45, "batch_unpooled.py": 44,
         "residuals_heldout.py": 43,
         "worker_threads.py": 30, "compile_cache.py": 26, "compare_pymc.py": 25,
         "gp_accuracy.py": 24, "gradient_cost.py": 80, "human_drivers.py": 30,
         "human_priors.py": 120, "centring_choice.py": 50, "sampler_choice.py": 40,
         # carpool's 4 small fits; +30 s where a Bambi Python is at hand (none in CI)
         "radon_vs_bambi.py": 70}
SCRIPTS = sorted((p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")),
                 key=lambda name: (-_COST.get(name, 0), name))


def run_smoke(script: str, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    r = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke", "--json",
                        str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip(), "a benchmark prints a table"
    assert json.loads(out.read_text())


@pytest.mark.bench
@pytest.mark.parametrize("script", SCRIPTS[0::2])
def test_benchmark_smoke(script, tmp_path):
    run_smoke(script, tmp_path)
