"""What a saved fit carries to be checked when it is loaded: version and checksums.

:func:`stamp` writes into the posterior's attributes

- ``carpool_version``: the carpool that wrote the file;
- ``carpool_checksums``: JSON ``{"data": ..., "posterior": ..., "spec": ...}``, SHA-256 hex
  digests of the input data (observations, group index, covariates, levels, group names),
  of every posterior array, and of the saved specification / pooling configuration.

:func:`verify` recomputes them after loading: a mismatch (the file was edited or its bytes
corrupted after saving) raises :class:`FitFileError` with one line; a different carpool
version only warns. Arrays are hashed as little-endian float64 / int64 with their names and
shapes, so the digest does not depend on how netCDF stored them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from carpool.errors import InputError
from carpool.pooling.grouped import GroupedData

__all__ = ["FitFileError", "VersionWarning", "attrs_checksum", "data_checksum",
           "posterior_checksum", "stamp", "verify"]


class FitFileError(InputError):
    """A fit file whose content does not match its checksums."""


class VersionWarning(UserWarning):
    """A fit file written by another carpool version."""


def _update(h: Any, name: str, values: Any) -> None:
    a = np.asarray(values)
    if a.dtype.kind in "biu":
        a = a.astype("<i8")
    elif a.dtype.kind in "fc":
        a = a.astype("<f8")
    else:
        a = np.asarray([str(v) for v in a.ravel()], dtype=object)
        h.update(f"{name}:{a.shape}:".encode() + "\x1f".join(a).encode("utf-8"))
        return
    h.update(f"{name}:{a.shape}:".encode())
    h.update(np.ascontiguousarray(a).tobytes())


def data_checksum(data: GroupedData) -> str:
    """SHA-256 of the input data: ``y``, group index and names, covariates, levels."""
    h = hashlib.sha256()
    _update(h, "y", data.y)
    _update(h, "group_index", data.group_index)
    _update(h, "group_ids", np.asarray(data.group_ids, dtype=object))
    for name in sorted(data.covariates):
        _update(h, f"cov_{name}", data.covariates[name])
    if data.level_index is not None:
        _update(h, "level_index", data.level_index)
        _update(h, "level_ids", np.asarray(data.level_ids, dtype=object))
    return h.hexdigest()


#: The posterior attributes that state what was fitted (hashed as the ``spec`` digest).
SPEC_ATTRS = ("carpool_spec", "carpool_config", "carpool_groups", "carpool_levels")


def posterior_checksum(posterior: Any) -> str:
    """SHA-256 of every array of a posterior (an ``xarray.Dataset``), by sorted name."""
    h = hashlib.sha256()
    for name in sorted(posterior.data_vars):
        _update(h, name, posterior[name].values)
    return h.hexdigest()


def attrs_checksum(attrs: Mapping[str, Any], keys: tuple[str, ...] = SPEC_ATTRS) -> str:
    """SHA-256 of the attributes ``keys`` (missing ones hash as empty)."""
    return hashlib.sha256("\x1f".join(str(attrs.get(k, "")) for k in keys)
                          .encode("utf-8")).hexdigest()


def stamp(idata: Any, data: GroupedData | None, *,
          spec_attrs: tuple[str, ...] = SPEC_ATTRS) -> None:
    """Write the version and checksums into ``idata.posterior.attrs`` (in place);
    ``spec_attrs`` are the attributes that state what was fitted. ``data=None``: no data
    digest (a file that records its inputs' checksums itself, as separate fits do)."""
    from carpool import __version__

    post = idata.posterior
    post.attrs["carpool_version"] = __version__
    digests = {"posterior": posterior_checksum(post),
               "spec": attrs_checksum(post.attrs, spec_attrs)}
    if data is not None:
        digests = {"data": data_checksum(data), **digests}
    post.attrs["carpool_checksums"] = json.dumps(digests)


def verify(idata: Any, data: GroupedData | None, source: str, *,
           spec_attrs: tuple[str, ...] = SPEC_ATTRS) -> None:
    """Check a loaded fit against its stamp; ``source`` names the file in messages.

    ``data`` is the input data saved with the fit; ``None`` for a file that records only
    the input's checksum (separate fits), whose posterior and specification are checked.

    Raises
    ------
    FitFileError
        If a checksum does not match (edited or corrupted file).

    Warns
    -----
    VersionWarning
        If another carpool version wrote the file, or it carries no checksums.
    """
    from carpool import __version__

    attrs: Mapping[str, Any] = idata.posterior.attrs
    saved_version = attrs.get("carpool_version")
    if "carpool_checksums" not in attrs:
        warnings.warn(f"{source} carries no checksums (written before carpool 0.1.0 stamped "
                      "its files?); its content cannot be checked", VersionWarning,
                      stacklevel=3)
        return
    try:
        saved = json.loads(attrs["carpool_checksums"])
    except (TypeError, ValueError):
        raise FitFileError(f"{source}: its checksum attribute is unreadable; the file was "
                           "modified or corrupted") from None
    post = idata.posterior
    found = {"posterior": posterior_checksum(post), "spec": attrs_checksum(attrs, spec_attrs)}
    if data is not None:
        found["data"] = data_checksum(data)
    bad = [k for k in ("data", "spec", "posterior") if k in found and saved.get(k) != found[k]]
    if bad:
        what = {"data": "input data", "spec": "specification", "posterior": "posterior draws"}
        raise FitFileError(f"{source}: the {', '.join(what[k] for k in bad)} do not match the "
                           "checksum saved with the fit; the file was modified or corrupted "
                           "after it was written (refit, or restore the file)")
    if saved_version != __version__:
        warnings.warn(f"{source} was written by carpool {saved_version}, this is carpool "
                      f"{__version__}; results may differ from a fit made now",
                      VersionWarning, stacklevel=3)
