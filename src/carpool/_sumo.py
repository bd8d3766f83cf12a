"""Eclipse SUMO plumbing shared by :mod:`carpool.export.sumo` and
:mod:`carpool.simulate.sumo` (private).

SUMO is an optional extra, ``pip install "carpool[sumo]"``: the PyPI wheels ``eclipse-sumo``
(the ``sumo`` and ``netconvert`` binaries under ``sumo.SUMO_HOME/bin``), ``libsumo`` (SUMO
in-process) and ``traci`` / ``sumolib`` (pure Python; TraCI drives a ``sumo`` process over a
local socket). Everything here imports them lazily and turns their absence into one
:class:`~carpool.errors.InputError` line naming the extra. A system installation is used
where ``SUMO_HOME`` names one and the ``sumo`` wheel is not installed.

The IDM's parameters map onto a SUMO ``<vType carFollowModel="IDM">`` as in
:data:`IDM_TO_SUMO`; :func:`idm_vtype_attributes` writes one. This module imports no carpool
layer (it is a shared utility, see ``.importlinter``): it works on plain dicts of floats.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from carpool.errors import InputError

__all__ = ["IDM_TO_SUMO", "SUMO_EXTRA", "SUMO_PARAMETER_NAMES", "binary", "format_float",
           "idm_vtype_attributes", "import_libsumo", "import_traci", "sumo_version",
           "xml_comment_text"]

#: How to install what the SUMO functions need.
SUMO_EXTRA = 'pip install "carpool[sumo]"'

#: carpool's IDM parameter -> SUMO ``vType`` attribute (``carFollowModel="IDM"``).
#: ``v0`` becomes ``maxSpeed``: SUMO's IDM takes its desired speed from the vehicle's
#: maximum speed on the lane, ``min(maxSpeed, speed limit x speedFactor)``, so with
#: ``speedFactor=1`` and ``speedDev=0`` it is ``v0`` wherever the limit is at least ``v0``.
IDM_TO_SUMO: dict[str, str] = {"a": "accel", "b": "decel", "T": "tau", "s0": "minGap",
                               "delta": "delta", "v0": "maxSpeed"}
#: The IDM parameters a SUMO vType needs, in the order they are written.
SUMO_PARAMETER_NAMES = ("v0", "s0", "T", "a", "b", "delta")


def format_float(value: float) -> str:
    """``repr`` of a float: the shortest text that reads back to the same double."""
    return repr(float(value))


def xml_comment_text(text: str) -> str:
    """``text`` made safe inside ``<!-- ... -->`` (no ``--``, no trailing ``-``)."""
    while "--" in text:
        text = text.replace("--", "- -")
    return text + " " if text.endswith("-") else text


def idm_vtype_attributes(params: Mapping[str, float], *, vehicle_length_m: float,
                         stepping: float | None = None,
                         emergency_decel: float | None = None) -> dict[str, str]:
    """The attributes of a SUMO ``vType`` with IDM parameters ``params`` (natural units:
    ``v0`` m/s, ``s0`` m, ``T`` s, ``a``, ``b`` m/s^2, ``delta``), text ready for XML.

    ``speedFactor=1`` and ``speedDev=0`` keep SUMO from scaling the desired speed by a random
    factor; ``sigma`` is not written (SUMO's IDM does not dawdle; ``sigma`` is a parameter of
    the Krauss family). ``stepping`` (s), when given, is the time step of SUMO's internal
    IDM iterations (SUMO default 0.25 s: ``max(1, int(step length / stepping + 0.5))``
    iterations per simulation step); ``emergency_decel`` (m/s^2), when given, SUMO's bound on
    braking (default: SUMO's, 9 m/s^2 for passenger cars or ``decel`` if that is larger).
    """
    missing = [n for n in SUMO_PARAMETER_NAMES if n not in params]
    if missing:
        raise InputError(f"a SUMO IDM vType needs {list(SUMO_PARAMETER_NAMES)}; missing "
                         f"{missing}")
    attrs = {"carFollowModel": "IDM"}
    for name in ("a", "b", "T", "s0", "delta", "v0"):
        value = float(params[name])
        if not (value > 0 or (name == "s0" and value == 0.0)) or value == float("inf"):
            raise InputError(f"IDM parameter {name} = {value!r} cannot be written to SUMO "
                             "(it must be a positive number)")
        attrs[IDM_TO_SUMO[name]] = format_float(value)
    attrs.update(speedFactor="1", speedDev="0", length=format_float(vehicle_length_m))
    if stepping is not None:
        attrs["stepping"] = format_float(stepping)
    if emergency_decel is not None:
        attrs["emergencyDecel"] = format_float(emergency_decel)
    return attrs


# -- locating SUMO -----------------------------------------------------------------------
def _missing(what: str) -> InputError:
    return InputError(f"{what} needs Eclipse SUMO, which is not installed: {SUMO_EXTRA}")


def sumo_home() -> Path | None:
    """The SUMO installation: the ``eclipse-sumo`` wheel's, else ``$SUMO_HOME``."""
    try:
        import sumo  # the eclipse-sumo wheel

        home = getattr(sumo, "SUMO_HOME", None)
        if home and (Path(home) / "bin").is_dir():
            return Path(home)
    except ImportError:
        pass
    home = os.environ.get("SUMO_HOME", "").strip()
    return Path(home) if home and (Path(home) / "bin").is_dir() else None


def binary(name: str, what: str = "this") -> str:
    """Path of a SUMO program (``"sumo"``, ``"netconvert"``): the wheel's, ``$SUMO_HOME``'s,
    else the ``PATH``'s; :class:`InputError` naming the extra when there is none."""
    home = sumo_home()
    if home is not None:
        for candidate in (home / "bin" / name, home / "bin" / f"{name}.exe"):
            if candidate.is_file():
                return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise _missing(what)


def import_libsumo(what: str = "this") -> ModuleType:
    """``libsumo`` (SUMO in-process), imported quietly; :class:`InputError` naming the extra
    when it is not installed."""
    try:
        # libsumo prints a line about pyarrow's version on import (harmless here: carpool
        # does not hand Arrow data to SUMO); keep it off the user's terminal
        with contextlib.redirect_stdout(io.StringIO()):
            import libsumo
    except ImportError:
        raise _missing(what) from None
    return libsumo


def import_traci(what: str = "this") -> ModuleType:
    """``traci`` (SUMO over a local socket); :class:`InputError` naming the extra when it is
    not installed."""
    try:
        import traci
    except ImportError:
        raise _missing(what) from None
    return traci


def sumo_version() -> str | None:
    """The installed SUMO wheel's version (``None`` without one)."""
    from importlib import metadata

    for dist in ("eclipse-sumo", "libsumo", "traci"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None
