"""The self-contained HTML report: fits, comparison, pooling dial and figures in one file.

The file opens offline, from disk, with no server: CSS and the small slider script are
inline and every figure is embedded as a ``data:`` URI (PNG, or SVG for SVG files). User
text (titles, captions, group names, messages) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from carpool.errors import InputError
from carpool.report.template import CSP, CSS, NOSCRIPT_CSS, PAGE, SCRIPT
from carpool.verdicts import (
    ESS_MIN_PER_CHAIN,
    ESS_MIN_TOTAL,
    PARETO_K_MAX,
    RHAT_MAX,
    ess_ok,
    ess_required,
    pareto_k_ok,
    rhat_ok,
)

if TYPE_CHECKING:
    from carpool.compare.results import Comparison, PriorSensitivity, SweepResult
    from carpool.compare.words import Words
    from carpool.inference.fit import Fit

__all__ = ["render_report", "write_report", "figure_data_uri", "FIGURE_DPI"]

#: Resolution of embedded matplotlib figures: sharp on screen at a modest file size.
FIGURE_DPI = 110
#: What a missing score looks like.
DASH = "\u2014"
_DOT = " \u00b7 "

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
         ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}


# ---------------------------------------------------------------------------- formatting
def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _is_missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def fmt_num(x: Any, digits: int = 3) -> str:
    """A number for people: about ``digits`` significant figures, thousands separators,
    ``—`` for NaN / None."""
    if _is_missing(x):
        return DASH
    if isinstance(x, bool | np.bool_):
        return "yes" if x else "no"
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isinf(v):
        return "\u221e" if v > 0 else "\u2212\u221e"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e7 or a < 1e-3:
        return f"{v:.{digits}g}"
    decimals = min(max(digits - 1 - math.floor(math.log10(a)), 1), 4)
    return f"{v:,.{decimals}f}"


def _decimals_for(values: Any, digits: int = 3) -> int:
    """Decimals that give the largest finite value about ``digits`` significant figures."""
    v = np.abs(pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float))
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return 1
    return int(min(max(digits - 1 - math.floor(math.log10(v.max())), 1), 4))


def _fmt_int(x: Any) -> str:
    return DASH if _is_missing(x) else f"{int(round(float(x))):,}"


def _fmt_fixed(decimals: int) -> Callable[[Any], str]:
    return lambda x: DASH if _is_missing(x) else f"{float(x):,.{decimals}f}"


def _fmt_value(v: Any) -> str:
    """A data-summary value: numbers, ranges (pairs), lists, strings."""
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {_fmt_value(x)}" for k, x in v.items())
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, Sequence) and not isinstance(v, str):
        items = list(v)
        if len(items) == 2 and all(isinstance(i, int | float | np.number) for i in items):
            return f"{fmt_num(items[0])} \u2013 {fmt_num(items[1])}"
        return ", ".join(_fmt_value(i) for i in items)
    if isinstance(v, int | float | np.number | bool | np.bool_) or v is None:
        return fmt_num(v)
    return str(v)


def fmt_tau(t: float) -> str:
    """A population scale for the slider label: 0.30, 0.030, 1.50, 12.0."""
    t = float(t)
    if not math.isfinite(t) or t <= 0:
        return fmt_num(t)
    decimals = max(2, 1 - math.floor(math.log10(t))) if t < 1 else (2 if t < 10 else 1)
    return f"{t:.{decimals}f}"


def _fmt_seconds(s: Any) -> str:
    if _is_missing(s):
        return DASH
    s = float(s)
    if s >= 120:
        return f"{int(s // 60)} min {s % 60:.0f} s"
    return f"{s:.1f} s" if s >= 10 else f"{s:.2f} s"


def _mark(ok: bool | None, what: str) -> str:
    if ok is None:
        return f'<span class="mark na" title="{_esc(what)}: not available">{DASH}</span>'
    cls, sym, word = ("ok", "\u2713", "passes") if ok else ("bad", "\u2717", "fails")
    return f'<span class="mark {cls}" title="{_esc(what)} {word}">{sym}</span>'


class _Col:
    """One table column: the frame column, its header, tooltip, formatter, cell classes."""

    def __init__(self, key: str, header: str | None = None, fmt: Callable[[Any], str] = fmt_num,
                 *, tip: str = "", num: bool = True,
                 bad: Callable[[Any], bool] | None = None, raw: bool = False,
                 same_decimals: bool = False) -> None:
        self.key, self.header, self.fmt, self.tip = key, header or key, fmt, tip
        self.num, self.bad, self.raw = num, bad, raw
        #: format the whole column with the decimals its largest value needs (scores)
        self.same_decimals = same_decimals


def _text(x: Any) -> str:
    return DASH if _is_missing(x) else str(x)


def _attrs(**attrs: str | None) -> str:
    """`` name="value"`` pairs (escaped), skipping empty values; ``cls`` is ``class``."""
    return "".join(f' {"class" if k == "cls" else k}="{_esc(v)}"' for k, v in attrs.items()
                   if v)


def _table(df: pd.DataFrame, cols: Sequence[_Col], *, cls: str = "",
           row_attrs: Callable[[int, pd.Series], str] | None = None) -> str:
    head = "".join(f"<th{_attrs(cls='num' if c.num else None, title=c.tip)}>"
                   f"{_esc(c.header)}</th>" for c in cols)
    fmts = {c.key: (_fmt_fixed(_decimals_for(df[c.key])) if c.same_decimals
                    and c.key in df.columns else c.fmt) for c in cols}
    body = []
    for i, (_, row) in enumerate(df.iterrows()):
        cells = []
        for c in cols:
            v = row.get(c.key)
            is_bad = c.bad is not None and not _is_missing(v) and bool(c.bad(v))
            classes = " ".join((["num"] if c.num else []) + (["bad"] if is_bad else []))
            text = fmts[c.key](v)
            cells.append(f"<td{_attrs(cls=classes)}>{text if c.raw else _esc(text)}</td>")
        attrs = row_attrs(i, row) if row_attrs else ""
        body.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    return (f'<div class="table-wrap"><table{_attrs(cls=cls)}><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _details(summary: str, body: str, *, is_open: bool = False) -> str:
    return (f"<details{' open' if is_open else ''}><summary>{_esc(summary)}</summary>"
            f"{body}</details>")


def _section(anchor: str, heading: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_esc(heading)}</h2>\n{body}\n</section>'


# ---------------------------------------------------------------------------- figures
def figure_data_uri(figure: Any, *, dpi: int = FIGURE_DPI) -> str:
    """A ``data:`` URI of a matplotlib figure (PNG) or an image file (by its suffix).

    Parameters
    ----------
    figure
        A matplotlib ``Figure`` (anything with ``savefig``), or the path of a PNG, SVG, JPEG,
        GIF or WebP file.
    dpi
        Resolution of a rendered figure, dots per inch.
    """
    if isinstance(figure, str | os.PathLike):
        path = Path(figure)
        mime = _MIME.get(path.suffix.lower())
        if mime is None:
            raise InputError(f"cannot embed {path}: not one of {', '.join(sorted(_MIME))}")
        data = path.read_bytes()
    elif hasattr(figure, "savefig"):
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=dpi, bbox_inches="tight",
                       metadata={"Software": None})
        mime, data = "image/png", buf.getvalue()
    else:
        raise TypeError(f"a figure must be a matplotlib Figure or a file path, "
                        f"not {type(figure).__name__}")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _figure(uri: str, caption: str, *, alt: str | None = None, cls: str = "",
            attrs: str = "", img_cls: str = "") -> str:
    return (f'<figure class="{cls}"{attrs}><img class="{img_cls}" src="{uri}" '
            f'alt="{_esc(alt or caption)}"><figcaption>{_esc(caption)}</figcaption></figure>')


# ---------------------------------------------------------------------------- sections
def _data_section(data_summary: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_fmt_value(v))}</td></tr>"
                   for k, v in data_summary.items())
    return _section("data", "Data",
                    f'<div class="table-wrap"><table class="kv"><tbody>{rows}</tbody>'
                    f"</table></div>")


def _checks(fit: Fit) -> list[tuple[str, str, str, bool | None]]:
    """(check, value, threshold, ok) for R-hat, bulk ESS and divergences."""
    d = fit.diagnostics
    chains = int(d.get("chains", 1))
    rhat, ess = d.get("max_rhat", float("nan")), d.get("min_ess_bulk", float("nan"))
    div = d.get("divergences")
    where_r = f" ({d['max_rhat_var']})" if d.get("max_rhat_var") else ""
    where_e = f" ({d['min_ess_bulk_var']})" if d.get("min_ess_bulk_var") else ""
    ess_min = ess_required(chains)
    return [
        ("max R-hat", f"{_fmt_fixed(3)(rhat)}{where_r}", f"\u2264 {RHAT_MAX}",
         None if _is_missing(rhat) else rhat_ok(float(rhat))),
        ("min bulk ESS", f"{_fmt_int(ess)}{where_e}", f"\u2265 {ess_min}",
         None if _is_missing(ess) else ess_ok(float(ess), chains)),
        ("divergences", _fmt_int(div), "0", None if div is None else int(div) == 0),
    ]


def _kind_label(kind: str, pooling: str) -> str:
    if kind == "population":
        return {"pooled": "shared (all groups)", "unpooled": "across-group centre"}.get(
            pooling, "population")
    return {"population_scale": "population scale \u03c4", "noise": "noise",
            "common": "common (all groups)",
            "factor_scale": "scale \u03c4 of a factor"}.get(kind, kind)


def _summary_cols(table: pd.DataFrame, first: Sequence[_Col], ess_min: int) -> list[_Col]:
    hdi = [c for c in table.columns if str(c).startswith("hdi_")]
    cols = list(first) + [
        _Col("parameter", num=False, fmt=_text), _Col("unit", num=False, fmt=_text),
        _Col("mean"), _Col("sd"),
    ]
    cols += [_Col(c, c.replace("hdi_", "HDI ")) for c in hdi]
    cols += [
        _Col("ess_bulk", "bulk ESS", _fmt_int, bad=lambda v: v < ess_min,
             tip=f"bulk effective sample size; marked below {ess_min}"),
        _Col("r_hat", "R-hat", _fmt_fixed(3), bad=lambda v: rhat_ok(v) is False,
             tip=f"marked above {RHAT_MAX}"),
    ]
    return cols


def _fit_block(label: str, fit: Fit) -> str:
    d = fit.diagnostics
    chains, draws = int(d.get("chains", 0)), int(d.get("draws", 0))
    ess_min = ess_required(chains)
    title = label if label == fit.pooling else f"{label} ({fit.pooling})"
    info = (f"model <b>{_esc(fit.spec.name)}</b>, {_esc(fit.pooling)} pooling, "
            f"{len(fit.group_ids):,} groups, {chains} chains \u00d7 {draws:,} draws")
    checks = "".join(
        f"<tr><th>{_esc(name)}</th><td class=num>{_esc(value)}</td>"
        f"<td class=num>{_esc(thr)}</td><td>{_mark(ok, name)}</td></tr>"
        for name, value, thr, ok in _checks(fit))
    diag = (f'<div class="table-wrap"><table class="kv diag"><thead><tr><th>check</th>'
            f"<th class=num>value</th><th class=num>target</th><th></th></tr></thead>"
            f"<tbody>{checks}</tbody></table></div>")
    t = fit.timing
    parts = [f"{k.removesuffix('_s')} {_fmt_seconds(t[k])}"
             for k in ("centring_s", "compile_s", "sampling_s", "total_s")
             if k in t and not (k == "centring_s" and t[k] < 0.01)]
    timing = f'<p class="timing">Time: {_DOT.join(parts) or DASH}</p>'

    table = fit.summary()
    main = table[table["kind"] != "group"].copy()
    kinds = set(main["kind"])
    main["kind"] = [_kind_label(k, fit.pooling) for k in main["kind"]]
    first = [_Col("kind", "", _text, num=False)]
    if main["group"].notna().any():  # levels, or other grouping factors' scales
        header = {"level": "level", "factor_scale": "factor"}
        first.append(_Col("group", " / ".join(v for k, v in header.items() if k in kinds)
                          or "level", _text, num=False))
    out = [f'<div class="fit" id="fit-{_esc(label)}"><h3>{_esc(title)}</h3>',
           f"<p>{info}</p>", '<div class="fit-grid">', f"<div>{diag}</div>", "</div>",
           timing, _table(main, _summary_cols(table, first, ess_min))]
    if fit.pooling == "unpooled":
        out.append('<p class="note">The unpooled fit has no population: its first rows '
                   "summarise the centre of the group estimates in each draw.</p>")
    groups = table[table["kind"] == "group"]
    if len(groups):
        num_params = groups["parameter"].nunique()
        body = _table(groups, _summary_cols(table, [_Col("group", num=False, fmt=_text)],
                                            ess_min))
        out.append(_details(f"Per-group estimates ({len(fit.group_ids):,} groups \u00d7 "
                            f"{num_params} parameters)", body))
    out.append("</div>")
    return "\n".join(out)


def _fits_overview(fits: Mapping[str, Fit]) -> str:
    rows = []
    for label, fit in fits.items():
        checks = _checks(fit)
        ok = [c[3] for c in checks]
        status = (_mark(None, "convergence") if any(o is None for o in ok) and not
                  any(o is False for o in ok) else _mark(all(o is not False for o in ok),
                                                         "all convergence checks"))
        cells = "".join(f"<td class=num>{_esc(v)} {_mark(o, n)}</td>"
                        for n, v, _, o in checks)
        total = fit.timing.get("total_s")
        rows.append(f'<tr><td><a href="#fit-{_esc(label)}">{_esc(label)}</a></td>'
                    f"<td>{_esc(fit.spec.name)}</td>{cells}"
                    f"<td class=num>{_fmt_seconds(total)}</td><td>{status}</td></tr>")
    head = ("<tr><th>fit</th><th>model</th><th class=num>max R-hat</th>"
            "<th class=num>min bulk ESS</th><th class=num>divergences</th>"
            "<th class=num>time</th><th>converged</th></tr>")
    return (f'<div class="table-wrap"><table><thead>{head}</thead><tbody>{"".join(rows)}'
            f"</tbody></table></div>"
            f'<p class="note">Targets: R-hat \u2264 {RHAT_MAX}, bulk ESS \u2265 '
            f"{ESS_MIN_TOTAL} in total ({ESS_MIN_PER_CHAIN} per chain with more than four "
            "chains), "
            "no divergent transitions.</p>")


def _fits_section(fits: Mapping[str, Fit]) -> str:
    order = {"pooled": 0, "unpooled": 1, "hierarchical": 2}
    ordered = dict(sorted(fits.items(), key=lambda kv: order.get(kv[1].pooling, 3)))
    body = [_fits_overview(ordered)] + [_fit_block(k, f) for k, f in ordered.items()]
    return _section("fits", "Fits", "\n".join(body))


#: Header and tooltip of each :data:`carpool.compare.results.MODE_COLUMNS` column.
_MODE_HEADERS: dict[str, tuple[str, str]] = {
    "elpd_loo": ("elpd LOO", "PSIS-LOO expected log predictive density, summed over "
                 "observations (higher is better)"),
    "se": ("SE", "standard error of elpd LOO"),
    "p_loo": ("p LOO", "effective number of parameters"),
    "elpd_diff": ("\u0394 elpd", "elpd LOO of the best mode minus this one's (0 for the best)"),
    "dse": ("SE \u0394", "standard error of that difference"),
    "max_pareto_k": ("max k", f"worst Pareto k of the PSIS fit; above {PARETO_K_MAX} LOO is "
                     "unreliable"),
    "num_high_k": (f"k > {PARETO_K_MAX}", f"observations with Pareto k above {PARETO_K_MAX}"),
    "lfo_elpd": ("LFO elpd", "leave-future-out: log predictive density of each group's "
                 "held-out last 20%"),
    "lfo_rmse_speed": ("LFO RMSE", "leave-future-out: RMSE of the posterior-predictive mean "
                       "of y (next speed, m/s, for car-following models)"),
    "ldo_elpd": ("LDO elpd", "leave-drivers-out: log predictive density of held-out groups"),
    "ldo_rmse_speed": ("LDO RMSE", "leave-drivers-out: RMSE of the posterior-predictive mean "
                       "of y for held-out groups"),
    "rank": ("rank", "1 = recommended"),
}


def _mode_headers(words: Words | None) -> dict[str, tuple[str, str]]:
    """:data:`_MODE_HEADERS` in a model's words (``None``: carpool's car-following words);
    a formula fit's leave-future-out holds out the last rows of each group in the table's
    order (:mod:`carpool.compare.words`)."""
    if words is None or not words.formula:
        return _MODE_HEADERS
    out = dict(_MODE_HEADERS)
    out.update({
        "lfo_elpd": ("LFO elpd", f"{words.lfo}: log predictive density of "
                     f"{words.lfo_said()}, held out"),
        "lfo_rmse_speed": ("LFO RMSE", f"{words.lfo}: RMSE of the posterior-predictive mean "
                           f"of {words.response}"),
        "ldo_elpd": ("LDO elpd", f"{words.ldo}: log predictive density of held-out "
                     f"{words.groups}, each predicted as a new {words.group}"),
        "ldo_rmse_speed": ("LDO RMSE", f"{words.ldo}: RMSE of the posterior-predictive mean "
                           f"of {words.response} for held-out {words.groups}"),
    })
    return out


def _comparison_section(comparison: Comparison, words: Words | None = None) -> str:
    from carpool.compare.results import MODE_COLUMNS
    from carpool.compare.words import Words

    headers = _mode_headers(words)
    words = Words() if words is None else words
    table = comparison.table.copy()
    if "rank" in table.columns and table["rank"].notna().all():
        table = table.sort_values("rank", kind="stable")
    table.insert(0, "_mode", [str(i) for i in table.index])
    keys = [c for c in MODE_COLUMNS if c in table.columns]
    keys += [c for c in table.columns if c not in keys and c != "_mode"]
    cols = [_Col("_mode", "mode", _text, num=False)]
    for k in keys:
        header, tip = headers.get(k, (k, ""))
        fmt = _fmt_int if k in ("rank", "num_high_k") else (
            _fmt_fixed(2) if k == "max_pareto_k" else fmt_num)
        bad = (lambda v: not pareto_k_ok(v)) if k == "max_pareto_k" else (
            (lambda v: v > 0) if k == "num_high_k" else None)
        cols.append(_Col(k, header, fmt, tip=tip, bad=bad, same_decimals=fmt is fmt_num))
    rec = str(comparison.recommendation.get("mode", ""))

    def attrs(_i: int, row: pd.Series) -> str:
        return ' class="recommended"' if row["_mode"] == rec else ""

    out = []
    if rec:
        reason = comparison.recommendation.get("reason", "")
        out.append(f'<div class="box recommendation"><div class="mode">Recommended: '
                   f"{_esc(rec)}</div><p>{_esc(reason)}</p></div>")
    if comparison.warnings:
        items = "".join(f"<li>{_esc(w)}</li>" for w in comparison.warnings)
        out.append(f'<div class="box warnings"><b>Warnings</b><ul>{items}</ul></div>')
    out.append(_table(table, cols, row_attrs=attrs))
    notes = []
    missing = table[keys].isna()
    ldo = [c for c in keys if c.startswith("ldo_")]
    if "unpooled" in table.index and ldo and missing.loc["unpooled", ldo].any():
        notes.append(f"{DASH} The unpooled mode cannot predict new {words.new_groups}: it has "
                     f"no population to draw a new {words.new_group}'s parameters from, so it "
                     f"has no {words.ldo} (LDO) scores.")
    other = missing.copy()
    if "unpooled" in other.index and ldo:
        other.loc["unpooled", ldo] = False
    if other.to_numpy().any():
        notes.append(f"{DASH} elsewhere: the score was not computed.")
    if comparison.refits:
        notes.append(_esc(comparison.refits[0].upper() + comparison.refits[1:]) + ".")
    legend = "; ".join(f"<b>{_esc(headers[k][0])}</b>: {_esc(headers[k][1])}"
                       for k in keys if k in headers)
    notes.append(f"Columns: {legend}.")
    out += [f'<p class="note">{n}</p>' for n in notes[:-1]]
    out.append(f'<p class="note">{notes[-1]}</p>')
    if not comparison.population.empty:
        pop = comparison.population
        out.append("<h3>Population scales \u03c4</h3>"
                   '<p class="note">The pooling dial as learned from the data (latent scale: '
                   "for a log parameter, the sd of log \u03b8), posterior mean and 94% HDI."
                   "</p>")
        out.append(_table(pop, [_Col("parameter", num=False, fmt=_text), _Col("mean"),
                                _Col("lo", "HDI lo"), _Col("hi", "HDI hi")]))
    if not comparison.pooling_factors.empty:
        out.append(_pooling_factors(comparison.pooling_factors))
    return _section("comparison", "Comparison of the pooling modes", "\n".join(out))


def _bar(v: Any) -> str:
    if _is_missing(v):
        return DASH
    width = 60 * min(max(float(v), 0.0), 1.0)
    return f'<span class="bar" style="width:{width:.0f}px"></span>{_esc(_fmt_fixed(2)(v))}'


def _pooling_factors(pf: pd.DataFrame) -> str:
    pf = pf.copy()
    sort = [c for c in ("parameter", "num_obs", "group") if c in pf.columns]
    if sort:
        pf = pf.sort_values(sort, kind="stable")
    cols = [_Col(c, num=False, fmt=_text) for c in ("group", "parameter", "unit")
            if c in pf.columns]
    if "num_obs" in pf.columns:
        cols.append(_Col("num_obs", "observations", _fmt_int))
    if "pooling_factor" in pf.columns:
        cols.append(_Col("pooling_factor", "pooling factor", _bar, raw=True, num=False,
                         tip="0 = the group stands alone, 1 = fully pooled"))
    if "moved" in pf.columns:
        cols.append(_Col("moved", "moved", _fmt_fixed(2),
                         tip="fraction of the way the estimate moved from unpooled to the "
                             "population mean"))
    intro = ('<h3>Pooling factors</h3><p class="note">How strongly each group is pulled to the '
             "population (0 = stands alone, 1 = fully pooled); groups with fewer observations "
             "are pooled more. <i>moved</i>: the fraction of the way the estimate actually "
             "moved from its unpooled value toward the population mean.</p>")
    table = _table(pf, cols)
    if len(pf) > 30:
        return intro + _details(f"Pooling factors ({len(pf):,} rows)", table)
    return intro + table


def _figures_section(figures: Mapping[str, Any]) -> str:
    body = "\n".join(_figure(figure_data_uri(fig), caption) for caption, fig in figures.items())
    return _section("figures", "Figures", body)


def _start_index(sweep: SweepResult) -> tuple[int, float | None]:
    """The grid point nearest the learned tau (mean over parameters), else the middle.

    Nearest on the log scale when all scales are positive (the grid is usually geometric)."""
    grid = np.asarray(sweep.grid, dtype=float)
    lt = sweep.learned_tau
    if lt is None or lt.empty or "mean" not in lt.columns or not np.isfinite(
            lt["mean"].to_numpy(dtype=float)).any():
        return (len(grid) - 1) // 2, None
    target = float(np.nanmean(lt["mean"].to_numpy(dtype=float)))
    if target > 0 and (grid > 0).all():
        dist = np.abs(np.log(grid) - math.log(target))
    else:
        dist = np.abs(grid - target)
    return int(np.argmin(dist)), target


def _sweep_limits(sweep: SweepResult) -> dict[str, tuple[float, float]]:
    """Per parameter, the range of every estimate along the dial (natural units)."""
    out = {}
    for name, ends in sweep.ends.groupby("parameter", sort=False):
        est = sweep.estimates.loc[sweep.estimates["parameter"] == name, "mean"]
        v = np.concatenate([ends["pooled"], ends["unpooled"], est]).astype(float)
        v = v[np.isfinite(v)]
        if v.size:
            out[str(name)] = (float(v.min()), float(v.max()))
    return out


def _fix_limits(fig: Any, table: pd.DataFrame, limits: Mapping[str, tuple[float, float]]
                ) -> None:
    """The same y axes in every frame of the slider, so that only the estimates move.

    :func:`~carpool.plots.shrinkage.plot_shrinkage` draws one panel per parameter, in the
    table's order; a figure of another shape is left as it is."""
    names = list(dict.fromkeys(table["parameter"]))
    if len(fig.axes) != len(names):
        return
    for ax, name in zip(fig.axes, names, strict=True):
        if name not in limits:
            continue
        lo, hi = limits[name]
        if ax.get_yscale() == "log" and lo > 0:
            pad = (hi / lo) ** 0.05
            ax.set_ylim(lo / pad, hi * pad)
        else:
            pad = 0.05 * (hi - lo) or 0.05 * max(abs(hi), 1.0)
            ax.set_ylim(lo - pad, hi + pad)


