"""Open a report in headless Chromium: did every figure load, what does the page look like.

Chromium is optional (it is not a dependency of carpool): :func:`find_chromium` returns
``None`` when there is none, and the functions here raise :class:`BrowserNotFoundError`.
Each run uses a fresh, throw-away profile and no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["BrowserNotFoundError", "find_chromium", "dump_dom", "body_attributes",
           "check_in_browser", "screenshot"]

#: Names tried on PATH, then absolute paths; ``CARPOOL_CHROMIUM`` overrides both.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
              "/usr/bin/chromium", "/usr/bin/chromium-browser")

#: Flags for a quiet, offline, headless run that leaves nothing behind.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio")


class BrowserNotFoundError(RuntimeError):
    """No Chromium / Chrome executable was found."""


def find_chromium() -> str | None:
    """Path of a Chromium or Chrome executable, or ``None``."""
    env = os.environ.get("CARPOOL_CHROMIUM")
    for name in ((env,) if env else ()) + CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], *, chromium: str | None, timeout_s: float) -> str:
    exe = chromium or find_chromium()
    if exe is None:
        raise BrowserNotFoundError("no Chromium found: install chromium or set CARPOOL_CHROMIUM")
    with tempfile.TemporaryDirectory(prefix="carpool-chromium-") as profile:
        proc = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"chromium exited with {proc.returncode}: " + " | ".join(tail))
    return proc.stdout


def _url(path: str | os.PathLike[str], fragment: str = "") -> str:
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such report: {path}")
    return path.as_uri() + (f"#{fragment}" if fragment else "")


def dump_dom(path: str | os.PathLike[str], *, fragment: str = "", chromium: str | None = None,
             virtual_time_ms: int = 5000, timeout_s: float = 120.0) -> str:
    """The page's DOM after it loaded and its scripts ran (``--dump-dom``).

    ``fragment`` is appended to the URL after ``#`` (e.g. ``"sweep=3"`` opens the pooling
    dial's slider at grid point 3).
    """
    return _run([f"--virtual-time-budget={virtual_time_ms}", "--dump-dom",
                 _url(path, fragment)], chromium=chromium, timeout_s=timeout_s)


def body_attributes(dom: str) -> dict[str, str]:
    """The attributes of the ``<body>`` element of an HTML document."""
    found: dict[str, str] = {}

    class _Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "body" and not found:
                found.update((k, v or "") for k, v in attrs)
                found.setdefault("", "")  # seen, even with no attributes

    _Parser().feed(dom)
    found.pop("", None)
    return found


def check_in_browser(path: str | os.PathLike[str], *, chromium: str | None = None,
                     timeout_s: float = 120.0) -> tuple[int, int]:
    """Load a report in headless Chromium: (images loaded, images in the page).

    The report's script counts, on the window's load event, the ``<img>`` elements that
    decoded (``complete`` and a natural width above 0). A page whose script did not run
    counts as (0, number of ``<img>`` tags).

    Raises
    ------
    BrowserNotFoundError
        When no Chromium is installed.
    """
    dom = dump_dom(path, chromium=chromium, timeout_s=timeout_s)
    attrs = body_attributes(dom)
    if "data-images-total" not in attrs:
        return 0, dom.lower().count("<img")
    return int(attrs.get("data-images-loaded", 0)), int(attrs["data-images-total"])


def screenshot(path: str | os.PathLike[str], out: str | os.PathLike[str], *,
               width: int = 1280, height: int = 4000, fragment: str = "",
               chromium: str | None = None, timeout_s: float = 120.0) -> Path:
    """Write a PNG screenshot of the top ``width`` x ``height`` pixels of a report."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(["--virtual-time-budget=5000", f"--screenshot={out}",
          f"--window-size={width},{height}", _url(path, fragment)],
         chromium=chromium, timeout_s=timeout_s)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out
