"""Units of a batch: the independent pieces of data that get one fit each.

A unit is a table (the rows of one driver, one recording, one site, ...) or a trajectory
file that the worker reads itself, so a file that cannot be read fails only its own unit.
Tables are split from the raw rows: each unit is validated where it is fitted
(:func:`carpool.fit` validates), so one bad driver fails one unit, not the batch.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from carpool.errors import InputError, UnknownNameError

__all__ = ["Unit", "read_units", "split_table", "units_from_files"]

#: ``by=`` value meaning one unit per input file, unless the table has this column.
RECORDING = "recording"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, eq=False)
class Unit:
    """One unit of a batch.

    Parameters
    ----------
    name
        Unique name (a driver id, a recording, a column value); names the output file.
    table
        The unit's rows (carpool trajectory columns), or ``None`` when ``path`` is read.
    path
        A trajectory file read by the worker with ``data_format``.
    data_format
        Format for :func:`carpool.read_trajectories` (``"auto"`` detects it).
    """

    name: str
    table: pd.DataFrame | None = None
    path: str | None = None
    data_format: str = "auto"

    def __post_init__(self) -> None:
        if (self.table is None) == (self.path is None):
            raise InputError(f"unit {self.name!r}: give exactly one of a table and a path")

    def load(self) -> pd.DataFrame:
        """The unit's rows (reading the file for a file unit)."""
        if self.table is not None:
            return self.table
        from carpool.data import read_trajectories

        return read_trajectories(self.path, format=self.data_format)

    @property
    def file_stem(self) -> str:
        """A file-system-safe stem: the name, or the cleaned name plus a short hash."""
        safe = _UNSAFE.sub("_", self.name).strip("._") or "unit"
        if safe == self.name:
            return safe
        return f"{safe}-{hashlib.sha1(self.name.encode()).hexdigest()[:8]}"

    def fingerprint(self) -> str:
        """A hash of the unit's input: its rows, or the file's path, size and mtime."""
        h = hashlib.sha256(self.name.encode())
        if self.table is not None:
            h.update(",".join(map(str, self.table.columns)).encode())
            h.update(pd.util.hash_pandas_object(self.table, index=False).values.tobytes())
        else:
            st = os.stat(self.path)
            h.update(f"{Path(self.path).resolve()}:{st.st_size}:{st.st_mtime_ns}:"
                     f"{self.data_format}".encode())
        return h.hexdigest()[:16]


def split_table(table: pd.DataFrame, by: str = "driver") -> list[Unit]:
    """One unit per distinct value of column ``by`` (rows kept in their order)."""
    if by not in table.columns:
        raise UnknownNameError(f"no column {by!r} to split by; the columns are "
                               f"{', '.join(map(str, table.columns))}")
    if table[by].isna().any():
        row = int(table[by].isna().to_numpy().argmax())
        raise InputError(f"column {by!r} is empty at row {row} (0-based); every row needs "
                         "a unit")
    units = [Unit(str(value), table=rows.reset_index(drop=True))
             for value, rows in table.groupby(table[by].astype(str), sort=True)]
    _check_unique(units)
    return units


def units_from_files(paths: Sequence[str | os.PathLike[str]], data_format: str = "auto"
                     ) -> list[Unit]:
    """One unit per trajectory file, named by its file name without the extension."""
    units = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"trajectory file not found: '{path}'")
        units.append(Unit(path.stem, path=str(path), data_format=data_format))
    _check_unique(units)
    return units


def _check_unique(units: Sequence[Unit]) -> None:
    seen: dict[str, str] = {}
    for u in units:
        if u.file_stem in seen:
            raise InputError(f"units {seen[u.file_stem]!r} and {u.name!r} would write the "
                             "same file; rename one")
        seen[u.file_stem] = u.name


def _read_raw(path: Path, data_format: str) -> pd.DataFrame:
    """Rows of one file: raw for carpool CSV / Parquet (validated per unit later), else
    through the format's reader (validated now)."""
    from carpool.data import read_trajectories
    from carpool.data.readers import detect_format

    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: '{path}'")
    fmt = detect_format(path) if data_format == "auto" else data_format
    if fmt != "carpool":
        return read_trajectories(path, format=fmt)
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"driver": str, "class": str})


def _has_column(path: Path, data_format: str, column: str) -> bool:
    """Whether a carpool CSV / Parquet file has ``column`` (other formats never do)."""
    from carpool.data.readers import detect_format

    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: '{path}'")
    if (detect_format(path) if data_format == "auto" else data_format) != "carpool":
        return False
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return column in pq.read_schema(path).names
    return column in pd.read_csv(path, nrows=0).columns


def read_units(paths: Sequence[str | os.PathLike[str]], by: str = "driver",
               data_format: str = "auto") -> list[Unit]:
    """The units of trajectory files split ``by`` a column, or one per file.

    ``by="recording"`` means one unit per file (highD and NGSIM ship one recording per
    file) unless the files have a ``recording`` column. Any other ``by`` names a column
    (``"driver"``, ``"class"``, a site or day column of a carpool CSV / Parquet file); the
    files' rows are concatenated first.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise InputError("give at least one trajectory file")
    if by == RECORDING and not all(_has_column(f, data_format, RECORDING) for f in files):
        return units_from_files(files, data_format)
    tables = [_read_raw(f, data_format) for f in files]
    return split_table(pd.concat(tables, ignore_index=True), by)
