"""Shared by the benchmark scripts: what machine a result came from, and writing it safely."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import date
from pathlib import Path
from typing import Any

# every benchmark times cold compilation, as a user's first fit pays it: carpool's persistent
# compilation cache is off for the scripts and the processes they start, unless the caller
# chose otherwise (compile_cache.py, which studies the cache, sets it per child process)
os.environ.setdefault("CARPOOL_COMPILATION_CACHE", "off")


def _commit() -> str | None:
    """The carpool commit measured (``+`` when the working tree had changes), if known."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../src"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def machine_info(args: Any) -> dict[str, Any]:
    """Date, carpool commit, machine, cores, Python / JAX / NumPyro / ArviZ versions and the
    script's args."""
    versions = {}
    for name in ("jax", "numpyro", "arviz"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:  # pragma: no cover - all are dependencies of carpool
            versions[name] = None
    for name in ("pymc", "pytensor", "dask", "distributed"):  # where the script used them
        if name in sys.modules:
            versions[name] = sys.modules[name].__version__
    return {"date": date.today().isoformat(), "commit": _commit(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), **versions,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}


def write_results(path: str | Path, args: Any, **payload: Any) -> Path:
    """Write ``{"meta": machine_info(args), **payload}`` as JSON atomically (temp, rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps({"meta": machine_info(args), **payload}, indent=2,
                              default=float) + "\n")
    tmp.replace(out)
    return out
