"""Calibrated drivers out of carpool, into the tools that simulate traffic.

- :mod:`carpool.export.sumo`: a fitted IDM's drivers as a SUMO ``vTypeDistribution``
  (:func:`to_sumo`), the drawn population as a table (:func:`sumo_population`) and the
  population read back from such a file (:func:`read_sumo_population`).

See ``docs/sumo.md``.
"""

from carpool.export.sumo import (
    SOURCES,
    read_sumo_population,
    sumo_population,
    to_sumo,
)

__all__ = ["SOURCES", "read_sumo_population", "sumo_population", "to_sumo"]
