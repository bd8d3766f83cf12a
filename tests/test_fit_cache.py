"""The fit cache: a repeated fit is read back, not refitted; anything else fits afresh."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

import carpool
import carpool.inference.run as run_mod
from carpool.inference.nuts import NutsSettings
from carpool.models.registry import get_spec
from carpool.testing import simulate_linear_groups

TINY = NutsSettings(chains=1, warmup=40, draws=40)


@pytest.fixture(scope="module")
def groups():
    df, _ = simulate_linear_groups(3, [6, 8, 10], rng_seed=1)
    return df


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CARPOOL_FIT_CACHE", str(tmp_path / "fits"))
    fits = []
    real = run_mod._fit_nuts

    def counted(*args, **kwargs):
        fits.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_mod, "_fit_nuts", counted)
    return tmp_path / "fits", fits


def test_a_repeated_fit_is_read_from_the_cache(groups, cache):
    where, fits = cache
    first = carpool.fit(groups, "linear", pooling="pooled", sampler=TINY, warn=False)
    second = carpool.fit(groups, "linear", pooling="pooled", sampler=TINY, warn=False)
    assert len(fits) == 1 and len(list(where.glob("*.nc"))) == 1
    np.testing.assert_array_equal(second.idata.posterior["theta"].values,
                                  first.idata.posterior["theta"].values)
    assert second.timing == first.timing


def test_another_seed_pooling_or_data_fits_again(groups, cache):
    where, fits = cache
    carpool.fit(groups, "linear", pooling="pooled", sampler=TINY, warn=False)
    carpool.fit(groups, "linear", pooling="pooled", sampler=replace(TINY, seed=1), warn=False)
    carpool.fit(groups, "linear", pooling="unpooled", sampler=TINY, warn=False)
    other = groups.assign(y=groups["y"] + 0.01)
    carpool.fit(other, "linear", pooling="pooled", sampler=TINY, warn=False)
    assert len(fits) == 4 and len(list(where.glob("*.nc"))) == 4


def test_a_hand_made_spec_is_not_cached(groups, cache):
    where, fits = cache
    spec = replace(get_spec("linear"), mean_fn=lambda p, c: p["intercept"] + p["slope"] * c["x"])
    for _ in range(2):
        carpool.fit(groups, spec, pooling="pooled", sampler=TINY, warn=False)
    assert len(fits) == 2 and not where.exists()


def test_a_damaged_entry_is_refitted(groups, cache, caplog):
    where, fits = cache
    carpool.fit(groups, "linear", pooling="pooled", sampler=TINY, warn=False)
    (entry,) = where.glob("*.nc")
    entry.write_bytes(b"not a netCDF file")
    with caplog.at_level(logging.WARNING, logger="carpool.inference.fit_cache"):
        fit = carpool.fit(groups, "linear", pooling="pooled", sampler=TINY, warn=False)
    assert len(fits) == 2 and "unreadable" in caplog.text
    assert carpool.load(entry).idata.posterior["theta"].shape == \
        fit.idata.posterior["theta"].shape


def test_the_cache_can_be_switched_off(groups, cache, monkeypatch):
    where, fits = cache
    monkeypatch.setenv("CARPOOL_FIT_CACHE", "off")
    for _ in range(2):
        carpool.fit(groups, "linear", pooling="pooled", sampler=TINY, warn=False)
    assert len(fits) == 2 and not where.exists()


def test_a_car_following_fit_is_cached(cache):
    # the car-following specs' mean function is a partial application, rebuilt per call
    from carpool.testing import simulate_drivers

    where, fits = cache
    df, _ = simulate_drivers(2, duration_s=6.0, rng_seed=2)
    for _ in range(2):
        carpool.fit(df, "idm", pooling="pooled", sampler=TINY, warn=False)
    assert len(fits) == 1 and len(list(where.glob("*.nc"))) == 1
