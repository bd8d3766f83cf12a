"""carpool.batch: executors, a batch of real fits on a 2-process LocalCluster with a worker
killed mid-batch, resume, and failing units recorded (API and CLI)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from carpool.batch import (
    AbstractExecutor,
    FitRequest,
    Manifest,
    Outcome,
    SerialExecutor,
    Task,
    Unit,
    as_executor,
    check_result,
    fit_batch,
    make_executor,
    read_units,
    split_table,
)
from carpool.cli import app
from carpool.inference.nuts import NutsSettings
from carpool.testing import simulate_drivers

# what the CLI passes for `--chains 1 --warmup 30 --draws 30` (the defaults of the rest), so
# the CLI test can reuse the fits of the cluster test
REQUEST = {"sampler": NutsSettings(chains=1, warmup=30, draws=30),
           "model_options": {"priors": "default", "residual": "iid", "ar_pooling": "shared",
                             "gp_window_s": 10.0, "gp_method": "sliding"}}
CLI_FIT = ["--pooling", "unpooled", "--chains", "1", "--warmup", "30", "--draws", "30",
           "--no-progress"]


# ------------------------------------------------------------------ tasks (module level:
# Dask workers import them by name)
def _fail_first(counter: str, failures: int, value: int) -> int:
    """Raise on the first ``failures`` calls (counted in a file), then return ``value``."""
    path = Path(counter)
    calls = int(path.read_text()) if path.exists() else 0
    path.write_text(str(calls + 1))
    if calls < failures:
        raise RuntimeError(f"planned failure {calls + 1}\nsecond line")
    return value


def _slow_square(x: int, folder: str) -> int:
    time.sleep(0.3)
    Path(folder, f"{x}.txt").write_text(str(x * x))
    return x * x


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cluster():
    """Two worker processes with one thread each, shared by the tests of this module."""
    with make_executor(local_workers=2) as executor:
        yield executor


@pytest.fixture(scope="module")
def drivers_csv(tmp_path_factory) -> Path:
    df, _ = simulate_drivers(3, duration_s=8.0, rng_seed=5)
    path = tmp_path_factory.mktemp("data") / "drivers.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def killed_batch(cluster, drivers_csv, tmp_path_factory):
    """Three one-driver unpooled IDM fits on the cluster; once the first finishes, the
    worker process running another fit is killed (SIGKILL)."""
    out = tmp_path_factory.mktemp("batch")
    client = cluster.client
    killed: dict[str, object] = {}

    def kill_once(progress):
        if killed or progress.done < 1:
            return
        busy = [w for w, keys in client.processing().items() if keys]
        if not busy:
            return
        pids = client.run(os.getpid, workers=[busy[0]])
        os.kill(pids[busy[0]], signal.SIGKILL)
        killed.update(worker=busy[0], progress=progress)

    units = read_units([drivers_csv])
    result = fit_batch(units, "idm", out, pooling="unpooled", executor=cluster,
                       progress_fn=kill_once, **REQUEST)
    return result, killed, units


# ------------------------------------------------------------------ executors
def test_serial_executor_retries_then_records_the_failure(tmp_path):
    tasks = [Task("flaky", _fail_first, (str(tmp_path / "a"), 2, 7)),
             Task("broken", _fail_first, (str(tmp_path / "b"), 99, 0)),
             Task("fine", _fail_first, (str(tmp_path / "c"), 0, 3))]
    seen = []
    outcomes = {o.key: o for o in SerialExecutor().run(tasks, retries=2, progress_fn=seen.append)}
    assert outcomes["flaky"].is_ok and outcomes["flaky"].value == 7
    assert outcomes["flaky"].attempts == 3 and len(outcomes["flaky"].errors) == 2
    assert not outcomes["broken"].is_ok and outcomes["broken"].attempts == 3
    assert outcomes["broken"].error == "RuntimeError: planned failure 3"  # one line
    assert outcomes["fine"].value == 3 and outcomes["fine"].attempts == 1
    assert (seen[-1].done, seen[-1].failed, seen[-1].running) == (2, 1, 0)


def test_executor_map_keeps_order_and_raises_on_failure(tmp_path):
    assert SerialExecutor().map(pow, [(2, 3), (3, 2)]) == [8, 9]
    # a failing task raises its own error (here the planned one), not a wrapper
    with pytest.raises(RuntimeError, match="planned failure 1"):
        SerialExecutor().map(_fail_first, [(str(tmp_path / "x"), 5, 1)], retries=0)


def test_as_executor_accepts_the_documented_forms(cluster):
    assert isinstance(as_executor(None)[0], SerialExecutor)
    assert as_executor(cluster) == (cluster, False)
    wrapped, owned = as_executor(cluster.client)
    assert wrapped.client is cluster.client and not owned
    with pytest.raises(TypeError, match="executor must be"):
        as_executor(2.5)
    with pytest.raises(ValueError, match="either a scheduler"):
        make_executor("tcp://127.0.0.1:1", 2)


def test_dask_executor_retries_and_isolates_a_failure(cluster, tmp_path):
    assert cluster.num_workers == 2
    tasks = [Task("flaky", _fail_first, (str(tmp_path / "a"), 1, 5)),
             Task("broken", _fail_first, (str(tmp_path / "b"), 99, 0)),
             *(Task(f"sq{i}", _slow_square, (i, str(tmp_path))) for i in range(4))]
    outcomes = {o.key: o for o in cluster.run(tasks, retries=1)}
    assert outcomes["flaky"].value == 5 and outcomes["flaky"].attempts == 2
    assert outcomes["broken"].attempts == 2
    assert outcomes["broken"].error.startswith("RuntimeError: planned failure 2")
    assert [outcomes[f"sq{i}"].value for i in range(4)] == [0, 1, 4, 9]


def test_dask_worker_environment_pins_jax_to_one_device(cluster):
    env = cluster.client.run(lambda: os.environ["XLA_FLAGS"])
    assert all("device_count=1" in flags and "multi_thread_eigen=false" in flags
               for flags in env.values())


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning needs Linux and at least as many cores as workers")
def test_pinned_local_workers_get_one_core_each():
    with make_executor(local_workers=2, pin_cores=True) as pinned:
        cores = pinned.client.run(lambda: sorted(os.sched_getaffinity(0)))
    assert all(len(c) == 1 for c in cores.values()), cores
    assert len({c[0] for c in cores.values()}) == len(cores)  # a core of its own each


# ------------------------------------------------------------------ units
def test_split_table_and_safe_file_names():
    table = pd.DataFrame({"site": ["a b", "a b", "c"], "x": [1.0, 2.0, 3.0]})
    units = split_table(table, "site")
    assert [u.name for u in units] == ["a b", "c"]
    assert units[0].file_stem.startswith("a_b-") and units[1].file_stem == "c"
    assert len(units[0].table) == 2
    with pytest.raises(KeyError, match="no column 'driver'"):
        split_table(table, "driver")
    with pytest.raises(ValueError, match="exactly one"):
        Unit("u")


def test_recording_means_one_unit_per_file(drivers_csv, tmp_path):
    other = tmp_path / "second.csv"
    other.write_text(drivers_csv.read_text())
    units = read_units([drivers_csv, other], by="recording")
    assert [u.name for u in units] == ["drivers", "second"]
    assert units[0].path == str(drivers_csv) and units[0].table is None


# ------------------------------------------------------------------ a batch of real fits
class _Refuse(AbstractExecutor):
    """Runs nothing: records which units a batch submits and fails them at once."""

    num_workers = 1

    def __init__(self) -> None:
        self.keys: list[str] = []

    def run(self, tasks, *, retries=2, progress_fn=None):
        for t in tasks:
            self.keys.append(t.key)
            yield Outcome(t.key, error="RuntimeError: not run in this test")

    def close(self) -> None:
        return None


def test_batch_completes_with_every_result_after_a_worker_is_killed(killed_batch):
    result, killed, units = killed_batch
    assert killed, "a worker was killed while it ran a fit"
    assert killed["progress"].done + killed["progress"].failed < 3  # mid-batch
    assert result.summary == {"total": 3, "done": 3, "failed": 0, "pending": 0, "reused": 0}
    request = FitRequest("idm", "unpooled", **REQUEST)
    for unit in units:
        assert check_result(result.path(unit.name), unit, request) is None
        fit = result.load(unit.name)
        assert fit.group_ids == (unit.name,) and fit.pooling == "unpooled"
    on_disk = Manifest.read(result.manifest_path)
    assert on_disk.summary()["done"] == 3
    record = on_disk.units["d00"]
    assert record["status"] == "done" and record["observations"] == 40
    assert record["wall_s"] > 0 and record["worker"].startswith("tcp://")
    assert record["path"] == "fits/d00.nc"


def test_resume_skips_valid_results_and_refits_damaged_ones(killed_batch):
    result, _, units = killed_batch
    spy = _Refuse()
    again = fit_batch(units, "idm", result.out_dir, pooling="unpooled", executor=spy,
                      **REQUEST)
    assert spy.keys == [] and again.summary["reused"] == 3 and again.is_ok
    assert again.manifest.units["d01"]["wall_s"] == result.manifest.units["d01"]["wall_s"]

    damaged = result.path("d02")
    keep = damaged.read_bytes()
    try:
        damaged.write_bytes(keep[: len(keep) // 2])  # a truncated file is not a result
        spy = _Refuse()
        again = fit_batch(units, "idm", result.out_dir, pooling="unpooled", executor=spy,
                          **REQUEST)
        assert spy.keys == ["d02"]
        assert again.summary == {"total": 3, "done": 2, "failed": 1, "pending": 0,
                                 "reused": 2}
        assert again.failed == {"d02": "RuntimeError: not run in this test"}
    finally:
        damaged.write_bytes(keep)

    spy = _Refuse()  # another request (more draws): nothing may be reused
    fit_batch(units, "idm", result.out_dir, pooling="unpooled", executor=spy,
              **{**REQUEST, "sampler": replace(REQUEST["sampler"], draws=31)})
    assert sorted(spy.keys) == ["d00", "d01", "d02"]


def test_cli_batch_records_a_failing_unit_and_exits_non_zero(killed_batch, drivers_csv,
                                                             tmp_path):
    result, _, _ = killed_batch
    bad = pd.read_csv(drivers_csv, dtype={"driver": str}).query("driver == 'd00'").copy()
    bad["driver"] = "zz-bad"
    bad.loc[bad.index[3], "gap"] = -1.0
    data = tmp_path / "with_bad.csv"
    data.write_text(drivers_csv.read_text() + bad.to_csv(index=False, header=False))
    r = CliRunner().invoke(app, ["batch", "fit", str(data), "--out", str(result.out_dir),
                                 "--local-workers", "0", "--retries", "1", *CLI_FIT])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert "1 of 4 units failed" in r.output and "zz-bad" in r.output
    manifest = Manifest.read(result.manifest_path)
    record = manifest.units["zz-bad"]
    assert record["status"] == "failed" and record["attempts"] == 2
    assert "DataError" in record["error"] and "gap" in record["error"]
    assert "\n" not in record["error"]
    assert manifest.summary()["reused"] == 3  # the good drivers were not refitted


def test_cli_batch_input_errors_are_one_line(drivers_csv, tmp_path):
    runner = CliRunner()
    cases = [(["--by", "site"], "no column 'site'"),
             (["--scheduler", "tcp://127.0.0.1:1", "--local-workers", "2"], "either"),
             (["--pooling", "hierarchical", "--local-workers", "0"], "several drivers")]
    for extra, message in cases:
        args = ["batch", "fit", str(drivers_csv), "--out", str(tmp_path / "o"), *CLI_FIT,
                *extra]
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (extra, r.output)
        assert message in r.output and "Traceback" not in r.output
