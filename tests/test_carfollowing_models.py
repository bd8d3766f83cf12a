"""Tests of the car-following models and the registry (carpool.carfollowing).

Known-answer values were computed by hand from the model formulas; the arithmetic is in the
comments and was double-checked in float64 Python (CPython 3.11, math module). Model outputs
are float32 (JAX default), hence the relative tolerances of about 1e-5.
"""

from __future__ import annotations

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import carpool.carfollowing as cf
from carpool.carfollowing import model as model_module
from carpool.parameters import Parameter, ParameterTable
from carpool.priors import Normal

BUILTIN = ["fvdm", "gipps", "idm", "ovm"]


@pytest.fixture
def clean_registry(monkeypatch):
    """A private copy of the registry so that tests can register models freely."""
    monkeypatch.setattr(model_module, "_REGISTRY", dict(model_module._REGISTRY))


# -- registry ------------------------------------------------------------------------------
def test_builtin_models_are_registered():
    assert set(BUILTIN) <= set(cf.list_models())
    assert cf.get_model("idm") is cf.IDM
    assert cf.get_model("gipps") is cf.GIPPS
    assert cf.as_model("ovm") is cf.OVM
    assert cf.as_model(cf.FVDM) is cf.FVDM


def test_get_model_unknown_name_lists_known_models():
    with pytest.raises(KeyError, match=r"unknown car-following model 'idn'.*'idm'"):
        cf.get_model("idn")


def test_register_model_rejects_a_different_model_of_the_same_name(clean_registry):
    clone = cf.CarFollowingModel("idm", cf.IDM.parameters, cf.idm_acceleration,
                                 constants={"delta": 4.0})
    cf.register_model(cf.IDM)  # registering an equal model again is a no-op
    with pytest.raises(ValueError, match="already registered as 'idm'"):
        cf.register_model(clone)
    cf.register_model(clone, overwrite=True)
    assert cf.get_model("idm") is clone