def _sweep_section(sweep: SweepResult) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from carpool.plots.shrinkage import plot_shrinkage

    grid = np.asarray(sweep.grid, dtype=float)
    start, learned = _start_index(sweep)
    scores = sweep.scores if sweep.scores is not None else pd.DataFrame()
    by_k: list[pd.Series | None] = []
    for t in grid:
        hit = (scores[np.isclose(scores["tau"].to_numpy(dtype=float), t)]
               if "tau" in scores.columns else scores.iloc[:0])
        by_k.append(hit.iloc[0] if len(hit) else None)
    best = None
    if "elpd_loo" in scores.columns and scores["elpd_loo"].notna().any():
        elpd = [np.nan if r is None else float(r.get("elpd_loo", np.nan)) for r in by_k]
        best = int(np.nanargmax(elpd)) if np.isfinite(elpd).any() else None

    def label(k: int) -> str:
        parts = [f"tau = {fmt_tau(grid[k])}"]
        r = by_k[k]
        if r is not None and not _is_missing(r.get("elpd_loo")):
            se = "" if _is_missing(r.get("se")) else f" \u00b1 {fmt_num(r['se'])}"
            parts.append(f"elpd_loo = {fmt_num(r['elpd_loo'])}{se}")
        if k == best:
            parts.append("best elpd_loo")
        if learned is not None and k == start:
            parts.append("nearest the learned tau")
        return _DOT.join(parts)

    out = ['<p class="lead">The pooling dial: hierarchical fits with the population scale '
           "\u03c4 fixed on a grid. Small \u03c4 pulls every group to the population (pooled); "
           "large \u03c4 lets each group stand alone (unpooled). Move the slider to see the "
           "estimates shrink.</p>"]
    if learned is not None:
        out.append(f'<p class="note">Learned \u03c4 (posterior mean'
                   f'{", averaged over parameters" if len(sweep.learned_tau) > 1 else ""}): '
                   f"{fmt_tau(learned)}. The slider starts at the nearest grid point.</p>")
    if sweep.ends is None or sweep.ends.empty:
        out.append('<p class="note">No shrinkage frames: the sweep has no pooled / unpooled '
                   "end points.</p>")
    else:
        limits = _sweep_limits(sweep)
        frames = []
        for k in range(len(grid)):
            table = sweep.shrinkage_at(k)
            lab = label(k)
            hidden = "" if k == start else " hidden"
            attrs = f' data-k="{k}" data-label="{_esc(lab)}"{hidden}'
            if table.empty:
                frames.append(f'<figure class="frame"{attrs}><p class="note">No estimates at '
                              f"tau = {_esc(fmt_tau(grid[k]))}.</p>"
                              f"<figcaption>{_esc(lab)}</figcaption></figure>")
                continue
            fig = plot_shrinkage(table)
            _fix_limits(fig, table, limits)
            try:
                uri = figure_data_uri(fig)
            finally:
                plt.close(fig)
            frames.append(_figure(uri, lab, alt=f"Shrinkage at tau = {fmt_tau(grid[k])}",
                                  cls="frame", attrs=attrs, img_cls="sweep-frame"))
        n = len(grid)
        ticks = "".join(f'<option value="{k}" label="{_esc(fmt_tau(t))}"></option>'
                        for k, t in enumerate(grid))
        # tick labels under the thumb's centre: the track is inset by half a thumb (8 px)
        labels = "".join(
            f'<span style="left:calc(8px + (100% - 16px) * {k / max(n - 1, 1):.4f})">'
            f"{_esc(fmt_tau(t))}</span>" for k, t in enumerate(grid))
        out.append(
            f'<div class="slider" id="sweep" data-start="{start}">'
            f'<output class="slider-label" for="sweep-range">{_esc(label(start))}</output>'
            f'<input type="range" id="sweep-range" min="0" max="{n - 1}" step="1" '
            f'value="{start}" list="sweep-ticks" '
            'aria-label="grid point of the population scale tau">'
            f'<datalist id="sweep-ticks">{ticks}</datalist>'
            f'<div class="ticks" aria-hidden="true">{labels}</div>'
            '<div class="ends"><span>\u2190 small \u03c4: towards pooled</span>'
            "<span>large \u03c4: towards unpooled \u2192</span></div>"
            f'{"".join(frames)}</div>')
    if len(scores):
        def attrs(i: int, row: pd.Series) -> str:
            k = [j for j, r in enumerate(by_k) if r is not None and r.name == row.name]
            if not k:
                return ""
            cls = ' class="current"' if k[0] == start else ""
            return f' data-slider="sweep" data-k="{k[0]}"{cls}'

        cols = [_Col("tau", "\u03c4", fmt_tau)]
        cols += [_Col(c, h, f, bad=b) for c, h, f, b in (
            ("elpd_loo", "elpd LOO", fmt_num, None), ("se", "SE", fmt_num, None),
            ("max_pareto_k", "max Pareto k", _fmt_fixed(2), lambda v: not pareto_k_ok(v)))
            if c in scores.columns]
        for c in cols[1:3]:
            c.same_decimals = True
        out.append("<h3>Scores along the dial</h3>" + _table(scores, cols, row_attrs=attrs))
    if sweep.learned_tau is not None and not sweep.learned_tau.empty:
        out.append("<h3>Learned \u03c4</h3>" + _table(
            sweep.learned_tau, [_Col(c, h, f, num=n) for c, h, f, n in (
                ("parameter", "parameter", _text, False), ("mean", "mean", fmt_num, True),
                ("lo", "HDI lo", fmt_num, True), ("hi", "HDI hi", fmt_num, True))
                if c in sweep.learned_tau.columns]))
    return _section("sweep", "The pooling dial", "\n".join(out))


