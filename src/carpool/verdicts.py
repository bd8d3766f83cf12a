"""Every verdict carpool passes on a fit, in one place: the thresholds and the rules.

The warnings, ``carpool summary``, the report, ``compare`` and the figures all read these, so
a fit that passes one passes them all.

- R-hat at most :data:`RHAT_MAX` (Vehtari et al. 2021, "Rank-normalization, folding, and
  localization": 1.01).
- Bulk and tail ESS of at least :func:`ess_required` draws: 100 per chain and 400 in all
  (Vehtari et al. 2021 ask for 100 per chain; with fewer than four chains 400 in all keeps
  the Monte Carlo error of a 90% interval's ends small).
- No divergent transition after warm-up: any divergence means the sampler missed part of the
  posterior.
- PSIS-LOO is reliable where the Pareto k of every observation is at most
  :data:`PARETO_K_MAX` (Vehtari et al. 2024, "Pareto smoothed importance sampling": 0.7).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["RHAT_MAX", "ESS_MIN_TOTAL", "ESS_MIN_PER_CHAIN", "PARETO_K_MAX", "ess_required",
           "rhat_ok", "ess_ok", "pareto_k_ok", "converged"]

RHAT_MAX = 1.01
ESS_MIN_TOTAL = 400
ESS_MIN_PER_CHAIN = 100
PARETO_K_MAX = 0.7


def ess_required(chains: int) -> int:
    """The bulk / tail ESS a fit of ``chains`` chains needs."""
    return max(ESS_MIN_TOTAL, ESS_MIN_PER_CHAIN * int(chains))


def rhat_ok(rhat: float) -> bool | None:
    """R-hat at most :data:`RHAT_MAX`; ``None`` where it is not computable (one chain)."""
    return None if not math.isfinite(rhat) else bool(rhat <= RHAT_MAX)


def ess_ok(ess: float, chains: int) -> bool | None:
    """ESS of at least :func:`ess_required`; ``None`` where it is not computable."""
    return None if not math.isfinite(ess) else bool(ess >= ess_required(chains))


def pareto_k_ok(k: float) -> bool:
    """PSIS-LOO is reliable at an observation (or a fit's worst) with this Pareto k."""
    return bool(k <= PARETO_K_MAX)


def converged(diag: Mapping[str, Any]) -> bool:
    """Whether a fit's diagnostics (:func:`~carpool.inference.diagnostics.compute_diagnostics`)
    pass every check: no divergence, R-hat, bulk and tail ESS (where computable)."""
    chains = int(diag.get("chains", 4))
    return (int(diag.get("divergences", 0)) == 0
            and rhat_ok(float(diag.get("max_rhat", math.nan))) is not False
            and ess_ok(float(diag.get("min_ess_bulk", math.nan)), chains) is not False
            and ess_ok(float(diag.get("min_ess_tail", math.nan)), chains) is not False)
