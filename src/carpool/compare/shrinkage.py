"""Where each group's hierarchical estimate lies between its pooled and unpooled estimates."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from carpool.errors import InputError

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["shrinkage_table", "TOLERANCE"]

#: Slack, in shrinkage units, allowed either side of [0, 1] when calling an estimate between.
TOLERANCE = 0.1


def _latent_means(fit: Fit) -> np.ndarray:
    """Posterior mean of each group's latent parameters, (G, P) (pooled: broadcast)."""
    params = fit.spec.parameters
    z = params.to_latent(fit.idata.posterior["theta"].values, axis=-1).mean(axis=(0, 1))
    if z.ndim == 1:
        z = np.broadcast_to(z, (fit.data.num_groups, len(params)))
    return z


def shrinkage_table(pooled: Fit, unpooled: Fit, hierarchical: Fit) -> pd.DataFrame:
    """One row per group and parameter: the three estimates and the shrinkage.

    Estimates are posterior means on the latent scale (log for log parameters), reported in
    natural units. ``shrinkage = (unpooled - hierarchical) / (unpooled - pooled)`` on the latent
    scale: 0 = the group stands alone, 1 = fully pooled; ``between`` says whether the
    hierarchical estimate lies between the other two, allowing :data:`TOLERANCE` either side
    (for well-identified groups all three fits agree to Monte Carlo error, and the ratio of
    two tiny differences is noise).
    """
    ids = list(hierarchical.group_ids)
    for f in (pooled, unpooled):
        if list(f.group_ids) != ids:
            raise InputError("the three fits must be of the same groups, in the same order")
    params = hierarchical.spec.parameters
    zp, zu, zh = (_latent_means(f) for f in (pooled, unpooled, hierarchical))
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = (zu - zh) / (zu - zp)
    rows = []
    for g, gid in enumerate(ids):
        for i, p in enumerate(params):
            rows.append({
                "group": gid, "parameter": p.name, "unit": p.unit,
                "pooled": float(p.to_natural(zp[g, i])),
                "unpooled": float(p.to_natural(zu[g, i])),
                "hierarchical": float(p.to_natural(zh[g, i])),
                "shrinkage": float(shrink[g, i]),
                "between": bool(-TOLERANCE <= shrink[g, i] <= 1.0 + TOLERANCE),
            })
    return pd.DataFrame(rows)
