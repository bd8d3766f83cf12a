"""carpool and Eclipse SUMO: exported driver populations (carpool.export.sumo) and the ring road
run by SUMO's IDM (carpool.simulate.sumo).

The export needs no SUMO; the tests that run SUMO skip where the optional extra
``carpool[sumo]`` is not installed (CI installs it). Two small fits (module-scoped, the same
data and sampler settings as tests/test_simulate.py, so their programs come from the
compilation cache): a hierarchical and a pooled IDM on 4 simulated drivers.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import xml.etree.ElementTree as ET

import jax.numpy as jnp
import numpy as np
import pytest

import carpool
from carpool.errors import InputError
from carpool.export import read_sumo_population, sumo_population, to_sumo
from carpool.inference.predict import new_group_params
from carpool.models.registry import get_spec
from carpool.simulate import ring, ring_statistics, simulate_ring
from carpool.testing import simulate_drivers

UNSTABLE_IDM = {"v0": 30.0, "s0": 2.0, "T": 1.0, "a": 0.3, "b": 3.0}
IDM_NAMES = ("v0", "s0", "T", "a", "b", "delta")


@pytest.fixture(scope="module")
def fits():
    df, _ = simulate_drivers(4, duration_s=30.0, rng_seed=3)
    sampler = carpool.NutsSettings(chains=2, warmup=150, draws=150, seed=1)
    return {mode: carpool.fit(df, "idm", pooling=mode, sampler=sampler, warn=False)
            for mode in ("hierarchical", "pooled")}


@pytest.fixture
def sumo_api():
    return pytest.importorskip("libsumo")


def _heterogeneous(num: int, seed: int = 0, sd: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: v * np.exp(sd * rng.standard_normal(num)) for k, v in UNSTABLE_IDM.items()}


# -- export ---------------------------------------------------------------------------------
def test_population_export_round_trips_the_draws(fits, tmp_path):
    fit = fits["hierarchical"]
    path = tmp_path / "out" / "drivers.add.xml"
    xml = to_sumo(fit, vehicles=40, seed=3, path=path)
    assert path.read_text() == xml
    drawn = sumo_population(fit, vehicles=40, seed=3)
    back = read_sumo_population(path)
    assert len(back) == 40 and (back["distribution"] == "carpool").all()
    assert list(back["vtype"]) == list(drawn["vtype"])
    assert list(back["posterior_draw"]) == list(drawn["posterior_draw"])
    assert (back["driver"] == "new").all() and (back["length"] == 5.0).all()
    for name in IDM_NAMES:  # floats are written in full: exactly the drawn values
        assert np.array_equal(back[name].to_numpy(), drawn[name].to_numpy()), name
    # ... and those are new drivers of the posterior draws they name
    expected = new_group_params(fit, 1, seed=3, draws=drawn["posterior_draw"].to_numpy())
    for j, name in enumerate(fit.parameter_names):
        assert np.array_equal(drawn[name].to_numpy(), expected[:, 0, j]), name
    assert (drawn["delta"] == 4.0).all()  # the IDM's constant
    # the vTypes: SUMO's IDM, no random speed factor, no sigma
    root = ET.fromstring(xml)
    vtypes = list(root.iter("vType"))
    assert root.tag == "additional" and len(vtypes) == 40
    for v in vtypes:
        assert v.get("carFollowModel") == "IDM" and v.get("probability") == "1"
        assert v.get("speedFactor") == "1" and v.get("speedDev") == "0"
        assert "sigma" not in v.attrib
    # the comment says what SUMO cannot represent
    comment = xml[xml.index("<!--") + 4: xml.index("-->")]
    assert "Not represented in SUMO" in comment and "sigma" in comment
    assert "--" not in comment


def test_population_export_reproduces_the_posterior_predictive(fits):
    fit = fits["hierarchical"]
    drawn = sumo_population(fit, vehicles=3000, seed=0)
    # new drivers over all posterior draws: their log-parameters are centred on the
    # population's (posterior mean of mu, the latent log median) with the population's
    # spread plus the posterior's uncertainty
    mu = fit.idata.posterior["mu"].values.reshape(-1, 5)
    tau = fit.idata.posterior["tau"].values.reshape(-1, 5)
    for j, p in enumerate(fit.spec.parameters):
        z = np.asarray(p.to_latent(drawn[p.name].to_numpy()))
        sd = np.sqrt(np.mean(tau[:, j] ** 2) + mu[:, j].var())
        assert abs(z.mean() - mu[:, j].mean()) < 4 * sd / np.sqrt(len(z)), p.name
        assert z.std() == pytest.approx(sd, rel=0.1), p.name


def test_drivers_export_takes_fitted_drivers_at_posterior_draws(fits):
    hier, pooled = fits["hierarchical"], fits["pooled"]
    drawn = sumo_population(hier, vehicles=30, source="drivers", seed=5)
    theta = hier.theta_draws()
    index = [hier.group_ids.index(d) for d in drawn["driver"]]
    values = theta[drawn["posterior_draw"].to_numpy(), index]
    for j, name in enumerate(hier.parameter_names):
        assert np.array_equal(drawn[name].to_numpy(), values[:, j])
    assert set(drawn["driver"]) <= set(hier.group_ids)
    shared = sumo_population(pooled, vehicles=10, source="drivers", seed=5)
    assert (shared["driver"] == "pooled").all()
    assert np.array_equal(shared["T"].to_numpy(),
                          pooled.theta_draws()[shared["posterior_draw"].to_numpy(), 2])
    # a seed draws the same drivers; another seed others
    again = sumo_population(hier, vehicles=30, source="drivers", seed=5)
    assert drawn.equals(again)
    assert not drawn.equals(sumo_population(hier, vehicles=30, source="drivers", seed=6))
    xml = to_sumo(pooled, vehicles=3, source="drivers", vehicle_length_m=4.5,
                  distribution_id="calibrated", stepping=0.1)
    back = read_sumo_population(xml)
    assert list(back["vtype"]) == ["calibrated_0", "calibrated_1", "calibrated_2"]
    assert (back["length"] == 4.5).all() and (back["driver"] == "pooled").all()
    assert all(v.get("stepping") == "0.1" for v in ET.fromstring(xml).iter("vType"))


def _unpooled(fit):
    return dataclasses.replace(fit, config=dataclasses.replace(fit.config,
                                                               pooling="unpooled"))


@pytest.mark.parametrize("case, message", [
    ("zero", "vehicles must be at least 1, got 0"),
    ("negative", "vehicles must be at least 1, got -3"),
    ("fraction", "vehicles must be a whole number of drivers, got 2.5"),
    ("source", "unknown source 'everyone'"),
    ("unpooled", "an unpooled fit has no population distribution"),
    ("pooled", "a pooled fit has one parameter set shared by every driver"),
    ("gipps", "model 'gipps' has no SUMO mapping"),
    ("not car-following", "the fit is of model 'eight_schools', which has no IDM parameters"),
    ("directory", "it is a directory"),
    ("under a file", "is not a writable directory"),
    ("length", "vehicle_length_m must be a positive length"),
    ("id", "is not a SUMO id"),
])
def test_bad_exports_raise_one_line(fits, tmp_path, case, message):
    fit = fits["hierarchical"]
    (tmp_path / "a-file").write_text("x")
    kwargs = {"vehicles": 5}
    if case in ("zero", "negative", "fraction"):
        kwargs["vehicles"] = {"zero": 0, "negative": -3, "fraction": 2.5}[case]
    elif case == "source":
        kwargs["source"] = "everyone"
    elif case == "unpooled":
        fit = _unpooled(fit)
    elif case == "pooled":
        fit = fits["pooled"]
    elif case == "gipps":
        fit = dataclasses.replace(fit, spec=get_spec("gipps"))
    elif case == "not car-following":
        fit = dataclasses.replace(fit, spec=get_spec("eight_schools"))
    elif case == "directory":
        kwargs["path"] = tmp_path
    elif case == "under a file":
        kwargs["path"] = tmp_path / "a-file" / "drivers.add.xml"
    elif case == "length":
        kwargs["vehicle_length_m"] = 0.0
    elif case == "id":
        kwargs["distribution_id"] = "two words"
    with pytest.raises(InputError, match=message) as info:
        to_sumo(fit, **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "a-file").is_dir()


def test_unpooled_fits_export_their_drivers(fits):
    drawn = sumo_population(_unpooled(fits["hierarchical"]), vehicles=4, source="drivers")
    assert len(drawn) == 4 and set(drawn["driver"]) <= set(fits["hierarchical"].group_ids)


# -- SUMO missing -------------------------------------------------------------------------
def test_missing_extra_is_one_clear_line(monkeypatch):
    import carpool._sumo as plumbing
    from carpool.simulate.sumo import simulate_sumo_ring

    monkeypatch.setitem(sys.modules, "libsumo", None)  # import libsumo -> ImportError
    with pytest.raises(InputError, match=r'pip install "carpool\[sumo\]"') as info:
        plumbing.import_libsumo("the SUMO engine")
    assert "\n" not in str(info.value)
    monkeypatch.setattr(plumbing, "sumo_home", lambda: None)
    monkeypatch.setenv("PATH", "")
    params = {k: np.full(4, v) for k, v in UNSTABLE_IDM.items()}
    with pytest.raises(InputError, match=r"needs Eclipse SUMO, which is not installed: pip "
                                         r"install \"carpool\[sumo\]\""):
        simulate_sumo_ring("idm", params, length_m=100.0, num_steps=10)


def test_sumo_engine_refuses_other_models_and_noise(fits):
    from carpool.simulate.sumo import simulate_sumo_ring, sumo_ring

    gipps = {"a": np.full(4, 1.5), "b": np.full(4, 2.0), "V": np.full(4, 30.0),
             "s0": np.full(4, 2.0), "tau": np.full(4, 1.0)}
    with pytest.raises(InputError, match="model 'gipps' has no SUMO mapping"):
        simulate_sumo_ring("gipps", gipps, length_m=100.0, num_steps=10)
    with pytest.raises(InputError, match="SUMO's IDM is deterministic"):
        sumo_ring(fits["hierarchical"], noise=True)
    params = {k: np.full(4, v) for k, v in UNSTABLE_IDM.items()}
    with pytest.raises(InputError, match="whole number of milliseconds"):
        simulate_sumo_ring("idm", params, length_m=100.0, num_steps=10, dt=0.00025)


# -- SUMO runs ------------------------------------------------------------------------------
def test_sumo_loads_the_exported_population(fits, tmp_path, sumo_api):
    from carpool._sumo import binary

    path = tmp_path / "drivers.add.xml"
    drawn = sumo_population(fits["hierarchical"], vehicles=8, seed=2)
    to_sumo(fits["hierarchical"], vehicles=8, seed=2, path=path)
    (tmp_path / "r.nod.xml").write_text('<nodes><node id="a" x="0" y="0"/>'
                                        '<node id="b" x="2000" y="0"/></nodes>')
    (tmp_path / "r.edg.xml").write_text('<edges><edge id="road" from="a" to="b" '
                                        'numLanes="1" speed="60"/></edges>')
    subprocess.run([binary("netconvert"), "-n", str(tmp_path / "r.nod.xml"), "-e",
                    str(tmp_path / "r.edg.xml"), "-o", str(tmp_path / "r.net.xml")],
                   check=True, capture_output=True)
    (tmp_path / "r.rou.xml").write_text(
        '<routes><flow id="f" type="carpool" begin="0" end="40" period="2">'
        '<route edges="road"/></flow></routes>')
    sumo_api.start([binary("sumo"), "-n", str(tmp_path / "r.net.xml"), "-a", str(path),
                    "-r", str(tmp_path / "r.rou.xml"), "--step-length", "0.1",
                    "--no-step-log", "true"])
    try:
        used = set()
        for _ in range(400):
            sumo_api.simulationStep()
            used |= {sumo_api.vehicle.getTypeID(v) for v in sumo_api.vehicle.getIDList()}
        assert len(used) >= 4 and used <= set(drawn["vtype"])
        for row in drawn.itertuples():  # SUMO read the parameters we wrote
            assert sumo_api.vehicletype.getTau(row.vtype) == pytest.approx(row.T, rel=1e-12)
            assert sumo_api.vehicletype.getMinGap(row.vtype) == pytest.approx(row.s0,
                                                                             rel=1e-12)
            assert sumo_api.vehicletype.getMaxSpeed(row.vtype) == pytest.approx(row.v0,
                                                                               rel=1e-12)
            assert sumo_api.vehicletype.getAccel(row.vtype) == pytest.approx(row.a, rel=1e-12)
            assert sumo_api.vehicletype.getDecel(row.vtype) == pytest.approx(row.b, rel=1e-12)
            assert sumo_api.vehicletype.getParameter(row.vtype, "carpool.driver") == "new"
    finally:
        sumo_api.close()


def test_sumo_ring_agrees_with_carpools_ring_before_vehicles_stop(sumo_api):
    # 20 heterogeneous, string-unstable drivers: the 1 m kick grows for 60 s; no vehicle
    # stops yet, so the two engines integrate the same equations and differ only by
    # carpool's float32 arithmetic
    from carpool.simulate.sumo import simulate_sumo_ring

    params = _heterogeneous(20)
    kwargs = {"length_m": 300.0, "num_steps": 600, "dt": 0.1, "perturbation_m": 1.0}
    sumo = simulate_sumo_ring("idm", params, **kwargs)
    jax_ring = simulate_ring("idm", {k: jnp.asarray(v) for k, v in params.items()}, **kwargs)
    speed, gap = np.asarray(jax_ring.speed), np.asarray(jax_ring.gap)
    assert sumo.speed.shape == speed.shape == (601, 20)
    spread = sumo.speed.std(axis=1)
    assert sumo.speed.min() > 5.0 and spread[-1] > 100 * spread[1]  # the wave grows
    assert np.abs(sumo.speed - speed).max() < 1e-4  # m/s
    assert np.abs(sumo.gap - gap).max() < 1e-3  # m
    offset = np.mod(sumo.position - np.asarray(jax_ring.position) + 150.0, 300.0) - 150.0
    assert np.abs(offset).max() < 1e-3
    assert not sumo.is_collision.any()


def test_sumo_ring_waves_match_carpools(sumo_api):
    # 300 s: stop-and-go waves form and stop vehicles; trajectories part by centimetres per
    # second (see carpool.simulate.sumo), the wave statistics agree
    from carpool.simulate.sumo import simulate_sumo_ring

    params = {k: np.full(22, v) for k, v in UNSTABLE_IDM.items()}
    kwargs = {"length_m": 230.0, "num_steps": 3000, "dt": 0.1, "perturbation_m": 1.0}
    sumo = simulate_sumo_ring("idm", params, **kwargs)
    jax_ring = simulate_ring("idm", {k: jnp.asarray(v) for k, v in params.items()}, **kwargs)
    ours = ring_statistics(np.asarray(jax_ring.speed), np.asarray(jax_ring.gap), dt=0.1,
                           length_m=230.0)
    theirs = ring_statistics(sumo.speed, sumo.gap, dt=0.1, length_m=230.0)
    assert ours["share_stopped"] > 0.3  # a jam that stops vehicles
    assert theirs["mean_speed_m_s"] == pytest.approx(ours["mean_speed_m_s"], rel=0.02)
    assert theirs["speed_std_m_s"] == pytest.approx(ours["speed_std_m_s"], rel=0.02)
    assert theirs["share_stopped"] == pytest.approx(ours["share_stopped"], abs=0.02)
    assert theirs["wave_speed_km_h"] == pytest.approx(ours["wave_speed_km_h"], abs=0.5)
    onset = [np.argmax(v.std(axis=1) > 0.5) * 0.1 for v in (sumo.speed, jax_ring.speed)]
    assert onset[0] == pytest.approx(onset[1], abs=0.5)  # wave onset, s
    difference = sumo.speed - np.asarray(jax_ring.speed)
    assert np.abs(difference).max() < 0.5 and np.sqrt(np.mean(difference**2)) < 0.05  # m/s


def test_sumo_ring_from_a_fit_matches_ring(fits, sumo_api):
    from carpool.simulate.sumo import sumo_ring

    fit = fits["hierarchical"]
    kwargs = {"num_vehicles": 12, "length_m": 150.0, "duration_s": 20.0, "seed": 4,
              "num_draws": 2}
    ours = ring(fit, noise=False, **kwargs)
    theirs = sumo_ring(fit, **kwargs)
    assert list(theirs.table.columns) == list(ours.table.columns)
    assert list(theirs.summary.columns) == list(ours.summary.columns)
    assert theirs.vehicles.equals(ours.vehicles)  # the same drivers
    assert theirs.settings["engine"] == "sumo" and ours.settings["engine"] == "jax"
    assert theirs.settings["noise"] is False
    assert np.abs(theirs.table["speed"] - ours.table["speed"]).max() < 1e-3
    assert np.abs(theirs.table["gap"] - ours.table["gap"]).max() < 1e-2
    observed = sumo_ring(fit, drivers="observed", interface="traci", **kwargs)
    assert set(observed.vehicles["driver"]) <= set(fit.group_ids)
    assert observed.settings["sumo_interface"] == "traci"


def test_sumo_follower_behind_a_replayed_leader_agrees_with_follow_leader(sumo_api):
    from carpool.carfollowing import follow_leader
    from carpool.simulate.sumo import simulate_sumo_follow

    t = np.arange(601) * 0.1
    leader = 12.0 + 5.0 * np.sin(2 * np.pi * t / 30.0)  # 60 s of slow-fast driving
    rng = np.random.default_rng(1)
    base = {"v0": 30.0, "s0": 2.0, "T": 1.5, "a": 1.5, "b": 1.67}
    params = {k: v * np.exp(0.15 * rng.standard_normal(3)) for k, v in base.items()}
    sumo = simulate_sumo_follow("idm", params, leader, 20.0, 12.0, 0.1)
    assert sumo.speed.shape == (601, 3) and sumo.gap[0] == pytest.approx(20.0)
    for d in range(3):
        ours = follow_leader("idm", {k: jnp.asarray(v[d]) for k, v in params.items()},
                             jnp.asarray(leader), 20.0, 12.0, 0.1)
        assert np.abs(sumo.speed[:, d] - np.asarray(ours.speed)).max() < 1e-4
        assert np.abs(sumo.gap[:, d] - np.asarray(ours.gap)).max() < 1e-3
    assert not sumo.is_collision.any()


# -- follow(..., engine="sumo") -------------------------------------------------------------
FOLLOW_DRAWS = 30


def _where_the_idms_differ(fit, result, driver, seed):
    """Per draw: does carpool's follower ever enter a state where SUMO's IDM acts
    differently (desired gap clipped, braking beyond SUMO's 9 m/s^2 bound, a stop, a start
    above v0)? The draws are follow()'s own (the same seed)."""
    from carpool.simulate.follow import _driver_theta

    theta, _ = _driver_theta(fit, driver, False, seed)
    idx = np.random.default_rng(seed).choice(theta.shape[0], FOLLOW_DRAWS, replace=False)
    p = {n: theta[idx, j][:, None] for j, n in enumerate(fit.parameter_names)}
    v, s = result.speed, result.gap
    lead = result.record["leader_speed"].to_numpy()[None]
    inner = v * p["T"] + v * (v - lead) / (2.0 * np.sqrt(p["a"] * p["b"]))
    acc = p["a"] * (1.0 - (v / p["v0"]) ** 4 - ((p["s0"] + inner) / s) ** 2)
    return ((inner < 0) | (acc < -9.0) | (v <= 0)).any(axis=1) | (v[:, 0] > p["v0"][:, 0])


