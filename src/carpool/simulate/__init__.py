"""Traffic simulation from a fitted car-following model.

- :func:`follow`: one follower behind its recorded leader, closed loop, vectorised over
  posterior draws; RMSE, CRPS, 90% coverage and collisions over whole trajectories and over
  short windows restarted from the record;
- :func:`ring`: a ring road of heterogeneous drivers (Sugiyama et al. 2008), with the pure
  core :func:`simulate_ring`, wave statistics and linear string stability;
- :mod:`carpool.simulate.noise`: the acceleration-noise hook (i.i.d. today);
- :mod:`carpool.simulate.sumo`: the ring road and the follower run by Eclipse SUMO's IDM
  (:func:`sumo_ring`, :func:`simulate_sumo_ring`, :func:`simulate_sumo_follow`,
  ``follow(..., engine="sumo")``) and a lane drop fed by the fitted population
  (:func:`lane_drop`); the optional extra ``carpool[sumo]``.

See ``docs/simulation.md``.
"""

from carpool.simulate.follow import FollowResult, follow
from carpool.simulate.noise import NoiseFn, iid_noise, white_noise, zero_noise
from carpool.simulate.ring import (
    RingResult,
    RingTrajectory,
    collision_events,
    ring,
    ring_statistics,
    simulate_ring,
)
from carpool.simulate.scores import coverage, crps_ensemble
from carpool.simulate.stability import LinearStability, linear_stability
from carpool.simulate.sumo import (
    LaneDropResult,
    lane_drop,
    simulate_sumo_follow,
    simulate_sumo_ring,
    sumo_ring,
)
from carpool.simulate.waves import wave_speed

__all__ = [
    "FollowResult",
    "LaneDropResult",
    "LinearStability",
    "NoiseFn",
    "RingResult",
    "RingTrajectory",
    "collision_events",
    "coverage",
    "crps_ensemble",
    "follow",
    "iid_noise",
    "lane_drop",
    "white_noise",
    "linear_stability",
    "ring",
    "ring_statistics",
    "simulate_ring",
    "simulate_sumo_follow",
    "simulate_sumo_ring",
    "sumo_ring",
    "wave_speed",
    "zero_noise",
]