def _sensitivity_section(sens: PriorSensitivity) -> str:
    t = sens.table.copy()
    out = ['<p class="lead">Each group\'s estimate under weak and under informative '
           "hyperpriors. <i>shift</i>: the difference of the latent posterior means in units "
           "of the weak fit's posterior sd; |shift| above 1 is marked (the prior, not the data, "
           "decides that estimate).</p>"]
    if "shift" in t.columns:
        t = t.iloc[np.argsort(-np.abs(t["shift"].to_numpy(dtype=float)), kind="stable")]
    cols = [_Col(c, num=False, fmt=_text) for c in ("group", "parameter", "unit")
            if c in t.columns]
    cols += [_Col(c, h, f, bad=b) for c, h, f, b in (
        ("num_obs", "observations", _fmt_int, None), ("weak", "weak", fmt_num, None),
        ("informative", "informative", fmt_num, None),
        ("shift", "shift (sd)", _fmt_fixed(2), lambda v: abs(v) > 1)) if c in t.columns]
    table = _table(t, cols)
    out.append(_details(f"All {len(t):,} rows, largest shift first", table)
               if len(t) > 30 else table)
    if sens.prior_predictive:
        qs = (0.05, 0.5, 0.95)
        rows = [{"setting": name, **{f"q{q}": float(np.nanquantile(np.asarray(d), q))
                                     for q in qs}}
                for name, d in sens.prior_predictive.items()]
        if sens.observed is not None:
            obs = np.asarray(sens.observed, dtype=float)
            rows.append({"setting": "observed", **{f"q{q}": float(np.nanquantile(obs, q))
                                                   for q in qs}})
        out.append("<h3>Prior predictive</h3><p class=\"note\">Quantiles of y drawn from the "
                   "prior under each hyperprior setting, against the observed y.</p>")
        out.append(_table(pd.DataFrame(rows), [_Col("setting", num=False, fmt=_text)] + [
            _Col(f"q{q}", f"{q:.0%}") for q in qs]))
    return _section("sensitivity", "Prior sensitivity", "\n".join(out))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("carpool")
    except PackageNotFoundError:
        import carpool

        return carpool.__version__