def test_follow_on_sumo_agrees_with_the_jax_engine(fits, sumo_api):
    # an NGSIM I-80 driver the fit has not seen: 30 new drivers from the population, 55 s
    # at 0.2 s behind the recorded leader, restarted every 3 and 5 s for the window scores
    from carpool.simulate import follow

    fit, data, driver = fits["hierarchical"], carpool.load_example("ngsim-i80"), "i80_1003"
    kwargs = {"num_draws": FOLLOW_DRAWS, "noise": False, "seed": 0}
    ours = follow(fit, data, driver, **kwargs)
    theirs = follow(fit, data, driver, engine="sumo", **kwargs)
    assert theirs.speed.shape == ours.speed.shape == (FOLLOW_DRAWS, 277)
    assert list(theirs.metrics.index) == ["whole", "3 s", "5 s"]
    assert list(theirs.metrics.columns) == list(ours.metrics.columns)
    assert list(theirs.bands().columns) == list(ours.bands().columns)
    assert theirs.settings["engine"] == "sumo" and ours.settings["engine"] == "jax"
    assert theirs.settings["params_from"] == "population"
    assert theirs.record_gap_error_m == ours.record_gap_error_m
    # draws that never leave the region where the two IDMs are the same equations agree to
    # carpool's float32 precision; the others part where SUMO clips the desired gap (a
    # much faster leader) or bounds the braking (docs/sumo.md)
    differ = _where_the_idms_differ(fit, ours, driver, 0)
    same = ~differ
    assert same.sum() >= 10
    assert np.abs(theirs.speed[same] - ours.speed[same]).max() < 1e-3  # m/s
    assert np.abs(theirs.gap[same] - ours.gap[same]).max() < 1e-2  # m
    # the scores over all draws: within 0.02 m/s and m (RMSE, CRPS) and 3 points of
    # coverage, whole trajectory and windows
    gap_scores = ["rmse_speed_m_s", "rmse_gap_m", "crps_speed_m_s", "crps_gap_m"]
    assert (theirs.metrics[gap_scores] - ours.metrics[gap_scores]).abs().max().max() < 0.02
    coverage = ["coverage_speed_90", "coverage_gap_90"]
    assert (theirs.metrics[coverage] - ours.metrics[coverage]).abs().max().max() <= 0.03
    assert (theirs.metrics["collisions"] == ours.metrics["collisions"]).all()
    # a horizon: the main simulation restarts from the record every 2 s
    windows = follow(fit, data, driver, engine="sumo", horizon=2.0, **kwargs)
    assert list(windows.metrics.index) == ["whole", "2 s", "3 s", "5 s"]
    first = np.arange(0, 276, 10) + 1  # one step after each restart
    record = theirs.record["gap"].to_numpy()
    assert np.abs(windows.gap[:, first] - record[first]).max() < 0.5
    assert windows.metrics.loc["whole"].equals(theirs.metrics.loc["whole"])


