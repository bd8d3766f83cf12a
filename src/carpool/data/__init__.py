"""Trajectory data for car-following calibration: format, validation, readers, examples;
and small tabular examples for formula fits (:func:`load_table`).

Importing this package loads only numpy and pandas.
"""

from carpool.data.datasets import (
    example_path,
    list_examples,
    list_tables,
    load_example,
    load_table,
)
from carpool.data.preprocessing import PaddedTrajectories, one_step_pairs, to_padded
from carpool.data.readers import read_trajectories
from carpool.data.schema import DataError, validate_trajectories

__all__ = [
    "DataError",
    "PaddedTrajectories",
    "example_path",
    "list_examples",
    "list_tables",
    "load_example",
    "load_table",
    "one_step_pairs",
    "read_trajectories",
    "to_padded",
    "validate_trajectories",
]
