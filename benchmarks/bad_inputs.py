"""Malformed trajectory files through the readers and ``carpool fit``: count cases and failures.

Draws files from the hypothesis strategies of ``tests/malformed.py`` (random corruptions of
valid carpool tables and USDOT platoon files: missing or renamed columns, NaN/inf,
non-positive gaps, negative speeds, duplicated times, irregular steps, one-row drivers,
wrong types, empty files, huge values, non-UTF-8 bytes, random bytes, ...) and checks that
each gives exactly one error line naming the problem: ``read_trajectories`` raises a
DataError, ``carpool fit`` exits 2 with one ``error:`` line (through typer's CliRunner, with
``carpool.fit`` replaced by a function that fails the case if input ever gets that far).

    python benchmarks/bad_inputs.py --docs    # the documented run; writes docs/reliability.md
    python benchmarks/bad_inputs.py --smoke   # seconds

Prints a table by kind and writes JSON to ``benchmarks/results/bad_inputs.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- bad-inputs:begin (written by benchmarks/bad_inputs.py) -->"
END = "<!-- bad-inputs:end -->"


def main() -> None:
    from _results import write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reader-cases", type=int, default=5000)
    ap.add_argument("--cli-cases", type=int, default=1000)
    ap.add_argument("--docs", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/bad_inputs.json")
    args = ap.parse_args()
    if args.smoke:
        args.reader_cases, args.cli_cases, args.docs = 30, 10, False

    sys.path.insert(0, str(ROOT / "tests"))
    import pandas as pd
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from malformed import is_one_line, malformed_files, malformed_wide_files
    from typer.testing import CliRunner

    import carpool
    from carpool.cli import app
    from carpool.data import DataError

    def forbidden(*a, **k):
        raise AssertionError("carpool.fit was reached with malformed input")

    carpool.fit = forbidden
    runner = CliRunner()
    counts = {"reader": Counter(), "cli": Counter()}
    failures: list[dict] = []
    folder = Path(tempfile.mkdtemp(prefix="carpool-bad-inputs-"))
    path, out = folder / "data.csv", folder / "fit.nc"

    def record(where: str, kind: str, ok: bool, detail: str) -> None:
        counts[where][(kind, "cases")] += 1
        if not ok:
            counts[where][(kind, "failed")] += 1
            failures.append({"where": where, "kind": kind, "detail": detail[-500:]})

    def read_case(case) -> None:
        kind, content, needles = case
        path.write_bytes(content)
        try:
            carpool.read_trajectories(path)
        except DataError as error:
            msg = str(error)
            ok = is_one_line(msg) and all(n in msg for n in needles)
            return record("reader", kind, ok, msg)
        except BaseException:  # a traceback: exactly what must never happen
            return record("reader", kind, False, traceback.format_exc())
        record("reader", kind, False, "no error: a result was returned")

    def cli_case(case) -> None:
        kind, content, needles = case
        path.write_bytes(content)
        result = runner.invoke(app, ["fit", str(path), "--out", str(out), "--no-progress"])
        lines = result.stderr.splitlines()
        ok = (result.exit_code == 2 and isinstance(result.exception, SystemExit)
              and "Traceback" not in result.output and len(lines) == 1
              and lines[0].startswith("error: ") and all(n in lines[0] for n in needles)
              and not out.exists())
        record("cli", kind, ok, result.output + repr(result.exception))

    files = st.one_of(malformed_files(), malformed_wide_files())
    common = {"deadline": None, "database": None, "derandomize": True,
              "suppress_health_check": list(HealthCheck)}
    t0 = time.perf_counter()
    given(files)(settings(max_examples=args.reader_cases, **common)(read_case))()
    t_reader = time.perf_counter() - t0
    given(files)(settings(max_examples=args.cli_cases, **common)(cli_case))()
    t_cli = time.perf_counter() - t0 - t_reader

    rows = []
    for where, c in counts.items():
        for kind in sorted({k for k, _ in c}):
            rows.append({"stage": where, "kind": kind, "cases": c[(kind, "cases")],
                         "failed": c[(kind, "failed")]})
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(table.pivot(index="kind", columns="stage", values=["cases", "failed"])
          .fillna(0).astype(int).to_string())
    total = {w: int(table.loc[table["stage"] == w, "cases"].sum()) for w in counts}
    failed = {w: int(table.loc[table["stage"] == w, "failed"].sum()) for w in counts}
    print(f"readers: {total['reader']} cases, {failed['reader']} failed ({t_reader:.0f} s); "
          f"cli: {total['cli']} cases, {failed['cli']} failed ({t_cli:.0f} s)")
    for f in failures[:10]:
        print(f)
    write_results(args.json, args, cases=total, failed=failed, by_kind=rows,
                  failures=failures[:50], seconds={"reader": t_reader, "cli": t_cli})
    if args.docs:
        from carpool.io import atomic_write_text

        doc = ROOT / "docs" / "reliability.md"
        text = doc.read_text(encoding="utf-8")
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        kinds = table.pivot(index="kind", columns="stage", values="cases").fillna(0)
        lines = ["| kind | reader cases | CLI cases |", "|---|---|---|"]
        lines += [f"| {k} | {int(r.get('reader', 0))} | {int(r.get('cli', 0))} |"
                  for k, r in kinds.iterrows()]
        lines += ["", f"{total['reader']} malformed files through `read_trajectories` and "
                      f"{total['cli']} through `carpool fit`: {failed['reader']} and "
                      f"{failed['cli']} gave a traceback, a result, several lines or a "
                      f"message missing the expected words ({t_reader + t_cli:.0f} s)."]
        atomic_write_text(doc, f"{head}{BEGIN}\n" + "\n".join(lines) + f"\n{END}{tail}")
    if sum(failed.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
