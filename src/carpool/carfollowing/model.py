"""The car-following model abstraction and the model registry.

A :class:`CarFollowingModel` bundles a pure JAX acceleration function with the table of its
calibrated parameters (names, units, latent transforms, reference values) and its fixed
constants. The pooling layer sees only the parameter table and a mean function; the
physics stays here and never imports NumPyro. Priors are not physics: the default latent
priors of the built-in models live with their pooling specs
(:data:`carpool.models.carfollowing.DEFAULT_LATENT_PRIOR_SD`).

Adding your own model
---------------------
Write the acceleration as a pure function of natural-unit parameters and the state, build a
:class:`~carpool.parameters.ParameterTable` for the calibrated parameters, and
register the model under a name. The function must use only ``jax.numpy`` operations
(no Python ``if`` on array values) so that it can be jitted, differentiated and vmapped,
and it must broadcast parameters against the state element-wise.

>>> import jax.numpy as jnp
>>> from carpool.carfollowing import CarFollowingModel, get_model, register_model
>>> from carpool.parameters import Parameter, ParameterTable
>>> def relaxation_acceleration(params, speed, gap, leader_speed, constants):
...     # relax towards the speed that keeps a time gap T behind the leader
...     target = jnp.clip((gap - constants["s0"]) / params["T"], 0.0, leader_speed + 5.0)
...     return (target - speed) / params["tau"]
>>> relaxation = CarFollowingModel(
...     name="relaxation",
...     parameters=ParameterTable([
...         Parameter("T", "s", transform="log", reference=1.5, description="time gap"),
...         Parameter("tau", "s", transform="log", reference=2.0,
...                   description="relaxation time"),
...     ]),
...     acceleration_fn=relaxation_acceleration,
...     constants={"s0": 2.0},
...     description="toy relaxation model",
...     reference="(illustration only)",
... )
>>> register_model(relaxation)
>>> model = get_model("relaxation")
>>> float(model.acceleration({"T": 1.5, "tau": 2.0}, speed=10.0, gap=17.0,
...                          leader_speed=10.0))
0.0

Once registered, the name can be used wherever carpool accepts a model name (the command
line, :func:`carpool.testing.simulate_drivers`, the rollouts). To *fit* it, each calibrated
parameter also needs a prior on its latent value: give it one in the table, e.g.
``Parameter("T", "s", transform="log", reference=1.5, prior=Normal(0.0, 0.4))`` with
:class:`carpool.priors.Normal`. A fit of a model whose parameters lack priors stops with an
error naming them (only the built-in models have default priors).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jax
from jax.typing import ArrayLike

from carpool.errors import InputError, UnknownNameError
from carpool.parameters import Parameter, ParameterTable

__all__ = [
    "AccelerationFn",
    "CarFollowingModel",
    "LinearForm",
    "as_model",
    "get_model",
    "list_models",
    "register_model",
]

#: ``acceleration_fn(params, speed, gap, leader_speed, constants) -> acceleration``:
#: ``params`` maps parameter names to natural-unit values (scalars or arrays broadcastable
#: against the state), ``speed`` (m/s), ``gap`` (m, bumper to bumper) and ``leader_speed``
#: (m/s) are arrays of one common shape, ``constants`` maps names to floats; the result is
#: the follower's acceleration in m/s^2 with the broadcast shape.
AccelerationFn = Callable[
    [Mapping[str, ArrayLike], ArrayLike, ArrayLike, ArrayLike, Mapping[str, float]], jax.Array
]


def _frozen_floats(values: Mapping[str, Any], what: str) -> Mapping[str, float]:
    out = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise InputError(f"{what} name {key!r} must be a Python identifier")
        out[key] = float(value)
    return MappingProxyType(out)


@dataclass(frozen=True)
class LinearForm:
    """An acceleration that is linear in features of the state: ``acc = features @
    coefficients``.

    The IDM with its fixed exponent is one: ``a [1 - (v / v0)^4 - (s* / s)^2]`` expands into
    eight products of a state feature (``1, v^4, 1 / s^2, v^2 / s^2, ...``) and a function of
    the parameters. The fits use the form to score a driver's whole series from a few numbers
    computed once (:mod:`carpool.pooling.linear_mean`), so a gradient costs the same for 10
    or 10,000 observations.

    Parameters
    ----------
    features
        ``features(speed, gap, leader_speed, constants) -> (..., K)``: data only (m, m/s),
        any common shape of the state.
    coefficients
        ``coefficients(params, constants) -> (..., K)``: natural-unit parameters (every
        calibrated and fixed one) of any common shape, JAX-traceable.
    names
        The K features' names (documentation and tests).
    """

    features: Callable[..., Any]
    coefficients: Callable[..., Any]
    names: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class CarFollowingModel:
    """A car-following model: acceleration function, parameter table and constants.

    Parameters
    ----------
    name
        Registry name (``"idm"``), a Python identifier.
    parameters
        The calibrated parameters, in natural units, with their latent transforms and
        reference values. Latent priors are optional here: a fit uses those given, and
        the built-in models' defaults
        (:data:`carpool.models.carfollowing.DEFAULT_LATENT_PRIOR_SD`) for the rest.
    acceleration_fn
        Pure JAX function ``(params, speed, gap, leader_speed, constants) -> acceleration``;
        see :data:`AccelerationFn`. It receives every calibrated *and* every fixed parameter
        (see :meth:`fix`) in ``params``.
    constants
        Structural constants that are never calibrated (e.g. the IDM exponent ``delta``).
    description
        What the model is, its parameters' sources and its modelling choices.
    reference
        Bibliographic reference(s) of the model.
    plausible_ranges
        ``{name: (low, high)}`` published plausible ranges of the parameters in natural
        units; the built-in models' default latent priors are chosen so that their central
        95% intervals cover them.
    physical_ranges
        ``{name: (low, high)}`` wider bounds, natural units: a driver whose estimate falls
        outside them is not a physically meaningful driver of this model, and the fits
        flag it (:func:`carpool.inference.plausibility.plausibility`). Empty: no check.
    fixed
        Parameters held at given natural values instead of being calibrated; use
        :meth:`fix` rather than setting this directly.
    linear_form
        Optional :class:`LinearForm` of ``acceleration_fn`` (exact, for every state and
        parameter value). The fits check it against ``acceleration_fn`` on the data before
        using it and score the general way where they disagree.

    Notes
    -----
    Instances are immutable; :meth:`fix`, :meth:`free` and :func:`dataclasses.replace`
    return modified copies. Two models are equal when all fields are equal (the acceleration
    function by identity).
    """

    name: str
    parameters: ParameterTable
    acceleration_fn: AccelerationFn
    constants: Mapping[str, float] = field(default_factory=dict)
    description: str = ""
    reference: str = ""
    plausible_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    fixed: Mapping[str, float] = field(default_factory=dict)
    physical_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    linear_form: LinearForm | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise InputError(f"model name {self.name!r} must be a Python identifier")
        if not isinstance(self.parameters, ParameterTable):
            raise TypeError(
                f"model {self.name!r}: parameters must be a ParameterTable, "
                f"got {type(self.parameters).__name__}"
            )
        if not callable(self.acceleration_fn):
            raise TypeError(f"model {self.name!r}: acceleration_fn must be callable")
        object.__setattr__(self, "constants", _frozen_floats(self.constants, "constant"))
        object.__setattr__(self, "fixed", _frozen_floats(self.fixed, "fixed parameter"))
        for attribute in ("plausible_ranges", "physical_ranges"):
            ranges = {}
            for key, (low, high) in getattr(self, attribute).items():
                if not float(low) < float(high):
                    raise InputError(f"model {self.name!r}: {attribute} of {key!r} is empty")
                ranges[str(key)] = (float(low), float(high))
            object.__setattr__(self, attribute, MappingProxyType(ranges))
        names = set(self.parameters.names)
        for what, keys in (("constants", self.constants), ("fixed", self.fixed)):
            clash = sorted(names & set(keys))
            if clash:
                raise InputError(
                    f"model {self.name!r}: {clash} appear both as calibrated parameters and "
                    f"in {what}"
                )
        clash = sorted(set(self.constants) & set(self.fixed))
        if clash:
            raise InputError(f"model {self.name!r}: {clash} are both constants and fixed")

    # -- equality -------------------------------------------------------------------------
    def _key(self) -> tuple[Any, ...]:
        return (
            self.name,
            self.acceleration_fn,
            tuple(sorted(self.constants.items())),
            tuple(sorted(self.fixed.items())),
            self.description,
            self.reference,
            tuple(sorted(self.plausible_ranges.items())),
            tuple(sorted(self.physical_ranges.items())),
            self.linear_form,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CarFollowingModel):
            return NotImplemented
        return self._key() == other._key() and self.parameters == other.parameters

    def __hash__(self) -> int:
        # The parameter table may hold priors with dict fields, so it is left out of the
        # hash.
        return hash(self._key())

    # -- convenience ----------------------------------------------------------------------
    @property
    def parameter_names(self) -> list[str]:
        """Names of the calibrated parameters, in table order."""
        return self.parameters.names

    def reference_params(self) -> dict[str, float]:
        """Reference (latent ``z = 0``) value of every calibrated parameter, natural units."""
        return {p.name: float(p.reference) for p in self.parameters}

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise ``KeyError`` naming any calibrated parameter missing from ``params``."""
        missing = [n for n in self.parameter_names if n not in params]
        if missing:
            raise UnknownNameError(
                f"model {self.name!r} needs parameters {self.parameter_names}; "
                f"missing {missing} (got {sorted(params)})"
            )

    def acceleration(
        self,
        params: Mapping[str, ArrayLike],
        speed: ArrayLike,
        gap: ArrayLike,
        leader_speed: ArrayLike,
    ) -> jax.Array:
        """Follower acceleration (m/s^2) for natural-unit ``params`` and the state.

        Parameters
        ----------
        params
            ``{name: value}`` for every calibrated parameter, natural units; scalars or
            arrays broadcastable against the state (e.g. ``(G, 1)`` against ``(G, T)``, or
            ``(n,)`` against ``(n,)``). Extra keys are ignored.
        speed
            Follower speed, m/s, ``>= 0``.
        gap
            Bumper-to-bumper gap to the leader, m, ``> 0``.
        leader_speed
            Leader speed, m/s.

        Returns
        -------
        jax.Array
            Acceleration, m/s^2, with the broadcast shape of parameters and state.
        """
        self.check_params(params)
        merged = {**self.fixed, **{n: params[n] for n in self.parameter_names}}
        return self.acceleration_fn(merged, speed, gap, leader_speed, self.constants)

    def acceleration_features(self, speed: ArrayLike, gap: ArrayLike,
                              leader_speed: ArrayLike) -> jax.Array:
        """The state's features (..., K) of :attr:`linear_form` (``ValueError`` without
        one); ``acceleration = features @ acceleration_coefficients(params)``."""
        if self.linear_form is None:
            raise InputError(f"model {self.name!r} has no linear form")
        return self.linear_form.features(speed, gap, leader_speed, self.constants)

    def acceleration_coefficients(self, params: Mapping[str, ArrayLike]) -> jax.Array:
        """The coefficients (..., K) of :attr:`linear_form` for natural-unit ``params``
        (every calibrated parameter; the fixed ones are added)."""
        if self.linear_form is None:
            raise InputError(f"model {self.name!r} has no linear form")
        self.check_params(params)
        merged = {**self.fixed, **{n: params[n] for n in self.parameter_names}}
        return self.linear_form.coefficients(merged, self.constants)

    def fix(self, **values: float) -> CarFollowingModel:
        """A copy with the named parameters held at ``values`` (natural units).

        Useful for weakly identified parameters, e.g. ``IDM.fix(v0=33.0)`` for congested
        data in which drivers never reach their desired speed.
        """
        unknown = sorted(set(values) - set(self.parameter_names))
        if unknown:
            raise UnknownNameError(
                f"model {self.name!r}: cannot fix {unknown}; calibrated parameters are "
                f"{self.parameter_names}"
            )
        kept = [p for p in self.parameters if p.name not in values]
        if not kept:
            raise InputError(f"model {self.name!r}: cannot fix every parameter")
        return dataclasses.replace(
            self, parameters=ParameterTable(kept), fixed={**self.fixed, **values}
        )

    def free(self, parameter: Parameter) -> CarFollowingModel:
        """A copy that calibrates ``parameter``.

        The name may be new to the model, a fixed parameter or a constant (e.g. the Gipps
        model's ``b_hat``); it is removed from ``fixed`` / ``constants`` and appended to the
        parameter table (replacing a calibrated parameter of the same name in place). A
        linear form survives only where the name was already calibrated or fixed (its
        features may depend on a constant, e.g. the IDM's exponent).
        """
        known = parameter.name in self.parameter_names or parameter.name in self.fixed
        if parameter.name in self.parameter_names:
            table = ParameterTable(
                parameter if p.name == parameter.name else p for p in self.parameters
            )
        else:
            table = ParameterTable([*self.parameters, parameter])
        return dataclasses.replace(
            self,
            parameters=table,
            constants={k: v for k, v in self.constants.items() if k != parameter.name},
            fixed={k: v for k, v in self.fixed.items() if k != parameter.name},
            linear_form=self.linear_form if known else None,
        )


