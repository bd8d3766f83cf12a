"""Hypothesis strategies of malformed trajectory files, each with the words its error must name.

A case starts from a valid carpool CSV (1-3 drivers, 3-8 rows each, a uniform step) and
applies one corruption. :func:`malformed_files` draws ``(name, bytes, needles)``: the file's
content and the substrings the one-line error must contain (the problem, and the line or
driver where there is one). Shared by ``tests/test_property_inputs.py`` and
``benchmarks/bad_inputs.py``, which counts the cases.
"""

from __future__ import annotations

from hypothesis import strategies as st

COLUMNS = ("driver", "time", "speed", "gap", "leader_speed")
NUMERIC = ("time", "speed", "gap", "leader_speed")
#: The corruption kinds, for counting.
KINDS = ("missing_column", "renamed_column", "nan_or_inf", "non_positive_gap",
         "negative_speed", "duplicated_time", "irregular_step", "one_row_driver",
         "wrong_type", "empty", "header_only", "huge_value", "non_utf8", "missing_driver",
         "garbage_bytes")

_ids = st.text(alphabet="abcXYZ019-_ ", min_size=1, max_size=6).map(str.strip).filter(bool)


@st.composite
def valid_table(draw) -> tuple[list[str], list[list[str]]]:
    """Header and rows (as strings) of a valid carpool table, drivers in blocks."""
    drivers = draw(st.lists(_ids, min_size=1, max_size=3, unique=True))
    dt = draw(st.sampled_from([0.04, 0.1, 0.2, 0.5, 1.0]))
    rows = []
    for d in drivers:
        n = draw(st.integers(3, 8))
        t0 = draw(st.sampled_from([0.0, 3.0, 100.0]))
        for k in range(n):
            speed = draw(st.floats(0.0, 40.0, allow_nan=False))
            gap = draw(st.floats(0.5, 200.0, allow_nan=False))
            lead = draw(st.floats(0.0, 40.0, allow_nan=False))
            rows.append([d, repr(round(t0 + k * dt, 6)), repr(speed), repr(gap), repr(lead)])
    return list(COLUMNS), rows


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    return ("\n".join(",".join(r) for r in [header, *rows]) + "\n").encode("utf-8")


def _line(i: int) -> str:
    return f"line {i + 2} "  # data row i is file line i + 2 (the header is line 1)