def _plausibility_section(fits: Mapping[str, Fit]) -> str:
    """Per fit: how many groups lie outside the model's physical ranges, and why."""
    from carpool.inference.plausibility import implausible_message, plausibility

    parts = []
    for label, fit in fits.items():
        table = plausibility(fit)
        message = implausible_message(fit, table)
        if message is None:
            parts.append(f"<p><b>{_esc(label)}</b>: every estimate lies inside the physical "
                         "ranges.</p>")
            continue
        message = message.replace("; see carpool.plausibility(fit) for each one's reason", "")
        outside = table[table["position"] != "inside"]
        rows = outside.assign(group=outside["group"].map(_text))
        body = _table(rows, [_Col("group", num=False), _Col("parameter", num=False),
                             _Col("mean"), _Col("contraction", fmt=_fmt_fixed(2)),
                             _Col("reason", num=False)])
        parts.append(_details(message, body))
    ranges = next(iter(fits.values())).spec.physical_ranges
    lead = ("<p>Physical ranges: " + _esc(", ".join(
        f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in ranges.items())) + ". A value outside them "
        "with a contraction near 1 is what this model needs to fit the driver's data; one "
        "with a low contraction restates the prior or the population.</p>")
    return _section("plausibility", "Physical plausibility", lead + "".join(parts))


