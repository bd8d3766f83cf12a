"""A calibrated driver population for Eclipse SUMO: a ``vTypeDistribution`` of IDM drivers.

:func:`to_sumo` draws ``N`` drivers from a fitted IDM's posterior and writes them as a SUMO
additional file: one ``<vTypeDistribution id="carpool">`` holding ``N`` ``<vType
carFollowModel="IDM">``, each with probability 1, so a vehicle of type ``carpool`` (a
``<flow type="carpool" .../>``) is a driver picked uniformly from the population. Where the
drivers come from (``source``):

- ``"population"`` (hierarchical fits): each vType is a *new* driver, drawn from the population
  distribution of a posterior draw picked at random
  (:func:`carpool.inference.predict.new_group_params`): the posterior predictive
  distribution of drivers, population heterogeneity and parameter uncertainty together.
  Pooled fits (one parameter set shared by every driver) and unpooled fits (no population)
  have none.
- ``"drivers"`` (any pooling): each vType is a fitted driver at a posterior draw, both picked
  at random with replacement, from :meth:`carpool.inference.fit.Fit.theta_draws`; for a pooled
  fit, a posterior draw of the shared parameters.

:func:`sumo_population` returns the drawn drivers as a table (the same ``seed`` draws the same
drivers); :func:`read_sumo_population` reads a written file back.

The mapping (SUMO's IDM, ``src/microsim/cfmodels/MSCFModel_IDM.cpp``)
--------------------------------------------------------------------------
========  ==================  ===============================================================
carpool   SUMO vType          note
========  ==================  ===============================================================
``a``     ``accel``           maximum acceleration, m/s^2
``b``     ``decel``           comfortable deceleration, m/s^2 (SUMO's IDM uses
                              ``2 sqrt(accel decel)``)
``T``     ``tau``             desired time gap, s
``s0``    ``minGap``          jam gap, m: SUMO's gaps are bumper to bumper, and its IDM adds
                              ``minGap`` to the desired gap, so ``minGap = s0`` exactly
``delta`` ``delta``           acceleration exponent (carpool's constant 4, SUMO's default 4)
``v0``    ``maxSpeed``        desired speed, m/s: SUMO's IDM drives towards the vehicle's
                              maximum speed on the lane, ``min(maxSpeed, speed limit x
                              speedFactor)``; ``speedFactor=1``, ``speedDev=0`` (no random
                              factor), so it is ``v0`` on roads limited at ``v0`` or above,
                              and the limit on slower roads
(none)    ``length``          vehicle length, m (an option, default 5 m; carpool's gaps are
                              bumper to bumper, so the length is not calibrated)
========  ==================  ===============================================================

``sigma`` is not written: SUMO's IDM does not dawdle (``sigma`` belongs to the Krauss
family), so an IDM vType is deterministic. ``stepping`` (SUMO's internal IDM step, default
0.25 s, ``max(1, int(step length / stepping + 0.5))`` iterations per simulation step) is
written only when given.

What SUMO cannot represent (said in the file's comment too)
-----------------------------------------------------------
- The fitted acceleration noise: the i.i.d. ``sigma`` and any AR / GP residual process, and
  the measurement errors of the joint likelihood. SUMO's IDM is deterministic; each vType
  carries one parameter draw, so parameter uncertainty and driver heterogeneity survive,
  the within-driver noise does not.
- The unclipped desired gap of carpool's IDM: SUMO uses ``s* = s0 + max(0, vT + v dv /
  (2 sqrt(ab)))``; they differ only when the leader is faster by more than ``2 T sqrt(ab)``.
- Unbounded braking: SUMO bounds deceleration at ``emergencyDecel`` (default 9 m/s^2 for
  passenger cars, or ``decel`` if larger).
- A single leader: at an edge boundary SUMO applies the IDM to each vehicle it sees ahead
  within its look-ahead (its leader, and the last vehicle on each lane ahead) and drives at
  the slowest of those speeds; carpool's IDM follows its leader only.
- The integration: carpool's one-step model is an Euler step of the data's ``dt``; SUMO
  reproduces it with ``--step-length`` equal to that ``dt`` and ``--step-method.ballistic
  true`` (stopping within a step, SUMO moves a vehicle ``v dt / 2``, carpool ``v^2 /
  (2 |acc|)``).
- Lane changing, junctions and everything else of SUMO keep SUMO's defaults (LC2013): the
  fit is of car following only.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from carpool._sumo import (
    IDM_TO_SUMO,
    SUMO_PARAMETER_NAMES,
    idm_vtype_attributes,
    xml_comment_text,
)
from carpool.errors import InputError

if TYPE_CHECKING:
    from carpool.carfollowing.model import CarFollowingModel
    from carpool.inference.fit import Fit

__all__ = ["SOURCES", "read_sumo_population", "sumo_population", "to_sumo"]

#: Where the exported drivers come from: new drivers from the population, or the fitted ones.
SOURCES = ("population", "drivers")
#: Default vehicle length, m (carpool's ring default; a passenger car).
VEHICLE_LENGTH_M = 5.0
_COVARIATES = ("speed", "gap", "leader_speed", "dt")
_SUMO_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")
_PARAM_KEYS = {"driver": "carpool.driver", "posterior_draw": "carpool.posterior_draw"}


def _idm_model(fit: Fit) -> CarFollowingModel:
    """The fit's car-following model, which must be carpool's IDM or a variant of it."""
    from carpool.carfollowing.idm import idm_acceleration
    from carpool.carfollowing.model import get_model, list_models

    name = fit.spec.name
    if name not in list_models() or tuple(fit.spec.covariates)[:4] != _COVARIATES:
        raise InputError(f"the fit is of model {name!r}, which has no IDM parameters "
                         f"({', '.join(SUMO_PARAMETER_NAMES[:5])}); SUMO export needs a fit "
                         "of the IDM ('idm')")
    model = get_model(name)
    if model.acceleration_fn is not idm_acceleration:
        raise InputError(f"model {name!r} has no SUMO mapping: carpool exports the IDM only "
                         "(SUMO's carFollowModel=\"IDM\"); fit the IDM ('idm') to export "
                         "drivers to SUMO")
    if model.parameter_names != list(fit.parameter_names):
        raise InputError(f"the fit's parameters {list(fit.parameter_names)} are not those of "
                         f"model {name!r} ({model.parameter_names})")
    known = set(model.parameter_names) | set(model.fixed) | set(model.constants)
    missing = [n for n in SUMO_PARAMETER_NAMES if n not in known]
    if missing:
        raise InputError(f"the fit has no IDM parameters {missing}; SUMO's IDM needs "
                         f"{list(SUMO_PARAMETER_NAMES)}")
    return model


def _check_vehicles(vehicles: Any) -> int:
    if isinstance(vehicles, bool) or not isinstance(vehicles, int | np.integer):
        raise InputError(f"vehicles must be a whole number of drivers, got {vehicles!r}")
    if vehicles <= 0:
        raise InputError(f"vehicles must be at least 1, got {vehicles}")
    return int(vehicles)


def sumo_population(
    fit: Fit,
    *,
    vehicles: int,
    source: str = "population",
    seed: int = 0,
    level: str | None = None,
    distribution_id: str = "carpool",
) -> pd.DataFrame:
    """The drivers :func:`to_sumo` writes: ``vehicles`` IDM drivers drawn from a fit.

    Parameters
    ----------
    fit
        A fit of the IDM (or a variant of it: fixed or freed parameters).
    vehicles
        Number of drivers (vTypes), at least 1.
    source
        ``"population"``: new drivers from the population (hierarchical fits);
        ``"drivers"``: fitted drivers at random posterior draws (any pooling). See the module
        docstring.
    seed
        Seeds the posterior draws, the drivers and the new drivers.
    level
        With ``source="population"`` and a fit with levels (e.g. classes), draw new drivers
        around this level's population instead of the overall one.
    distribution_id
        The ``vTypeDistribution``'s id; the vTypes are ``<id>_0``, ``<id>_1``, ...

    Returns
    -------
    pandas.DataFrame
        One row per driver: ``vtype`` (its id), ``driver`` (the fitted driver, ``"new"`` or
        ``"pooled"``), ``posterior_draw`` (index into the stacked draws) and ``v0, s0, T, a,
        b, delta`` in natural units (m/s, m, s, m/s^2, m/s^2, 1).

    Raises
    ------
    InputError
        ``vehicles`` not a positive whole number, an unknown ``source``, a fit of another
        model, a pooled or unpooled fit with ``source="population"``, a bad ``level`` or
        ``distribution_id``.
    """
    num = _check_vehicles(vehicles)
    if source not in SOURCES:
        raise InputError(f"unknown source {source!r}; choose 'population' (new drivers from "
                         "the population) or 'drivers' (the fitted drivers)")
    if not isinstance(distribution_id, str) or not _SUMO_ID.match(distribution_id):
        raise InputError(f"distribution_id {distribution_id!r} is not a SUMO id (letters, "
                         "digits, '_', '.', '-')")
    model = _idm_model(fit)
    if source == "population" and fit.pooling == "unpooled":
        raise InputError("an unpooled fit has no population distribution to draw new drivers "
                         "from; export the fitted drivers (source='drivers', --from drivers) "
                         "or fit a hierarchical model")
    if source == "population" and fit.pooling == "pooled":
        raise InputError("a pooled fit has one parameter set shared by every driver, no "
                         "population of drivers; export posterior draws of it "
                         "(source='drivers', --from drivers) or fit a hierarchical model")
    if level is not None and source != "population":
        raise InputError("level chooses the population new drivers are drawn from; it needs "
                         "source='population'")
    theta = fit.theta_draws()
    rng = np.random.default_rng([int(seed), 20260])
    draws = rng.integers(theta.shape[0], size=num)
    if source == "population":
        from carpool.inference.predict import new_group_params

        values = new_group_params(fit, 1, seed=seed, level=level, draws=draws)[:, 0, :]
        driver = np.full(num, "new", dtype=object)
    elif fit.pooling == "pooled":
        values = theta[draws]
        driver = np.full(num, "pooled", dtype=object)
    else:
        pick = rng.integers(theta.shape[1], size=num)
        values = theta[draws, pick]
        driver = np.asarray(fit.group_ids, dtype=object)[pick]
    merged: dict[str, Any] = {**model.constants, **model.fixed}
    merged.update({n: values[:, j] for j, n in enumerate(model.parameter_names)})
    table = pd.DataFrame({"vtype": [f"{distribution_id}_{i}" for i in range(num)],
                          "driver": driver.astype(str), "posterior_draw": draws})
    for name in SUMO_PARAMETER_NAMES:
        table[name] = np.broadcast_to(np.asarray(merged[name], dtype=float), (num,))
    return table


def _comment(fit: Fit, model: CarFollowingModel, table: pd.DataFrame, *, source: str,
             seed: int, vehicle_length_m: float, distribution_id: str,
             level: str | None) -> str:
    from carpool import __version__

    dt = np.asarray(fit.data.covariates.get("dt", np.array([np.nan])), dtype=float)
    data_dt = float(np.nanmedian(dt)) if dt.size else float("nan")
    noise = fit.noise_draws()
    sigma = (f"{float(np.median(np.asarray(noise['sigma']))):.3g} m/s^2 (posterior median)"
             if "sigma" in noise else "none")
    residual = fit.spec.residual.name
    likelihood = fit.spec.options.get("likelihood", "speed")
    where = {"population": f"new drivers from the population of random posterior draws"
                           f"{f' (level {level})' if level else ''}",
             "drivers": ("posterior draws of the shared parameters" if fit.pooling == "pooled"
                         else "fitted drivers at random posterior draws")}[source]
    fixed = {**model.constants, **model.fixed}
    fixed_txt = (", ".join(f"{k} = {v:g}" for k, v in fixed.items() if k in IDM_TO_SUMO)
                 or "none")
    lines = [
        f"carpool {__version__}: {len(table)} IDM drivers for SUMO, {where}.",
        f"Fit: model '{model.name}', {fit.pooling} pooling, {fit.data.num_groups} drivers, "
        f"residual '{residual}', likelihood '{likelihood}', data time step {data_dt:g} s; "
        f"seed {seed}.",
        f"Use: load this file as an additional file (sumo -a FILE) and give vehicles "
        f"type=\"{distribution_id}\": each then is one of these drivers, picked uniformly. "
        f"To reproduce carpool's dynamics set SUMO's options step-length = {data_dt:g} (s) "
        "and step-method.ballistic = true.",
        "Mapping (carpool -> SUMO vType, carFollowModel=\"IDM\"): a -> accel (m/s^2), "
        "b -> decel (m/s^2), T -> tau (s), s0 -> minGap (m, SUMO's IDM adds minGap to its "
        "desired gap: the same bumper-to-bumper jam gap), delta -> delta, v0 -> maxSpeed "
        "(m/s; SUMO's IDM drives towards min(maxSpeed, speed limit x speedFactor), and "
        "speedFactor=1, speedDev=0, so v0 wherever the limit is at least v0). "
        f"length = {vehicle_length_m:g} m (not calibrated). Not calibrated (model constants "
        f"or fixed): {fixed_txt}. "
        "sigma is not written: SUMO's IDM does not dawdle.",
        f"Not represented in SUMO: the fitted acceleration noise (sigma {sigma}; residual "
        f"process '{residual}'"
        + (", and the speed and gap measurement errors of the joint likelihood"
           if likelihood == "joint" else "")
        + "): SUMO's IDM is deterministic, so each vType keeps one parameter draw "
        "(heterogeneity and parameter uncertainty) but no within-driver noise. "
        "Also different in SUMO: the desired gap is clipped "
        "(s* = s0 + max(0, vT + v dv / (2 sqrt(ab))), carpool's is not); braking is bounded "
        "by emergencyDecel (SUMO default 9 m/s^2 or decel if larger); at edge boundaries "
        "SUMO takes the slowest IDM speed over the vehicles it sees ahead, not only the "
        "leader; a vehicle stopping within a step moves v dt / 2; lane changing keeps "
        "SUMO's defaults. See carpool's docs/sumo.md.",
    ]
    return "\n".join("    " + xml_comment_text(line) for line in lines)


def to_sumo(
    fit: Fit,
    *,
    vehicles: int,
    source: str = "population",
    seed: int = 0,
    path: str | os.PathLike[str] | None = None,
    vehicle_length_m: float = VEHICLE_LENGTH_M,
    distribution_id: str = "carpool",
    level: str | None = None,
    stepping: float | None = None,
) -> str:
    """A fitted IDM's drivers as a SUMO additional file: a ``vTypeDistribution`` of
    ``vehicles`` ``vType``\\ s with ``carFollowModel="IDM"``.

    Parameters
    ----------
    fit
        A fit of the IDM (or a variant of it).
    vehicles, source, seed, level, distribution_id
        Which drivers, as :func:`sumo_population` (the same arguments draw the same drivers).
    path
        Also write the file here, atomically (e.g. ``drivers.add.xml``).
    vehicle_length_m
        Every vType's ``length``, m (default 5 m, carpool's ring default; not calibrated).
    stepping
        SUMO's internal IDM step, s, written as each vType's ``stepping`` (default: not
        written, SUMO's 0.25 s).

    Returns
    -------
    str
        The XML text: an XML comment saying where the drivers came from, the mapping and
        what SUMO cannot represent, then ``<additional><vTypeDistribution id="carpool">``
        with one ``<vType id="carpool_i" probability="1" carFollowModel="IDM" accel decel
        tau minGap delta maxSpeed speedFactor="1" speedDev="0" length>`` per driver, each
        with ``<param>``\\ s naming its fitted driver (``carpool.driver``) and posterior draw
        (``carpool.posterior_draw``). Floats are written in full (``repr``): reading them
        back gives the drawn values exactly.

    Raises
    ------
    InputError
        The errors of :func:`sumo_population`; a non-positive ``vehicle_length_m`` or
        ``stepping``; a ``path`` that cannot be written.

    Examples
    --------
    >>> xml = to_sumo(fit, vehicles=200, path="drivers.add.xml")  # doctest: +SKIP
    """
    if not (isinstance(vehicle_length_m, int | float) and vehicle_length_m > 0):
        raise InputError(f"vehicle_length_m must be a positive length in metres, got "
                         f"{vehicle_length_m!r}")
    if stepping is not None and not stepping > 0:
        raise InputError(f"stepping must be a positive time in seconds, got {stepping!r}")
    if path is not None:
        _check_writable(Path(path))
    table = sumo_population(fit, vehicles=vehicles, source=source, seed=seed, level=level,
                            distribution_id=distribution_id)
    model = _idm_model(fit)
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<!--",
           _comment(fit, model, table, source=source, seed=seed,
                    vehicle_length_m=float(vehicle_length_m), distribution_id=distribution_id,
                    level=level), "-->", "<additional>",
           f"    <vTypeDistribution id={quoteattr(distribution_id)}>"]
    for row in table.itertuples(index=False):
        params = {n: getattr(row, n) for n in SUMO_PARAMETER_NAMES}
        attrs = {"id": row.vtype, "probability": "1",
                 **idm_vtype_attributes(params, vehicle_length_m=float(vehicle_length_m),
                                        stepping=stepping)}
        text = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
        out.append(f"        <vType {text}>")
        out.append(f'            <param key="{_PARAM_KEYS["driver"]}" '
                   f'value={quoteattr(str(row.driver))}/>')
        out.append(f'            <param key="{_PARAM_KEYS["posterior_draw"]}" '
                   f'value="{int(row.posterior_draw)}"/>')
        out.append("        </vType>")
    out += ["    </vTypeDistribution>", "</additional>", ""]
    xml = "\n".join(out)
    if path is not None:
        from carpool.io import atomic_write_text

        try:
            atomic_write_text(path, xml)
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return xml


def _check_writable(path: Path) -> None:
    """One clear line now for a path the export could not write later."""
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: {parent} is not a writable directory")


def read_sumo_population(source: str | os.PathLike[str]) -> pd.DataFrame:
    """The IDM drivers of a SUMO file written by :func:`to_sumo` (or any SUMO XML with IDM
    vTypes inside ``vTypeDistribution``\\ s), in carpool's names and units.

    Parameters
    ----------
    source
        A path, or the XML text itself (a string starting with ``<``).

    Returns
    -------
    pandas.DataFrame
        One row per IDM vType: ``distribution``, ``vtype``, ``driver`` and ``posterior_draw``
        (where the file says, else missing), ``v0, s0, T, a, b, delta`` (SUMO's defaults
        where an attribute is absent: ``tau`` 1 s, ``delta`` 4; ``accel``, ``decel``,
        ``minGap`` and ``maxSpeed`` have vehicle-class defaults, so a vType without them is
        an error), ``length`` and ``probability``.
    """
    text = str(source)
    try:
        if isinstance(source, str) and text.lstrip().startswith("<"):
            root = ET.fromstring(text)
        else:
            root = ET.parse(Path(source)).getroot()
    except (OSError, ET.ParseError) as exc:
        raise InputError(f"cannot read SUMO vTypes from {text[:80]!r}: {exc}") from None
    defaults = {"tau": 1.0, "delta": 4.0}
    to_carpool = {v: k for k, v in IDM_TO_SUMO.items()}
    rows = []
    for dist in root.iter("vTypeDistribution"):
        for vtype in dist.iter("vType"):
            if vtype.get("carFollowModel") != "IDM":
                continue
            row: dict[str, Any] = {"distribution": dist.get("id"), "vtype": vtype.get("id")}
            params = {p.get("key"): p.get("value") for p in vtype.iter("param")}
            row["driver"] = params.get(_PARAM_KEYS["driver"])
            draw = params.get(_PARAM_KEYS["posterior_draw"])
            row["posterior_draw"] = int(draw) if draw is not None else None
            for attr, name in to_carpool.items():
                value = vtype.get(attr, defaults.get(attr))
                if value is None:
                    raise InputError(f"vType {row['vtype']!r} has no {attr} (carpool's "
                                     f"{name}); its SUMO default depends on the vehicle class")
                row[name] = float(value)
            row["length"] = float(vtype.get("length", "nan"))
            row["probability"] = float(vtype.get("probability", 1.0))
            rows.append(row)
    columns = ["distribution", "vtype", "driver", "posterior_draw", *SUMO_PARAMETER_NAMES,
               "length", "probability"]
    return pd.DataFrame(rows, columns=columns)
