"""Reading trajectory files of several formats into the validated carpool format.

Supported formats (``format=``):

``"carpool"``
    The carpool long format (:mod:`carpool.data.schema`) as CSV or Parquet (by extension).
``"usdot"``
    The USDOT FHWA ACC platoon CSV: ``Time, Speed1..N, IVS1..N-1`` (s, m/s, m); vehicle 1
    leads and vehicle ``i + 1`` follows vehicle ``i`` at gap ``IVS<i>``; drivers
    ``"veh2"`` .. ``"vehN"``.
``"openacc"``
    OpenACC CSV: metadata lines (``Vehicle_order``, ...), then ``Time, Speed<i>, ...,
    IVS<i>``. Vehicles are numbered in platoon order and may be missing (part26 has
    vehicles 1, 2, 5, 6, 7 and gaps IVS1, IVS5, IVS6: followers 2, 6 and 7). Drivers are
    named after ``Vehicle_order``.
``"highd"``
    highD ``<rec>_tracks.csv`` (+ sibling ``<rec>_tracksMeta.csv``): leader-follower
    segments, split at leader and lane changes, 5 Hz by default; drivers
    ``"<rec>-<id>"`` or ``"<rec>-<id>-<k>"`` for the ``k``-th segment of a split series.
``"ngsim"``
    NGSIM US-101 / I-80 trajectories, converted from feet to metres; drivers
    ``"<Vehicle_ID>"`` or ``"<Vehicle_ID>-<k>"``.
``"auto"``
    Detected from the extension, metadata and header.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd

from carpool.data._highd import read_highd
from carpool.data._ngsim import read_ngsim
from carpool.data._platoon import read_openacc, read_usdot
from carpool.data.schema import REQUIRED_COLUMNS, DataError, validate_labelled
from carpool.errors import InputError

__all__ = ["FORMATS", "detect_format", "read_trajectories"]

#: Valid values of ``format=``.
FORMATS: tuple[str, ...] = ("auto", "carpool", "usdot", "openacc", "highd", "ngsim")

_PARQUET_SUFFIXES = (".parquet", ".pq")
_FORMAT_READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "usdot": read_usdot,
    "openacc": read_openacc,
    "highd": read_highd,
    "ngsim": read_ngsim,
}


def read_trajectories(
    path: str | PathLike[str],
    *,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    resample: bool = False,
    min_observations: int = 3,
    **reader_options: Any,
) -> pd.DataFrame:
    """Read a trajectory file and return it validated, in the carpool format.

    Parameters
    ----------
    path
        File to read. For highD, the ``<rec>_tracks.csv`` file.
    format
        One of :data:`FORMATS`; see the module docstring. ``"auto"`` detects it.
    columns
        Column renaming applied to the file's own columns before reading,
        ``{name in the file: expected name}``: carpool names for ``"carpool"``, the
        format's names (``"Preceding"``, ``"dhw"``, ...) for the others.
    resample
        Passed to :func:`~carpool.data.validate_trajectories`: interpolate drivers with a
        non-uniform time step onto their median step.
    min_observations
        Fewest samples per driver. For ``"carpool"`` a shorter driver is an error; the
        other readers drop shorter segments.
    **reader_options
        Format-specific options:

        - carpool: passed to :func:`pandas.read_csv` / :func:`pandas.read_parquet`;
        - usdot, openacc: ``target_hz`` (output rate, Hz; default: native 10 Hz),
          ``max_fill_s`` (interpolate missing values over at most this many seconds,
          default 0.5; longer holes split the series), ``min_duration_s`` (default 0);
        - highd: ``target_hz`` (default 5.0), ``min_duration_s`` (default 5.0),
          ``frame_rate`` (default from recordingMeta, else 25), ``meta_path``;
        - ngsim: ``target_hz`` (default: native 10 Hz), ``min_duration_s`` (default 5.0),
          ``frame_rate`` (default 10), ``length_unit`` (``"ft"`` default, or ``"m"``).

    Returns
    -------
    pandas.DataFrame
        Columns ``driver, time, speed, gap, leader_speed`` (+ ``class``) in s, m/s, m, m/s,
        sorted by driver then time.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For an unknown ``format`` or reader option.
    DataError
        For an empty file, an unrecognised layout or invalid data. Errors in a carpool CSV
        name the 1-based line of the file.

    Examples
    --------
    >>> from carpool.data import example_path, read_trajectories
    >>> df = read_trajectories(example_path("usdot-platoon"))
    >>> sorted(df["driver"].unique())
    ['veh2', 'veh3', 'veh4', 'veh5']
    """
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}; valid formats are {', '.join(FORMATS)}")
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"trajectory file not found: '{file}'")
    if file.is_dir():
        raise DataError(f"'{file}' is a directory; pass a trajectory file")
    if file.stat().st_size == 0:
        raise DataError(f"file '{file}' is empty")
    columns = dict(columns) if columns else None
    if format == "auto":
        format = detect_format(file, columns=columns)

    try:
        return _read(file, format, columns, resample, min_observations, reader_options)
    except DataError as error:
        if file.name in str(error):
            raise
        raise DataError(f"{file.name}: {error}") from None
    except UnicodeDecodeError as error:
        raise DataError(_not_utf8(file, error)) from None
    except pd.errors.ParserError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "parse error"
        raise DataError(f"{file.name}: not a well-formed CSV table: {first}") from None


def _read(
    file: Path,
    format: str,
    columns: dict[str, str] | None,
    resample: bool,
    min_observations: int,
    reader_options: dict[str, Any],
) -> pd.DataFrame:
    if format == "carpool":
        raw = _read_carpool(file, columns, reader_options)
        return validate_labelled(
            raw,
            columns=columns,
            min_observations=min_observations,
            resample=resample,
            row_label=_line_label(file),
        )

    reader = _FORMAT_READERS[format]
    _check_options(format, reader, reader_options)
    long = reader(file, columns=columns, min_observations=min_observations, **reader_options)
    if len(long) == 0:
        raise DataError(
            f"{file.name}: no leader-follower segment of at least {min_observations} samples"
            " was found (see the reader options min_duration_s and min_observations)"
        )
    return validate_labelled(
        long,
        columns=None,
        min_observations=min_observations,
        resample=resample,
        row_label=lambda i: f"row {i} (0-based) of the table converted from {file.name}",
    )


def detect_format(path: str | PathLike[str], *, columns: Mapping[str, str] | None = None) -> str:
    """Guess the format of a trajectory file from its extension, metadata and header.

    Parameters
    ----------
    path
        File to inspect (only the first lines are read).
    columns
        Renaming applied to the header before matching, as in :func:`read_trajectories`.

    Returns
    -------
    str
        One of ``"carpool"``, ``"usdot"``, ``"openacc"``, ``"highd"``, ``"ngsim"``.

    Raises
    ------
    DataError
        If the file is empty or its header matches no format.
    """
    file = Path(path)
    if file.suffix.lower() in _PARQUET_SUFFIXES:
        return "carpool"
    with open(file, encoding="utf-8-sig", errors="replace") as handle:
        lines = [handle.readline() for _ in range(8)]
    lines = [line.strip() for line in lines if line.strip()]
    if not lines:
        raise DataError(f"file '{file}' is empty")
    if lines[0].split(",")[0].strip() == "Date" or any(
        line.startswith("Vehicle_order") for line in lines
    ):
        return "openacc"
    header = [f.strip() for f in lines[0].replace("\t", ",").split(",")]
    if len(header) == 1:
        header = lines[0].split()
    if columns:
        header = [columns.get(name, name) for name in header]
    lower = {name.lower() for name in header}
    if {"frame", "id", "precedingid", "dhw"} <= lower:
        return "highd"
    if {"vehicle_id", "frame_id", "space_headway"} <= lower:
        return "ngsim"
    if len(header) == 18 and all(_is_number(f) for f in header):
        return "ngsim"  # the original headerless NGSIM text files
    if len(set(REQUIRED_COLUMNS) & set(header)) >= 3:
        return "carpool"  # validation names the missing or misspelled column
    if (
        "Time" in header
        and any(h.startswith("Speed") for h in header)
        and any(h.startswith("IVS") for h in header)
    ):
        return "usdot"
    if "numlanechanges" in lower or "initialframe" in lower:
        raise DataError(
            f"'{file.name}' looks like a highD tracksMeta file; pass the <rec>_tracks.csv file"
        )
    raise DataError(
        f"cannot detect the format of '{file.name}': header {header[:12]} matches none of"
        f" carpool (columns {', '.join(REQUIRED_COLUMNS)}), usdot (Time, Speed<i>, IVS<i>),"
        " openacc, highd, ngsim; pass format=... or columns={'<name>': '<carpool name>'}"
    )


def _read_carpool(
    file: Path, columns: dict[str, str] | None, options: dict[str, Any]
) -> pd.DataFrame:
    if file.suffix.lower() in _PARQUET_SUFFIXES:
        try:
            return pd.read_parquet(file, **options)
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "reading Parquet needs pyarrow: pip install 'carpool[parquet]'"
            ) from error
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            if isinstance(error, (FileNotFoundError, PermissionError, DataError)):
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
            raise DataError(f"{file.name}: not a readable Parquet file: {first}") from error
    inverse = {target: source for source, target in (columns or {}).items()}
    as_text = {inverse.get(name, name): str for name in ("driver", "class")}
    try:
        raw = pd.read_csv(file, dtype=as_text, **options)
    except pd.errors.EmptyDataError as error:
        raise DataError(f"file '{file}' is empty") from error
    except TypeError as error:
        raise InputError(f"invalid reader option for format 'carpool': {error}") from error
    if len(raw) == 0:
        raise DataError(f"file '{file}' has a header but no data rows")
    if "index_col" not in options and not isinstance(raw.index, pd.RangeIndex):
        # pandas takes the first column as the index when the first data row has one field
        # more than the header; every column would be shifted by one
        raise DataError(f"{file.name}: line 2 has {len(raw.columns) + 1} fields but the header "
                        f"{len(raw.columns)} (a stray separator?); the columns would shift")
    return raw


def _not_utf8(file: Path, error: UnicodeDecodeError) -> str:
    """One line naming the file line of the first byte that is not UTF-8."""
    raw = file.read_bytes()
    try:
        raw.decode("utf-8")
        position = error.start
    except UnicodeDecodeError as first:
        position = first.start
    line = raw.count(b"\n", 0, position) + 1
    return (f"{file.name}: line {line} is not UTF-8 text (byte 0x{raw[position]:02x}); "
            "re-save the file as UTF-8")


def _line_label(file: Path) -> Callable[[int], str]:
    if file.suffix.lower() in _PARQUET_SUFFIXES:
        return lambda i: f"row {i} (0-based) of {file.name}"
    return lambda i: f"line {i + 2} of {file.name}"


def _check_options(fmt: str, reader: Callable[..., Any], options: dict[str, Any]) -> None:
    valid = [
        name
        for name, p in inspect.signature(reader).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("columns", "min_observations")
    ]
    for name in options:
        if name not in valid:
            raise InputError(
                f"unknown option {name!r} for format {fmt!r}; valid options are {', '.join(valid)}"
            )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