def _notes_section(anchor: str, heading: str, body: str | pd.DataFrame) -> str:
    """A section of plain paragraphs (blank lines between them) or of one table."""
    if isinstance(body, pd.DataFrame):
        frame = body.reset_index() if body.index.name is not None else body
        html = _table(frame, [_Col(str(c), num=pd.api.types.is_numeric_dtype(frame[c]))
                              for c in frame.columns])
    else:
        html = "".join(f"<p>{_esc(par.strip())}</p>" for par in body.split("\n\n")
                       if par.strip())
    return _section(anchor, heading, html)


# ---------------------------------------------------------------------------- public
def render_report(
    *,
    title: str,
    data_summary: Mapping[str, Any],
    fits: Mapping[str, Fit],
    comparison: Comparison | None = None,
    sweep: SweepResult | None = None,
    sensitivity: PriorSensitivity | None = None,
    figures: Mapping[str, Any] | None = None,
    notes: Mapping[str, str | pd.DataFrame] | None = None,
) -> str:
    """The report as one self-contained HTML page (see :func:`write_report`)."""
    sections: list[tuple[str, str, str]] = []  # (anchor, toc label, html)
    if data_summary:
        sections.append(("data", "Data", _data_section(data_summary)))
    for i, (heading, body) in enumerate((notes or {}).items()):
        sections.append((f"note{i}", heading, _notes_section(f"note{i}", heading, body)))
    if comparison is not None:
        words = None
        if fits:
            from carpool.compare.words import words_for

            words = words_for(next(iter(fits.values())).spec)
        sections.append(("comparison", "Comparison", _comparison_section(comparison, words)))
    if fits:
        sections.append(("fits", "Fits", _fits_section(fits)))
        if any(f.spec.physical_ranges for f in fits.values()):
            sections.append(("plausibility", "Plausibility", _plausibility_section(fits)))
    if figures:
        sections.append(("figures", "Figures", _figures_section(figures)))
    if sweep is not None:
        sections.append(("sweep", "Pooling dial", _sweep_section(sweep)))
    if sensitivity is not None:
        sections.append(("sensitivity", "Prior sensitivity", _sensitivity_section(sensitivity)))
    version = _version()
    now = datetime.now().astimezone()
    date = now.strftime("%Y-%m-%d %H:%M %Z").strip()
    models = sorted({f.spec.name for f in fits.values()})
    meta = f"carpool {_esc(version)} \u00b7 {_esc(date)}"
    if models:
        meta += f" \u00b7 model{'s' if len(models) > 1 else ''}: {_esc(', '.join(models))}"
    headline = ""
    if comparison is not None and comparison.recommendation.get("mode"):
        headline = (f'<p class="lead">Recommended pooling: <a href="#comparison"><b>'
                    f'{_esc(comparison.recommendation["mode"])}</b></a></p>')
    toc = "".join(f'<a href="#{a}">{_esc(label)}</a>' for a, label, _ in sections)
    return PAGE.substitute(
        csp=CSP, version=_esc(version), title=_esc(title), css=CSS, noscript_css=NOSCRIPT_CSS,
        meta=meta, headline=headline, toc=toc, sections="\n".join(s for *_, s in sections),
        date=_esc(date), script=SCRIPT)


