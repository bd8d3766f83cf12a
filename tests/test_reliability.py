"""Safe files and repeatable fits: reproducibility, checksums and versions of saved fits, no
pickle, atomic writers, interrupted ``carpool fit`` runs, and the advice in diagnostics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import carpool
from carpool.cli import app
from carpool.inference.diagnostics import convergence_problems
from carpool.inference.integrity import FitFileError, VersionWarning
from carpool.testing import simulate_drivers

SRC = Path(carpool.__file__).resolve().parent
SAMPLER = carpool.NutsSettings(chains=2, warmup=150, draws=150, seed=11)


@pytest.fixture(scope="module")
def drivers():
    df, _ = simulate_drivers(2, duration_s=8.0, rng_seed=4)
    return df


@pytest.fixture(scope="module")
def groups():
    from carpool.testing import simulate_linear_groups

    return simulate_linear_groups(4, 10, rng_seed=3)[0]


@pytest.fixture(scope="module")
def pooled(groups):
    """A small pooled fit (the linear model: the cheapest to compile)."""
    return carpool.fit(groups, "linear", pooling="pooled", sampler=SAMPLER, warn=False)


# ----------------------------------------------------------------------------- reproducibility
def test_same_data_spec_and_seed_give_identical_draws(groups, pooled):
    again = carpool.fit(groups, "linear", pooling="pooled", sampler=SAMPLER, warn=False)
    for name in pooled.idata.posterior.data_vars:
        np.testing.assert_array_equal(again.idata.posterior[name].values,
                                      pooled.idata.posterior[name].values, err_msg=name)
    np.testing.assert_array_equal(again.idata.sample_stats["n_steps"].values,
                                  pooled.idata.sample_stats["n_steps"].values)
    theta = pooled.idata.posterior["theta"].values  # (chain, draw, parameter)
    assert not np.array_equal(theta[0], theta[1])  # draws are random: each chain its own key


# ----------------------------------------------------------------------------- saved files
def test_save_load_round_trip_is_checked_and_silent(pooled, tmp_path):
    path = pooled.save(tmp_path / "fit.nc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no version or checksum warning
        loaded = carpool.load(path)
    attrs = loaded.idata.posterior.attrs
    assert attrs["carpool_version"] == carpool.__version__
    assert set(__import__("json").loads(attrs["carpool_checksums"])) == {"data", "posterior",
                                                                         "spec"}
    np.testing.assert_array_equal(loaded.idata.posterior["theta"].values,
                                  pooled.idata.posterior["theta"].values)


def _rewrite(path: Path, out: Path, edit) -> Path:
    """Load ``path`` as plain ArviZ data, apply ``edit(idata)``, write ``out``."""
    import arviz as az

    idata = az.from_netcdf(str(path))
    idata.load()
    edit(idata)
    idata.to_netcdf(str(out))
    return out


@pytest.mark.parametrize("what", ["posterior", "data", "spec"])
def test_tampered_file_is_refused(pooled, tmp_path, what):
    path = pooled.save(tmp_path / "fit.nc")

    def edit(idata):
        if what == "posterior":
            idata.posterior["theta"].values[0, 0, 0] += 1e-3
        elif what == "data":
            idata.observed_data["y"].values[3] += 0.5
        else:
            attrs = idata.posterior.attrs
            attrs["carpool_config"] = attrs["carpool_config"].replace('"pooled"', '"pooled" ')
    bad = _rewrite(path, tmp_path / "bad.nc", edit)
    words = {"posterior": "posterior draws", "data": "input data", "spec": "specification"}
    with pytest.raises(FitFileError, match=words[what]) as info:
        carpool.load(bad)
    assert "\n" not in str(info.value) and "bad.nc" in str(info.value)
    result = CliRunner().invoke(app, ["summary", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines() == [f"error: {info.value}"]


def test_corrupted_bytes_give_one_line(pooled, tmp_path):
    path = pooled.save(tmp_path / "fit.nc")
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for _ in range(5):  # five corrupted copies at random places past the HDF5 superblock
        copy = bytearray(raw)
        start = int(rng.integers(512, len(copy) - 64))
        copy[start:start + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        bad = tmp_path / "corrupt.nc"
        bad.write_bytes(bytes(copy))
        result = CliRunner().invoke(app, ["summary", str(bad)])
        if result.exit_code == 0:
            # the bytes hit unused space or metadata nobody reads: the content still matches
            # its checksums, so this is the same fit
            continue
        assert result.exit_code == 2, (start, result.output, repr(result.exception))
        assert "Traceback" not in result.output
        assert len(result.stderr.splitlines()) == 1, result.stderr


def test_other_version_warns(pooled, tmp_path):
    path = pooled.save(tmp_path / "fit.nc")

    def edit(idata):
        idata.posterior.attrs["carpool_version"] = "0.0.1"
    old = _rewrite(path, tmp_path / "old.nc", edit)
    with pytest.warns(VersionWarning, match="0.0.1"):
        carpool.load(old)


def test_loading_never_unpickles(pooled, tmp_path, monkeypatch):
    import pickle

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    path = pooled.save(tmp_path / "fit.nc")
    assert carpool.load(path).pooling == "pooled"
    assert path.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # netCDF-4 (HDF5), not a pickle


#: Imports or calls of the modules that (un)pickle, and NumPy's opt-in to pickled arrays.
PICKLE = re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b"
                    r"|\b(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\.\w+\("
                    r"|allow_pickle\s*=\s*True")


def test_no_pickle_in_the_source():
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if PICKLE.search(line)]
    assert hits == [], hits


#: Calls that write a file. Each must go through carpool.io's atomic writers (the helper
#: functions there are the only raw writers); savefig into an in-memory buffer is fine.
WRITERS = re.compile(r"\.(savefig|to_netcdf|to_csv|to_parquet|to_json|write_text|write_bytes)"
                     r"\(|open\([^)]*['\"][wax]b?['\"]")


#: pandas writers called without a path (first argument a keyword, or none): a string back
TO_STRING = re.compile(r"\.(to_json|to_csv)\((\)|[a-z_]+=)")


def test_every_writer_is_atomic():
    offenders = []
    for p in SRC.rglob("*.py"):
        # data/bundled holds the scripts that rebuilt the bundled files, run by hand (one a
        # verbatim copy of the third-party script that made the NGSIM extract)
        if p.name == "io.py" or p.parent.name == "bundled":
            continue
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not WRITERS.search(line) or line.lstrip().startswith(("#", ">>>")):
                continue
            if "atomic_write" in line or "savefig(buf" in line or "``" in line:
                continue
            if ".to_netcdf" in line and "atomic_write(" in line:
                continue
            if not WRITERS.search(TO_STRING.sub("", line)):
                continue  # to_json / to_csv without a path return a string
            offenders.append(f"{p.relative_to(SRC)}:{i}: {line.strip()}")
    assert offenders == [], offenders


# ----------------------------------------------------------------------------- interrupts
def test_interrupt_while_saving_leaves_the_old_file(pooled, tmp_path, monkeypatch):
    """Ctrl-C in the middle of writing: the temporary file goes, the old output stays."""
    monkeypatch.setattr(carpool, "fit", lambda *a, **k: pooled)

    def half_write(path, *args, **kwargs):
        Path(path).write_bytes(b"half a netCDF")
        raise KeyboardInterrupt

    monkeypatch.setattr(pooled.idata, "to_netcdf", half_write)
    data, out = tmp_path / "data.csv", tmp_path / "fit.nc"
    pd_table = simulate_drivers(2, duration_s=4.0, rng_seed=1)[0]
    pd_table.to_csv(data, index=False)
    out.write_bytes(b"the previous fit")
    result = CliRunner().invoke(app, ["fit", str(data), "--out", str(out), "--no-progress"])
    assert result.exit_code == 128 + signal.SIGINT, (result.output, repr(result.exception))
    assert result.stderr.splitlines() == [
        f"error: interrupted by SIGINT before the fit was saved; {out} kept as it was"]
    assert out.read_bytes() == b"the previous fit"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_fit_exits_cleanly(drivers, tmp_path, sig):
    """A real ``carpool fit`` process signalled while it fits: one line, exit 128 + signal,
    no fit file and no temporary file."""
    data, out = tmp_path / "data.csv", tmp_path / "fit.nc"
    drivers.to_csv(data, index=False)
    if sig == signal.SIGTERM:
        out.write_bytes(b"the previous fit")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "carpool.cli", "fit", str(data), "--out", str(out),
         "--pooling", "pooled", "--chains", "2", "--warmup", "300", "--draws", "300",
         "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # "2 drivers, 82 rows from ...": reading is done
    assert "drivers" in line, line
    time.sleep(1.0)  # now in the centring / compilation / sampling
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 128 + sig, (proc.returncode, stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    state = "kept as it was" if sig == signal.SIGTERM else "not written"
    assert lines[0] == (f"error: interrupted by {sig.name} before the fit was saved; "
                        f"{out} {state}")
    assert [p.name for p in tmp_path.iterdir()] == sorted(
        ["data.csv"] + (["fit.nc"] if sig == signal.SIGTERM else []))
    if sig == signal.SIGTERM:
        assert out.read_bytes() == b"the previous fit"


_SIGNAL_IN_A_FINALISER = """
import gc, os, signal, sys, time, weakref
from carpool import cli

