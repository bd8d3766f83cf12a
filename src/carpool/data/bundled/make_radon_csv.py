"""Rebuild ``radon_mn.csv`` from posteriordb's ``radon_mn`` data file.

Usage (from the repository root)::

    python src/carpool/data/bundled/make_radon_csv.py path/to/data_data_radon_mn.json.zip

The argument is posteriordb's ``posterior_database/data/data/radon_mn.json.zip`` (provenance
and licence in ``README.md`` beside this script). Writes ``radon_mn.csv`` next to this file,
or to the path given as a second argument. Standard library only.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from pathlib import Path

COLUMNS = ("county", "floor", "log_radon", "log_uppm")


def read_radon(source: str | Path) -> dict:
    """The JSON object inside the zip (keys N, J, county_idx, floor_measure, log_radon,
    log_uppm), checked for consistent lengths."""
    with zipfile.ZipFile(source) as zf:
        names = [n for n in zf.namelist() if n.endswith(".json")]
        if len(names) != 1:
            raise SystemExit(f"expected one .json file in {source}, found {names}")
        data = json.loads(zf.read(names[0]))
    n = data["N"]
    for key in ("county_idx", "floor_measure", "log_radon", "log_uppm"):
        if len(data[key]) != n:
            raise SystemExit(f"{key} has {len(data[key])} values, N is {n}")
    if sorted(set(data["county_idx"])) != list(range(1, data["J"] + 1)):
        raise SystemExit("county_idx is not 1..J")
    if set(data["floor_measure"]) - {0, 1}:
        raise SystemExit("floor_measure is not 0/1")
    return data


def radon_csv(data: dict) -> str:
    """The CSV text: one row per home in the source's order; floats as Python writes them
    (shortest round-trip form), so the file holds the source's values exactly."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in zip(data["county_idx"], data["floor_measure"], data["log_radon"],
                   data["log_uppm"], strict=True):
        writer.writerow([int(row[0]), int(row[1]), repr(float(row[2])), repr(float(row[3]))])
    return out.getvalue()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    target = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).with_name(
        "radon_mn.csv")
    text = radon_csv(read_radon(sys.argv[1]))
    tmp = target.with_suffix(".csv.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    print(f"wrote {target} ({text.count(chr(10)) - 1} rows)")
