"""Where independent tasks run: this process, local worker processes, or a Dask cluster.

One interface, :class:`AbstractExecutor`, with two final implementations:

- :class:`SerialExecutor`: one task after another in this process (no Dask needed);
- :class:`DaskExecutor`: tasks on a ``dask.distributed`` client, either a
  ``LocalCluster`` of worker processes it starts itself (:func:`make_executor` with
  ``local_workers=N``) or any running scheduler (``scheduler="tcp://host:8786"``, e.g. a
  SLURM cluster from dask-jobqueue).

Both run every task at most ``retries + 1`` times: a task that raises (or whose worker is
lost more often than Dask's ``distributed.scheduler.allowed-failures``) is submitted again,
then reported as failed with its error; the others go on. carpool resubmits the task itself
rather than passing ``retries=`` to Dask so that the attempts are counted and the same rule
holds for the serial executor.

JAX inside workers: each local worker is one process with one thread, and its environment
(:func:`worker_environment`) gives XLA one CPU device and no multi-threaded Eigen, so
chains run one after another inside a worker. XLA's compiler and runtime still use some
threads of their own (a worker averages ~1.3 cores); ``make_executor(..., pin_cores=True)``
holds each local worker to one core (:class:`carpool.parallel.pinning.PinWorkersToCores`),
measured slower on an otherwise idle machine, so it is off by default.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from carpool.errors import InputError

__all__ = ["AbstractExecutor", "DaskExecutor", "Outcome", "Progress", "SerialExecutor",
           "Task", "WORKER_XLA_FLAGS", "allowed_cores", "as_executor", "make_executor",
           "map_logged", "pin_process_to_core", "worker_environment"]

#: XLA flags for a worker process: one host device (chains run sequentially inside the
#: worker; parallelism comes from the workers) and single-threaded Eigen kernels.
WORKER_XLA_FLAGS = ("--xla_force_host_platform_device_count=1 "
                    "--xla_cpu_multi_thread_eigen=false")

#: Default number of re-runs of a failed task (so at most three attempts).
DEFAULT_RETRIES = 2


@dataclass(frozen=True)
class Task:
    """One independent piece of work: ``fn(*args)`` under a unique ``key``."""

    key: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What became of a task: its return value, or the error of its last attempt."""

    key: str
    value: Any = None
    error: str | None = None
    attempts: int = 1
    errors: tuple[str, ...] = ()
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def is_ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Progress:
    """Counts of a running batch (tasks, not attempts)."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0

    @property
    def pending(self) -> int:
        return self.total - self.done - self.failed - self.running


ProgressFn = Callable[[Progress], Any]


def _describe(exc: BaseException) -> str:
    """One line naming the error: ``Type: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class AbstractExecutor(abc.ABC):
    """Runs independent tasks and yields their outcomes as they finish (any order)."""

    #: How many tasks may run at the same time.
    num_workers: int

    @abc.abstractmethod
    def run(self, tasks: Sequence[Task], *, retries: int = DEFAULT_RETRIES,
            progress_fn: ProgressFn | None = None) -> Iterator[Outcome]:
        """Run ``tasks``; yield one :class:`Outcome` per task as each one finishes.

        Parameters
        ----------
        tasks
            Tasks with distinct keys.
        retries
            Re-runs of a failed task before it is reported failed (``>= 0``).
        progress_fn
            Called with a :class:`Progress` whenever the counts change (and about once a
            second while tasks run on a cluster).
        """

    def map(self, fn: Callable[..., Any], argument_tuples: Sequence[tuple[Any, ...]], *,
            retries: int = DEFAULT_RETRIES, progress_fn: ProgressFn | None = None
            ) -> list[Any]:
        """``[fn(*args) for args in argument_tuples]`` in order; raises on the first failure.

        The form the sweep, the cross-validation refits and SBC use: every task is needed,
        so a task that still fails after its retries raises its last error (or
        :class:`RuntimeError` when there is none to raise, e.g. a lost worker).
        """
        tasks = [Task(str(k), fn, tuple(a)) for k, a in enumerate(argument_tuples)]
        values: dict[str, Any] = {}
        for outcome in self.run(tasks, retries=retries, progress_fn=progress_fn):
            if not outcome.is_ok:
                if outcome.exception is not None:  # the task's own error, as raised
                    raise outcome.exception
                raise RuntimeError(f"task {outcome.key} failed after {outcome.attempts} "
                                   f"attempt(s): {outcome.error}")
            values[outcome.key] = outcome.value
        return [values[t.key] for t in tasks]

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the executor started (its local cluster); idempotent."""

    def __enter__(self) -> AbstractExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check(tasks: Sequence[Task], retries: int) -> None:
    if retries < 0:
        raise InputError(f"retries must be >= 0, got {retries}")
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be distinct")


class SerialExecutor(AbstractExecutor):
    """Every task in this process, one after another (JAX as this process set it up)."""

    num_workers = 1

    def close(self) -> None:
        return None

    def run(self, tasks: Sequence[Task], *, retries: int = DEFAULT_RETRIES,
            progress_fn: ProgressFn | None = None) -> Iterator[Outcome]:
        _check(tasks, retries)
        report = progress_fn or (lambda _: None)
        done = failed = 0
        for task in tasks:
            report(Progress(len(tasks), done, failed, 1))
            errors: list[str] = []
            while True:
                try:
                    value = task.fn(*task.args)
                except Exception as exc:  # noqa: BLE001 - recorded, the batch goes on
                    errors.append(_describe(exc))
                    if len(errors) <= retries:
                        continue
                    failed += 1
                    outcome = Outcome(task.key, error=errors[-1], attempts=len(errors),
                                      errors=tuple(errors), exception=exc)
                else:
                    done += 1
                    outcome = Outcome(task.key, value=value, attempts=len(errors) + 1,
                                      errors=tuple(errors))
                break
            report(Progress(len(tasks), done, failed, 0))
            yield outcome


def worker_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables for a worker process that runs JAX on one core.

    ``XLA_FLAGS`` is :data:`WORKER_XLA_FLAGS` unless ``CARPOOL_WORKER_XLA_FLAGS`` is set
    (then that); OpenMP / MKL / OpenBLAS get one thread. ``extra`` is merged last.
    """
    env = {"XLA_FLAGS": os.environ.get("CARPOOL_WORKER_XLA_FLAGS", WORKER_XLA_FLAGS),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return {**env, **dict(extra or {})}


@dataclass
class DaskExecutor(AbstractExecutor):
    """Tasks on a ``dask.distributed`` client.

    Parameters
    ----------
    client
        A connected ``distributed.Client``.
    owns_client
        Close the client (and its cluster) in :meth:`close`; true for those
        :func:`make_executor` starts.
    poll_s
        Seconds between progress refreshes while nothing finishes.
    """

    client: Any
    owns_client: bool = False
    poll_s: float = 1.0
    _closed: bool = field(default=False, init=False, repr=False)

    @property
    def num_workers(self) -> int:  # type: ignore[override]
        threads = self.client.nthreads()
        return max(1, sum(threads.values()))

    def _running(self, in_flight: int) -> int:
        try:
            processing = self.client.processing()
        except Exception:  # noqa: BLE001 - progress only; the scheduler may be busy
            return in_flight
        # a worker may hold queued tasks besides the ones its threads run
        return min(in_flight, self.num_workers, sum(len(keys) for keys in processing.values()))

    def run(self, tasks: Sequence[Task], *, retries: int = DEFAULT_RETRIES,
            progress_fn: ProgressFn | None = None) -> Iterator[Outcome]:
        from distributed import wait

        _check(tasks, retries)
        report = progress_fn or (lambda _: None)
        by_future: dict[Any, Task] = {}
        errors: dict[str, list[str]] = {t.key: [] for t in tasks}

        def submit(task: Task) -> None:
            attempt = len(errors[task.key]) + 1
            future = self.client.submit(task.fn, *task.args, key=f"{task.key}-a{attempt}",
                                        pure=False)
            by_future[future] = task

        for task in tasks:
            submit(task)
        done = failed = 0
        last = None
        try:
            while by_future:
                try:
                    finished, _ = wait(list(by_future), timeout=self.poll_s,
                                       return_when="FIRST_COMPLETED")
                except TimeoutError:  # nothing finished yet: refresh the progress
                    finished = set()
                for future in finished:
                    task = by_future.pop(future)
                    outcome = self._settle(future, task, errors[task.key], retries)
                    if outcome is None:
                        submit(task)
                        continue
                    done += outcome.is_ok
                    failed += not outcome.is_ok
                    yield outcome
                progress = Progress(len(tasks), done, failed, self._running(len(by_future)))
                if progress != last:
                    report(progress)
                    last = progress
        finally:
            if by_future:  # interrupted: nothing should keep running for nobody
                self.client.cancel(list(by_future))

    @staticmethod
    def _settle(future: Any, task: Task, errors: list[str], retries: int) -> Outcome | None:
        """The outcome of a finished future, or ``None`` to run the task again."""
        exception = None
        if future.status == "finished":
            try:
                value = future.result()
            except Exception as exc:  # noqa: BLE001 - the result was lost with its worker
                errors.append(_describe(exc))
                exception = exc
            else:
                return Outcome(task.key, value=value, attempts=len(errors) + 1,
                               errors=tuple(errors))
        elif future.status == "cancelled":
            errors.append("CancelledError: the task was cancelled on the cluster")
        else:
            exception = future.exception()
            errors.append(_describe(exception))
        if len(errors) <= retries:
            return None
        return Outcome(task.key, error=errors[-1], attempts=len(errors), errors=tuple(errors),
                       exception=exception)

    def close(self) -> None:
        if self.owns_client and not self._closed:
            cluster = getattr(self.client, "cluster", None)
            self.client.close()
            if cluster is not None:
                cluster.close()
        self._closed = True


def pin_process_to_core(core: int) -> None:
    """Restrict every thread of this process (and threads it starts later) to CPU ``core``.

    XLA's CPU runtime runs some work on its own thread pool whatever ``XLA_FLAGS`` say:
    ``benchmarks/worker_threads.py`` measured 1.33 cores busy for one single-chain fit
    with the worker environment, against 1.00 (and 5% more wall time) under a one-core
    affinity. Linux only (``os.sched_setaffinity``); elsewhere nothing happens.
    """
    if not hasattr(os, "sched_setaffinity"):
        return
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {core})
        except OSError:  # a thread that has just ended
            continue