def test_model_module_docstring_example_runs(clean_registry):
    # The "adding your own model" example registers a model: run it on a private registry.
    result = doctest.testmod(model_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
    assert "relaxation" in cf.list_models()


def test_package_docstring_example_runs():
    result = doctest.testmod(cf)
    assert result.attempted > 0 and result.failed == 0


def test_model_validation_errors():
    table = ParameterTable([Parameter("k", "1/s", "log", 1.0, Normal(0.0, 1.0))])

    def acc(p, v, s, vl, c):
        return p["k"] * (vl - v)

    with pytest.raises(ValueError, match="identifier"):
        cf.CarFollowingModel("my model", table, acc)
    with pytest.raises(ValueError, match="both as calibrated parameters and in constants"):
        cf.CarFollowingModel("m", table, acc, constants={"k": 1.0})
    with pytest.raises(TypeError, match="ParameterTable"):
        cf.CarFollowingModel("m", [table[0]], acc)  # type: ignore[arg-type]
    model = cf.CarFollowingModel("m", table, acc)
    with pytest.raises(KeyError, match=r"missing \['k'\]"):
        model.acceleration({"kk": 1.0}, 1.0, 1.0, 1.0)


def test_fix_and_free():
    fixed = cf.IDM.fix(v0=33.0)
    assert fixed.parameter_names == ["s0", "T", "a", "b"]
    assert dict(fixed.fixed) == {"v0": 33.0}
    params = {"s0": 2.0, "T": 1.5, "a": 1.5, "b": 1.67}
    full = {**params, "v0": 33.0}
    np.testing.assert_allclose(fixed.acceleration(params, 10.0, 20.0, 9.0),
                               cf.IDM.acceleration(full, 10.0, 20.0, 9.0))
    with pytest.raises(KeyError, match="cannot fix"):
        cf.IDM.fix(delta=3.0)
    # Calibrating the Gipps leader-deceleration estimate moves it out of the constants.
    gipps = cf.GIPPS.free(cf.GIPPS_B_HAT_PARAMETER)
    assert gipps.parameter_names[-1] == "b_hat" and "b_hat" not in gipps.constants
    ref = cf.GIPPS.reference_params()
    np.testing.assert_allclose(gipps.acceleration({**ref, "b_hat": 3.2}, 10.0, 12.0, 5.0),
                               cf.GIPPS.acceleration(ref, 10.0, 12.0, 5.0))
    # fixing then freeing again restores the parameter (appended at the end of the table)
    refreed = cf.IDM.fix(v0=33.0).free(cf.IDM.parameters["v0"])
    assert refreed.parameter_names == ["s0", "T", "a", "b", "v0"] and not refreed.fixed
    assert refreed.parameters["v0"] == cf.IDM.parameters["v0"]
    assert cf.IDM.fix(v0=33.0) == cf.IDM.fix(v0=33.0) != cf.IDM
    assert hash(cf.IDM.fix(v0=33.0)) == hash(cf.IDM.fix(v0=33.0))  # usable as a jit static


# -- parameter tables ----------------------------------------------------------------------
@pytest.mark.parametrize("name", [*BUILTIN, "linear_acc"])
def test_default_latent_priors_cover_the_published_plausible_ranges(name):
    from carpool.models.carfollowing import default_priors

    model = cf.get_model(name)
    assert set(model.plausible_ranges) == set(model.parameter_names)
    assert all(p.prior is None for p in model.parameters)  # physics declares no priors
    for parameter in default_priors(model):
        assert parameter.transform == "log" and parameter.unit
        assert parameter.prior.family == "normal" and parameter.prior.params["loc"] == 0.0
        low, high = model.plausible_ranges[parameter.name]
        scale = parameter.prior.params["scale"]
        prior_low = parameter.reference * math.exp(-1.96 * scale)
        prior_high = parameter.reference * math.exp(1.96 * scale)
        assert low < parameter.reference < high, parameter.name
        assert prior_low <= low and high <= prior_high, (parameter.name, prior_low, prior_high)


def test_zhang_sun_reference_matches_idm_parameter_names():
    assert list(cf.IDM_ZHANG_SUN_REFERENCE) == cf.IDM.parameter_names
    assert cf.IDM.constants["delta"] == 4.0


# -- IDM -----------------------------------------------------------------------------------
# Hand-computation parameters: sqrt(a b) = 1.5, so 2 sqrt(a b) = 3.
IDM_HAND = {"v0": 30.0, "s0": 2.0, "T": 1.5, "a": 1.5, "b": 1.5}


@pytest.mark.parametrize(
    ("speed", "gap", "leader_speed", "expected"),
    [
        # approaching: dv = 3, s* = 2 + 15*1.5 + 15*3/3 = 39.5,
        # acc = 1.5 (1 - (15/30)^4 - (39.5/50)^2) = 1.5 (1 - 0.0625 - 0.6241) = 0.47010
        (15.0, 50.0, 12.0, 0.4701),
        # free road: s* = 2 + 10*1.5 = 17, acc = 1.5 (1 - (1/3)^4 - (17/1e4)^2)
        # = 1.5 (1 - 0.0123457 - 2.89e-6) = 1.4814771  (> 0 since v < v0)
        (10.0, 1e4, 10.0, 1.4814771),
        # stopped leader: dv = 15, s* = 2 + 22.5 + 15*15/3 = 99.5,
        # acc = 1.5 (1 - 0.0625 - (99.5/30)^2) = 1.5 (0.9375 - 11.000278) = -15.094167
        (15.0, 30.0, 0.0, -15.094167),
        # standing at the jam gap: s* = s0 = 2 = s, acc = 1.5 (1 - 0 - 1) = 0
        (0.0, 2.0, 0.0, 0.0),
    ],
)
def test_idm_known_answers(speed, gap, leader_speed, expected):
    acc = cf.IDM.acceleration(IDM_HAND, speed, gap, leader_speed)
    np.testing.assert_allclose(acc, expected, rtol=1e-5, atol=1e-5)


def test_idm_is_zero_at_the_equilibrium_gap():
    # s_e(15) = (2 + 15*1.5) / sqrt(1 - (15/30)^4) = 24.5 / sqrt(0.9375) = 25.303491
    np.testing.assert_allclose(cf.idm_equilibrium_gap(IDM_HAND, 15.0), 25.303491, rtol=1e-6)
    speeds = jnp.array([0.0, 5.0, 15.0, 25.0, 29.0])
    gaps = cf.idm_equilibrium_gap(IDM_HAND, speeds)
    np.testing.assert_allclose(cf.IDM.acceleration(IDM_HAND, speeds, gaps, speeds), 0.0,
                               atol=2e-5)
    # closing in is braking, falling back is accelerating
    assert cf.IDM.acceleration(IDM_HAND, 15.0, 20.0, 15.0) < 0
    assert cf.IDM.acceleration(IDM_HAND, 15.0, 30.0, 15.0) > 0
    # no equilibrium at or above the desired speed
    assert np.isinf(cf.idm_equilibrium_gap(IDM_HAND, jnp.array([30.0, 35.0]))).all()


def test_idm_desired_gap_is_unclipped():
    # leader 10 m/s faster: s* = 2 + 5*1.5 + 5*(-10)/3 = 9.5 - 16.667 = -7.1667 (< s0, < 0)
    np.testing.assert_allclose(cf.idm_desired_gap(IDM_HAND, 5.0, 15.0), -7.1666667,
                               rtol=1e-6)


# -- Gipps ---------------------------------------------------------------------------------
GIPPS_HAND = {"a": 2.0, "b": 4.0, "V": 20.0, "s0": 2.0, "tau": 0.5}
GIPPS_CONSTANTS = {"b_hat": 4.0}


@pytest.mark.parametrize(
    ("speed", "gap", "leader_speed", "expected"),
    [
        # free branch: v_a = 10 + 2.5*2*0.5*(1 - 0.5)*sqrt(0.025 + 0.5) = 10 + 1.25*0.7245688
        #   = 10.905711; v_b = -2 + sqrt(4 + 4 (2*98 - 5 + 100/4)) = -2 + sqrt(868) = 27.46;
        #   acc = (10.905711 - 10) / 0.5 = 1.8114221
        (10.0, 100.0, 10.0, 1.8114221),
        # braking branch: v_b = -2 + sqrt(4 + 4 (2*8 - 5 + 25/4)) = -2 + sqrt(73) = 6.5440037;
        #   acc = (6.5440037 - 10) / 0.5 = -6.9119925
        (10.0, 10.0, 5.0, -6.9119925),
        # negative radicand 4 + 4 (2*0.5 - 10 + 0) = -32: root 0, v_b = -2, target clipped
        #   to 0, acc = (0 - 20) / 0.5 = -40
        (20.0, 2.5, 0.0, -40.0),
    ],
)
def test_gipps_known_answers(speed, gap, leader_speed, expected):
    model = cf.GIPPS.free(cf.GIPPS_B_HAT_PARAMETER)
    acc = model.acceleration({**GIPPS_HAND, **GIPPS_CONSTANTS}, speed, gap, leader_speed)
    np.testing.assert_allclose(acc, expected, rtol=1e-5)
    direct = cf.gipps_acceleration(GIPPS_HAND, speed, gap, leader_speed, GIPPS_CONSTANTS)
    np.testing.assert_allclose(direct, expected, rtol=1e-5)


def test_gipps_equilibrium_matches_closed_form():
    # Steady state v_b = v: b (2 (s - s0) - v tau) + b v^2 / b_hat = v^2 + 2 v b tau, i.e.
    # s_e = s0 + 1.5 v tau + v^2 / 2 (1/b - 1/b_hat) (derived by hand from the formula).
    params = cf.GIPPS.reference_params()
    b_hat = cf.GIPPS.constants["b_hat"]
    speeds = np.array([0.0, 5.0, 10.0, 15.0])
    expected = (params["s0"] + 1.5 * speeds * params["tau"]
                + 0.5 * speeds**2 * (1 / params["b"] - 1 / b_hat))
    np.testing.assert_allclose(cf.equilibrium_gap("gipps", params, speeds), expected,
                               rtol=1e-4)


# -- OVM / FVDM ----------------------------------------------------------------------------
# With s_c - s0 = w: t = tanh(1) = 0.76159416; at s = s_c: V = 15 * (0 + t) / (1 + t)
# = 15 * 0.43233236 = 6.4849853.
OV_HAND = {"v0": 15.0, "s0": 4.0, "s_c": 12.0, "w": 8.0}


def test_optimal_velocity_known_answers():
    v = cf.optimal_velocity(OV_HAND, jnp.array([4.0, 12.0, 1e4]))
    np.testing.assert_allclose(v, [0.0, 6.4849853, 15.0], rtol=1e-5, atol=1e-5)
    # it is the Helbing & Tilch (1998) function V1 + V2 tanh(C1 s - C2) at their values
    gaps = jnp.linspace(0.0, 60.0, 13)
    helbing_tilch = 6.75 + 7.91 * jnp.tanh(0.13 * gaps - 1.57)
    np.testing.assert_allclose(cf.optimal_velocity(cf.OVM.reference_params(), gaps),
                               helbing_tilch, atol=0.02)


def test_ovm_and_fvdm_known_answers():
    # OVM: 0.5 (6.4849853 - 5) = 0.74249265; FVDM adds 0.4 (6 - 5) = 0.4
    ovm = cf.OVM.acceleration({**OV_HAND, "kappa": 0.5}, 5.0, 12.0, 6.0)
    fvdm = cf.FVDM.acceleration({**OV_HAND, "kappa": 0.5, "lam": 0.4}, 5.0, 12.0, 6.0)
    np.testing.assert_allclose(ovm, 0.74249265, rtol=1e-5)
    np.testing.assert_allclose(fvdm, 1.14249265, rtol=1e-5)


def test_ovm_equilibrium_speed_is_the_optimal_velocity():
    params = cf.OVM.reference_params()
    gaps = jnp.array([1.0, 5.0, 12.0, 30.0])
    np.testing.assert_allclose(cf.equilibrium_speed("ovm", params, gaps),
                               jnp.maximum(cf.optimal_velocity(params, gaps), 0.0), atol=1e-4)


# -- JAX behaviour common to all models ----------------------------------------------------
@pytest.mark.parametrize("name", BUILTIN)
def test_gradients_are_finite_at_small_gaps_and_zero_speed(name):
    model = cf.get_model(name)
    params = {k: jnp.asarray(v) for k, v in model.reference_params().items()}

    def acc(p, speed, gap, leader_speed):
        return model.acceleration(p, speed, gap, leader_speed)

    # (speed m/s, gap m, leader speed m/s): standing, tiny gaps, huge gap, near-crash
    states = jnp.array([(0.0, 0.05, 0.0), (0.0, 0.5, 3.0), (5.0, 0.05, 0.0),
                        (0.0, 1e3, 0.0), (30.0, 1.0, 0.0)])
    value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(acc, argnums=(0, 1, 2, 3)),
                                      in_axes=(None, 0, 0, 0)))
    values, grads = value_and_grad(params, states[:, 0], states[:, 1], states[:, 2])
    assert np.isfinite(values).all()
    for leaf in jax.tree_util.tree_leaves(grads):
        assert np.isfinite(leaf).all(), grads


