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


def ngsim_benchmark_args(description: str, json_path: str, **extra: Any) -> Any:
    """The arguments the NGSIM benchmarks share (``--drivers``, sampler settings, ``--seed``,
    ``--smoke``, ``--json``), plus ``extra`` as ``{name: (default, help)}``."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--drivers", type=int, default=None, help="a subset (default: all 76)")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default=json_path)
    for name, (default, text) in extra.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                        help=text)
    args = ap.parse_args()
    if args.smoke:
        args.drivers, args.chains, args.warmup, args.draws = 3, 1, 30, 30
    return args


def ngsim_drivers(num_drivers: int | None) -> Any:
    """The bundled NGSIM drivers at 5 Hz, or ``num_drivers`` of them spread over the
    recording (the demo's choice)."""
    import carpool
    from carpool.demo import choose_drivers

    full = carpool.load_example("ngsim-i80")
    return full[full["driver"].isin(choose_drivers(full, num_drivers))].reset_index(drop=True)


def one_device_per_chain() -> None:
    """One CPU device per chain, as the CLI gives JAX (call before JAX starts)."""
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_"
                                   f"platform_device_count={max(4, os.cpu_count() or 1)}")


def run_child(script: str, child_args: list[str], label: str) -> dict[str, Any]:
    """Run ``script`` with ``child_args`` in a fresh Python process and return the JSON row
    it prints on a line starting ``ROW ``: each measurement compiles cold, and the programs
    of many fits do not pile up in one process. Exits naming ``label`` if it fails."""
    import subprocess

    r = subprocess.run([sys.executable, script, *child_args], capture_output=True, text=True,
                       check=False)
    rows = [ln[4:] for ln in r.stdout.splitlines() if ln.startswith("ROW ")]
    if r.returncode != 0 or not rows:
        raise SystemExit(f"{label} failed:\n{r.stderr[-3000:]}")
    return json.loads(rows[0])
