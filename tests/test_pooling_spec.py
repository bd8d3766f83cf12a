"""Specification objects: priors, parameter tables, grouped data, configs, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carpool.parameters import Parameter, ParameterTable
from carpool.pooling.grouped import GroupedData, choose_layout
from carpool.pooling.likelihoods import Gaussian, StudentT, likelihood_from_dict
from carpool.pooling.spec import Hyperpriors, PoolingConfig
from carpool.priors import HalfCauchy, HalfNormal, Normal, Prior


def test_prior_validation_and_roundtrip():
    with pytest.raises(ValueError, match="unknown prior family"):
        Prior("gamma", {"a": 1.0})
    with pytest.raises(ValueError, match="needs parameters"):
        Prior("normal", {"loc": 0.0})
    with pytest.raises(ValueError, match="must be positive"):
        Normal(0.0, -1.0)
    p = HalfCauchy(5.0)
    assert Prior.from_dict(p.to_dict()) == p
    assert HalfNormal(1.0).median() == pytest.approx(0.6744897501960817)


def test_parameter_transforms_roundtrip():
    p = Parameter("v0", "m/s", "log", 30.0, Normal(0, 0.5))
    assert p.to_natural(0.0) == pytest.approx(30.0)
    assert p.to_latent(p.to_natural(0.37)) == pytest.approx(0.37)
    table = ParameterTable([p, Parameter("b", "", "identity", 1.0, Normal())])
    z = np.array([[0.1, -2.0], [0.0, 3.0]])
    np.testing.assert_allclose(table.to_latent(table.to_natural(z)), z)
    assert ParameterTable.from_list(table.to_list()) == table


def test_parameter_table_errors():
    with pytest.raises(ValueError, match="positive reference"):
        Parameter("a", transform="log", reference=0.0, prior=Normal())
    with pytest.raises(ValueError, match="duplicate"):
        ParameterTable([Parameter("a", prior=Normal()), Parameter("a", prior=Normal())])
    with pytest.raises(ValueError, match="real support"):
        Parameter("a", prior=HalfNormal(1.0))
    with pytest.raises(ValueError, match="without a prior"):
        ParameterTable([Parameter("a"), Parameter("b", prior=Normal())]).check_priors()


def test_grouped_data_errors():
    with pytest.raises(ValueError, match="out of range at observation 2"):
        GroupedData(np.zeros(3), np.array([0, 1, 2]), ("a", "b"))
    with pytest.raises(ValueError, match="NaN"):
        GroupedData(np.array([0.0, np.nan]), np.array([0, 0]), ("a",))
    with pytest.raises(ValueError, match="group 'b' has no observations"):
        GroupedData(np.zeros(2), np.array([0, 0]), ("a", "b"))
    df = pd.DataFrame({"g": ["a", "b"], "y": [1.0, np.nan]})
    with pytest.raises(ValueError, match="row 1"):
        GroupedData.from_frame(df, y="y", group="g")
    with pytest.raises(ValueError, match="missing column"):
        GroupedData.from_frame(df, y="y", group="nope")


def test_padded_layout_repeats_last_value():
    data = GroupedData(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 1]), ("a", "b"),
                       {"x": np.array([10.0, 20.0, 30.0, 40.0])})
    pad = data.padded()
    np.testing.assert_array_equal(pad.mask, [[True, False, False], [True, True, True]])
    # group a has one observation (y=2, x=20), repeated as padding
    np.testing.assert_array_equal(pad.y, [[2.0, 2.0, 2.0], [1.0, 3.0, 4.0]])
    np.testing.assert_array_equal(pad.covariates["x"], [[20.0, 20.0, 20.0], [10.0, 30.0, 40.0]])
    assert choose_layout(data) == "padded"  # 4 of 6 cells are real
    uneven = GroupedData(np.zeros(12), np.array([0] * 10 + [1, 2]), ("a", "b", "c"))
    assert choose_layout(uneven) == "flat"  # 12 of 30 cells are real
    with pytest.raises(ValueError, match="unknown layout"):
        choose_layout(data, "diagonal")


def test_likelihoods_log_prob_and_roundtrip():
    from scipy import stats

    g = Gaussian(HalfNormal(1.0), scale_covariate="dt")
    lp = g.log_prob(1.0, 0.5, {"sigma": 2.0}, {"dt": 0.1})
    assert float(lp) == pytest.approx(stats.norm.logpdf(1.0, 0.5, 0.2), rel=1e-5)
    t = StudentT(3.0, 0.7)
    assert float(t.log_prob(1.0, 0.5, {"sigma": 0.7}, {})) == pytest.approx(
        stats.t.logpdf(1.0, 3.0, 0.5, 0.7), rel=1e-5)
    assert t.fixed_noise() == {"sigma": 0.7} and t.noise_priors() == {}
    for lik in (g, t):
        assert likelihood_from_dict(lik.to_dict()) == lik
    with pytest.raises(ValueError, match="positive"):
        Gaussian(sigma=-1.0)


def test_pooling_config_errors_and_roundtrip():
    with pytest.raises(ValueError, match="unknown pooling 'partial'"):
        PoolingConfig(pooling="partial")
    with pytest.raises(ValueError, match="unknown param"):
        PoolingConfig(param="sideways")
    with pytest.raises(ValueError, match="tau must be 'learned'"):
        PoolingConfig(tau="guess")
    table = ParameterTable([Parameter("a", prior=Normal()), Parameter("b", prior=Normal())])
    with pytest.raises(ValueError, match="pooling='pooled'"):
        PoolingConfig(tau=0.0).fixed_tau(table)
    with pytest.raises(ValueError, match="2 parameters"):
        PoolingConfig(tau=(1.0, 2.0, 3.0)).fixed_tau(table)
    np.testing.assert_allclose(PoolingConfig(tau={"a": 1.0, "b": 2.0}).fixed_tau(table), [1, 2])
    with pytest.raises(ValueError, match="positive support"):
        Hyperpriors(tau=Normal())
    cfg = PoolingConfig(tau=(0.5, 2.0), param={"a": "centred"},
                        hyperpriors=Hyperpriors(tau={"a": HalfNormal(1.0), "b": HalfCauchy(2.0)}))
    assert PoolingConfig.from_dict(cfg.to_dict()) == cfg


def test_pooling_config_and_fit_share_their_defaults():
    # one default per setting: carpool.fit and PoolingConfig() build the same model from the
    # same data (correlated "auto", hyperpriors resolved from the model and group count)
    import dataclasses
    import inspect

    from carpool.inference.run import fit
    from carpool.models.registry import get_spec
    from carpool.pooling.spec import Hyperpriors, PoolingConfig

    signature = inspect.signature(fit).parameters
    for field in dataclasses.fields(PoolingConfig):
        if field.name in signature:
            assert signature[field.name].default == field.default, field.name
    spec = get_spec("idm")
    few, many = PoolingConfig().with_defaults(spec, 4), PoolingConfig().with_defaults(spec, 40)
    assert few.hyperpriors == Hyperpriors.default_for(4)
    assert many.hyperpriors == Hyperpriors()
    zs = get_spec("idm", priors="zhang-sun-2023")
    assert PoolingConfig().with_defaults(zs, 40).hyperpriors == zs.default_hyperpriors
    explicit = PoolingConfig(hyperpriors=Hyperpriors(lkj_eta=4.0))
    assert explicit.with_defaults(spec, 4) is explicit
    assert PoolingConfig.from_dict(PoolingConfig().to_dict()) == PoolingConfig()
