"""The HTML report: self-contained (no URLs, embedded PNGs), complete, and loads in a browser.

The structural tests always run; the browser test needs Chromium and is skipped without it.
Fits are real but tiny (2 chains x 150 draws of a four-group linear model); the comparison,
sweep and sensitivity results are built by hand (their contract is
:mod:`carpool.compare.results`), so these tests do not depend on how they are computed.
"""

from __future__ import annotations

import base64
import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

import carpool
from carpool.compare.results import MODE_COLUMNS, Comparison, PriorSensitivity, SweepResult
from carpool.report import (
    check_in_browser,
    find_chromium,
    render_report,
    write_report,
)
from carpool.report.browser import body_attributes, dump_dom
from carpool.report.html import _start_index, fmt_num, fmt_tau
from carpool.testing import simulate_linear_groups

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GROUPS = ("g00", "g01", "g02", "g03")
NUM_OBS = (5, 10, 20, 40)
GRID = np.array([0.03, 0.1, 0.3, 1.0, 3.0])
#: learned tau 1.4 and 0.9: mean 1.15, nearest grid point (log scale) 1.0 = index 3, not the
#: middle (index 2), so the test can tell the two rules apart
LEARNED = (1.4, 0.9)
RECOMMENDATION = "hierarchical: best LOO and it predicts new drivers"


# ------------------------------------------------------------------ hand-built results
def make_comparison() -> Comparison:
    rows = {
        "pooled": [-310.2, 9.1, 3.1, 22.4, 6.0, 0.31, 0, -70.1, 0.81, -71.0, 0.83, 3],
        "unpooled": [-295.0, 8.7, 9.4, 7.2, 3.1, 0.74, 2, -60.3, 0.66, np.nan, np.nan, 2],
        "hierarchical": [-287.8, 8.5, 7.2, 0.0, 0.0, 0.52, 0, -58.9, 0.64, -61.2, 0.70, 1],
    }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(MODE_COLUMNS))
    pf = pd.DataFrame([{"group": g, "parameter": p, "unit": u, "num_obs": n,
                        "pooling_factor": 1 / (1 + n / 8), "moved": 0.9 / (1 + n / 8)}
                       for p, u in (("intercept", "y"), ("slope", "y per x"))
                       for g, n in zip(GROUPS, NUM_OBS, strict=True)])
    population = pd.DataFrame({"parameter": ["intercept", "slope"], "mean": [0.42, 0.21],
                               "lo": [0.1, 0.02], "hi": [0.9, 0.5]})
    return Comparison(table=table,
                      recommendation={"mode": "hierarchical", "reason": RECOMMENDATION},
                      pooling_factors=pf, population=population,
                      warnings=("unpooled: 2 observations with Pareto k > 0.7 <check>",))


def make_sweep(*, learned: tuple[float, ...] = LEARNED, ends: bool = True) -> SweepResult:
    """Hierarchical estimates between the ends, w = tau^2 / (tau^2 + 1 / n_g)."""
    pooled = {"intercept": 1.0, "slope": -0.3}
    unpooled = {"intercept": (0.5, 1.6, 0.2, 1.3), "slope": (-0.8, 0.1, -0.4, -0.2)}
    units = {"intercept": "y", "slope": "y per x"}
    est = []
    for tau in GRID:
        for p in pooled:
            for g, n, u in zip(GROUPS, NUM_OBS, unpooled[p], strict=True):
                w = tau**2 / (tau**2 + 1.0 / n)
                m = pooled[p] + w * (u - pooled[p])
                est.append({"tau": tau, "group": g, "parameter": p, "unit": units[p],
                            "mean": m, "lo": m - 0.2, "hi": m + 0.2})
    scores = pd.DataFrame({"tau": GRID,
                           "elpd_loo": -290 - 5 * (np.log(GRID) - np.log(0.5)) ** 2,
                           "se": np.full(len(GRID), 8.4),
                           "max_pareto_k": [0.2, 0.3, 0.4, 0.6, 0.8]})
    learned_tau = pd.DataFrame({"parameter": list(pooled)[:len(learned)], "mean": learned,
                                "lo": [t / 3 for t in learned], "hi": [t * 2 for t in learned]})
    ends_t = pd.DataFrame([{"group": g, "parameter": p, "unit": units[p],
                            "pooled": pooled[p], "unpooled": u}
                           for p in pooled for g, u in zip(GROUPS, unpooled[p], strict=True)])
    return SweepResult(grid=GRID, estimates=pd.DataFrame(est), scores=scores,
                       learned_tau=learned_tau if learned else pd.DataFrame(),
                       ends=ends_t if ends else pd.DataFrame())


