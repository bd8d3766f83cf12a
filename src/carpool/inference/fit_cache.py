"""A cache of finished fits, so that a repeated command costs a file read instead of a fit.

A NUTS fit is a deterministic function of its data, model, pooling configuration, sampler
settings (the seed included), data layout and carpool's code (a warm-started held-out refit
also on its held-out rows and its start, :mod:`carpool.inference.warm`). :func:`cached_fit` keys
each fit on a SHA-256 of all of them and keeps the result as a netCDF file (the format of
:meth:`~carpool.inference.fit.Fit.save`, checksums included; nothing is pickled). Running
``carpool compare`` or ``carpool report`` twice on the same data refits nothing the second
time: the three fits and every held-out refit come from the cache.

Only fits of registered models are cached (a model rebuilt by name from its options has the
same functions; a hand-made :class:`~carpool.pooling.spec.ModelSpec` may not). Where the cache
lives, in order:

1. ``CARPOOL_FIT_CACHE``: a directory, or ``off`` (also ``0``, ``false``, ``no``) to switch
   the cache off;
2. ``$XDG_CACHE_HOME/carpool/fits`` (default ``~/.cache/carpool/fits``).

Its size is bounded (:data:`MAX_BYTES`): the least recently used fits go first.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from carpool.errors import InputError
from carpool.io import cache_directory
from carpool.pooling.grouped import GroupedData
from carpool.pooling.spec import ModelSpec, PoolingConfig

__all__ = ["ENV", "MAX_BYTES", "cache_dir", "cached_fit", "fit_key"]

log = logging.getLogger(__name__)

#: Environment variable: a cache directory, or ``off`` to switch the fit cache off.
ENV = "CARPOOL_FIT_CACHE"
#: Size bound of the cache (bytes): 2 GiB, least recently used fits removed first.
MAX_BYTES = 2 * 1024**3


def cache_dir() -> Path | None:
    """The fit cache's directory, or ``None`` where ``CARPOOL_FIT_CACHE`` is off."""
    return cache_directory(ENV, "fits")


def _registered(spec: ModelSpec) -> bool:
    """Whether ``spec`` is what its registered name builds from its options."""
    from carpool.models.registry import get_spec

    try:
        rebuilt = get_spec(spec.name, **dict(spec.options))
    except (InputError, TypeError):
        return False
    return (_same_function(rebuilt.mean_fn, spec.mean_fn) and type(rebuilt.likelihood) is
            type(spec.likelihood) and rebuilt.to_dict() == spec.to_dict())


def _same_function(a: Any, b: Any) -> bool:
    """The same function, or partial applications of one function to equal arguments."""
    if isinstance(a, functools.partial) and isinstance(b, functools.partial):
        return (_same_function(a.func, b.func) and a.args == b.args
                and a.keywords == b.keywords)
    return a is b


@functools.cache
def code_digest() -> str:
    """SHA-256 of carpool's own source files: a changed carpool never reads older fits."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode("utf-8"))
        h.update(p.read_bytes())
    return h.hexdigest()


def fit_key(spec: ModelSpec, data: GroupedData, config: PoolingConfig, settings: Any,
            layout: str, extra: Any = None) -> str:
    """SHA-256 hex key of a fit: carpool's code, data, spec, pooling, sampler settings,
    layout and ``extra`` (JSON-able: what else the fit depends on, e.g. a warm-started
    refit's held-out rows and start)."""
    from carpool.inference.integrity import data_checksum

    record = {"code": code_digest(), "data": data_checksum(data), "spec": spec.to_dict(),
              "config": config.to_dict(), "settings": settings.to_dict(), "layout": layout}
    if extra is not None:
        record["extra"] = extra
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cached_fit(spec: ModelSpec, data: GroupedData, config: PoolingConfig, settings: Any,
               layout: str, run: Callable[[], Any], extra: Any = None) -> Any:
    """The cached fit of this spec, data, configuration and settings (and ``extra``, see
    :func:`fit_key`), else ``run()``'s (stored in the cache). A cache that cannot be read
    or written is skipped with a log line: the cache never makes a fit fail."""
    from carpool.inference.fit import load

    where = cache_dir()
    if where is None or not _registered(spec):
        return run()
    path = where / f"{fit_key(spec, data, config, settings, layout, extra)}.nc"
    if path.exists():
        try:
            fit = load(path, spec=spec)
            os.utime(path)  # recently used
            log.info("fit read from the cache: %s", path)
            return fit
        except (InputError, OSError, ValueError) as exc:
            log.warning("fit cache entry %s unreadable (%s); fitting", path, exc)
    fit = run()
    try:
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
        fit.save(path)
        _trim(where)
    except OSError as exc:
        log.warning("fit cache %s not writable (%s)", where, exc)
    return fit


def _trim(where: Path) -> None:
    """Remove the least recently used fits beyond :data:`MAX_BYTES`."""
    files = sorted(where.glob("*.nc"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for p in files:
        total += p.stat().st_size
        if total > MAX_BYTES:
            p.unlink(missing_ok=True)
