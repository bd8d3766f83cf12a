"""The self-contained HTML report of a calibration (fits, comparison, pooling dial).

:func:`write_report` writes one HTML file that opens offline from disk;
:func:`check_in_browser` loads it in headless Chromium and counts the figures that rendered.
Matplotlib is imported only when a figure is drawn.
"""

from carpool.report.browser import BrowserNotFoundError, check_in_browser, find_chromium
from carpool.report.html import figure_data_uri, render_report, write_report

__all__ = ["write_report", "render_report", "figure_data_uri", "check_in_browser",
           "find_chromium", "BrowserNotFoundError"]
