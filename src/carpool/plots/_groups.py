"""Resolve a user's group id against a fit (shared by the per-group figures)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from carpool.errors import InputError

if TYPE_CHECKING:
    from carpool.inference.fit import Fit


def group_position(fit: Fit, group: str | None) -> tuple[str, int]:
    """``(group id, its position)``; ``None`` is allowed for a one-group fit.

    Raises ``ValueError`` naming the group and the fit's groups for an unknown one.
    """
    ids = list(fit.group_ids)
    if group is None and len(ids) == 1:
        group = ids[0]
    if group is None or str(group) not in ids:
        shown = ", ".join(repr(g) for g in ids[:10]) + (", ..." if len(ids) > 10 else "")
        raise InputError(f"unknown {fit.spec.group_dim} {group!r}; this fit has "
                         f"{len(ids)}: {shown}")
    return str(group), ids.index(str(group))
