"""Convergence diagnostics (ArviZ) and the warnings users see when they are bad.

The thresholds and the rules that apply them live in :mod:`carpool.verdicts`.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np

__all__ = ["ConvergenceWarning", "compute_diagnostics", "convergence_problems",
           "warn_if_bad"]

from carpool.verdicts import RHAT_MAX, ess_ok, ess_required, rhat_ok

# ``population`` duplicates ``mu`` (same ranks) and is skipped; so is the constant diagonal
# of ``corr``


class ConvergenceWarning(UserWarning):
    """The sampler's output should not be trusted as it is."""


def compute_diagnostics(idata: Any) -> dict[str, Any]:
    """Max R-hat, min bulk / tail ESS, divergences and tree-depth hits.

    Returns a dict with ``max_rhat``, ``max_rhat_var``, ``min_ess_bulk``, ``min_ess_bulk_var``,
    ``min_ess_tail``, ``divergences``, ``draws`` (per chain), ``chains``,
    ``max_tree_depth_hits``.
    An approximate (SVI) fit has no sampler diagnostics: see :func:`approximate_diagnostics`.
    """
    import arviz as az

    post = idata.posterior
    if post.attrs.get("carpool_method", "nuts") != "nuts":
        return approximate_diagnostics(idata)
    names = [v for v in post.data_vars if v != "population"]
    ds = post[names]
    # constant elements (the diagonal of corr) make ArviZ divide by zero: they are skipped below
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = az.rhat(ds)
        ess_b = az.ess(ds, method="bulk")
        ess_t = az.ess(ds, method="tail")

    def extreme(res, fn) -> tuple[float, str]:
        best, where = np.nan, ""
        for v in res.data_vars:
            vals = np.asarray(res[v].values, dtype=float)
            if v == "corr":
                P = vals.shape[-1]
                vals = vals[~np.eye(P, dtype=bool)] if P > 1 else np.array([np.nan])
            vals = vals[np.isfinite(vals)]
            if vals.size == 0:
                continue
            val = fn(vals)
            if np.isnan(best) or fn([best, val]) == val:
                best, where = float(val), _locate(res[v], val)
        return best, where

    max_rhat, rhat_var = extreme(rhat, np.max)
    min_b, b_var = extreme(ess_b, np.min)
    min_t, _ = extreme(ess_t, np.min)
    ss = idata.sample_stats
    settings = json.loads(post.attrs.get("carpool_settings", "{}"))
    max_depth = int(settings.get("max_tree_depth", 10))
    depth_hits = 0
    if "n_steps" in ss:
        depth_hits = int((ss["n_steps"].values >= 2**max_depth - 1).sum())
    return {
        "max_rhat": max_rhat,
        "max_rhat_var": rhat_var,
        "min_ess_bulk": min_b,
        "min_ess_bulk_var": b_var,
        "min_ess_tail": min_t,
        "divergences": int(ss["diverging"].values.sum()) if "diverging" in ss else 0,
        "chains": int(post.sizes["chain"]),
        "draws": int(post.sizes["draw"]),
        "max_tree_depth_hits": depth_hits,
    }


#: What diagnostics say about a variational fit instead of R-hat and ESS.
APPROXIMATE_NOTE = "approximate fit: no R-hat/ESS"


