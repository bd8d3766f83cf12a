"""``DIR/manifest.json``: what a batch asked for and what became of each unit.

Written atomically (temporary file, then rename) while the batch runs and at its end, so a
reader never sees half a file. Layout (``format`` 1)::

    {"format": 1, "created": "2026-...Z", "updated": "2026-...Z",
     "request": {"model": "idm", "pooling": "unpooled", "by": "driver", ...},
     "summary": {"total": 200, "done": 198, "failed": 2, "pending": 0, "reused": 50},
     "units": {"d000": {"status": "done", "path": "fits/d000.nc", "attempts": 1,
                        "error": null, "errors": [], "reused": false,
                        "started": "...", "finished": "...", "wall_s": 4.1,
                        "compile_s": 3.2, "sampling_s": 0.8, "worker": "tcp://...",
                        "groups": 1, "observations": 199, "max_rhat": 1.002,
                        "divergences": 0}, ...}}

``status`` is ``"done"`` (a valid fit file is at ``path``; ``reused`` when an earlier run
wrote it), ``"failed"`` (``error`` is the last attempt's one-line error, ``errors`` every
attempt's) or ``"pending"`` (not finished: the batch was interrupted).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carpool.errors import InputError

__all__ = ["FORMAT", "MANIFEST_NAME", "Manifest", "STATUSES", "utc_now"]

FORMAT = 1
MANIFEST_NAME = "manifest.json"
STATUSES = ("done", "failed", "pending")


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z``, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Manifest:
    """A batch's request and one record per unit (see the module docstring)."""

    request: dict[str, Any]
    units: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = field(default_factory=utc_now)

    def summary(self) -> dict[str, int]:
        """Counts of units by status, and how many were reused from an earlier run."""
        counts = {s: 0 for s in STATUSES}
        for record in self.units.values():
            counts[record["status"]] += 1
        reused = sum(bool(r.get("reused")) for r in self.units.values())
        return {"total": len(self.units), **counts, "reused": reused}

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "created": self.created, "updated": utc_now(),
                "request": self.request, "summary": self.summary(), "units": self.units}

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest as JSON atomically."""
        from carpool.io import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1,
                                                  default=_json_default) + "\n")

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a manifest written by :meth:`write`."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
            return cls(request=raw["request"], units=raw["units"], created=raw["created"])
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise InputError(f"{path} is not a carpool batch manifest ({exc})") from None


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to the manifest")