@pytest.mark.parametrize("name", BUILTIN)
def test_broadcasting_jit_and_vmap(name):
    model = cf.get_model(name)
    ref = model.reference_params()
    num_groups, num_times = 3, 4
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(v * np.exp(0.1 * rng.standard_normal((num_groups, 1))),
                             jnp.float32) for k, v in ref.items()}
    speed = jnp.asarray(rng.uniform(0, 15, (num_groups, num_times)), jnp.float32)
    gap = jnp.asarray(rng.uniform(2, 40, (num_groups, num_times)), jnp.float32)
    leader = jnp.asarray(rng.uniform(0, 15, (num_groups, num_times)), jnp.float32)

    g = 1  # one row: scalar parameters against (T,) states
    row = {k: v[g, 0] for k, v in params.items()}
    flat = {k: v[:, 0] for k, v in params.items()}

    @jax.jit
    def variants(params, row, flat, speed, gap, leader):
        return (
            model.acceleration(params, speed, gap, leader),  # (G, 1) against (G, T)
            model.acceleration(row, speed[g], gap[g], leader[g]),  # scalars against (T,)
            model.acceleration(flat, speed[:, 0], gap[:, 0], leader[:, 0]),  # (G,), (G,)
            jax.vmap(model.acceleration)(flat, speed, gap, leader),  # vmap over groups
        )

    out, out_row, out_flat, out_vmap = variants(params, row, flat, speed, gap, leader)
    assert out.shape == (num_groups, num_times) and out.dtype == jnp.float32
    np.testing.assert_allclose(out_row, out[g], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_flat, out[:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_vmap, out, rtol=1e-5, atol=1e-5)
    # eager (un-jitted) evaluation agrees with the compiled one
    np.testing.assert_allclose(model.acceleration(params, speed, gap, leader), out,
                               rtol=1e-5, atol=1e-5)


def test_carfollowing_does_not_import_numpyro():
    # Static check of every import statement (a run-time check of sys.modules would see
    # numpyro imported by other test modules of the same session).
    import ast
    import pathlib

    import carpool.testing

    files = [*pathlib.Path(cf.__file__).parent.glob("*.py"), pathlib.Path(carpool.testing.__file__)]
    assert len(files) >= 6
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "numpyro" for n in names), (path, names)