def approximate_diagnostics(idata: Any) -> dict[str, Any]:
    """The diagnostics dict of a variational (SVI) fit.

    Draws from a fitted approximation are independent, so R-hat and ESS would report a
    perfect sampler whatever the approximation's error: they are NaN here, with
    ``approximate`` True, ``note`` = :data:`APPROXIMATE_NOTE`, ``method``, ``final_loss``
    (mean negative ELBO, nats, over the last 10% of steps) and ``loss_change`` (that mean
    minus the mean of the 10% of steps before: near 0 when the optimisation has settled).
    """
    post = idata.posterior
    out: dict[str, Any] = {
        "approximate": True, "method": str(post.attrs.get("carpool_method")),
        "note": APPROXIMATE_NOTE, "max_rhat": float("nan"), "max_rhat_var": "",
        "min_ess_bulk": float("nan"), "min_ess_bulk_var": "", "min_ess_tail": float("nan"),
        "divergences": 0, "chains": int(post.sizes["chain"]),
        "draws": int(post.sizes["draw"]), "max_tree_depth_hits": 0,
    }
    if "svi_loss" in idata.groups():
        loss = np.asarray(idata["svi_loss"]["loss"].values, dtype=float)
        k = max(1, loss.size // 10)
        out["final_loss"] = float(loss[-k:].mean())
        out["loss_change"] = (float(loss[-k:].mean() - loss[-2 * k:-k].mean())
                              if loss.size >= 2 * k + 1 else float("nan"))
    return out


def _locate(da: Any, value: float) -> str:
    """``name[coord, coord]`` of the element equal to ``value``."""
    vals = np.asarray(da.values, dtype=float)
    idx = np.argwhere(vals == value)
    if idx.size == 0 or not da.dims:
        return str(da.name)
    labels = [str(da.coords[d].values[i]) if d in da.coords else str(i)
              for d, i in zip(da.dims, idx[0], strict=True)]
    return f"{da.name}[{', '.join(labels)}]"


def convergence_problems(diag: dict[str, Any]) -> list[str]:
    """Human-readable problems, each with advice; empty when the run looks fine.

    Divergences and tree-depth hits come from the geometry (a funnel, strong correlations),
    so the advice is to change the parameterisation (``param="noncentred"`` for parameters
    the data barely identify, ``"centred"`` for well identified ones; ``"auto"`` chooses from
    the data) or to take smaller steps (``target_accept`` closer to 1, ``--target-accept`` in
    the CLI). Disagreeing chains (R-hat) need a longer warm-up, and if that does not help a
    look for several modes; too few effective draws need more draws.
    """
    out = []
    if diag["divergences"]:
        out.append(f"{diag['divergences']} divergent transitions: the posterior was not "
                   "fully explored; raise target_accept (e.g. 0.99, --target-accept in the "
                   "CLI) or change the parameterisation (param='noncentred' for weakly "
                   "identified parameters, 'centred' for well identified ones)")
    hits = int(diag.get("max_tree_depth_hits", 0))
    if hits:
        out.append(f"{hits} transitions hit the maximum tree depth: NUTS takes tiny steps "
                   "through a badly scaled or strongly correlated posterior; reparameterise "
                   "(param=...) or raise max_tree_depth")
    if rhat_ok(diag["max_rhat"]) is False:
        out.append(f"max R-hat {diag['max_rhat']:.3f} at {diag['max_rhat_var']} "
                   f"(> {RHAT_MAX}): chains disagree; run a longer warm-up (--warmup) and more "
                   "chains, and if they still disagree look for several modes or give the "
                   "parameter an informative prior")
    ess_min = ess_required(diag["chains"])
    if ess_ok(diag["min_ess_bulk"], diag["chains"]) is False:
        out.append(f"min bulk ESS {diag['min_ess_bulk']:.0f} at {diag['min_ess_bulk_var']} "
                   f"(< {ess_min}): draw more samples (--draws) or reparameterise the slowly "
                   "mixing parameter (param=...)")
    if ess_ok(diag["min_ess_tail"], diag["chains"]) is False:
        out.append(f"min tail ESS {diag['min_ess_tail']:.0f} (< {ess_min}): intervals are "
                   "unreliable; draw more samples (--draws)")
    return out


def warn_if_bad(diag: dict[str, Any]) -> list[str]:
    """Emit a :class:`ConvergenceWarning` per problem; returns the messages."""
    problems = convergence_problems(diag)
    for p in problems:
        warnings.warn(p, ConvergenceWarning, stacklevel=3)
    return problems


class WeakIdentificationWarning(UserWarning):
    """A parameter's posterior is barely narrower than its prior."""


CONTRACTION_MIN = 0.5


def prior_contraction(fit: Any) -> Any:
    """Prior-to-posterior contraction per parameter, ``1 - var_post / var_prior``.

    Measured on the latent scale of the shared value (pooled), the population mean
    (hierarchical), or the median over groups (unpooled). Near 1: the data decide; near 0:
    the estimate restates the prior (Schad, Betancourt & Vasishth 2021).

    Returns a pandas DataFrame indexed by parameter with ``prior_sd``, ``posterior_sd`` and
    ``contraction``.
    """
    import pandas as pd

    params = fit.spec.parameters
    _, prior_sd = params.latent_prior_arrays()
    post = fit.idata.posterior
    if fit.pooling == "hierarchical":
        sd = post["mu"].values.reshape(-1, len(params)).std(axis=0)
    else:
        z = params.to_latent(post["theta"].values, axis=-1)
        z = z.reshape((-1,) + z.shape[2:])
        sd = z.std(axis=0) if fit.pooling == "pooled" else np.median(z.std(axis=0), axis=0)
    return pd.DataFrame({"prior_sd": prior_sd, "posterior_sd": sd,
                         "contraction": 1.0 - (sd / prior_sd) ** 2},
                        index=pd.Index(params.names, name="parameter"))


def weakly_identified(fit: Any) -> list[str]:
    """Messages for parameters whose contraction is below :data:`CONTRACTION_MIN`."""
    table = prior_contraction(fit)
    where = {"hierarchical": "population mean", "pooled": "shared value",
             "unpooled": "typical group"}[fit.pooling]
    params = {p.name: p for p in fit.spec.parameters}

    def centre(name: str) -> str:
        p = params[name]
        return f" (centred at {p.reference:g} {p.unit})" if p.transform == "log" else ""

    return [
        f"{name} is weakly identified by these data: the posterior sd of its {where} is "
        f"{row.posterior_sd / row.prior_sd:.0%} of the prior sd (contraction "
        f"{math.floor(row.contraction * 100) / 100:.2f} < {CONTRACTION_MIN}), so its estimate "
        "largely restates the "
        f"prior{centre(name)}; report it with care or give it an informative prior"
        for name, row in table.iterrows() if row.contraction < CONTRACTION_MIN
    ]