def test_follow_on_sumo_refuses_noise_and_other_models(fits):
    from carpool.simulate import follow

    fit, data = fits["hierarchical"], carpool.load_example("ngsim-i80")
    with pytest.raises(InputError, match="SUMO's IDM is deterministic") as info:
        follow(fit, data, "i80_1003", engine="sumo")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="unknown engine 'vissim'"):
        follow(fit, data, "i80_1003", engine="vissim", noise=False)
    gipps = dataclasses.replace(fit, spec=get_spec("gipps"))
    with pytest.raises(InputError, match="model 'gipps' has no SUMO mapping"):
        follow(gipps, data, "i80_1003", engine="sumo", noise=False)


# -- the lane drop ------------------------------------------------------------------------------
LANE_DROP = {"num_draws": 2, "duration_s": 300.0, "warmup_s": 120.0, "seed": 3}


@pytest.fixture(scope="module")
def lane_drop_run(fits):
    pytest.importorskip("libsumo")
    from carpool.simulate.sumo import lane_drop

    return lane_drop(fits["hierarchical"], **LANE_DROP)


def test_lane_drop_discharges_less_than_the_demand(fits, lane_drop_run):
    from carpool.simulate.sumo import LANE_DROP_SUMMARY_COLUMNS

    r = lane_drop_run
    s = r.settings
    assert (s["lanes"], s["length_m"], s["drop_at_m"], s["demand_veh_h"]) == (2, 2000.0,
                                                                             1500.0, 3000.0)
    assert s["dt"] == 0.2  # the fit's data time step
    assert list(r.summary.columns) == list(LANE_DROP_SUMMARY_COLUMNS)
    assert len(r.summary) == 4
    assert list(r.summary["population"]) == ["heterogeneous", "homogeneous"] * 2
    flows = r.summary[["discharge_flow_veh_h", "discharge_speed_m_s", "upstream_flow_veh_h"]]
    assert np.isfinite(flows.to_numpy()).all() and (flows.to_numpy() > 0).all()
    # 3,000 veh/h is above one lane's capacity (these drivers: about 1,800 to 2,200 veh/h):
    # a queue stands before the drop and the one lane past it discharges well below the
    # demand, which the two lanes upstream still carry
    assert (r.summary["discharge_flow_veh_h"] < 0.8 * s["demand_veh_h"]).all()
    assert (r.summary["upstream_flow_veh_h"] > r.summary["discharge_flow_veh_h"]).all()
    assert (r.summary["queued_share"] > 0.5).all()
    assert (r.summary["queue_extent_m"] > 0).all()
    assert (r.summary["congestion_onset_s"] < s["duration_s"]).all()
    assert (r.summary["teleports"] == 0).all()
    # the time-space table: detectors every 100 m upstream, one line 100 m past the drop
    d = r.detectors
    assert set(d["edge"]) == {"upstream", "downstream"}
    down = d.loc[d["edge"] == "downstream", "position_m"].unique()
    assert down == pytest.approx([1600.0], abs=5.0)
    assert d.groupby(["draw", "population"])["time_s"].nunique().eq(10).all()  # 300 s / 30 s
    assert d["flow_veh_h"].ge(0).all() and d["speed_m_s"].dropna().ge(0).all()
    # the drivers: heterogeneous, and the population's median driver of the same draw
    fit = fits["hierarchical"]
    hetero = r.drivers[r.drivers["population"] == "heterogeneous"]
    assert (hetero["driver"] == "new").all() and hetero.groupby("draw")["T"].nunique().min() > 50
    median = r.drivers[r.drivers["population"] == "homogeneous"]
    assert len(median) == 2 and (median["vehicle"] == -1).all()
    mu = fit.idata.posterior["mu"].values.reshape(-1, 5)[median["posterior_draw"].to_numpy()]
    expected = np.asarray(fit.spec.parameters.to_natural(mu, axis=-1))
    for j, name in enumerate(fit.parameter_names):
        assert median[name].to_numpy() == pytest.approx(expected[:, j], rel=1e-6), name
    table = r.discharge()
    assert list(table.columns) == ["heterogeneous", "homogeneous", "difference"]
    assert table["difference"].to_numpy() == pytest.approx(
        table["heterogeneous"].to_numpy() - table["homogeneous"].to_numpy())
    assert list(r.comparison().index) == ["heterogeneous", "homogeneous", "difference"]


