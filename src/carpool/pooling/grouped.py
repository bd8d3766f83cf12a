"""Grouped data: observations, covariates and a group index, in two layouts.

The pooling engine evaluates a model's mean function on either

- the *flat* layout: arrays of shape ``(n,)`` with an integer group index per observation, so
  per-group parameters are gathered per observation (``theta[group_index]``); or
- the *padded* layout: arrays of shape ``(G, T_max)`` with a boolean mask, so per-group
  parameters broadcast as ``(G, 1)`` with no gather at all.

The padded layout saves the gather's scatter in each gradient (``benchmarks/gradient_cost.py``
compares the layouts); when group sizes are very unequal, padding wastes work, so
:func:`choose_layout` picks by the fill ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from carpool.errors import InputError

__all__ = ["GroupedData", "Padded", "choose_layout"]


@dataclass(frozen=True)
class Padded:
    """Padded arrays, each of shape (G, T_max); padding repeats a group's last observation."""

    y: np.ndarray
    covariates: dict[str, np.ndarray]
    mask: np.ndarray


@dataclass(frozen=True)
class GroupedData:
    """Observations with a group index.

    Attributes
    ----------
    y
        Observed outcomes, shape (n,).
    group_index
        Integer group of each observation in ``0..G-1``, shape (n,).
    group_ids
        Names of the groups as written in the data, length G.
    covariates
        Covariate arrays by name, each shape (n,).
    level_index
        Optional level (e.g. vehicle class) of each *group*, shape (G,), in ``0..K-1``.
    level_ids
        Names of the levels, length K (empty without levels).
    """

    y: np.ndarray
    group_index: np.ndarray
    group_ids: tuple[str, ...]
    covariates: dict[str, np.ndarray] = field(default_factory=dict)
    level_index: np.ndarray | None = None
    level_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        y = np.asarray(self.y, dtype=float)
        gi = np.asarray(self.group_index)
        n = y.shape[0]
        if y.ndim != 1:
            raise InputError(f"y must be one-dimensional, got shape {y.shape}")
        if n == 0:
            raise InputError("no observations")
        if gi.shape != (n,):
            raise InputError(f"group_index has shape {gi.shape}, expected ({n},)")
        if not np.issubdtype(gi.dtype, np.integer):
            raise InputError("group_index must be integers")
        G = len(self.group_ids)
        bad = np.flatnonzero((gi < 0) | (gi >= G))
        if bad.size:
            raise InputError(
                f"group index out of range at observation {bad[0]}: {gi[bad[0]]} "
                f"(there are {G} groups, valid 0..{G - 1})"
            )
        missing = sorted(set(range(G)) - set(np.unique(gi).tolist()))
        if missing:
            raise InputError(f"group {self.group_ids[missing[0]]!r} has no observations")
        _check_finite("y", y)
        covs = {}
        for name, values in self.covariates.items():
            v = np.asarray(values, dtype=float)
            if v.shape != (n,):
                raise InputError(f"covariate {name!r} has shape {v.shape}, expected ({n},)")
            _check_finite(name, v)
            covs[name] = v
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "group_index", gi.astype(np.int32))
        object.__setattr__(self, "group_ids", tuple(str(g) for g in self.group_ids))
        object.__setattr__(self, "covariates", covs)
        if self.level_index is not None:
            li = np.asarray(self.level_index).astype(np.int32)
            if li.shape != (G,):
                raise InputError(f"level_index has shape {li.shape}, expected ({G},)")
            K = len(self.level_ids)
            if K == 0 or li.min() < 0 or li.max() >= K:
                raise InputError(f"level index out of range (there are {K} levels)")
            object.__setattr__(self, "level_index", li)
            object.__setattr__(self, "level_ids", tuple(str(k) for k in self.level_ids))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        y: str,
        group: str,
        covariates: Sequence[str] = (),
        level: str | None = None,
    ) -> GroupedData:
        """Build from a long table, one row per observation.

        Groups keep their order of first appearance. ``level`` names a column constant
        within each group (e.g. vehicle class).
        """
        needed = [y, group, *covariates] + ([level] if level else [])
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise InputError(
                f"missing column(s) {missing}; the table has {list(df.columns)}"
            )
        for c in [y, *covariates]:
            if not pd.api.types.is_numeric_dtype(df[c]):
                raise InputError(f"column {c!r} must be numeric, got dtype {df[c].dtype}")
            bad = np.flatnonzero(~np.isfinite(df[c].to_numpy(dtype=float)))
            if bad.size:
                raise InputError(
                    f"column {c!r} has a non-finite value at row {bad[0]} "
                    f"(group {df[group].iloc[bad[0]]!r})"
                )
        codes, uniques = pd.factorize(df[group].astype(str), sort=False)
        level_index = None
        level_ids: tuple[str, ...] = ()
        if level:
            per_group = df.groupby(codes, sort=True)[level].agg(lambda s: s.astype(str).unique())
            varying = [uniques[i] for i, v in per_group.items() if len(v) != 1]
            if varying:
                raise InputError(f"level column {level!r} is not constant within group "
                                 f"{varying[0]!r}")
            lv = [v[0] for v in per_group.to_numpy()]
            lcodes, luniques = pd.factorize(pd.Series(lv), sort=True)
            level_index, level_ids = lcodes, tuple(luniques)
        return cls(
            y=df[y].to_numpy(dtype=float),
            group_index=codes,
            group_ids=tuple(uniques),
            covariates={c: df[c].to_numpy(dtype=float) for c in covariates},
            level_index=level_index,
            level_ids=level_ids,
        )

    # ------------------------------------------------------------------ properties
    @property
    def num_obs(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_groups(self) -> int:
        return len(self.group_ids)

    @property
    def num_levels(self) -> int:
        return len(self.level_ids)

    @property
    def group_sizes(self) -> np.ndarray:
        """Number of observations per group, shape (G,)."""
        return np.bincount(self.group_index, minlength=self.num_groups)

    def positions(self) -> np.ndarray:
        """Position of each observation within its group's series (0-based), shape (n,):
        its column in the :meth:`padded` layout (observations keep their stored order)."""
        order = np.argsort(self.group_index, kind="stable")
        sizes = self.group_sizes
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        pos = np.empty(self.num_obs, dtype=np.int64)
        pos[order] = np.arange(self.num_obs) - starts[self.group_index[order]]
        return pos

    def padded(self) -> Padded:
        """The padded (G, T_max) layout; padding cells repeat the group's last observation."""
        G, sizes = self.num_groups, self.group_sizes
        T = int(sizes.max())
        order = np.argsort(self.group_index, kind="stable")
        gi = self.group_index[order]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        pos = np.arange(self.num_obs) - starts[gi]
        mask = np.zeros((G, T), dtype=bool)
        mask[gi, pos] = True
        # index of the source observation for every cell: its own, or the group's last one
        src = np.empty((G, T), dtype=np.int64)
        last = starts + sizes - 1
        src[:] = order[last][:, None]
        src[gi, pos] = order
        return Padded(
            y=self.y[src],
            covariates={k: v[src] for k, v in self.covariates.items()},
            mask=mask,
        )

    def subset(self, keep: np.ndarray) -> GroupedData:
        """Observations where the boolean ``keep`` (n,) is true, with every group kept."""
        keep = np.asarray(keep, dtype=bool)
        return GroupedData(self.y[keep], self.group_index[keep], self.group_ids,
                           {k: v[keep] for k, v in self.covariates.items()},
                           self.level_index, self.level_ids)

    def to_dict(self) -> dict[str, Any]:
        return {"num_obs": self.num_obs, "num_groups": self.num_groups,
                "covariates": list(self.covariates)}


def choose_layout(data: GroupedData, layout: str = "auto") -> str:
    """Pick ``"padded"`` or ``"flat"``.

    ``auto`` pads when at least half the padded cells hold real observations (the padded
    layout's saving per gradient, ~1.6x measured, outweighs at most 2x wasted cells).
    """
    if layout in ("padded", "flat"):
        return layout
    if layout != "auto":
        raise InputError(f"unknown layout {layout!r}; choose 'auto', 'padded' or 'flat'")
    fill = data.num_obs / (data.num_groups * data.group_sizes.max())
    return "padded" if fill >= 0.5 else "flat"


def _check_finite(name: str, v: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise InputError(f"{name} has a non-finite value (NaN or inf) at observation {bad[0]}")
