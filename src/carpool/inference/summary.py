"""Tidy summaries of a fit in natural units (pandas)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from carpool.inference.fit import Fit

__all__ = ["summarise", "stats_table", "summary_dict"]


def stats_table(draws: np.ndarray, hdi_prob: float = 0.94) -> dict[str, np.ndarray]:
    """Mean, sd, HDI, bulk ESS and R-hat of ``draws`` shaped (chain, draw, *rest).

    Each output has shape ``rest``.
    """
    import arviz as az
    import xarray as xr

    draws = np.asarray(draws, dtype=float)
    rest = draws.shape[2:]
    flat = draws.reshape(draws.shape[:2] + (-1,))
    ds = xr.Dataset({"x": (("chain", "draw", "element"), flat)})
    hdi = az.hdi(ds, hdi_prob=hdi_prob)["x"].transpose("element", "hdi").values
    ess = az.ess(ds, method="bulk")["x"].values
    rhat = (az.rhat(ds)["x"].values if draws.shape[0] > 1
            else np.full(flat.shape[-1], np.nan))
    lo_hi = hdi
    return {
        "mean": draws.mean(axis=(0, 1)),
        "sd": draws.std(axis=(0, 1), ddof=1),
        "lo": lo_hi[:, 0].reshape(rest),
        "hi": lo_hi[:, 1].reshape(rest),
        "ess_bulk": ess.reshape(rest),
        "r_hat": rhat.reshape(rest),
    }


def _rows(kind: str, group: Any, names: list[str], units: list[str],
          st: dict[str, np.ndarray], lo: str, hi: str) -> list[dict[str, Any]]:
    return [{"kind": kind, "group": group, "parameter": n, "unit": u,
             "mean": st["mean"][i], "sd": st["sd"][i], lo: st["lo"][i], hi: st["hi"][i],
             "ess_bulk": st["ess_bulk"][i], "r_hat": st["r_hat"][i]}
            for i, (n, u) in enumerate(zip(names, units, strict=True))]


def summarise(fit: Fit, hdi_prob: float = 0.94) -> pd.DataFrame:
    """See :meth:`carpool.inference.fit.Fit.summary`."""
    post = fit.idata.posterior
    params = fit.spec.parameters
    names, units = params.names, [p.unit for p in params]
    lo = f"hdi_{100 * (1 - hdi_prob) / 2:g}%"
    hi = f"hdi_{100 * (1 + hdi_prob) / 2:g}%"
    rows: list[dict[str, Any]] = []
    theta = post["theta"].values
    if fit.pooling == "pooled":
        rows += _rows("population", None, names, units, stats_table(theta, hdi_prob), lo, hi)
    elif fit.pooling == "unpooled":
        # across-group centre per draw, on the latent scale, back to natural units
        centre = params.to_natural(params.to_latent(theta, axis=-1).mean(axis=2), axis=-1)
        rows += _rows("population", None, names, units, stats_table(centre, hdi_prob), lo, hi)
    else:
        rows += _rows("population", None, names, units,
                      stats_table(post["population"].values, hdi_prob), lo, hi)
        rows += _rows("population_scale", None, names, ["latent"] * len(names),
                      stats_table(post["tau"].values, hdi_prob), lo, hi)
        if "level_population" in post:
            lp = post["level_population"]
            st = stats_table(lp.values, hdi_prob)
            for k, level in enumerate(lp.coords["level"].values):
                rows += _rows("level", str(level), names, units,
                              {key: v[k] for key, v in st.items()}, lo, hi)
    if fit.spec.common is not None:
        common = fit.spec.common
        rows += _rows("common", None, common.names, [p.unit for p in common],
                      stats_table(post["beta"].values, hdi_prob), lo, hi)
    rows += _factor_rows(fit, hdi_prob, lo, hi)
    if fit.pooling != "pooled":
        st = stats_table(theta, hdi_prob)
        for g, gid in enumerate(fit.group_ids):
            rows += _rows("group", gid, names, units, {k: v[g] for k, v in st.items()}, lo, hi)
    noise = list(fit.spec.likelihood.noise_priors())
    if noise:
        st = stats_table(np.stack([post[n].values for n in noise], axis=-1), hdi_prob)
        rows += _rows("noise", None, noise, [""] * len(noise), st, lo, hi)
    rows += _residual_rows(fit, hdi_prob, lo, hi)
    table = pd.DataFrame(rows)
    if fit.is_approximate:  # independent draws of an approximation: no R-hat / ESS
        table[["ess_bulk", "r_hat"]] = np.nan
    return table


def _factor_rows(fit: Fit, hdi_prob: float, lo: str, hi: str) -> list[dict[str, Any]]:
    """Rows of the scales of the spec's other grouping factors (kind ``factor_scale``,
    group = the factor's name), where it has any."""
    rows: list[dict[str, Any]] = []
    post = fit.idata.posterior
    for factor in fit.spec.factors:
        name = f"tau_{factor.name}"
        if name in post:
            rows += _rows("factor_scale", factor.name, list(factor.terms),
                          [""] * len(factor.terms), stats_table(post[name].values, hdi_prob),
                          lo, hi)
    return rows