def test_lane_drop_is_reproducible_with_a_seed(fits, lane_drop_run, tmp_path):
    from carpool.simulate.sumo import lane_drop, plot_lane_drop

    again = lane_drop(fits["hierarchical"], **LANE_DROP)
    assert again.summary.equals(lane_drop_run.summary)
    assert again.detectors.equals(lane_drop_run.detectors)
    assert again.drivers.equals(lane_drop_run.drivers)
    other = lane_drop(fits["hierarchical"], **{**LANE_DROP, "seed": 4, "num_draws": 1})
    assert not other.drivers["T"].equals(lane_drop_run.drivers["T"].iloc[:len(other.drivers)])
    fig = plot_lane_drop(lane_drop_run, tmp_path / "drop")
    assert (tmp_path / "drop.png").stat().st_size > 0 and (tmp_path / "drop.svg").exists()
    assert fig.axes[2].get_ylabel() == "discharge flow (veh/h)"


def test_lane_drop_with_the_fitted_drivers_and_a_speed_limit(fits, sumo_api):
    from carpool.simulate.sumo import lane_drop

    fit = fits["hierarchical"]
    r = lane_drop(fit, num_draws=1, duration_s=120.0, warmup_s=60.0, drivers="observed",
                  speed_limit_m_s=25.0, lanes=3, demand_veh_h=4000.0)
    hetero = r.drivers[r.drivers["population"] == "heterogeneous"]
    assert set(hetero["driver"]) <= set(fit.group_ids)
    assert r.settings["speed_limit_m_s"] == 25.0 and r.settings["lanes"] == 3
    assert (r.summary["discharge_speed_m_s"] <= 25.0 + 1e-6).all()
    assert np.isfinite(r.summary["discharge_flow_veh_h"]).all()


