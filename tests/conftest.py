"""Shared test set-up: parallel chains on CPU devices, strict JAX, seeded helpers."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

# must run before JAX initialises: four CPU devices so up to four chains run in parallel
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# a persistent compilation cache of this run's own, one per xdist worker, kept out of the
# user's: fits of one structure and shape compile once within a worker and the CLI
# subprocesses it starts. Workers do not share a directory, and no run reads another's
# entries: a worker once crashed inside JAX's cache read while another process was using
# the same directory.
# (xdist's workers inherit the controller's environment: the user's own setting, if any,
# is kept in CARPOOL_TESTS_USER_CACHE by the first process of the run)
os.environ.setdefault("CARPOOL_TESTS_USER_CACHE", os.environ.get("CARPOOL_COMPILATION_CACHE", ""))
_OWN_CACHE = not os.environ["CARPOOL_TESTS_USER_CACHE"]
if _OWN_CACHE:
    _run = os.environ.get("PYTEST_XDIST_TESTRUNUID", uuid.uuid4().hex)[:12]
    _worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    os.environ["CARPOOL_COMPILATION_CACHE"] = os.path.join(
        tempfile.gettempdir(), f"carpool-tests-xla-{os.getuid()}", f"{_run}-{_worker}")
# tests fit afresh (what they test is the fitting); the fit cache's own tests switch it on
os.environ["CARPOOL_FIT_CACHE"] = "off"

import arviz  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# ArviZ 0.23 switches to numba kernels when numba is importable (PyMC, the [bench] extra,
# brings it); its numba mcse(method="sd") raises TypeError under NumPy 2.4 (measured), so
# the tests' Monte Carlo errors use ArviZ's NumPy path in every environment
arviz.Numba.disable_numba()


#: Test modules of carpool's pure JAX code (car-following physics, residual maths, the
#: simulators of carpool.testing), where implicit rank promotion raises.
STRICT_JAX_MODULES = ("carfollowing", "strict", "test_testing")


@pytest.fixture(autouse=True)
def strict_jax(request):
    """Implicit rank promotion raises in tests of our pure JAX code. NumPyro's own internals
    promote ranks, so model-fitting tests run with JAX's default."""
    name = request.module.__name__
    if any(part in name for part in STRICT_JAX_MODULES):
        with jax.numpy_rank_promotion("raise"):
            yield
    else:
        yield

#: Third-party data the tests read, vendored with its attribution (tests/data/README.md).
TEST_DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


@pytest.fixture
def vendored_data() -> str:
    return TEST_DATA


def pytest_sessionfinish(session, exitstatus):
    """Remove this process's compilation cache (it is the run's own, see the top)."""
    if _OWN_CACHE:
        shutil.rmtree(os.environ["CARPOOL_COMPILATION_CACHE"], ignore_errors=True)