signal.signal(signal.SIGTERM, cli._signal_as_interrupt)


def signal_here():
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100_000):  # the handler runs between these bytecodes, in the finaliser
        pass


class Thing:
    pass


with cli._resend_dropped_interrupts():
    try:
        if sys.argv[1] == "finalize":
            weakref.finalize(Thing(), signal_here)  # the object dies at once
        else:
            gc.callbacks.append(lambda phase, info: phase == "start" and signal_here())
            gc.collect()
        time.sleep(20)
        print("ran on")
    except KeyboardInterrupt:
        print("interrupted")
"""


@pytest.mark.parametrize("where", ["finalize", "gc-callback"])
def test_signal_inside_a_finaliser_is_sent_again(where):
    """A signal whose KeyboardInterrupt lands in a finaliser or a garbage-collector callback
    (where Python drops it with an "Exception ignored" traceback) interrupts the code that
    runs next instead, with nothing printed."""
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_IN_A_FINALISER, where],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "interrupted", (proc.stdout, proc.stderr[-2000:])
    assert proc.stderr == "", proc.stderr[-2000:]


# ----------------------------------------------------------------------------- diagnostics
def test_convergence_problems_carry_advice():
    diag = {"divergences": 7, "max_rhat": 1.08, "max_rhat_var": "tau[v0]",
            "min_ess_bulk": 55.0, "min_ess_bulk_var": "theta[d01, v0]", "min_ess_tail": 40.0,
            "chains": 4, "draws": 1000, "max_tree_depth_hits": 12}
    problems = convergence_problems(diag)
    text = " ".join(problems)
    assert len(problems) == 5, problems
    assert "7 divergent" in text and "target_accept" in text and "noncentred" in text
    assert "R-hat 1.080 at tau[v0]" in text and "warm-up" in text
    assert "ESS 55 at theta[d01, v0]" in text and "reparameteris" in text
    assert "12 transitions hit the maximum tree depth" in text
    assert all("\n" not in p for p in problems)
    fine = {**diag, "divergences": 0, "max_rhat": 1.001, "min_ess_bulk": 900.0,
            "min_ess_tail": 800.0, "max_tree_depth_hits": 0}
    assert convergence_problems(fine) == []


def test_sigterm_aborts_other_commands_cleanly(drivers, tmp_path):
    """Every command: SIGTERM unwinds like Ctrl-C (typer then exits 130, no traceback)."""
    data = tmp_path / "data.csv"
    drivers.to_csv(data, index=False)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "carpool.cli", "compare", str(data), "--no-lfo", "--no-ldo",
         "--chains", "2", "--warmup", "300", "--draws", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stderr.readline()  # "2 drivers, 82 rows from ...": reading is done
    assert "drivers" in line, line
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGINT, (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr and "Error" not in stderr, stderr[-2000:]


# ----------------------------------------------------------------------------- finished chains
@pytest.fixture
def linear_table():
    from carpool.testing import simulate_linear_groups

    return simulate_linear_groups(3, 8, rng_seed=0)[0]


def _interrupt_on_call(monkeypatch, number: int) -> list[int]:
    """Make the ``number``-th chain of a chain-by-chain run raise KeyboardInterrupt, as
    Ctrl-C during that chain does when the chain's compiled call returns."""
    from carpool.inference import nuts

    calls: list[int] = []
    real = nuts._run_chain

    def run_chain(run_one, key, arrays):
        calls.append(len(calls) + 1)
        if len(calls) == number:
            raise KeyboardInterrupt
        return real(run_one, key, arrays)

    monkeypatch.setattr(nuts, "_run_chain", run_chain)
    return calls


