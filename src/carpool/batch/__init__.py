"""``carpool.batch``: many independent fits on this machine or a Dask cluster.

- :func:`fit_batch`: one saved fit per unit (driver, recording, site, ...) plus a
  ``manifest.json``; retries, failures recorded, resumable;
- executors (:func:`make_executor`, :func:`as_executor`): this process, local worker
  processes or any Dask scheduler behind one interface; the sweep, the cross-validation
  refits of :func:`carpool.compare` and SBC take the same ``executor=`` option.

Importing this package does not import Dask or JAX; a Dask executor imports
``distributed`` when it is made.
"""

from carpool.batch.fitting import BatchResult, FitRequest, check_result, fit_batch, fit_unit
from carpool.batch.manifest import Manifest
from carpool.batch.units import Unit, read_units, split_table, units_from_files
from carpool.parallel.executors import (
    WORKER_XLA_FLAGS,
    AbstractExecutor,
    DaskExecutor,
    Outcome,
    Progress,
    SerialExecutor,
    Task,
    as_executor,
    make_executor,
    worker_environment,
)

__all__ = [
    "WORKER_XLA_FLAGS",
    "AbstractExecutor",
    "BatchResult",
    "DaskExecutor",
    "FitRequest",
    "Manifest",
    "Outcome",
    "Progress",
    "SerialExecutor",
    "Task",
    "Unit",
    "as_executor",
    "check_result",
    "fit_batch",
    "fit_unit",
    "make_executor",
    "read_units",
    "split_table",
    "units_from_files",
    "worker_environment",
]
