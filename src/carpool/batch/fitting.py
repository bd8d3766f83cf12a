"""``carpool.batch.fit_batch``: one saved fit per unit, run as independent tasks.

Each task (:func:`fit_unit`) fits its unit with :func:`carpool.fit` and writes the fit
atomically to ``DIR/fits/<unit>.nc`` itself, on the worker, before it returns: a result
that finished is on disk even if its worker, or the client, dies a moment later. The fit
file carries which unit and which request it answers, so a rerun keeps a result only
after loading it (:func:`check_result`), never because a file of that name exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from carpool.batch.executors import DEFAULT_RETRIES, Progress, Task, as_executor
from carpool.batch.manifest import MANIFEST_NAME, Manifest, utc_now
from carpool.batch.units import Unit, split_table

__all__ = ["BatchResult", "FitRequest", "check_result", "fit_batch", "fit_unit"]

log = logging.getLogger(__name__)

FITS_FOLDER = "fits"
ATTR = "carpool_batch"

#: Options of :func:`carpool.fit` a batch passes on (the data and model come per unit).
FIT_OPTIONS = ("tau", "correlated", "param", "level", "layout", "chains", "warmup", "draws",
               "seed", "target_accept", "max_tree_depth", "model_options", "data_options",
               "residual")


@dataclass(frozen=True)
class FitRequest:
    """What every unit of a batch is fitted with: a registered model, a pooling mode and
    further :func:`carpool.fit` options (``chains``, ``draws``, ``seed``, ...)."""

    model: str
    pooling: str = "hierarchical"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from carpool.pooling.spec import POOLING_MODES

        if not isinstance(self.model, str):
            raise TypeError("a batch fits a registered model by name (e.g. 'idm')")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose one of "
                             f"{list(POOLING_MODES)}")
        unknown = sorted(set(self.options) - set(FIT_OPTIONS))
        if unknown:
            raise ValueError(f"unknown fit option(s) {unknown} for a batch")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "pooling": self.pooling,
                **{k: self.options[k] for k in sorted(self.options)}}

    def fingerprint(self) -> str:
        """A hash of the request: results of another request are never reused."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()} pid {os.getpid()}"


def fit_unit(unit: Unit, request: FitRequest, path: str) -> dict[str, Any]:
    """The worker's task: fit one unit, save it atomically at ``path``, return a record.

    The record holds timings (s), the worker, the data's size and the fit's convergence
    diagnostics; it goes into the manifest.
    """
    import carpool

    started, t0 = utc_now(), time.perf_counter()
    fit = carpool.fit(unit.load(), request.model, pooling=request.pooling, warn=False,
                      **dict(request.options))
    fit.idata.posterior.attrs[ATTR] = json.dumps(
        {"unit": unit.name, "input": unit.fingerprint(), "request": request.fingerprint()})
    fit.save(path)
    d, timing = fit.diagnostics, fit.timing
    return {"started": started, "finished": utc_now(), "wall_s": time.perf_counter() - t0,
            "compile_s": float(timing.get("compile_s", float("nan"))),
            "sampling_s": float(timing.get("sampling_s", float("nan"))),
            "worker": _worker_name(), "groups": int(fit.data.num_groups),
            "observations": int(fit.data.num_obs), "max_rhat": float(d["max_rhat"]),
            "divergences": int(d["divergences"])}


def check_result(path: str | os.PathLike[str], unit: Unit, request: FitRequest) -> str | None:
    """Why the fit at ``path`` is not a valid result for ``unit`` (``None`` when it is).

    Valid means: the file loads as a carpool fit (so it is complete) and was written by a
    batch for this unit, from the same input and with the same request.
    """
    import carpool

    path = Path(path)
    if not path.is_file():
        return "no result file"
    try:
        fit = carpool.load(path)
        tag = json.loads(fit.idata.posterior.attrs[ATTR])
    except (ValueError, KeyError, OSError, TypeError) as exc:
        return f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    expected = {"unit": unit.name, "input": unit.fingerprint(),
                "request": request.fingerprint()}
    for key, value in expected.items():
        if tag.get(key) != value:
            return f"written for another {key}"
    return None


@dataclass(frozen=True)
class BatchResult:
    """The end of a batch: its folder, manifest and per-unit records."""

    out_dir: Path
    manifest: Manifest

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    @property
    def summary(self) -> dict[str, int]:
        return self.manifest.summary()

    @property
    def failed(self) -> dict[str, str]:
        """``{unit: error}`` of the units that failed."""
        return {name: r["error"] for name, r in self.manifest.units.items()
                if r["status"] == "failed"}

    @property
    def is_ok(self) -> bool:
        """Every unit has a valid fit."""
        return all(r["status"] == "done" for r in self.manifest.units.values())

    def path(self, unit: str) -> Path:
        """The fit file of ``unit``."""
        return self.out_dir / self.manifest.units[unit]["path"]

    def load(self, unit: str) -> Any:
        """The fit of ``unit`` (:func:`carpool.load`)."""
        import carpool

        return carpool.load(self.path(unit))