def test_interrupt_keeps_the_finished_chains(linear_table, tmp_path, monkeypatch):
    """Five chains on four CPU devices run one after another; Ctrl-C in the third keeps
    the first two, with a warning, and they save and load like any fit."""
    from carpool.inference.nuts import InterruptedWarning

    calls = _interrupt_on_call(monkeypatch, 3)
    with pytest.warns(InterruptedWarning, match="2 of 5 chains"):
        f = carpool.fit(linear_table, "linear", pooling="pooled", warn=False,
                        sampler=carpool.NutsSettings(chains=5, warmup=100, draws=100))
    assert calls == [1, 2, 3]
    assert f.idata.posterior.sizes["chain"] == 2 and f.settings["chain_method"] == "sequential"
    theta = f.idata.posterior["theta"].values
    assert np.isfinite(theta).all() and not np.array_equal(theta[0], theta[1])
    back = carpool.load(f.save(tmp_path / "partial.nc"))
    np.testing.assert_array_equal(back.idata.posterior["theta"].values, theta)


def test_interrupt_before_any_chain_finished_propagates(linear_table, monkeypatch):
    _interrupt_on_call(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        carpool.fit(linear_table, "linear", pooling="pooled", warn=False,
                    sampler=carpool.NutsSettings(chains=5, warmup=100, draws=100))


def test_one_verdict_for_the_warning_the_report_and_compare():
    """A 2-chain fit with bulk ESS 300: the warning, the report and ``converged`` agree (all
    from carpool.verdicts), and R-hat exactly at the limit passes everywhere."""
    from types import SimpleNamespace

    from carpool import verdicts
    from carpool.report.html import _checks

    diag = {"divergences": 0, "max_rhat": verdicts.RHAT_MAX, "max_rhat_var": "mu[v0]",
            "min_ess_bulk": 300.0, "min_ess_bulk_var": "tau[b]", "min_ess_tail": 500.0,
            "chains": 2, "draws": 1000, "max_tree_depth_hits": 0}
    problems = convergence_problems(diag)
    assert len(problems) == 1 and "ESS 300" in problems[0] and "< 400" in problems[0]
    checks = {name: ok for name, _, _, ok in _checks(SimpleNamespace(diagnostics=diag))}
    assert checks == {"max R-hat": True, "min bulk ESS": False, "divergences": True}
    assert not verdicts.converged(diag)
    assert verdicts.converged({**diag, "min_ess_bulk": 400.0})
    assert convergence_problems({**diag, "min_ess_bulk": 400.0}) == []
    # eight chains need 100 each
    assert verdicts.ess_required(8) == 800 and verdicts.ess_required(2) == 400
    assert verdicts.pareto_k_ok(verdicts.PARETO_K_MAX) and not verdicts.pareto_k_ok(0.71)