def allowed_cores() -> list[int]:
    """The CPU cores this process may run on (all of them where that cannot be asked)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def make_executor(scheduler: str | None = None, local_workers: int | None = None, *,
                  worker_env: Mapping[str, str] | None = None,
                  pin_cores: bool = False) -> AbstractExecutor:
    """An executor from the two user-facing choices.

    Parameters
    ----------
    scheduler
        Address of a running Dask scheduler (``"tcp://10.0.0.1:8786"``), or a scheduler
        file (``*.json``, as written by ``dask scheduler --scheduler-file``). Its workers
        should be started with one thread each and :func:`worker_environment`'s settings.
    local_workers
        Without ``scheduler``: ``0`` runs every task in this process
        (:class:`SerialExecutor`); ``N >= 1`` starts a ``LocalCluster`` of ``N`` worker
        processes with one thread each; ``None`` one worker per CPU core.
    worker_env
        Extra environment variables for local workers (see :func:`worker_environment`).
    pin_cores
        Give each local worker one core of its own (:mod:`carpool.parallel.pinning`) when there
        are at most as many workers as cores (Linux). Off by default: XLA's compiler and
        runtime threads put idle cycles to use, and pinning made the batches of
        ``benchmarks/batch_unpooled.py`` 4-56% slower; use it where a worker must not
        exceed its core (a machine shared with other jobs).
    """
    if scheduler is not None and local_workers is not None:
        raise InputError("give either a scheduler address or a number of local workers, "
                         "not both")
    if scheduler is not None:
        from distributed import Client

        try:  # the user's address or scheduler file: a bad one is an input error
            client = (Client(scheduler_file=scheduler) if scheduler.endswith(".json")
                      else Client(scheduler, timeout="30s"))
        except (OSError, ValueError) as exc:  # unreachable (timed out), malformed address
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise InputError(f"cannot connect to the Dask scheduler {scheduler!r}: "
                             f"{first}") from exc
        return DaskExecutor(client, owns_client=True)
    cores = allowed_cores()
    n = len(cores) if local_workers is None else int(local_workers)
    if n < 0:
        raise InputError(f"local_workers must be >= 0, got {n}")
    if n == 0:
        return SerialExecutor()
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=None, env=worker_environment(worker_env))
    client = Client(cluster)
    if pin_cores and n <= len(cores) and hasattr(os, "sched_setaffinity"):
        from carpool.parallel.pinning import PinWorkersToCores

        client.register_plugin(PinWorkersToCores(cores))
    return DaskExecutor(client, owns_client=True)


def as_executor(executor: Any) -> tuple[AbstractExecutor, bool]:
    """``(executor, owned)`` from the ``executor=`` option the batch functions take.

    ``None`` or ``"serial"``: this process; an :class:`AbstractExecutor`: itself; a
    ``distributed.Client``: tasks on it; an ``int``: that many local worker processes; a
    ``str``: a scheduler address. ``owned`` tells whether the caller must close it.
    """
    if executor is None or executor == "serial":
        return SerialExecutor(), True
    if isinstance(executor, AbstractExecutor):
        return executor, False
    if isinstance(executor, bool):
        raise TypeError(f"executor must be an executor, a Client, an int or an address, "
                        f"got {executor!r}")
    if isinstance(executor, int):
        return make_executor(local_workers=executor), True
    if isinstance(executor, str):
        return make_executor(scheduler=executor), True
    if type(executor).__name__ == "Client" and hasattr(executor, "submit"):
        return DaskExecutor(executor), False
    raise TypeError(f"executor must be an executor, a Client, an int or an address, got "
                    f"{type(executor).__name__}")


def map_logged(executor: Any, fn: Callable[..., Any],
               argument_tuples: Sequence[tuple[Any, ...]], labels: Sequence[str],
               log_fn: Callable[[str], Any], *, what: str = "fits") -> list[Any]:
    """``[fn(*args) ...]`` on the ``executor=`` option, in order, with progress lines.

    In this process (``executor=None``) ``labels[i]`` is logged as task ``i`` starts and a
    failing task raises its own error at once; elsewhere a line is logged as tasks finish
    and a failing task is retried (:data:`DEFAULT_RETRIES`) before its error is raised.
    """
    runner, owned = as_executor(executor)
    serial = isinstance(runner, SerialExecutor)
    last = [-1]

    def progress(p: Progress) -> None:
        finished = p.done + p.failed
        if serial:
            if p.running and finished != last[0] and finished < len(labels):
                last[0] = finished
                log_fn(labels[finished])
        elif finished != last[0]:
            last[0] = finished
            log_fn(f"{what}: {finished} of {p.total} done, {p.running} running")

    try:
        return runner.map(fn, argument_tuples, retries=0 if serial else DEFAULT_RETRIES,
                          progress_fn=progress)
    finally:
        if owned:
            runner.close()
