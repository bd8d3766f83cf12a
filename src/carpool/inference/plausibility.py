"""Is each group's estimate physically meaningful, and do its own data identify it?

A model spec may state ``physical_ranges`` (for the IDM
:data:`~carpool.carfollowing.IDM_PHYSICAL_RANGES`): natural-unit bounds outside which a
value is not that of a real driver. :func:`plausibility` places every group's posterior mean
against those bounds and says, per group and parameter, how much the group's own data
narrowed its prior: the *contraction* ``1 - (posterior sd / prior sd)^2`` on the latent
scale (Schad, Betancourt & Vasishth 2021), where the prior of a group is the parameter's
latent prior (pooled, unpooled) or the learned population (hierarchical: the posterior mean
of tau). A value outside its range with a contraction near 1 is what the data say under this
model (the model strains to fit that driver); one with a contraction below
:data:`~carpool.inference.diagnostics.CONTRACTION_MIN` restates the prior or the population,
and the data cannot tell.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from carpool.inference.diagnostics import CONTRACTION_MIN

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["PlausibilityWarning", "count_outside", "implausible_message", "plausibility",
           "warn_implausible"]


class PlausibilityWarning(UserWarning):
    """Some groups' estimates lie outside the model's physical ranges."""


def _latent_sd(fit: Fit, theta: np.ndarray) -> np.ndarray:
    """Posterior sd of ``theta`` (chain, draw, ..., P) on the latent scale: (..., P)."""
    z = fit.spec.parameters.to_latent(theta, axis=-1)
    return z.reshape((-1,) + z.shape[2:]).std(axis=0)


def plausibility(fit: Fit) -> pd.DataFrame:
    """Every group's estimate against the spec's physical ranges, with its identification.

    Parameters
    ----------
    fit
        Any fit; a pooled fit gives one row per parameter (``group`` is ``None``).

    Returns
    -------
    pandas.DataFrame
        One row per group and parameter that has a physical range: ``group``,
        ``parameter``, ``unit``, ``mean`` (posterior mean, natural units), ``low``, ``high``
        (the range), ``position`` (``"below"``, ``"inside"`` or ``"above"``),
        ``contraction`` (see the module docstring), ``identified``
        (contraction >= ``CONTRACTION_MIN``) and ``reason`` (one line; empty inside the
        range). Empty when the spec states no ranges.
    """
    ranges = dict(fit.spec.physical_ranges)
    params = fit.spec.parameters
    theta = fit.idata.posterior["theta"].values  # (C, S, [G,] P)
    mean = theta.mean(axis=(0, 1))
    post_sd = _latent_sd(fit, theta)
    if fit.pooling == "hierarchical":
        prior_sd = fit.idata.posterior["tau"].values.mean(axis=(0, 1))
    else:
        prior_sd = params.latent_prior_arrays()[1]
    contraction = 1.0 - (post_sd / prior_sd) ** 2
    groups: list[object] = [None] if fit.pooling == "pooled" else list(fit.group_ids)
    if fit.pooling == "pooled":
        mean, contraction = mean[None], contraction[None]
    rows = []
    for g, group in enumerate(groups):
        for i, p in enumerate(params):
            if p.name not in ranges:
                continue
            low, high = ranges[p.name]
            value, c = float(mean[g, i]), float(contraction[g, i])
            position = "below" if value < low else "above" if value > high else "inside"
            identified = c >= CONTRACTION_MIN
            reason = ""
            if position != "inside":
                source = ("the population" if fit.pooling == "hierarchical" else "the prior")
                reason = (f"{p.name} {value:.3g} {p.unit} is {position} the physical range "
                          f"{low:g}-{high:g}: " + (
                              f"its data identify it (contraction {c:.2f}), so the model "
                              "strains to fit this driver" if identified else
                              f"weakly identified (contraction {np.floor(c * 100) / 100:.2f} < "
                              f"{CONTRACTION_MIN}): "
                              f"the value restates {source}, not the data"))
            rows.append({"group": group, "parameter": p.name, "unit": p.unit, "mean": value,
                         "low": low, "high": high, "position": position, "contraction": c,
                         "identified": identified, "reason": reason})
    columns = ["group", "parameter", "unit", "mean", "low", "high", "position",
               "contraction", "identified", "reason"]
    return pd.DataFrame(rows, columns=columns)


def count_outside(table: pd.DataFrame) -> tuple[int, int]:
    """Groups of a :func:`plausibility` table with an estimate outside the ranges, and of
    those, the groups with a weakly identified one: ``(outside, weak)``."""
    outside = table[table["position"] != "inside"]
    weak = outside.loc[~outside["identified"].astype(bool), "group"]
    return int(outside["group"].nunique(dropna=False)), int(weak.nunique(dropna=False))


def implausible_message(fit: Fit, table: pd.DataFrame | None = None) -> str | None:
    """One line on the groups outside the physical ranges, or ``None`` when there are none."""
    table = plausibility(fit) if table is None else table
    outside = table[table["position"] != "inside"]
    if outside.empty:
        return None
    word = fit.spec.group_dim
    if fit.pooling == "pooled":
        what = "pooled fit: the shared estimate lies"
    else:
        count = outside["group"].nunique()
        what = (f"{fit.pooling} fit: {count} of {len(fit.group_ids)} {word}s "
                + ("lies" if count == 1 else "lie"))
    by = (outside.groupby(["parameter", "position"], sort=False)
          .agg(n=("mean", "size"), weak=("identified", lambda s: int((~s).sum())),
               unit=("unit", "first"), low=("low", "first"), high=("high", "first")))
    parts = []
    for (name, position), r in by.iterrows():
        bound = r["high"] if position == "above" else r["low"]
        weak = f", {r['weak']} weakly identified" if r["weak"] else ""
        parts.append(f"{name} {position} {bound:g} {r['unit']} ({r['n']}{weak})")
    return (f"{what} outside the physical ranges of {fit.spec.name}: "
            + "; ".join(parts) + "; see carpool.plausibility(fit) for each one's reason")


def warn_implausible(fit: Fit) -> str | None:
    """Emit a :class:`PlausibilityWarning` when some groups lie outside the ranges."""
    message = implausible_message(fit)
    if message is not None:
        warnings.warn(message, PlausibilityWarning, stacklevel=4)
    return message