# -- registry ------------------------------------------------------------------------------
_REGISTRY: dict[str, CarFollowingModel] = {}


def register_model(model: CarFollowingModel, *, overwrite: bool = False) -> None:
    """Make ``model`` available by name through :func:`get_model`.

    Parameters
    ----------
    model
        The model to register under ``model.name``.
    overwrite
        Replace an existing, different model of the same name instead of raising.

    Raises
    ------
    ValueError
        If a different model is already registered under that name and not ``overwrite``.
        Registering an equal model again is a no-op.
    """
    if not isinstance(model, CarFollowingModel):
        raise TypeError(f"expected a CarFollowingModel, got {type(model).__name__}")
    existing = _REGISTRY.get(model.name)
    if existing is not None and existing != model and not overwrite:
        raise InputError(
            f"a different model is already registered as {model.name!r}; "
            "pass overwrite=True to replace it or choose another name"
        )
    _REGISTRY[model.name] = model


def get_model(name: str) -> CarFollowingModel:
    """The registered model called ``name`` (``KeyError`` listing known names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown car-following model {name!r}; known models: {list_models()} "
            "(register your own with carpool.carfollowing.register_model)"
        ) from None


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def as_model(model: CarFollowingModel | str) -> CarFollowingModel:
    """Accept a model or a registered model name."""
    if isinstance(model, CarFollowingModel):
        return model
    if isinstance(model, str):
        return get_model(model)
    raise TypeError(f"expected a CarFollowingModel or a model name, got {type(model).__name__}")
