"""Where the car-following priors live: not in the physics, in the spec builder.

The physics tables of :mod:`carpool.carfollowing` carry no priors;
:func:`carpool.models.carfollowing.carfollowing_spec` attaches the built-in defaults. The
known answer below is the latent prior of every built-in model's parameters as the physics
modules declared them before the priors moved out (``Normal(0, sd)`` on the log scale around
the reference value): the specs must be exactly those.
"""

from __future__ import annotations

import dataclasses

import pytest

import carpool.carfollowing as cf
from carpool.carfollowing import model as model_module
from carpool.errors import InputError
from carpool.models.carfollowing import (
    DEFAULT_LATENT_PRIOR_SD,
    carfollowing_spec,
    default_priors,
)
from carpool.parameters import Parameter, ParameterTable
from carpool.priors import Normal

#: {model: [(parameter, reference, latent prior sd), ...]} in table order.
KNOWN_PRIORS = {
    "idm": [("v0", 30.0, 0.4), ("s0", 2.0, 0.5), ("T", 1.5, 0.4), ("a", 1.5, 0.4),
            ("b", 1.67, 0.4)],
    "gipps": [("a", 1.7, 0.4), ("b", 3.4, 0.45), ("V", 20.0, 0.4), ("s0", 2.0, 0.5),
              ("tau", 2.0 / 3.0, 0.45)],
    "ovm": [("kappa", 0.85, 0.75), ("v0", 14.66, 0.55), ("s0", 2.32, 0.5),
            ("s_c", 12.08, 0.5), ("w", 7.69, 0.55)],
    "fvdm": [("kappa", 0.41, 0.85), ("lam", 0.5, 0.85), ("v0", 14.66, 0.55),
             ("s0", 2.32, 0.5), ("s_c", 12.08, 0.5), ("w", 7.69, 0.55)],
    "linear_acc": [("k_gap", 0.23, 0.9), ("k_speed", 0.2, 1.0), ("s0", 2.0, 0.5),
                   ("T", 1.2, 0.4)],
}
#: Gipps' optional leader-deceleration estimate, ``GIPPS.free(GIPPS_B_HAT_PARAMETER)``.
KNOWN_B_HAT = ("b_hat", 3.2, 0.4)


def _priors(table: ParameterTable) -> list[tuple[str, float, object, str]]:
    return [(p.name, p.reference, p.prior, p.transform) for p in table]


def _expected(rows) -> list[tuple[str, float, object, str]]:
    return [(name, reference, Normal(0.0, sd), "log") for name, reference, sd in rows]


@pytest.mark.parametrize("name", sorted(KNOWN_PRIORS))
def test_builtin_specs_have_exactly_the_known_latent_priors(name):
    spec = carfollowing_spec(name)
    assert _priors(spec.parameters) == _expected(KNOWN_PRIORS[name])
    loc, scale = spec.parameters.latent_prior_arrays()
    assert loc.tolist() == [0.0] * len(loc)
    assert scale.tolist() == [sd for _, _, sd in KNOWN_PRIORS[name]]
    # the same through the public helper and through a model object
    assert default_priors(cf.get_model(name)) == spec.parameters


def test_every_builtin_model_is_covered():
    assert set(KNOWN_PRIORS) == set(DEFAULT_LATENT_PRIOR_SD)
    assert set(KNOWN_PRIORS) <= set(cf.list_models())
    for name in KNOWN_PRIORS:
        assert cf.get_model(name).parameter_names == [n for n, _, _ in KNOWN_PRIORS[name]]


def test_gipps_b_hat_gets_its_known_prior_when_freed():
    spec = carfollowing_spec(cf.GIPPS.free(cf.GIPPS_B_HAT_PARAMETER))
    assert _priors(spec.parameters) == _expected([*KNOWN_PRIORS["gipps"], KNOWN_B_HAT])


def test_fixed_builtin_keeps_the_other_defaults():
    spec = carfollowing_spec(cf.IDM.fix(v0=33.0))
    assert _priors(spec.parameters) == _expected(KNOWN_PRIORS["idm"][1:])


@pytest.mark.parametrize("name", sorted(KNOWN_PRIORS))
def test_physics_tables_declare_no_priors(name):
    assert all(p.prior is None for p in cf.get_model(name).parameters)
    assert cf.GIPPS_B_HAT_PARAMETER.prior is None


def test_priors_on_the_table_win_over_the_defaults():
    table = cf.IDM.parameters.replace("T", prior=Normal(0.0, 0.2))
    custom = dataclasses.replace(cf.IDM, parameters=table)
    spec = carfollowing_spec(custom)
    expected = _expected(KNOWN_PRIORS["idm"])
    expected[2] = ("T", 1.5, Normal(0.0, 0.2), "log")
    assert _priors(spec.parameters) == expected


def _relaxation(parameters: ParameterTable) -> cf.CarFollowingModel:
    def acc(params, speed, gap, leader_speed, constants):
        return (gap / params["T"] - speed) / params["tau"]

    return cf.CarFollowingModel("relaxation_priors", parameters, acc)


def test_user_model_with_priors_keeps_them(monkeypatch):
    monkeypatch.setattr(model_module, "_REGISTRY", dict(model_module._REGISTRY))
    table = ParameterTable([
        Parameter("T", "s", "log", 1.5, Normal(0.0, 0.3)),
        Parameter("tau", "s", "log", 2.0, Normal(0.1, 0.6)),
    ])
    cf.register_model(_relaxation(table))
    spec = carfollowing_spec("relaxation_priors")
    assert spec.parameters == table


def test_user_model_without_priors_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(model_module, "_REGISTRY", dict(model_module._REGISTRY))
    table = ParameterTable([
        Parameter("T", "s", "log", 1.5, Normal(0.0, 0.3)),
        Parameter("tau", "s", "log", 2.0),
        Parameter("s0", "m", "log", 2.0),
    ])
    cf.register_model(_relaxation(table))
    with pytest.raises(InputError, match=r"'relaxation_priors'.*\['tau', 's0'\] have no prior"):
        carfollowing_spec("relaxation_priors")
    with pytest.raises(InputError, match=r"\['tau', 's0'\] have no prior"):
        default_priors("relaxation_priors")


def test_builtin_name_with_other_physics_gets_no_defaults():
    # the defaults belong to the built-in physics, not to a name
    impostor = dataclasses.replace(cf.IDM, acceleration_fn=lambda p, v, s, vl, c: v * 0.0)
    with pytest.raises(InputError, match=r"\['v0', 's0', 'T', 'a', 'b'\] have no prior"):
        carfollowing_spec(impostor)