def write_report(
    path: str | os.PathLike[str],
    *,
    title: str,
    data_summary: Mapping[str, Any],
    fits: Mapping[str, Fit],
    comparison: Comparison | None = None,
    sweep: SweepResult | None = None,
    sensitivity: PriorSensitivity | None = None,
    figures: Mapping[str, Any] | None = None,
    notes: Mapping[str, str | pd.DataFrame] | None = None,
) -> Path:
    """Write a self-contained HTML report of fits, their comparison and the pooling dial.

    The file opens offline from disk in any browser: CSS and script are inline, every figure
    is embedded as a ``data:`` URI and the page's Content-Security-Policy forbids loading
    anything from elsewhere. The file is written atomically (a temporary file, then a
    rename), so an existing report survives a failure.

    Parameters
    ----------
    path
        Where to write the ``.html`` file; folders are created.
    title
        Page title (plain text, escaped).
    data_summary
        Key / value pairs shown as a table, e.g. ``{"drivers": 12, "rows": 36000,
        "duration (s)": 3600.0, "speed range (m/s)": (0.0, 16.2)}``; a pair of numbers is
        shown as a range.
    fits
        Label (usually the pooling mode) -> :class:`~carpool.inference.fit.Fit`: summary
        tables, convergence checks (R-hat < 1.01, bulk ESS >= 400, no divergences) and timing.
    comparison
        :class:`~carpool.compare.results.Comparison`: score table, recommendation, warnings,
        pooling factors.
    sweep
        :class:`~carpool.compare.results.SweepResult`: a slider over the tau grid showing the
        shrinkage figure at each point (needs ``sweep.ends``) and the scores.
    sensitivity
        :class:`~carpool.compare.results.PriorSensitivity`: the weak vs informative table.
    notes
        Heading -> text (paragraphs separated by blank lines) or a pandas table: further
        sections after the data, e.g. what a demo chose to fit.
    figures
        Caption -> matplotlib ``Figure`` (embedded as PNG at :data:`FIGURE_DPI` dpi; not
        closed) or path of a PNG / SVG / JPEG file.

    Returns
    -------
    Path
        ``path``.
    """
    from carpool.io import atomic_write_text

    text = render_report(title=title, data_summary=data_summary, fits=fits,
                         comparison=comparison, sweep=sweep, sensitivity=sensitivity,
                         figures=figures, notes=notes)
    return atomic_write_text(path, text)