def make_sensitivity() -> PriorSensitivity:
    t = pd.DataFrame([{"group": g, "parameter": "slope", "unit": "y per x", "num_obs": n,
                       "weak": -0.5, "informative": -0.4, "shift": 3.0 / n}
                      for g, n in zip(GROUPS, NUM_OBS, strict=True)])
    rng = np.random.default_rng(0)
    return PriorSensitivity(table=t, prior_predictive={"weak": rng.normal(0, 5, (50, 75)),
                                                       "informative": rng.normal(0, 1, (50, 75))},
                            observed=rng.normal(0, 1, 75))


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def fits():
    df, _ = simulate_linear_groups(num_groups=4, num_obs_per_group=list(NUM_OBS), rng_seed=0)
    sampler = carpool.NutsSettings(chains=2, warmup=150, draws=150)
    return {mode: carpool.fit(df, "linear", pooling=mode, sampler=sampler, warn=False)
            for mode in ("pooled", "unpooled", "hierarchical")}


@pytest.fixture(scope="module")
def figure_files(tmp_path_factory):
    """A PNG and an SVG file, written by matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 0, 2])
    d = tmp_path_factory.mktemp("figs")
    fig.savefig(d / "line.png", dpi=50)
    fig.savefig(d / "line.svg")
    plt.close(fig)
    return d / "line.png", d / "line.svg"


@pytest.fixture(scope="module")
def full_report(fits, figure_files, tmp_path_factory):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(["a", "b"], [1, 2])
    path = tmp_path_factory.mktemp("report") / "report.html"
    try:
        write_report(path, title="Linear <groups> & test", fits=fits,
                     data_summary={"groups": 4, "rows": sum(NUM_OBS),
                                   "speed range (m/s)": (0.0, 16.25), "source": "simulated"},
                     comparison=make_comparison(), sweep=make_sweep(),
                     sensitivity=make_sensitivity(),
                     figures={"A matplotlib figure": fig, "A PNG file": figure_files[0],
                              "An SVG file": figure_files[1]})
    finally:
        plt.close(fig)
    return path


# ------------------------------------------------------------------ parsing helpers
class Page(HTMLParser):
    """Tags and attributes of a page, with the text of every element of interest."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, tag: str, **where: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(
            v in a.get(k, "").split() for k, v in where.items())]


def decode_png(src: str) -> bytes:
    assert src.startswith("data:image/png;base64,"), src[:40]
    return base64.b64decode(src.split(",", 1)[1], validate=True)


# ------------------------------------------------------------------ structure
def test_report_is_self_contained(full_report):
    text = full_report.read_text(encoding="utf-8")
    page = Page(text)
    # no URL-bearing attribute points anywhere but into the page itself
    for tag, attrs in page.tags:
        for key in ("src", "href", "srcset", "action", "poster", "data", "xlink:href"):
            if key in attrs:
                v = attrs[key].strip()
                assert v.startswith(("data:", "#")), (tag, key, v[:60])
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "url(" not in text.replace("data:", "")  # no CSS fetches either
    assert "@import" not in text and "<link" not in text.lower()
    # the page forbids loading anything that is not inline
    csp = page.find("meta", **{"http-equiv": "Content-Security-Policy"})
    assert len(csp) == 1 and "default-src 'none'" in csp[0]["content"]
    # every image is an embedded, decodable picture
    imgs = page.find("img")
    assert len(imgs) == len(GRID) + 3
    for img in imgs:
        src = img["src"]
        if src.startswith("data:image/svg+xml"):
            assert b"<svg" in base64.b64decode(src.split(",", 1)[1])
        else:
            assert decode_png(src).startswith(PNG_SIGNATURE)


def test_report_sections_and_escaping(full_report, fits):
    text = full_report.read_text(encoding="utf-8")
    page = Page(text)
    ids = {a.get("id") for _, a in page.tags}
    assert {"data", "comparison", "fits", "figures", "sweep", "sensitivity"} <= ids
    # user text is escaped, never markup
    assert "<title>Linear &lt;groups&gt; &amp; test</title>" in text
    assert "&lt;check&gt;" in text and "<check>" not in text
    # recommendation, in its box and in the recommended table row
    assert RECOMMENDATION in text
    assert len(page.find("div", **{"class": "recommendation"})) == 1
    assert len(page.find("tr", **{"class": "recommended"})) == 1
    # the unpooled mode's missing LDO scores: a dash and the footnote
    assert "\u2014" in text and "cannot predict new drivers" in text
    assert ">nan<" not in text.lower() and "None" not in text
    # one block per fit, per-group rows folded away (pooled has none)
    for mode in fits:
        assert f'id="fit-{mode}"' in text
    assert text.count("<details><summary>Per-group estimates") == 2
    for g in GROUPS:
        assert f"<td>{g}</td>" in text
    # diagnostics with marks; the range in the data summary
    assert text.count("max R-hat") >= len(fits) + 1 and 'class="mark ' in text
    assert "0 \u2013 16.2" in text


