"""Result containers of the comparison features (plain pandas tables, JSON-ready).

These are the contracts between :mod:`carpool.compare` (which computes them),
:mod:`carpool.plots` and :mod:`carpool.report` (which draw them) and the CLI (which prints
them).
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from carpool.errors import InputError

__all__ = ["Comparison", "SweepResult", "PriorSensitivity", "MODE_COLUMNS"]

#: Tag of a saved comparison (:meth:`Comparison.save`).
COMPARISON_FORMAT = "carpool-comparison-1"

#: Columns of :attr:`Comparison.table` (one row per pooling mode, index = mode).
MODE_COLUMNS = (
    "elpd_loo",        # PSIS-LOO expected log predictive density (sum over observations)
    "se",              # its standard error
    "p_loo",           # effective number of parameters
    "elpd_diff",       # elpd_loo of the best mode minus this one's (>= 0)
    "dse",             # standard error of that difference
    "max_pareto_k",    # worst Pareto k of the PSIS fit
    "num_high_k",      # observations with Pareto k > 0.7 (LOO unreliable there)
    "lfo_elpd",        # leave-future-out: log predictive density of the held-out last 20%
    "lfo_rmse_speed",  # ... and RMSE of the posterior-predictive mean (of y: next speed, m/s)
    "ldo_elpd",        # leave-drivers-out: log density of held-out groups, NaN for unpooled
    "ldo_rmse_speed",  # ... and RMSE, NaN for unpooled (it cannot predict a new group)
    "rank",            # 1 = recommended, then by the scores
)


def _num(x: Any) -> float | None:
    """JSON-safe float: NaN / inf / None -> None."""
    if x is None:
        return None
    x = float(x)
    return None if not math.isfinite(x) else x


@dataclass(frozen=True)
class Comparison:
    """The three pooling modes side by side, scored, with a recommendation.

    Attributes
    ----------
    table
        One row per pooling mode (index: ``pooled``, ``unpooled``, ``hierarchical``), columns
        :data:`MODE_COLUMNS`; NaN where a score was not computed or does not exist.
    recommendation
        ``{"mode": ..., "reason": ...}``: the mode the data support and why, in words.
    pooling_factors
        One row per group and parameter of the hierarchical fit: ``group``, ``parameter``,
        ``unit``, ``num_obs``, ``pooling_factor`` (0 = the group stands alone, 1 = fully
        pooled), ``moved`` (the empirical fraction of the way the posterior mean moved from the
        unpooled estimate to the population mean).
    population
        The population scales (tau, latent scale) with intervals: ``parameter``, ``mean``,
        ``lo``, ``hi`` (94% HDI).
    warnings
        Messages the user should read (high Pareto k, unconverged fits).
    refits
        How the held-out scores were computed, in words (warm-started or from scratch).
    """

    table: pd.DataFrame
    recommendation: dict[str, str]
    pooling_factors: pd.DataFrame = field(default_factory=pd.DataFrame)
    population: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: tuple[str, ...] = ()
    refits: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The ``carpool compare --json`` contract.

        ``{"modes": {mode: {"elpd_loo", "se", "lfo_rmse_speed", "ldo_rmse_speed", ...}},
        "recommendation": {"mode", "reason", "purpose"}}``; scores that do not exist are
        ``null``.
        """
        modes = {
            mode: {col: (_num(row[col]) if col != "rank" else int(row[col]))
                   for col in MODE_COLUMNS if col in row.index}
            for mode, row in self.table.iterrows()
        }
        return {"modes": modes, "recommendation": dict(self.recommendation),
                "warnings": list(self.warnings), "refits": self.refits}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the whole comparison as JSON (atomically), for :meth:`load`: what
        ``carpool compare --out DIR`` leaves for ``carpool report --from DIR``."""
        from carpool.io import atomic_write_text

        def frame(df: pd.DataFrame) -> dict[str, Any]:
            return json.loads(df.to_json(orient="split", index=True))

        record = {"format": COMPARISON_FORMAT, "table": frame(self.table),
                  "recommendation": dict(self.recommendation),
                  "pooling_factors": frame(self.pooling_factors),
                  "population": frame(self.population), "warnings": list(self.warnings),
                  "refits": self.refits}
        return atomic_write_text(path, json.dumps(record, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Comparison:
        """Read a comparison written by :meth:`save`."""
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not a readable comparison file ({e})") from e
        if not isinstance(record, dict) or record.get("format") != COMPARISON_FORMAT:
            raise InputError(f"{path}: not a carpool comparison file")

        def frame(d: dict[str, Any]) -> pd.DataFrame:
            return pd.read_json(io.StringIO(json.dumps(d)), orient="split", dtype=False)

        table = frame(record["table"])
        table.index.name = "mode"  # as compare names it (the split JSON drops the name)
        return cls(table, dict(record["recommendation"]),
                   frame(record["pooling_factors"]), frame(record["population"]),
                   tuple(record["warnings"]), str(record.get("refits", "")))


@dataclass(frozen=True)
class SweepResult:
    """The pooling dial: hierarchical fits with tau fixed on a grid.

    Attributes
    ----------
    grid
        The fixed population scales (latent scale: for a log parameter, sd of log theta), (K,).
    estimates
        One row per grid point, group and parameter: ``tau``, ``group``, ``parameter``,
        ``unit``, ``mean``, ``lo``, ``hi`` (posterior mean and 94% HDI, natural units).
    scores
        One row per grid point: ``tau``, ``elpd_loo``, ``se`` (PSIS-LOO, an estimate of the
        held-out log predictive density) and ``max_pareto_k``.
    learned_tau
        The learned tau's posterior from a hierarchical fit of the same data, one row per
        parameter: ``parameter``, ``mean``, ``lo``, ``hi`` (latent scale); empty if not given.
    ends
        The pooled and unpooled estimates, one row per group and parameter: ``group``,
        ``parameter``, ``unit``, ``pooled``, ``unpooled`` (natural units); empty if not given.
    """

    grid: np.ndarray
    estimates: pd.DataFrame
    scores: pd.DataFrame
    learned_tau: pd.DataFrame = field(default_factory=pd.DataFrame)
    ends: pd.DataFrame = field(default_factory=pd.DataFrame)

    def shrinkage_at(self, k: int) -> pd.DataFrame:
        """A :func:`~carpool.compare.shrinkage_table`-shaped table for grid point ``k``.

        Columns ``group``, ``parameter``, ``unit``, ``pooled``, ``unpooled``,
        ``hierarchical`` (the estimate at ``grid[k]``), ready for
        :func:`carpool.plots.shrinkage.plot_shrinkage`. Needs :attr:`ends`.
        """
        if self.ends.empty:
            raise InputError("the sweep has no pooled / unpooled end points")
        at = self.estimates[np.isclose(self.estimates["tau"], self.grid[k])]
        t = self.ends.merge(at[["group", "parameter", "mean"]], on=["group", "parameter"])
        return t.rename(columns={"mean": "hierarchical"})


@dataclass(frozen=True)
class PriorSensitivity:
    """How far each group's estimate moves between weak and informative hyperpriors.

    Attributes
    ----------
    table
        One row per group and parameter: ``group``, ``parameter``, ``unit``, ``num_obs``,
        ``weak``, ``informative`` (posterior means, natural units), ``shift`` (difference of
        the latent posterior means in units of the weak fit's posterior sd).
    prior_predictive
        Draws of the observation (``y``, e.g. next speed in m/s) from the prior, shape
        (num_prior_samples, n) under each hyperprior setting: ``{"weak": ..., "informative": ...}``.
    observed
        The observed ``y`` (n,), for comparison with the prior predictive draws.
    prior_predictive_gap, observed_gap
        Car-following only: the next gap (m) one step from each observed state implied by
        each prior predictive speed draw, ``gap + dt (leader_speed - (speed + y) / 2)``,
        (num_prior_samples, n) per setting, and the same from the observed next speed (n,).
    """

    table: pd.DataFrame
    prior_predictive: dict[str, np.ndarray] = field(default_factory=dict)
    observed: np.ndarray | None = None
    prior_predictive_gap: dict[str, np.ndarray] = field(default_factory=dict)
    observed_gap: np.ndarray | None = None