@st.composite
def malformed_files(draw) -> tuple[str, bytes, list[str]]:
    """``(kind, file bytes, needles)``: a corrupted file and what its error must name."""
    kind = draw(st.sampled_from(KINDS))
    header, rows = draw(valid_table())
    i = draw(st.integers(0, len(rows) - 1))
    driver = rows[i][0]
    where = [_line(i), f"driver {driver!r}"]
    if kind in ("missing_column", "renamed_column"):
        j = draw(st.integers(0, len(COLUMNS) - 1))
        name = COLUMNS[j]
        if kind == "missing_column":
            header = header[:j] + header[j + 1:]
            rows = [r[:j] + r[j + 1:] for r in rows]
        else:
            header = [*header]
            header[j] = draw(st.sampled_from([name.upper(), name + "_m", "x" + name, "v"]))
        return kind, _csv(header, rows), [f"missing required column {name!r}"]
    if kind == "nan_or_inf":
        col = draw(st.sampled_from(NUMERIC))
        rows[i][COLUMNS.index(col)] = draw(st.sampled_from(["nan", "NaN", "", "inf", "-inf",
                                                           "Infinity"]))
        return kind, _csv(header, rows), [*where, col, "NaN/inf"]
    if kind == "non_positive_gap":
        rows[i][3] = draw(st.sampled_from(["0", "0.0", "-0.0", "-1e-9", "-3.5", "-1e300"]))
        return kind, _csv(header, rows), [*where, "gap", "not positive"]
    if kind == "negative_speed":
        col = draw(st.sampled_from(["speed", "leader_speed"]))
        rows[i][COLUMNS.index(col)] = draw(st.sampled_from(["-0.001", "-5", "-1e10"]))
        return kind, _csv(header, rows), [*where, col, "negative"]
    if kind == "duplicated_time":
        block = [k for k, r in enumerate(rows) if r[0] == driver]
        k = block[1] if block[0] == i else i
        rows[k][1] = rows[k - 1][1]
        return kind, _csv(header, rows), [f"driver {driver!r}", "duplicated time stamp"]
    if kind == "irregular_step":
        block = [k for k, r in enumerate(rows) if r[0] == driver]
        k = draw(st.sampled_from(block[1:]))
        factor = draw(st.sampled_from([0.5, 1.5, 2.0, 3.7]))
        t_prev = float(rows[k - 1][1])
        step = float(rows[block[1]][1]) - float(rows[block[0]][1])
        shift = (factor - 1.0) * step
        for m in block[block.index(k):]:
            rows[m][1] = repr(round(float(rows[m][1]) + shift, 6))
        assert float(rows[k][1]) > t_prev  # a step changed, never the order
        return kind, _csv(header, rows), [f"driver {driver!r}", "non-uniform time step"]
    if kind == "one_row_driver":
        new = draw(_ids.filter(lambda d: d not in {r[0] for r in rows}))
        rows.append([new, "0.0", "10.0", "20.0", "10.0"])
        return kind, _csv(header, rows), [f"driver {new!r}", "too short"]
    if kind == "wrong_type":
        col = draw(st.sampled_from(NUMERIC))
        rows[i][COLUMNS.index(col)] = draw(st.sampled_from(["abc", "10 m/s", "True", "1,5",
                                                           "0x10", "[1]", "12:00"]))
        if rows[i][COLUMNS.index(col)] == "1,5":  # an extra field: a parse error of the line
            return kind, _csv(header, rows), [f"line {i + 2}", "fields"]
        return kind, _csv(header, rows), [*where, col, "not numeric"]
    if kind == "empty":
        content = draw(st.sampled_from([b"", b"\n", b"\n\n  \n"]))
        return kind, content, ["empty"]
    if kind == "header_only":
        return kind, _csv(header, []), ["no data rows"]
    if kind == "huge_value":
        col = draw(st.sampled_from(NUMERIC))
        value = draw(st.sampled_from([1e300, 1.7e308, 1e40, 1e20]))
        rows[i][COLUMNS.index(col)] = repr(value)
        return kind, _csv(header, rows), [*where, col, "implausibl"]
    if kind == "non_utf8":
        data = bytearray(_csv(header, rows))
        bad = draw(st.sampled_from([b"\xff", b"\xe9", b"\xc3\x28", b"\x80\x80"]))
        text_rows = data.split(b"\n")
        text_rows[i + 1] = text_rows[i + 1].replace(driver.encode(), driver.encode() + bad, 1)
        return kind, b"\n".join(text_rows), ["UTF-8", f"line {i + 2}"]
    if kind == "missing_driver":
        rows[i][0] = ""
        return kind, _csv(header, rows), [f"line {i + 2}", "driver is missing"]
    # garbage_bytes: random binary content that is not a table
    content = draw(st.binary(min_size=1, max_size=200))
    return kind, content, []


def is_one_line(message: str) -> bool:
    return bool(message) and "\n" not in message.strip() and "Traceback" not in message



#: Corruptions of a USDOT / OpenACC-style wide platoon file (Time, Speed<i>, IVS<i>).
WIDE_KINDS = ("wide_text_cell", "wide_negative_ivs", "wide_duplicated_time", "wide_one_row",
              "wide_huge_speed", "wide_missing_ivs")


@st.composite
def malformed_wide_files(draw) -> tuple[str, bytes, list[str]]:
    """``(kind, file bytes, needles)`` for a corrupted USDOT platoon CSV."""
    kind = draw(st.sampled_from(WIDE_KINDS))
    vehicles = draw(st.integers(2, 4))
    n = draw(st.integers(4, 12))
    header = ["Time", *(f"Speed{v}" for v in range(1, vehicles + 1)),
              *(f"IVS{v}" for v in range(1, vehicles))]
    rows = [[repr(round(0.1 * k, 6)),
             *(repr(draw(st.floats(0.0, 30.0))) for _ in range(vehicles)),
             *(repr(draw(st.floats(1.0, 80.0))) for _ in range(vehicles - 1))]
            for k in range(n)]
    i = draw(st.integers(0, n - 1))
    if kind == "wide_text_cell":
        j = draw(st.integers(0, len(header) - 1))
        rows[i][j] = draw(st.sampled_from(["abc", "1.2.3", "--"]))
        needles = [header[j], "not numeric"]
    elif kind == "wide_negative_ivs":
        j = draw(st.integers(vehicles + 1, len(header) - 1))
        rows[i][j] = "-2.0"
        needles = ["gap", "not positive"]
    elif kind == "wide_duplicated_time":
        k = max(i, 1)
        rows[k][0] = rows[k - 1][0]
        needles = ["Time", "does not increase", f"data row {k} "]
    elif kind == "wide_one_row":
        rows = rows[:1]
        needles = []
    elif kind == "wide_huge_speed":
        j = draw(st.integers(1, vehicles))
        rows[i][j] = "1e300"
        needles = ["implausibl"]
    else:  # wide_missing_ivs: no gap column at all
        header = header[:vehicles + 1]
        rows = [r[:vehicles + 1] for r in rows]
        needles = []
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    return kind, text.encode("utf-8"), needles
