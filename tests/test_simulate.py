"""carpool.simulate: ring road and follow-the-recorded-leader simulations, wave statistics,
string stability, scores, figures and the ``carpool simulate`` commands.

The physics tests call the pure core (:func:`simulate_ring`) with given parameters; only two
small fits are built (module-scoped): a hierarchical and a pooled IDM on 4 simulated
drivers, enough to exercise the posterior plumbing, not to test calibration.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import carpool
from carpool.cli import app
from carpool.simulate import (
    collision_events,
    crps_ensemble,
    follow,
    linear_stability,
    ring,
    ring_statistics,
    simulate_ring,
    wave_speed,
)
from carpool.testing import simulate_drivers

runner = CliRunner()
NUM_VEHICLES = 22
VEHICLE_LENGTH = 5.0
# Treiber & Kesting's IDM with a small maximum acceleration (a = 0.3 m/s^2) and a large
# comfortable deceleration: string unstable around a 20 m gap (checked below).
UNSTABLE_IDM = {"v0": 30.0, "s0": 2.0, "T": 1.0, "a": 0.3, "b": 3.0}
STABLE_IDM = {"v0": 30.0, "s0": 2.0, "T": 1.5, "a": 1.5, "b": 1.67}
DRAWS = 30  # one number of draws throughout: each new array shape costs a compilation


def _homogeneous(values: dict[str, float], num: int = NUM_VEHICLES) -> dict[str, jnp.ndarray]:
    return {k: jnp.full(num, v) for k, v in values.items()}


# -- ring physics (pure core, no fit) ---------------------------------------------------
def test_homogeneous_idm_ring_stays_at_equilibrium():
    # Hand computation: IDM equilibrium s_e(v) = (s0 + v T) / sqrt(1 - (v / v0)^4); at
    # v = 10 m/s with v0 = 30, s0 = 2, T = 1.5: s_e = 17 / sqrt(80 / 81) = 17.1058 m.
    gap = 17.0 / np.sqrt(80.0 / 81.0)
    length = NUM_VEHICLES * (gap + VEHICLE_LENGTH)
    out = simulate_ring("idm", _homogeneous(STABLE_IDM), length_m=length, num_steps=3000,
                        dt=0.1, vehicle_length_m=VEHICLE_LENGTH, perturbation_m=0.0)
    speed, gaps = np.asarray(out.speed), np.asarray(out.gap)
    assert speed.shape == (3001, NUM_VEHICLES)
    assert speed[0, 0] == pytest.approx(10.0, abs=2e-3)  # bisection in float32
    assert np.abs(speed - 10.0).max() < 2e-3  # after 300 s
    assert np.abs(gaps - gap).max() < 1e-3
    assert not np.asarray(out.is_collision).any()
    # positions advance by v dt per step on the ring
    travelled = np.mod(np.asarray(out.position)[-1] - np.asarray(out.position)[0], length)
    assert travelled == pytest.approx(np.full(NUM_VEHICLES, np.mod(3000.0, length)), abs=0.5)
    assert linear_stability("idm", STABLE_IDM, gap, num_vehicles=NUM_VEHICLES).is_string_stable


@pytest.fixture(scope="module")
def unstable_ring():
    length = NUM_VEHICLES * 25.0  # gap 20 m
    out = simulate_ring("idm", _homogeneous(UNSTABLE_IDM), length_m=length, num_steps=6000,
                        dt=0.1, perturbation_m=1.0)
    return length, out


def test_unstable_parameters_grow_stop_and_go_waves(unstable_ring):
    length, out = unstable_ring
    lin = linear_stability("idm", UNSTABLE_IDM, 20.0, num_vehicles=NUM_VEHICLES)
    assert not lin.is_string_stable and lin.ring_growth_rate > 0
    speed = np.asarray(out.speed)
    stats = ring_statistics(speed, np.asarray(out.gap), dt=0.1, length_m=length)
    assert stats["spread_growth"] > 100  # a 1 m kick grows into a jam
    assert stats["share_stopped"] > 0.05 and stats["speed_std_m_s"] > 2.0
    assert not np.asarray(out.is_collision).any() and stats["min_gap_m"] > 0.5
    # early, linear phase: the spread grows at the linear ring growth rate (within 20%)
    spread = speed.std(axis=1)
    rate = np.log(spread[2000] / spread[1000]) / 100.0
    assert rate == pytest.approx(lin.ring_growth_rate, rel=0.2)
    # the same kick dies out with string-stable parameters at the same gap
    stable = simulate_ring("idm", _homogeneous(STABLE_IDM), length_m=length, num_steps=3000,
                           perturbation_m=1.0)
    calm = ring_statistics(np.asarray(stable.speed), np.asarray(stable.gap), dt=0.1,
                           length_m=length)
    assert calm["spread_growth"] < 0.5
    assert linear_stability("idm", STABLE_IDM, 20.0).is_string_stable


def test_stop_and_go_wave_travels_upstream(unstable_ring):
    length, out = unstable_ring
    speed = np.asarray(out.speed)[3000:]
    position = np.asarray(out.position)[3000:]
    c = wave_speed(speed, 0.1, length / NUM_VEHICLES)
    assert -30.0 < c < -1.0
    # independent check: track the jam (circular mean position of the slowest third of the
    # vehicles) and fit its drift
    times = np.arange(0, speed.shape[0], 20)
    angle = []
    for k in times:
        slow = np.argsort(speed[k])[: NUM_VEHICLES // 3]
        angle.append(np.angle(np.exp(2j * np.pi * position[k, slow] / length).mean()))
    centre = np.unwrap(angle) * length / (2 * np.pi)
    tracked = 3.6 * np.polyfit(times * 0.1, centre, 1)[0]
    assert c == pytest.approx(tracked, abs=2.0)


@pytest.mark.parametrize("is_ring", [False, True])
def test_wave_speed_of_a_constructed_newell_wave(is_ring):
    # Newell: each follower repeats its leader's speed tau later, delta metres behind, so
    # disturbances travel at -delta / tau; mean spacing = delta + mean speed * tau.
    dt, tau, delta = 0.1, 1.23, 7.0
    t = np.arange(3000) * dt
    period = NUM_VEHICLES * tau if is_ring else 60.0  # a ring closes on itself

    def profile(time):
        return 8.0 - 7.0 * np.exp(-0.5 * ((np.mod(time, period) - period / 2) / 4.0) ** 2)

    speed = np.stack([profile(t + i * tau) for i in range(NUM_VEHICLES)], axis=1)
    spacing = delta + speed.mean() * tau
    c = wave_speed(speed, dt, spacing, is_ring=is_ring)
    assert c == pytest.approx(-3.6 * delta / tau, rel=0.01)
    assert np.isnan(wave_speed(np.full((100, 5), 3.0), dt, 10.0))  # no waves


def test_linear_stability_reproduces_bando_criterion():
    # OVM at the inflection gap s_c: V'(s_c) = v0 / (w (1 + tanh((s_c - s0) / w))); string
    # stable iff V' <= kappa / 2 (Bando et al. 1995).
    p = {"kappa": 0.85, "v0": 14.66, "s0": 2.32, "s_c": 12.08, "w": 7.69}
    slope = p["v0"] / (p["w"] * (1.0 + np.tanh((p["s_c"] - p["s0"]) / p["w"])))
    lin = linear_stability("ovm", p, p["s_c"])
    assert lin.margin == pytest.approx(p["kappa"] ** 2 - 2 * p["kappa"] * slope, rel=1e-4)
    assert lin.is_string_stable == (slope <= p["kappa"] / 2)


def test_ring_geometry_errors():
    with pytest.raises(ValueError, match="too many vehicles"):
        simulate_ring("idm", _homogeneous(STABLE_IDM, 50), length_m=230.0, num_steps=10)
    with pytest.raises(ValueError, match="must be positive"):
        simulate_ring("idm", _homogeneous(STABLE_IDM), length_m=0.0, num_steps=10)


def test_collision_events_and_inelastic_rule():
    # three cars at 8 m/s, 5 m apart on a 30 m ring: cars 1 and 2 brake hard, car 0 (whose
    # leader is car 1) barely reacts and runs into car 1
    params = {"k_gap": jnp.array([1e-3, 1.0, 1.0]), "k_speed": jnp.array([1e-3, 1.0, 1.0]),
              "s0": jnp.full(3, 2.0), "T": jnp.full(3, 1.0)}
    out = simulate_ring("linear_acc", params, length_m=30.0, num_steps=40, init_speed=8.0)
    speed, hit = np.asarray(out.speed), np.asarray(out.is_collision)
    onset, closing = collision_events(speed, hit)
    assert hit[:, 0].any() and onset[:, 0].sum() >= 1
    k = int(np.argmax(onset[:, 0]))
    assert closing[k, 0] > 1.0 and closing[k, 0] == pytest.approx(speed[k - 1, 0]
                                                                  - speed[k - 1, 1])
    assert (speed[hit[:, 0], 0] <= speed[hit[:, 0], 1] + 1e-6).all()  # inelastic
    # positions and gaps stay consistent after the floored gaps
    x = np.asarray(out.position)
    gap = np.mod(np.roll(x, -1, axis=1) - x, 30.0) - 5.0
    np.testing.assert_allclose(gap, np.asarray(out.gap), atol=1e-4)


def test_crps_matches_its_definition(rng):
    draws, y = rng.normal(size=(50, 7)), rng.normal(size=7)
    brute = (np.abs(draws - y).mean(axis=0)
             - 0.5 * np.abs(draws[:, None] - draws[None]).mean(axis=(0, 1)))
    np.testing.assert_allclose(crps_ensemble(draws, y), brute, rtol=1e-10)


@pytest.mark.parametrize("name", ["noise", "ring", "scores", "stability"])
def test_docstring_examples(name):
    import doctest
    import importlib

    module = importlib.import_module(f"carpool.simulate.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# -- from fits ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def simulated():
    return simulate_drivers(4, duration_s=30.0, rng_seed=3)


@pytest.fixture(scope="module")
def fits(simulated):
    df, _ = simulated
    sampler = carpool.NutsSettings(chains=2, warmup=150, draws=150, seed=1)
    return {mode: carpool.fit(df, "idm", pooling=mode, sampler=sampler, warn=False)
            for mode in ("hierarchical", "pooled")}


def _with_theta(fit, theta_of_driver: dict[str, np.ndarray]):
    """A copy of a hierarchical fit whose every draw has the given per-driver parameters."""
    idata = fit.idata.copy()
    theta = idata.posterior["theta"].values.copy()
    for g, driver in enumerate(fit.group_ids):
        theta[:, :, g, :] = theta_of_driver[driver]
    idata.posterior["theta"] = (idata.posterior["theta"].dims, theta)
    return dataclasses.replace(fit, idata=idata)


def test_follow_true_parameters_beat_wrong_ones(fits, simulated):
    df, truth = simulated
    fit = fits["hierarchical"]
    true = _with_theta(fit, {d: truth.loc[d, fit.parameter_names].to_numpy(float)
                             for d in fit.group_ids})
    wrong_values = truth[fit.parameter_names].copy()
    wrong_values["T"] *= 1.6
    wrong_values["s0"] *= 1.5
    wrong = _with_theta(fit, {d: wrong_values.loc[d].to_numpy(float) for d in fit.group_ids})
    for driver in ("d00", "d02"):
        scores = {name: follow(f, df, driver, num_draws=DRAWS, seed=2).metrics
                  for name, f in (("true", true), ("wrong", wrong), ("posterior", fit))}
        for scope in ("whole", "5 s"):
            assert (scores["true"].loc[scope, "rmse_gap_m"]
                    < scores["wrong"].loc[scope, "rmse_gap_m"] / 3)
            assert (scores["posterior"].loc[scope, "crps_gap_m"]
                    < scores["wrong"].loc[scope, "crps_gap_m"])


def test_follow_result_structure(fits, simulated):
    df, _ = simulated
    r = follow(fits["hierarchical"], df, "d01", num_draws=DRAWS, horizon=2.0, seed=0)
    assert list(r.metrics.index) == ["whole", "2 s", "3 s", "5 s"]
    # 30 s at 0.2 s: 150 steps; windows of 10, 15, 25 steps
    assert r.metrics["num_windows"].tolist() == [1, 15, 10, 6]
    assert r.metrics["num_simulations"].tolist() == [DRAWS * n for n in (1, 15, 10, 6)]
    assert ((r.metrics.filter(like="coverage") >= 0) & (r.metrics.filter(like="coverage")
                                                        <= 1)).all().all()
    assert r.speed.shape == r.gap.shape == (DRAWS, 151) and (r.speed >= 0).all()
    # restarted from the record every 2 s (10 steps): one step after each restart the gap
    # is off by one step's noise only (0.5 sigma dt^2, millimetres)
    first = np.arange(0, 150, 10) + 1
    assert np.abs(r.gap[:, first] - r.record["gap"].to_numpy()[first]).max() < 0.02
    assert r.record_gap_error_m < 1e-3  # simulated data are self-consistent
    bands = r.bands()
    assert list(bands.columns[:3]) == ["time", "leader_speed", "speed_record"]
    assert (bands["speed_lo"] <= bands["speed_hi"]).all()
    quiet = follow(fits["hierarchical"], df, "d01", num_draws=DRAWS, noise=False,
                   parameter_uncertainty=False)
    assert np.ptp(quiet.speed, axis=0).max() == 0.0  # identical draws
    pooled = follow(fits["pooled"], df, "d01", num_draws=DRAWS)
    assert pooled.settings["params_from"] == "pooled"
    new = follow(fits["hierarchical"], df, "d01", num_draws=DRAWS, as_new_driver=True)
    assert new.settings["params_from"] == "population"


def test_follow_errors(fits, simulated):
    df, _ = simulated
    with pytest.raises(ValueError, match="unknown driver 'nobody'"):
        follow(fits["pooled"], df, "nobody")
    unpooled = dataclasses.replace(
        fits["hierarchical"],
        config=dataclasses.replace(fits["hierarchical"].config, pooling="unpooled"))
    with pytest.raises(ValueError, match="no population"):
        follow(unpooled, df, "d01", as_new_driver=True)
    with pytest.raises(ValueError, match="no population"):
        ring(unpooled, drivers="population")


def test_ring_from_fits(fits):
    fit = fits["hierarchical"]
    r = ring(fit, num_vehicles=10, length_m=150.0, duration_s=20.0, num_draws=2, seed=3)
    assert list(r.table.columns) == ["draw", "vehicle", "time", "position", "speed", "gap",
                                     "collision"]
    assert len(r.table) == 2 * 201 * 10
    assert (r.table["speed"] >= 0).all() and r.table["position"].between(0, 150).all()
    assert list(r.summary.index) == [0, 1] and "wave_speed_km_h" in r.summary
    assert set(r.vehicles["driver"]) == {"new"}
    assert r.vehicles.groupby("draw")["s0"].nunique().min() == 10  # heterogeneous
    observed = ring(fit, num_vehicles=10, length_m=150.0, duration_s=20.0, num_draws=2,
                    drivers="observed", seed=3)
    assert set(observed.vehicles["driver"]) <= set(fit.group_ids)
    # a pooled fit without noise or kick: identical drivers at equilibrium stay there
    calm = ring(fits["pooled"], num_vehicles=10, length_m=150.0, duration_s=20.0,
                num_draws=2, noise=False, perturbation_m=0.0)
    assert (calm.vehicles.groupby("draw")["T"].nunique() == 1).all()
    assert calm.table.groupby("draw")["speed"].agg(np.ptp).max() < 1e-3
    assert calm.over_time()["speed_std"].max() < 1e-3


def test_figures(fits, simulated, tmp_path):
    from carpool.plots import plot_follow_bands, plot_time_space

    df, _ = simulated
    r = ring(fits["hierarchical"], num_vehicles=10, length_m=150.0, duration_s=20.0,
             num_draws=2)
    fig = plot_time_space(r, tmp_path / "ring")
    assert (tmp_path / "ring.png").stat().st_size > 0 and (tmp_path / "ring.svg").exists()
    assert fig.axes[0].get_ylabel() == "position on the ring (m)"
    assert fig.axes[1].get_xlabel() == "time (s)"
    fig = plot_follow_bands(follow(fits["pooled"], df, "d00", num_draws=DRAWS),
                            tmp_path / "f")
    assert (tmp_path / "f.png").exists() and fig.axes[1].get_ylabel() == "gap (m)"


# -- command line ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(fits, simulated, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sim")
    paths = {mode: fits[mode].save(folder / f"{mode}.nc") for mode in fits}
    data = folder / "drivers.csv"
    simulated[0].to_csv(data, index=False)
    paths["data"] = data
    return paths


def _one_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_cli_simulate_ring_and_follow(saved, tmp_path):
    out = tmp_path / "ring.csv"
    r = runner.invoke(app, ["simulate", "ring", str(saved["hierarchical"]), "--num-vehicles",
                            "10", "--length-m", "150", "--duration-s", "20", "--num-draws",
                            "2", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out)
    assert {"vehicle", "time", "position", "speed", "gap"} <= set(table.columns)
    assert table["vehicle"].nunique() == 10 and (tmp_path / "ring.png").exists()
    assert "wave km/h" in r.stdout
    out = tmp_path / "follow.csv"
    r = runner.invoke(app, ["simulate", "follow", str(saved["pooled"]), str(saved["data"]),
                            "--driver", "d03", "--num-draws", str(DRAWS), "--out", str(out)],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert {"time", "speed_record", "gap_median"} <= set(pd.read_csv(out).columns)
    assert (tmp_path / "follow.png").exists() and "RMSE v" in r.stdout


@pytest.mark.parametrize("args, needles", [
    (["ring", "{hierarchical}", "--length-m", "-5"], ["ring length must be positive"]),
    (["ring", "{hierarchical}", "--num-vehicles", "60"], ["too many vehicles", "60"]),
    (["ring", "{hierarchical}", "--drivers", "everyone"], ["unknown drivers"]),
    (["ring", "{data}"], ["not a carpool fit"]),
    (["follow", "{pooled}", "{data}", "--driver", "zz"], ["unknown driver 'zz'", "d00"]),
    (["ring", "{hierarchical}", "--out", "{tmp}/ring.txt"], ["--out must end in .csv"]),
])
def test_cli_simulate_errors(saved, tmp_path, args, needles):
    filled = [a.format(tmp=tmp_path, **{k: str(v) for k, v in saved.items()}) for a in args]
    if "--out" not in filled:
        filled += ["--out", str(tmp_path / "x.csv")]
    result = runner.invoke(app, ["simulate", *filled])
    _one_error(result, *needles)