def _residual_rows(fit: Fit, hdi_prob: float, lo: str, hi: str) -> list[dict[str, Any]]:
    """Rows of the residual process's parameters (kind ``residual``, ...): the process's
    :meth:`~carpool.residuals.ResidualProcess.summary_blocks`, e.g. AR coefficients per
    level or group, or the GP's length scale (s) and signal scale."""
    rows: list[dict[str, Any]] = []
    blocks = fit.spec.residual.summary_blocks(fit.residual_variables(), group_ids=fit.group_ids,
                                              level_ids=fit.data.level_ids)
    for kind, labels, names, units, draws in blocks:
        st = stats_table(draws, hdi_prob)
        if labels is None:
            rows += _rows(kind, None, names, units, st, lo, hi)
            continue
        for g, label in enumerate(labels):
            rows += _rows(kind, label, names, units, {k: v[g] for k, v in st.items()}, lo, hi)
    return rows


def summary_dict(fit: Fit, hdi_prob: float = 0.94) -> dict[str, Any]:
    """The JSON contract of ``carpool summary --json`` (natural units).

    Keys: ``model``, ``pooling``, ``population`` (per parameter: mean, sd, hdi bounds; the
    shared values for a pooled fit, the across-group centre for an unpooled fit),
    ``population_scale`` (hierarchical only), ``common`` (a spec's common parameters, where
    it has any), ``levels`` (with levels), ``groups`` (group id
    -> parameter -> stats; empty for a pooled fit), ``noise``, ``diagnostics`` (max_rhat,
    min_ess_bulk, min_ess_tail, divergences, ...), ``timing`` (compile_s, sampling_s,
    total_s), ``centring``; where the model states physical ranges, ``physical_ranges``
    (parameter -> [low, high]) and ``outside_physical_ranges`` (one entry per group and
    parameter outside them: group, parameter, mean, contraction, identified, reason; see
    :func:`carpool.inference.plausibility.plausibility`).
    """
    from carpool.inference.plausibility import plausibility

    table = summarise(fit, hdi_prob)
    stat_cols = [c for c in table.columns if c in ("mean", "sd") or c.startswith("hdi_")]

    def block(rows: pd.DataFrame) -> dict[str, dict[str, float]]:
        return {r["parameter"]: {c: float(r[c]) for c in stat_cols}
                for _, r in rows.iterrows()}

    out: dict[str, Any] = {
        "model": fit.spec.name,
        "pooling": fit.pooling,
        "units": {p.name: p.unit for p in fit.spec.parameters},
        "population": block(table[table.kind == "population"]),
        "groups": {str(g): block(rows) for g, rows in
                   table[table.kind == "group"].groupby("group", sort=False)},
        "noise": block(table[table.kind == "noise"]),
        **({"common": block(table[table.kind == "common"])}
           if fit.spec.common is not None else {}),
        "residual": fit.spec.residual.to_dict(),
    }
    res = table[table.kind == "residual"]
    if len(res):
        out["residual_parameters"] = (
            block(res) if res["group"].isna().all()
            else {str(g): block(rows) for g, rows in res.groupby("group", sort=False)})
    if fit.pooling == "hierarchical":
        out["population_scale"] = block(table[table.kind == "population_scale"])
    levels = table[table.kind == "level"]
    if len(levels):
        out["levels"] = {str(g): block(rows) for g, rows in levels.groupby("group", sort=False)}
    diag = fit.diagnostics
    out["diagnostics"] = {k: (v if isinstance(v, str) else float(v) if isinstance(v, float)
                              else int(v)) for k, v in diag.items()}
    out["timing"] = fit.timing
    out["centring"] = fit.centring.choice
    if fit.spec.physical_ranges:
        out["physical_ranges"] = {k: list(v) for k, v in fit.spec.physical_ranges.items()}
        checked = plausibility(fit)
        outside = checked[checked["position"] != "inside"]
        out["outside_physical_ranges"] = [
            {"group": None if r.group is None else str(r.group), "parameter": r.parameter,
             "mean": float(r.mean), "contraction": float(r.contraction),
             "identified": bool(r.identified), "reason": r.reason}
            for r in outside.itertuples()]
    return out
