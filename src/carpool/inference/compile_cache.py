"""JAX's persistent compilation cache, switched on for carpool's samplers.

Compiling a NUTS program costs 5-12 s on a laptop CPU (the hierarchical IDM: about 8 s of
XLA compilation for 8 drivers), often more than sampling a small model. carpool's samplers
take the data as an argument (:attr:`carpool.pooling.model.BuiltModel.arrays`), so their
XLA computation depends only on the model's structure, the sampler settings and the
shapes of the data. JAX's persistent cache keeps each compiled program on disk, keyed by
that computation: a later fit with the same structure and shapes (another seed, a refit on
a held-out fold, the next point of a tau sweep, the next process) loads it instead of
compiling again.

Where the cache lives, in order:

1. ``jax_compilation_cache_dir`` if you set it yourself (``JAX_COMPILATION_CACHE_DIR``):
   carpool leaves JAX's configuration alone;
2. ``CARPOOL_COMPILATION_CACHE``: a directory, or ``off`` (also ``0``, ``false``, ``no``)
   to switch the cache off;
3. ``$XDG_CACHE_HOME/carpool/xla`` (default ``~/.cache/carpool/xla``).

The directory is created private to the user (mode 0700): JAX's documentation warns that a
compilation cache is trusted code, so never share one with users you do not trust. Its
size is bounded (:data:`MAX_BYTES`, least recently used entries go first) unless you set
``jax_compilation_cache_max_size`` yourself. Programs that compiled in under a second are
not stored (JAX's default threshold).
"""

from __future__ import annotations

import logging
from pathlib import Path

from carpool.io import cache_directory

__all__ = ["ENV", "MAX_BYTES", "cache_dir", "enable_compilation_cache"]

log = logging.getLogger(__name__)

#: Environment variable: a cache directory, or ``off`` to switch carpool's cache off.
ENV = "CARPOOL_COMPILATION_CACHE"
#: Size bound of carpool's default cache (bytes): 2 GiB, about 2,000 NUTS programs.
MAX_BYTES = 2 * 1024**3


def cache_dir() -> Path | None:
    """The directory carpool would use, or ``None`` where ``CARPOOL_COMPILATION_CACHE`` is off.

    Does not look at JAX's own setting (see :func:`enable_compilation_cache`).
    """
    return cache_directory(ENV, "xla")


def enable_compilation_cache() -> str | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir`; returns the directory.

    Idempotent and cheap, called before each sampler compiles. Returns JAX's own directory
    where you configured one, and ``None`` where the cache is off or its directory cannot
    be created (a read-only home: carpool then compiles as usual and logs why).
    """
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return str(current)
    path = cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        log.info("compilation cache off: cannot create %s (%s)", path, err)
        return None
    if jax.config.jax_compilation_cache_max_size == -1 and _has_filelock():
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    jax.config.update("jax_compilation_cache_dir", str(path))
    log.info("JAX compilation cache: %s", path)
    return str(path)


def _has_filelock() -> bool:
    """JAX bounds (and locks) the cache only with ``filelock`` installed (a dependency)."""
    try:
        import filelock  # noqa: F401
    except ImportError:
        return False
    return True
