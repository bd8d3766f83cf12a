"""Physical ranges: each group's estimate placed against them, with its identification."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import carpool
from carpool.carfollowing import IDM_PHYSICAL_RANGES
from carpool.inference.plausibility import PlausibilityWarning, implausible_message
from carpool.inference.summary import summary_dict
from carpool.models.carfollowing import carfollowing_spec
from carpool.models.linear import linear_spec


def _data(rng: np.random.Generator) -> pd.DataFrame:
    """Three groups: g0 slope 4 on 80 points (far outside the range below, well
    identified), g1 slope 0 on 80 points (inside), g2 slope 0 on 2 points close to x = 0
    (its slope barely identified)."""
    parts = []
    for name, slope, x in (("g0", 4.0, rng.uniform(-2, 2, 80)),
                           ("g1", 0.0, rng.uniform(-2, 2, 80)),
                           ("g2", 0.0, np.array([-0.05, 0.05]))):
        parts.append(pd.DataFrame({"group": name, "x": x,
                                   "y": slope * x + 0.3 * rng.standard_normal(x.size)}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def unpooled():
    spec = replace(linear_spec(prior_scale=2.0), physical_ranges={"slope": (-1.0, 1.0)})
    df = _data(np.random.default_rng(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = carpool.fit(df, spec, pooling="unpooled",
                          sampler=carpool.NutsSettings(chains=2, warmup=300, draws=400))
    return fit, caught


def test_flags_the_group_outside_and_says_why(unpooled):
    fit, caught = unpooled
    table = carpool.plausibility(fit)
    assert list(table["parameter"].unique()) == ["slope"]  # only ranged parameters
    by_group = table.set_index("group")
    assert by_group.loc["g0", "position"] == "above"
    assert by_group.loc["g1", "position"] == "inside"
    # 80 points with x sd ~1.15 and noise 0.3: the slope's posterior sd is ~0.04 against a
    # prior sd of 2, contraction ~0.9996; two points 0.1 apart: posterior sd ~2 / sqrt(1 +
    # 4 * 0.0025 / 0.09) ~ 1.9, contraction ~0.1. 0.99 and 0.5 leave wide margins.
    assert by_group.loc["g0", "contraction"] > 0.99 and by_group.loc["g0", "identified"]
    assert by_group.loc["g2", "contraction"] < 0.5 and not by_group.loc["g2", "identified"]
    reason = by_group.loc["g0", "reason"]
    assert "above the physical range -1-1" in reason and "data identify it" in reason
    assert by_group.loc["g1", "reason"] == ""
    messages = [str(w.message) for w in caught if w.category is PlausibilityWarning]
    assert len(messages) == 1 and messages[0].startswith("unpooled fit: 1 of 3 groups lies outside")


def test_summary_json_lists_what_is_outside(unpooled):
    fit, _ = unpooled
    out = summary_dict(fit)
    assert out["physical_ranges"] == {"slope": [-1.0, 1.0]}
    assert [r["group"] for r in out["outside_physical_ranges"]] == ["g0"]
    assert out["outside_physical_ranges"][0]["identified"] is True


def test_no_ranges_no_check(unpooled):
    fit, _ = unpooled
    bare = replace(fit, spec=replace(fit.spec, physical_ranges={}))
    assert carpool.plausibility(bare).empty
    assert implausible_message(bare) is None
    assert "physical_ranges" not in summary_dict(bare)


def test_idm_spec_carries_the_physical_ranges():
    spec = carfollowing_spec("idm")
    assert dict(spec.physical_ranges) == IDM_PHYSICAL_RANGES
    # the published typical values sit inside the physical bounds
    for p in spec.parameters:
        low, high = IDM_PHYSICAL_RANGES[p.name]
        assert low < p.reference < high