def fit_batch(
    units: Sequence[Unit] | pd.DataFrame,
    model: str,
    out_dir: str | os.PathLike[str],
    *,
    pooling: str = "hierarchical",
    by: str = "driver",
    executor: Any = None,
    retries: int = DEFAULT_RETRIES,
    resume: bool = True,
    fit_options: Mapping[str, Any] | None = None,
    progress_fn: Callable[[Progress], Any] | None = None,
    manifest_interval_s: float = 1.0,
) -> BatchResult:
    """Fit ``model`` to every unit as an independent task; one fit file per unit.

    Parameters
    ----------
    units
        :class:`~carpool.batch.units.Unit` objects, or a table split ``by`` a column.
    model
        A registered model name (``"idm"``, ``"gipps"``, ``"linear"``, ...).
    out_dir
        Folder for ``fits/<unit>.nc`` and ``manifest.json`` (created).
    pooling
        The pooling mode of every unit's fit. ``"hierarchical"`` needs several groups per
        unit (split by recording or site, not by driver).
    by
        Column to split a table by (ignored for a list of units); recorded in the manifest.
    executor
        Where tasks run: ``None`` (a ``LocalCluster`` with one worker process per core,
        closed at the end), an ``int`` (that many local workers; ``0``: this process), a
        scheduler address, a ``distributed.Client`` or an
        :class:`~carpool.batch.executors.AbstractExecutor`.
    retries
        Re-runs of a failed unit before it is recorded as failed.
    resume
        Keep the results of an earlier run in ``out_dir`` that :func:`check_result` finds
        valid; otherwise every unit is fitted again.
    fit_options
        Further :func:`carpool.fit` options (``chains``, ``warmup``, ``draws``, ``seed``,
        ``level``, ``model_options``, ...), the same for every unit.
    progress_fn
        Called with a :class:`~carpool.batch.executors.Progress` of the units being fitted
        (reused results not counted) whenever it changes.
    manifest_interval_s
        The manifest is rewritten at most this often while the batch runs (each fit file
        is written as soon as it finishes regardless), and always at the end.

    Returns
    -------
    BatchResult
        The manifest; a failed unit does not raise (see :attr:`BatchResult.failed`).
    """
    request = FitRequest(model, pooling, dict(fit_options or {}))
    if isinstance(units, pd.DataFrame):
        units = split_table(units, by)
    units = list(units)
    if not units:
        raise ValueError("the batch has no units")
    if pooling == "hierarchical" and by == "driver" and all(
            u.table is not None for u in units):
        raise ValueError("pooling 'hierarchical' needs several drivers per unit; split by "
                         "recording or another column, or fit pooled / unpooled")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file; give a folder for the batch")
    (out / FITS_FOLDER).mkdir(parents=True, exist_ok=True)
    manifest = Manifest(request={**request.to_dict(), "by": by, "retries": retries})
    paths = {u.name: f"{FITS_FOLDER}/{u.file_stem}.nc" for u in units}
    manifest_path = out / MANIFEST_NAME
    earlier = _earlier_records(manifest_path) if resume else {}
    todo = []
    for u in units:
        reason = check_result(out / paths[u.name], u, request) if resume else "no resume"
        if reason is None:
            before = earlier.get(u.name, {})
            before = before if before.get("status") == "done" else {}
            manifest.units[u.name] = {**before, "status": "done", "path": paths[u.name],
                                      "error": None, "reused": True,
                                      "attempts": before.get("attempts", 0),
                                      "errors": before.get("errors", [])}
        else:
            manifest.units[u.name] = {"status": "pending", "path": paths[u.name],
                                      "attempts": 0, "error": None, "errors": [],
                                      "reused": False}
            todo.append(u)
    log.info("%d units, %d to fit, %d reused", len(units), len(todo), len(units) - len(todo))
    manifest.write(manifest_path)
    if not todo:
        return BatchResult(out, manifest)
    tasks = [Task(u.name, fit_unit, (u, request, str(out / paths[u.name]))) for u in todo]
    runner, owned = as_executor(executor)
    last_write = time.monotonic()
    try:
        for outcome in runner.run(tasks, retries=retries, progress_fn=progress_fn):
            record = manifest.units[outcome.key]
            record.update(attempts=outcome.attempts, errors=list(outcome.errors))
            if outcome.is_ok:
                record.update(status="done", error=None, **outcome.value)
            else:
                record.update(status="failed", error=outcome.error, finished=utc_now())
            if time.monotonic() - last_write >= manifest_interval_s:
                manifest.write(manifest_path)
                last_write = time.monotonic()
    finally:
        manifest.write(manifest_path)
        if owned:
            runner.close()
    return BatchResult(out, manifest)


def _earlier_records(manifest_path: Path) -> dict[str, dict[str, Any]]:
    """An earlier run's records (timings, worker) to keep for reused units; ``{}`` if none."""
    if not manifest_path.is_file():
        return {}
    try:
        return Manifest.read(manifest_path).units
    except ValueError:
        log.warning("ignoring the unreadable earlier manifest %s", manifest_path)
        return {}
