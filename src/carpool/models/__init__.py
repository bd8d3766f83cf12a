"""Built-in model specifications (each module registers its builder on import)."""

from carpool.models.carfollowing import carfollowing_spec, trajectories_to_grouped
from carpool.models.eight_schools import eight_schools_spec
from carpool.models.linear import linear_spec

__all__ = ["carfollowing_spec", "eight_schools_spec", "linear_spec", "trajectories_to_grouped"]
