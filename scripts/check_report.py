#!/usr/bin/env python
"""Open a carpool HTML report in headless Chromium and check that every figure loaded.

Usage: python scripts/check_report.py REPORT.html [--screenshot OUT.png]

Prints "N of M images loaded"; exits 0 only if all M > 0 images loaded, 1 if not, 2 when no
Chromium is installed.
"""

from __future__ import annotations

import argparse
import sys

from carpool.report.browser import BrowserNotFoundError, check_in_browser, screenshot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("report", help="the HTML file written by carpool.report.write_report")
    ap.add_argument("--screenshot", metavar="PNG", help="also write a screenshot here")
    ap.add_argument("--width", type=int, default=1280, help="screenshot width, px")
    ap.add_argument("--height", type=int, default=4000, help="screenshot height, px")
    args = ap.parse_args(argv)
    try:
        loaded, total = check_in_browser(args.report)
        print(f"{loaded} of {total} images loaded")
        if args.screenshot:
            shot = screenshot(args.report, args.screenshot, width=args.width,
                              height=args.height)
            print(f"screenshot: {shot}")
    except BrowserNotFoundError as exc:
        print(f"check_report: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"check_report: {exc}", file=sys.stderr)
        return 1
    return 0 if total > 0 and loaded == total else 1


if __name__ == "__main__":
    sys.exit(main())
