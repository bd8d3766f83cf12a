"""Example trajectory data bundled with carpool (see ``bundled/README.md`` for provenance).

``"ngsim-i80"``
    76 human drivers in congested freeway traffic (NGSIM I-80, Emeryville CA, 13 April 2005,
    4:00-4:15 p.m.; U.S. DOT FHWA, a work of the U.S. federal government), each following one
    leader in one lane for 32-74 s, every one dropping below 5 m/s: 5 Hz (every second
    sample of the 10 Hz file), 20,600 rows, columns ``driver, time, speed, gap,
    leader_speed, class`` (``class`` is ``car`` for 75 drivers, ``truck`` for one).
``"ngsim-i80-10hz"``
    The same drivers at the file's native 10 Hz (41,159 rows).
``"usdot-platoon"``
    Four ACC followers of a five-vehicle platoon (USDOT FHWA, CC0 1.0), 5 Hz, 1,984 s each,
    in the carpool format: drivers ``veh2`` .. ``veh5``, vehicle ``i + 1`` following
    vehicle ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from os import PathLike
from pathlib import Path

import pandas as pd

from carpool.data.schema import DataError, validate_trajectories
from carpool.errors import InputError

__all__ = ["example_path", "list_examples", "load_example"]


@dataclass(frozen=True)
class _Example:
    filename: str
    description: str
    #: Keep every ``keep_every``-th sample of each driver (2: 10 Hz -> 5 Hz).
    keep_every: int = 1


_NGSIM_FILE = "ngsim_i80_congested_10hz.csv"

_EXAMPLES: dict[str, _Example] = {
    "ngsim-i80": _Example(
        filename=_NGSIM_FILE,
        description=(
            "76 human drivers in congested freeway traffic, 5 Hz, 32-74 s each (NGSIM I-80, "
            "U.S. DOT FHWA)"
        ),
        keep_every=2,
    ),
    "ngsim-i80-10hz": _Example(
        filename=_NGSIM_FILE,
        description="the 'ngsim-i80' drivers at the native 10 Hz",
    ),
    "usdot-platoon": _Example(
        filename="usdot_platoon_5hz.csv",
        description=(
            "4 ACC followers in a 5-vehicle platoon, 5 Hz, 1984 s each (USDOT FHWA, CC0 1.0)"
        ),
    ),
}

#: Float formats of the bundled CSV: 0.1 s, 1 mm/s and 1 mm resolution.
_BUNDLED_DECIMALS = {"time": 1, "speed": 3, "gap": 3, "leader_speed": 3}


def list_examples() -> list[str]:
    """Names of the bundled example data sets (described in this module's docstring).

    Returns
    -------
    list of str
        Names accepted by :func:`load_example` and :func:`example_path`.

    Examples
    --------
    >>> "usdot-platoon" in list_examples()
    True
    """
    return list(_EXAMPLES)


def example_path(name: str = "ngsim-i80") -> Path:
    """Path of a bundled example file (a CSV in the carpool format).

    Parameters
    ----------
    name
        One of :func:`list_examples`.

    Returns
    -------
    pathlib.Path
        The installed file.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones).
    """
    if name not in _EXAMPLES:
        raise InputError(f"unknown example {name!r}; available examples are {', '.join(_EXAMPLES)}")
    path = Path(str(resources.files("carpool.data") / "bundled" / _EXAMPLES[name].filename))
    if not path.exists():  # pragma: no cover - a broken installation
        raise FileNotFoundError(f"bundled example file is missing: '{path}'")
    return path


def load_example(
    name: str = "ngsim-i80",
    *,
    drivers: Sequence[str] | None = None,
    max_duration_s: float | None = None,
) -> pd.DataFrame:
    """Load a bundled example as a validated carpool trajectory table.

    Parameters
    ----------
    name
        One of :func:`list_examples`.
    drivers
        Keep only these driver ids (in the table's sorted order); default all.
    max_duration_s
        Keep only each driver's first ``max_duration_s`` seconds (useful for quick fits).

    Returns
    -------
    pandas.DataFrame
        Columns ``driver, time, speed, gap, leader_speed`` (s, m/s, m, m/s), and ``class``
        where the example has one.

    Raises
    ------
    ValueError
        For an unknown example name or driver id.

    Examples
    --------
    >>> df = load_example("usdot-platoon", drivers=["veh2"], max_duration_s=10.0)
    >>> len(df), float(df["time"].iloc[0])
    (51, 1.0)
    """
    df = pd.read_csv(example_path(name), dtype={"driver": str})
    keep_every = _EXAMPLES[name].keep_every
    if keep_every > 1:
        df = df.loc[df.groupby("driver", sort=False).cumcount() % keep_every == 0]
    if drivers is not None:
        unknown = sorted(set(drivers) - set(df["driver"]))
        if unknown:
            raise InputError(
                f"example {name!r} has no driver(s) {unknown}; its drivers are"
                f" {sorted(df['driver'].unique())}"
            )
        df = df.loc[df["driver"].isin(list(drivers))]
    if max_duration_s is not None:
        start = df.groupby("driver")["time"].transform("min")
        df = df.loc[df["time"] - start <= max_duration_s + 1e-9]
    return validate_trajectories(df.reset_index(drop=True))


def build_usdot_platoon(source: str | PathLike[str]) -> pd.DataFrame:
    """Rebuild the ``"usdot-platoon"`` example from the original 10 Hz USDOT CSV.

    Reads the file with the ``"usdot"`` reader, keeps every second sample (5 Hz: times
    that are whole multiples of 0.2 s) and rounds to 0.1 s, 1 mm/s and 1 mm. The bundled
    file is ``build_usdot_platoon(source).to_csv(path, index=False)``; see
    ``bundled/make_usdot_platoon.py``.

    Parameters
    ----------
    source
        ``usdot_acc_platoon_10hz.csv`` (USDOT FHWA, CC0 1.0; provenance in
        ``bundled/README.md``).

    Returns
    -------
    pandas.DataFrame
        The example table, validated.
    """
    from carpool.data.readers import read_trajectories

    df = read_trajectories(source, format="usdot", target_hz=5.0)
    df = df.round(_BUNDLED_DECIMALS)
    if (df["gap"] <= 0).any():  # pragma: no cover - rounding never reaches 0 on this file
        raise DataError("rounding produced a non-positive gap")
    return validate_trajectories(df)
