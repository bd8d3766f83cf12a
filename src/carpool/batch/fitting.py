"""``carpool.batch.fit_batch``: one saved fit per unit, run as independent tasks.

Each task (:func:`fit_unit`) fits its unit with :func:`carpool.fit` and writes the fit
atomically to ``DIR/fits/<unit>.nc`` itself, on the worker, before it returns: a result
that finished is on disk even if its worker, or the client, dies a moment later. The fit
file carries which unit and which request it answers, so a rerun keeps a result only
after loading it (:func:`check_result`), never because a file of that name exists.

With ``engine="separate"`` a task (:func:`fit_driver_group`) fits a group of one-driver
units through :func:`carpool.fit_separately` and saves each driver's posterior to its own
file the same way: the worker compiles the sampler once and reuses it for every later
group whose padded series length matches, instead of compiling once per driver.
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
from typing import TYPE_CHECKING, Any

import pandas as pd

from carpool.batch.manifest import MANIFEST_NAME, Manifest, utc_now
from carpool.batch.units import Unit, split_table
from carpool.errors import InputError
from carpool.parallel.executors import DEFAULT_RETRIES, Progress, Task, as_executor
from carpool.pooling.spec import PoolingConfig

if TYPE_CHECKING:
    from carpool.inference.nuts import NutsSettings
    from carpool.inference.svi import SviSettings

__all__ = ["ENGINES", "BatchResult", "FitRequest", "check_result", "fit_batch",
           "fit_driver_group", "fit_unit"]

log = logging.getLogger(__name__)

FITS_FOLDER = "fits"
ATTR = "carpool_batch"

#: How a batch fits its units: ``"fit"``, :func:`carpool.fit` per unit (any model, pooling
#: and residual; one compilation per unit); ``"separate"``, groups of one-driver units per
#: task through :func:`carpool.fit_separately` (i.i.d. residuals, NUTS; one compilation
#: per worker and padded series length).
ENGINES = ("fit", "separate")

#: A separate task pads its drivers' series to a multiple of this many steps, so that
#: the tasks of a worker share one compiled program (at most 31 masked steps a driver).
SEPARATE_PAD_MULTIPLE = 32

#: Most drivers per task when ``drivers_per_task`` is chosen automatically.
MAX_DRIVERS_PER_TASK = 50


@dataclass(frozen=True)
class FitRequest:
    """What every unit of a batch is fitted with: a registered model, the pooling (a mode
    name or a :class:`~carpool.pooling.spec.PoolingConfig`), the sampler settings
    (:class:`~carpool.inference.nuts.NutsSettings`, its defaults when ``None``, or
    :class:`~carpool.inference.svi.SviSettings`), the level column, the model's and the
    data's options (as for :func:`carpool.fit`) and the engine (:data:`ENGINES`)."""

    model: str
    pooling: str | PoolingConfig = "hierarchical"
    sampler: NutsSettings | SviSettings | None = None
    level: str | None = None
    model_options: Mapping[str, Any] = field(default_factory=dict)
    data_options: Mapping[str, Any] = field(default_factory=dict)
    engine: str = "fit"

    def __post_init__(self) -> None:
        from carpool.inference.nuts import NutsSettings
        from carpool.inference.svi import SviSettings

        if not isinstance(self.model, str):
            raise TypeError("a batch fits a registered model by name (e.g. 'idm')")
        if not isinstance(self.pooling, PoolingConfig):
            object.__setattr__(self, "pooling", PoolingConfig(pooling=self.pooling))
        if self.sampler is None:
            object.__setattr__(self, "sampler", NutsSettings())
        if not isinstance(self.sampler, NutsSettings | SviSettings):
            raise InputError(f"sampler must be NutsSettings or SviSettings, got "
                             f"{type(self.sampler).__name__}")
        object.__setattr__(self, "model_options", dict(self.model_options or {}))
        object.__setattr__(self, "data_options", dict(self.data_options or {}))
        if self.engine not in ENGINES:
            raise InputError(f"unknown engine {self.engine!r}; choose one of {list(ENGINES)}")
        if self.engine == "separate":
            if self.pooling.pooling == "hierarchical":
                raise InputError("engine 'separate' fits each driver alone: give pooling "
                                 "'unpooled' (or 'pooled', the same model for one driver)")
            if self.level is not None:
                raise InputError("engine 'separate' fits each driver alone: a level "
                                 "does not apply")
            if not isinstance(self.sampler, NutsSettings):
                raise InputError("engine 'separate' samples with NUTS: give NutsSettings")

    def fit_kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`carpool.fit` (engine ``"fit"``) besides data and model."""
        return {"pooling": self.pooling, "sampler": self.sampler, "level": self.level,
                "model_options": dict(self.model_options),
                "data_options": dict(self.data_options)}

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON-ready values (the manifest's record of it): the pooling
        mode, and the fields of its configuration that differ from the mode's defaults."""
        engine = {} if self.engine == "fit" else {"engine": self.engine}
        config = self.pooling.to_dict()
        default = PoolingConfig(pooling=self.pooling.pooling).to_dict()
        return {"model": self.model, "pooling": self.pooling.pooling, **engine,
                **{k: v for k, v in config.items() if v != default[k]},
                "sampler": self.sampler.to_dict(), "level": self.level,
                "model_options": dict(self.model_options),
                "data_options": dict(self.data_options)}

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
    fit = carpool.fit(unit.load(), request.model, warn=False, **request.fit_kwargs())
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


