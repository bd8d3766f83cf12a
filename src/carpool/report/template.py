"""The page around the report's sections: inline CSS, the slider script, the skeleton.

Everything the page needs is in the one file: no fonts, stylesheets, scripts or images are
fetched, and the Content-Security-Policy below makes the browser refuse to fetch any (images
may only be ``data:`` URIs, styles and scripts only inline).
"""

from __future__ import annotations

from string import Template

__all__ = ["PAGE", "CSS", "SCRIPT", "CSP"]

#: Nothing may be loaded from anywhere: images only as data URIs, inline CSS and JS only.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")

CSS = """
:root { --fg: #1d232a; --muted: #5b6672; --line: #d9dee3; --head: #eef1f4; --zebra: #f8f9fa;
        --ok: #1a7f37; --bad: #c62828; --accent: #1f5fa8; --rec: #e8f5e9; --rec-line: #2e7d32;
        --warn: #fff8e1; --warn-line: #f9a825; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
             Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.75rem; margin: 0 0 4px; }
h2 { font-size: 1.3rem; margin: 40px 0 10px; padding-bottom: 4px;
     border-bottom: 2px solid var(--line); }
h3 { font-size: 1.08rem; margin: 26px 0 8px; }
p { margin: 6px 0 10px; }
.meta { color: var(--muted); font-size: 0.9rem; margin-bottom: 10px; }
nav.toc { font-size: 0.92rem; margin: 8px 0 0; }
nav.toc a { color: var(--accent); text-decoration: none; margin-right: 14px; }
nav.toc a:hover { text-decoration: underline; }
.lead { font-size: 1.02rem; }
.note { color: var(--muted); font-size: 0.87rem; }
.table-wrap { overflow-x: auto; margin: 6px 0 12px; }
table { border-collapse: collapse; font-size: 0.88rem; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
th[title] { cursor: help; text-decoration: underline dotted var(--muted); }
tbody tr:nth-child(even) { background: var(--zebra); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.bad { color: var(--bad); font-weight: 600; }
table.kv th { background: none; font-weight: 500; color: var(--muted); }
tr.recommended td { background: var(--rec); font-weight: 600; }
tr.current td { background: #e3eefb; font-weight: 600; }
.mark { display: inline-block; min-width: 1.2em; font-weight: 700; text-align: center; }
.mark.ok { color: var(--ok); }
.mark.bad { color: var(--bad); }
.mark.na { color: var(--muted); }
.box { border-left: 5px solid; border-radius: 4px; padding: 10px 16px; margin: 12px 0; }
.recommendation { background: var(--rec); border-color: var(--rec-line); }
.recommendation .mode { font-size: 1.15rem; font-weight: 700; }
.warnings { background: var(--warn); border-color: var(--warn-line); }
.warnings ul { margin: 4px 0; padding-left: 20px; }
.fit { border: 1px solid var(--line); border-radius: 6px; padding: 4px 16px 10px;
       margin: 14px 0; }
.fit h3 { margin-top: 12px; }
.fit-grid { display: flex; flex-wrap: wrap; gap: 8px 28px; }
.timing { color: var(--muted); font-size: 0.88rem; }
details { margin: 6px 0 12px; }
details > summary { cursor: pointer; color: var(--accent); font-size: 0.92rem; }
figure { margin: 16px 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.9rem; margin-top: 4px; }
.bar { display: inline-block; height: 0.7em; background: #9bbbe0; margin-right: 6px;
       vertical-align: baseline; }
.slider { border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; }
.slider input[type=range] { display: block; width: 100%; margin: 8px 0 0; }
.slider .ticks { position: relative; height: 1.3em; font-size: 0.8rem; color: var(--muted);
                 font-variant-numeric: tabular-nums; }
.slider .ticks span { position: absolute; top: 0; transform: translateX(-50%);
                      white-space: nowrap; }
.slider .ends { display: flex; justify-content: space-between; color: var(--muted);
                font-size: 0.82rem; }
.slider-label { display: block; font-size: 1rem; font-weight: 600;
                font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.slider .frame { margin: 10px 0 0; }
.slider .frame figcaption { display: none; }
footer { margin-top: 48px; color: var(--muted); font-size: 0.82rem; }
"""

# Shown when scripts are off: every slider frame, one under the other, each with its caption.
NOSCRIPT_CSS = """
.slider .frame[hidden] { display: block; }
.slider .frame figcaption { display: block; }
.slider input[type=range], .slider .ticks, .slider .ends, .slider-label { display: none; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  function setupSlider(box) {
    var input = box.querySelector("input[type=range]");
    var frames = box.querySelectorAll(".frame");
    var label = box.querySelector(".slider-label");
    var rows = document.querySelectorAll('tr[data-slider="' + box.id + '"]');
    function show(i) {
      if (!(i >= 0)) { i = 0; }
      i = Math.min(frames.length - 1, i);
      for (var j = 0; j < frames.length; j++) { frames[j].hidden = (j !== i); }
      for (var r = 0; r < rows.length; r++) {
        rows[r].classList.toggle("current", parseInt(rows[r].dataset.k, 10) === i);
      }
      input.value = String(i);
      label.textContent = frames[i].getAttribute("data-label");
      box.setAttribute("data-current", String(i));
    }
    input.addEventListener("input", function () { show(parseInt(input.value, 10)); });
    // a link such as report.html#sweep=3 opens the slider at grid point 3
    var m = new RegExp("[#&]" + box.id + "=(\\d+)").exec(window.location.hash);
    show(m ? parseInt(m[1], 10) : parseInt(box.getAttribute("data-start"), 10));
  }
  var sliders = document.querySelectorAll(".slider");
  for (var s = 0; s < sliders.length; s++) { setupSlider(sliders[s]); }
  // for headless checks: did every figure load?
  window.addEventListener("load", function () {
    var imgs = document.images, ok = 0;
    for (var i = 0; i < imgs.length; i++) {
      if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
    }
    document.body.setAttribute("data-images-total", String(imgs.length));
    document.body.setAttribute("data-images-loaded", String(ok));
    document.body.setAttribute("data-svgs-total",
                               String(document.querySelectorAll("svg").length));
  });
})();
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="generator" content="carpool $version">
<title>$title</title>
<style>$css</style>
<noscript><style>$noscript_css</style></noscript>
</head>
<body>
<main>
<header>
<h1>$title</h1>
<div class="meta">$meta</div>
$headline
<nav class="toc">$toc</nav>
</header>
$sections
<footer>Generated by carpool $version on $date. This file is self-contained: it needs no
network connection and no server.</footer>
</main>
<script>$script</script>
</body>
</html>
""")
