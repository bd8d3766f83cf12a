"""Rebuild ``usdot_platoon_5hz.csv`` from the original USDOT file.

Usage (from the repository root)::

    PYTHONPATH=src python src/carpool/data/bundled/make_usdot_platoon.py \
        tests/data/trajectories/usdot_acc_platoon_10hz.csv

The conversion itself is :func:`carpool.data.datasets.build_usdot_platoon`; the tests
check that it reproduces the committed file.
"""

import sys
from pathlib import Path

from carpool.data.datasets import build_usdot_platoon
from carpool.io import atomic_write_text

if __name__ == "__main__":
    source = (
        sys.argv[1]
        if len(sys.argv) > 1
        else "tests/data/trajectories/usdot_acc_platoon_10hz.csv"
    )
    target = Path(__file__).with_name("usdot_platoon_5hz.csv")
    atomic_write_text(target, build_usdot_platoon(source).to_csv(index=False))