def fit_driver_group(units: Sequence[Unit], request: FitRequest, paths: Sequence[str]
                     ) -> dict[str, dict[str, Any]]:
    """The worker's task of a ``"separate"`` batch: fit one-driver units, each alone.

    Each unit is validated on its own (a bad one gets ``{"error": ...}`` and the others
    are fitted); the good ones go through one :func:`carpool.fit_separately` call (padded
    to :data:`SEPARATE_PAD_MULTIPLE`, so the worker's later tasks reuse its compiled
    program), and each driver's posterior is saved atomically at its path as soon as the
    call returns. Returns ``{unit name: manifest record}``.
    """
    import carpool
    from carpool.inference.run import resolve_spec
    from carpool.parallel.executors import _describe

    spec = resolve_spec(request.model, **dict(request.model_options))
    data_options = dict(request.data_options)
    started, t0 = utc_now(), time.perf_counter()
    records: dict[str, dict[str, Any]] = {}
    good: list[tuple[Unit, str, str, int, pd.DataFrame]] = []
    for unit, path in zip(units, paths, strict=True):
        try:
            table = unit.load()
            grouped = spec.prepare(table, **data_options)
            if grouped.num_groups != 1:
                raise InputError(f"unit {unit.name!r} holds {grouped.num_groups} drivers; "
                                 "engine 'separate' fits one driver per unit (--by driver)")
            good.append((unit, path, str(grouped.group_ids[0]), grouped.num_obs, table))
        except (ValueError, KeyError, OSError, TypeError) as exc:
            records[unit.name] = {"error": _describe(exc)}
    if not good:
        return records
    fits = carpool.fit_separately(pd.concat([t for *_, t in good], ignore_index=True),
                                  request.model, sampler=request.sampler,
                                  model_options=dict(request.model_options),
                                  data_options=data_options,
                                  pad_multiple=SEPARATE_PAD_MULTIPLE)
    task_wall = time.perf_counter() - t0
    for unit, path, driver, num_obs, _ in good:
        one = fits.select([driver])
        one.idata.posterior.attrs[ATTR] = json.dumps(
            {"unit": unit.name, "input": unit.fingerprint(),
             "request": request.fingerprint()})
        one.save(path)
        d = one.diagnostics()
        records[unit.name] = {
            "started": started, "finished": utc_now(), "wall_s": task_wall / len(good),
            "task_wall_s": task_wall, "task_units": len(units), "compile_s": float("nan"),
            "sampling_s": float("nan"), "worker": _worker_name(), "groups": 1,
            "observations": int(num_obs),
            "max_rhat": d["max_rhat"], "divergences": d["divergences"]}
    return records