def test_sweep_slider(full_report):
    page = Page(full_report.read_text(encoding="utf-8"))
    frames = page.find("img", **{"class": "sweep-frame"})
    assert len(frames) == len(GRID)
    for f in frames:
        assert decode_png(f["src"]).startswith(PNG_SIGNATURE)
    (slider,) = page.find("div", **{"class": "slider"})
    (rng,) = page.find("input", type="range")
    start = int(np.argmin(np.abs(np.log(GRID) - math.log(np.mean(LEARNED)))))
    assert start == 3 and slider["data-start"] == rng["value"] == str(start)
    assert (rng["min"], rng["max"]) == ("0", str(len(GRID) - 1))
    figs = page.find("figure", **{"class": "frame"})
    visible = [int(f["data-k"]) for f in figs if "hidden" not in f]
    assert visible == [start]  # the page shows the right frame even before its script runs
    assert figs[start]["data-label"].startswith(f"tau = {fmt_tau(GRID[start])}")
    assert "elpd_loo = -292.4 \u00b1 8.40" in figs[start]["data-label"]
    assert "best elpd_loo" in figs[2]["data-label"]  # elpd peaks at tau = 0.5 -> grid 0.3


def test_sweep_start_and_missing_ends(fits):
    assert _start_index(make_sweep(learned=())) == (2, None)  # the middle of five points
    assert _start_index(make_sweep(learned=(0.08,))) == (1, 0.08)
    no_ends = render_report(title="t", data_summary={}, fits={},
                            sweep=make_sweep(ends=False))
    assert "sweep-frame" not in no_ends and "no pooled / unpooled" in no_ends
    assert 'data-slider="sweep"' in no_ends  # the scores table still there
    # a report of one fit and nothing else
    one = render_report(title="t", data_summary={"rows": 75}, fits={"h": fits["hierarchical"]})
    assert 'id="comparison"' not in one and 'id="sweep"' not in one
    assert "h (hierarchical)" in one


def test_write_report_is_atomic(tmp_path, fits):
    path = tmp_path / "sub" / "r.html"
    out = write_report(path, title="first", data_summary={"rows": 1},
                       fits={"pooled": fits["pooled"]})
    assert out == path and "<title>first</title>" in path.read_text(encoding="utf-8")
    with pytest.raises(FileNotFoundError):
        write_report(path, title="second", data_summary={}, fits={},
                     figures={"missing": tmp_path / "nope.png"})
    with pytest.raises(ValueError, match="cannot embed"):
        write_report(path, title="second", data_summary={}, fits={},
                     figures={"text": tmp_path / "sub" / "r.html"})
    assert "<title>first</title>" in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.html"]


def test_number_formatting():
    assert fmt_num(float("nan")) == fmt_num(None) == "\u2014"
    assert fmt_num(-287.8123) == "-287.8" and fmt_num(1.23456) == "1.23" and fmt_num(7.0) == "7.00"
    assert fmt_num(12345.6) == "12,345.6" and fmt_num(36000) == "36,000"
    assert fmt_num(0.01234) == "0.0123" and fmt_num(0) == "0"
    assert [fmt_tau(t) for t in (0.3, 0.03, 1.5, 12.0)] == ["0.30", "0.030", "1.50", "12.0"]


# ------------------------------------------------------------------ in a browser
@pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed")
def test_report_loads_in_chromium(full_report):
    loaded, total = check_in_browser(full_report)
    assert (loaded, total) == (len(GRID) + 3, len(GRID) + 3)
    # the slider's script: a link with #sweep=k shows frame k and only frame k
    dom = dump_dom(full_report, fragment="sweep=1")
    assert body_attributes(dom)["data-images-total"] == str(total)
    page = Page(dom)
    (slider,) = page.find("div", **{"class": "slider"})
    assert slider["data-current"] == "1"
    assert [f["data-k"] for f in page.find("figure", **{"class": "frame"})
            if "hidden" not in f] == ["1"]
    assert [r["data-k"] for r in page.find("tr", **{"class": "current"})] == ["1"]
