"""Local Dask workers pinned to one CPU core each (a worker plugin).

Imported only where a ``LocalCluster`` is made (it imports ``distributed``); the plain
functions it uses live in :mod:`carpool.parallel.executors`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from distributed import WorkerPlugin

from carpool.parallel.executors import pin_process_to_core

__all__ = ["PinWorkersToCores"]


class PinWorkersToCores(WorkerPlugin):
    """A Dask worker plugin: local worker ``i`` runs on the ``i``-th allowed core.

    Registered by ``make_executor(..., pin_cores=True)`` for a ``LocalCluster`` of at most
    one worker per core, so ``N`` workers keep at most ``N`` cores busy; its ``setup`` runs
    in each worker process when the worker starts (restarted workers included), before any
    JAX work.
    """

    name = "carpool-pin-cores"

    def __init__(self, cores: Sequence[int]) -> None:
        self.cores = list(cores)

    def setup(self, worker: Any) -> None:
        name = str(worker.name)
        index = int(name) if name.isdigit() else zlib.crc32(name.encode())
        pin_process_to_core(self.cores[index % len(self.cores)])