@pytest.mark.parametrize("case, message", [
    ("pooled", "a pooled fit has one parameter set"),
    ("unpooled", "has no population distribution"),
    ("gipps", "model 'gipps' has no SUMO mapping"),
    ("lanes", "lanes must be a whole number >= 2"),
    ("drop", "need 0 < drop_at_m < length_m"),
    ("discharge", "must lie on the road past the drop"),
    ("drivers", "unknown drivers 'everyone'"),
    ("dt", "whole number of milliseconds"),
])
def test_lane_drop_errors(fits, case, message):
    from carpool.simulate.sumo import lane_drop

    fit, kwargs = fits["hierarchical"], {}
    if case == "pooled":
        fit = fits["pooled"]
    elif case == "unpooled":
        fit = _unpooled(fit)
    elif case == "gipps":
        fit = dataclasses.replace(fit, spec=get_spec("gipps"))
    elif case == "lanes":
        kwargs["lanes"] = 1
    elif case == "drop":
        kwargs["drop_at_m"] = 2500.0
    elif case == "discharge":
        kwargs["discharge_at_m"] = 600.0
    elif case == "drivers":
        kwargs["drivers"] = "everyone"
    elif case == "dt":
        kwargs["dt"] = 0.00025
    with pytest.raises(InputError, match=message) as info:
        lane_drop(fit, **kwargs)
    assert "\n" not in str(info.value)