def _load_any(path: Path) -> Any:
    """A batch result: a :class:`~carpool.inference.fit.Fit` or, for engine
    ``"separate"``, a one-driver :class:`~carpool.inference.separate.SeparateFits`."""
    import xarray as xr

    import carpool
    from carpool.inference.separate import KIND

    with xr.open_dataset(path, group="posterior") as post:
        kind = post.attrs.get("carpool_kind")
    return carpool.load_separate(path) if kind == KIND else carpool.load(path)


def check_result(path: str | os.PathLike[str], unit: Unit, request: FitRequest) -> str | None:
    """Why the fit at ``path`` is not a valid result for ``unit`` (``None`` when it is).

    Valid means: the file loads as a carpool fit (so it is complete) and was written by a
    batch for this unit, from the same input and with the same request.
    """
    path = Path(path)
    if not path.is_file():
        return "no result file"
    try:
        fit = _load_any(path)
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
        """The fit of ``unit``: a :func:`carpool.load` fit, or for engine ``"separate"``
        the unit's one-driver :func:`carpool.load_separate` fits."""
        return _load_any(self.path(unit))


def fit_batch(
    units: Sequence[Unit] | pd.DataFrame,
    model: str,
    out_dir: str | os.PathLike[str],
    *,
    pooling: str | PoolingConfig = "hierarchical",
    sampler: NutsSettings | SviSettings | None = None,
    level: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    by: str = "driver",
    executor: Any = None,
    retries: int = DEFAULT_RETRIES,
    resume: bool = True,
    progress_fn: Callable[[Progress], Any] | None = None,
    manifest_interval_s: float = 1.0,
    engine: str = "fit",
    drivers_per_task: int | None = None,
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
        The pooling of every unit's fit, a mode name or a
        :class:`~carpool.pooling.spec.PoolingConfig`. ``"hierarchical"`` needs several
        groups per unit (split by recording or site, not by driver).
    sampler, level, model_options, data_options
        As for :func:`carpool.fit`, the same for every unit (engine ``"separate"``: NUTS
        settings, no level).
    by
        Column to split a table by (ignored for a list of units); recorded in the manifest.
    executor
        Where tasks run: ``None`` (a ``LocalCluster`` with one worker process per core,
        closed at the end), an ``int`` (that many local workers; ``0``: this process), a
        scheduler address, a ``distributed.Client`` or an
        :class:`~carpool.parallel.executors.AbstractExecutor`.
    retries
        Re-runs of a failed unit before it is recorded as failed.
    resume
        Keep the results of an earlier run in ``out_dir`` that :func:`check_result` finds
        valid; otherwise every unit is fitted again.
    progress_fn
        Called with a :class:`~carpool.parallel.executors.Progress` of the units being fitted
        (reused results not counted) whenever it changes.
    manifest_interval_s
        The manifest is rewritten at most this often while the batch runs (each fit file
        is written as soon as it finishes regardless), and always at the end.
    engine
        ``"fit"`` (:func:`carpool.fit` per unit) or ``"separate"``: one-driver units
        (``by="driver"``, pooling unpooled or pooled, i.i.d. residuals, NUTS) fitted in
        groups of ``drivers_per_task`` by :func:`carpool.fit_separately`, compiled once
        per worker instead of once per driver (see :data:`ENGINES`). Each driver still
        gets its own file, manifest record and resume check.
    drivers_per_task
        Units per task for ``engine="separate"`` (default: enough tasks for four per
        worker, at most :data:`MAX_DRIVERS_PER_TASK` units each). A worker lost mid-task
        costs the whole task's rerun.

    Returns
    -------
    BatchResult
        The manifest; a failed unit does not raise (see :attr:`BatchResult.failed`).
    """
    request = FitRequest(model, pooling, sampler, level, dict(model_options or {}),
                         dict(data_options or {}), engine)
    if drivers_per_task is not None and int(drivers_per_task) < 1:
        raise InputError(f"drivers_per_task must be at least 1, got {drivers_per_task}")
    if engine == "separate":
        _check_separate(request)
    if isinstance(units, pd.DataFrame):
        units = split_table(units, by)
    units = list(units)
    if not units:
        raise InputError("the batch has no units")
    if request.pooling.pooling == "hierarchical" and by == "driver" and all(
            u.table is not None for u in units):
        raise InputError("pooling 'hierarchical' needs several drivers per unit; split by "
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
    runner, owned = as_executor(executor)
    if engine == "separate":
        size = drivers_per_task or min(MAX_DRIVERS_PER_TASK,
                                       -(-len(todo) // (4 * max(1, runner.num_workers))))
        groups = {f"{chunk[0].name} (+{len(chunk) - 1})": chunk
                  for chunk in (todo[i:i + int(size)] for i in range(0, len(todo), int(size)))}
        tasks = [Task(key, fit_driver_group, (chunk, request,
                                              [str(out / paths[u.name]) for u in chunk]))
                 for key, chunk in groups.items()]
        log.info("%d tasks of up to %d drivers", len(tasks), int(size))
    else:
        groups = {u.name: [u] for u in todo}
        tasks = [Task(u.name, fit_unit, (u, request, str(out / paths[u.name]))) for u in todo]
    counter = _UnitProgress(len(todo), groups, progress_fn)
    last_write = time.monotonic()
    try:
        for outcome in runner.run(tasks, retries=retries, progress_fn=counter.tasks):
            values = (outcome.value if engine == "separate" else
                      {outcome.key: outcome.value}) if outcome.is_ok else {}
            for unit in groups[outcome.key]:
                record = manifest.units[unit.name]
                record.update(attempts=outcome.attempts, errors=list(outcome.errors))
                value = values.get(unit.name, {"error": outcome.error or "no result"})
                if "error" in value:
                    record.update(status="failed", error=value["error"], finished=utc_now())
                    counter.finished(failed=1)
                else:
                    record.update(status="done", error=None, **value)
                    counter.finished(done=1)
            if time.monotonic() - last_write >= manifest_interval_s:
                manifest.write(manifest_path)
                last_write = time.monotonic()
    finally:
        manifest.write(manifest_path)
        if owned:
            runner.close()
    return BatchResult(out, manifest)


def _check_separate(request: FitRequest) -> None:
    """Fail early (in the client) when the model cannot be fitted by engine 'separate'."""
    from carpool.inference.run import resolve_spec

    spec = resolve_spec(request.model, **dict(request.model_options))
    if spec.residual.is_dynamic:
        raise InputError(f"engine 'separate' fits i.i.d. residuals only (got "
                         f"{spec.residual.name!r}); use engine 'fit'")


class _UnitProgress:
    """Turns the executor's task counts into unit counts for ``progress_fn``: finished
    units are counted from the outcomes, running ones as the running tasks' units."""

    def __init__(self, total: int, groups: Mapping[str, Sequence[Unit]],
                 progress_fn: Callable[[Progress], Any] | None) -> None:
        self.total, self.fn = total, progress_fn
        self.size = max(len(g) for g in groups.values())
        self.done = self.failed = self.running_tasks = 0

    def tasks(self, p: Progress) -> None:
        self.running_tasks = p.running
        self._emit()

    def finished(self, *, done: int = 0, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        self._emit()

    def _emit(self) -> None:
        if self.fn is None:
            return
        left = self.total - self.done - self.failed
        self.fn(Progress(self.total, self.done, self.failed,
                         min(left, self.running_tasks * self.size)))


def _earlier_records(manifest_path: Path) -> dict[str, dict[str, Any]]:
    """An earlier run's records (timings, worker) to keep for reused units; ``{}`` if none."""
    if not manifest_path.is_file():
        return {}
    try:
        return Manifest.read(manifest_path).units
    except ValueError:
        log.warning("ignoring the unreadable earlier manifest %s", manifest_path)
        return {}
