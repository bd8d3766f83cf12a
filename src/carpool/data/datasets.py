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

Tabular examples for formula fits (:func:`load_table`, :func:`list_tables`; not trajectories):

``"radon-mn"``
    Minnesota radon (Gelman & Hill 2007, via posteriordb, BSD-3-Clause): 919 homes in 85
    counties, columns ``county`` (the county index 1..85 as a string), ``floor`` (0 = measured
    in the basement, 1 = on the first floor), ``log_radon`` and ``log_uppm`` (log uranium of
    the county's soil, one value per county).
``"eight-schools"``
    Rubin (1981), BDA3 section 5.5: columns ``school`` (A..H), ``y`` (estimated coaching
    effect) and ``sigma`` (its standard error).
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

__all__ = ["example_path", "list_examples", "list_tables", "load_example", "load_table"]


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


#: Bundled tables (not trajectories): name -> (file, description).
_TABLES: dict[str, tuple[str, str]] = {
    "radon-mn": (
        "radon_mn.csv",
        "Minnesota radon: 919 homes in 85 counties (Gelman & Hill 2007; posteriordb)",
    ),
    "eight-schools": ("", "eight schools: 8 coaching effects and their standard errors"),
}

#: Rubin (1981), as in BDA3 Table 5.2 and posteriordb ``eight_schools`` (the same numbers as
#: ``carpool.models.eight_schools``, which sits above this layer).
_EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
_EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


def list_tables() -> list[str]:
    """Names of the bundled tabular examples (described in this module's docstring).

    Returns
    -------
    list of str
        Names accepted by :func:`load_table`.

    Examples
    --------
    >>> list_tables()
    ['radon-mn', 'eight-schools']
    """
    return list(_TABLES)


def load_table(name: str) -> pd.DataFrame:
    """Load a bundled tabular example (one row per observation, for formula fits).

    Parameters
    ----------
    name
        One of :func:`list_tables`: ``"radon-mn"`` or ``"eight-schools"``.

    Returns
    -------
    pandas.DataFrame
        ``"radon-mn"``: columns ``county`` (str, ``"1"`` .. ``"85"``), ``floor`` (int, 0 =
        basement, 1 = first floor), ``log_radon``, ``log_uppm`` (float); 919 rows.
        ``"eight-schools"``: columns ``school`` (``"A"`` .. ``"H"``), ``y``, ``sigma``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones).

    Examples
    --------
    >>> df = load_table("radon-mn")
    >>> df.shape, df["county"].nunique()
    ((919, 4), 85)
    """
    if name not in _TABLES:
        raise InputError(f"unknown table {name!r}; available tables are {', '.join(_TABLES)}")
    if name == "eight-schools":
        return pd.DataFrame({"school": list("ABCDEFGH"), "y": list(_EIGHT_SCHOOLS_Y),
                             "sigma": list(_EIGHT_SCHOOLS_SIGMA)})
    path = Path(str(resources.files("carpool.data") / "bundled" / _TABLES[name][0]))
    if not path.exists():  # pragma: no cover - a broken installation
        raise FileNotFoundError(f"bundled table file is missing: '{path}'")
    return pd.read_csv(path, dtype={"county": str, "floor": "int64", "log_radon": "float64",
                                    "log_uppm": "float64"})


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