def test_sumo_follow_windows_in_several_runs_equal_one(sumo_api, monkeypatch):
    # 3 draws x 12 windows of 5 steps: one SUMO run, or runs of at most 7 roads
    import carpool.simulate.sumo as engine

    t = np.arange(61) * 0.1
    record = {"leader_speed": 12.0 + 5.0 * np.sin(2 * np.pi * t / 30.0),
              "speed": 12.0 + 4.0 * np.sin(2 * np.pi * (t - 1.0) / 30.0),
              "gap": 20.0 + 2.0 * np.cos(2 * np.pi * t / 30.0)}
    params = {"v0": np.array([25.0, 30.0, 35.0]), "s0": np.full(3, 2.0),
              "T": np.array([1.2, 1.5, 1.8]), "a": np.full(3, 1.5), "b": np.full(3, 1.67)}
    one = engine.sumo_follow_windows("idm", params, record, 0.1, 5)
    monkeypatch.setattr(engine, "MAX_PAIRS_PER_RUN", 7)
    several = engine.sumo_follow_windows("idm", params, record, 0.1, 5)
    for a, b in zip(one, several, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    speed, gap, _, window_id, capped = one
    assert speed.shape == gap.shape == (3, 61) and capped == 0
    assert list(np.unique(window_id)) == list(range(12))
    # each window starts from the recorded state: one step in, the gap has moved by the
    # speed difference of one step (to a centimetre: the follower's change of speed)
    start = np.arange(0, 60, 5)
    one_step = record["gap"][start] + 0.1 * (record["leader_speed"][start]
                                             - record["speed"][start])
    assert np.abs(gap[:, start + 1] - one_step).max() < 0.01
