"""Where independent jobs run: this process, local worker processes or a Dask cluster.

One interface (:mod:`carpool.parallel.executors`) for every place that runs many
independent fits: batches (:mod:`carpool.batch`), the refits of :func:`carpool.compare`,
the sweep and SBC. It imports nothing of carpool's models, so every layer may use it.
"""
