"""Parameter tables: names, units, transforms and priors of a model's per-group parameters.

Every parameter lives on an unconstrained *latent* scale ``z`` on which priors, population
means and population scales (tau) are defined:

- ``transform="log"``: ``natural = reference * exp(z)`` (positive parameters; ``z = 0`` is the
  reference value and tau is a relative spread: tau = 0.1 means about 10% between groups);
- ``transform="identity"``: ``natural = reference + z``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from carpool.errors import InputError, UnknownNameError
from carpool.priors import Normal, Prior

__all__ = ["Parameter", "ParameterTable"]

_TRANSFORMS = ("log", "identity")


@dataclass(frozen=True)
class Parameter:
    """One per-group parameter.

    Parameters
    ----------
    name
        Identifier used in tables and outputs (``"v0"``).
    unit
        Physical unit of the natural value (``"m/s"``), or ``""`` when dimensionless.
    transform
        ``"log"`` or ``"identity"``; see the module docstring.
    reference
        Natural-unit reference value: the latent origin ``z = 0``.
    prior
        Prior on the latent value for pooled / unpooled fits, and on the population mean of a
        hierarchical fit. ``None``: no prior here (the physics tables of
        :mod:`carpool.carfollowing`, whose priors the spec builder
        :func:`carpool.models.carfollowing.carfollowing_spec` attaches); fitting a spec
        with a parameter without a prior raises :class:`~carpool.errors.InputError`
        (:meth:`ParameterTable.check_priors`).
    description
        One line for humans, with the source of the reference value where there is one.
    """

    name: str
    unit: str = ""
    transform: str = "identity"
    reference: float = 0.0
    prior: Prior | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise InputError(f"parameter name {self.name!r} must be a Python identifier")
        if self.transform not in _TRANSFORMS:
            raise InputError(
                f"parameter {self.name!r}: unknown transform {self.transform!r}; "
                f"choose one of {list(_TRANSFORMS)}"
            )
        if self.transform == "log" and not self.reference > 0:
            raise InputError(
                f"parameter {self.name!r}: a log-transformed parameter needs a positive "
                f"reference value, got {self.reference}"
            )
        if self.prior is not None and self.prior.support != "real":
            raise InputError(
                f"parameter {self.name!r}: the prior acts on the unconstrained latent scale and "
                f"must have real support, got {self.prior}"
            )

    def to_natural(self, z: Any) -> Any:
        """Latent -> natural units. Works on NumPy or JAX arrays of any shape."""
        if self.transform == "log":
            xp = _namespace(z)
            return self.reference * xp.exp(z)
        return self.reference + z

    def to_latent(self, x: Any) -> Any:
        """Natural units -> latent."""
        if self.transform == "log":
            xp = _namespace(x)
            return xp.log(x / self.reference)
        return x - self.reference

    def with_prior(self, prior: Prior) -> Parameter:
        return Parameter(self.name, self.unit, self.transform, self.reference, prior,
                         self.description)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "transform": self.transform,
            "reference": float(self.reference),
            "prior": None if self.prior is None else self.prior.to_dict(),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Parameter:
        prior = None if d.get("prior") is None else Prior.from_dict(d["prior"])
        return cls(d["name"], d.get("unit", ""), d.get("transform", "identity"),
                   float(d.get("reference", 0.0)), prior, d.get("description", ""))


def _namespace(x: Any) -> Any:
    if type(x).__module__.startswith("jax"):
        import jax.numpy as jnp

        return jnp
    return np


class ParameterTable(Sequence[Parameter]):
    """An ordered, immutable collection of :class:`Parameter` with unique names."""

    def __init__(self, parameters: Iterable[Parameter]):
        self._params = tuple(parameters)
        if not self._params:
            raise InputError("a parameter table needs at least one parameter")
        names = [p.name for p in self._params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"duplicate parameter names: {dupes}")

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, str):
            for p in self._params:
                if p.name == i:
                    return p
            raise UnknownNameError(f"no parameter named {i!r}; have {self.names}")
        return self._params[i]

    def __len__(self) -> int:
        return len(self._params)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self._params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParameterTable) and self._params == other._params

    def __hash__(self) -> int:
        return hash(self._params)

    def __repr__(self) -> str:
        return f"ParameterTable({list(self._params)!r})"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._params]

    def index(self, name: str) -> int:  # type: ignore[override]
        return self.names.index(name)

    def check_priors(self) -> None:
        """Raise :class:`~carpool.errors.InputError` naming the parameters without a prior."""
        missing = [p.name for p in self._params if p.prior is None]
        if missing:
            raise InputError(f"parameters without a prior: {missing}; give each a latent "
                             "prior, e.g. table.replace(name, prior=Normal(0.0, 0.5))")

    def latent_prior_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Location and scale of each parameter's Normal latent prior, shape (P,) each.

        Only Normal priors can be vectorised this way; other families are handled per
        parameter by the model builder.
        """
        self.check_priors()
        loc = np.array([p.prior.params.get("loc", 0.0) for p in self._params])  # type: ignore[union-attr]
        scale = np.array([p.prior.params.get("scale", 1.0) for p in self._params])  # type: ignore[union-attr]
        return loc, scale

    def to_natural(self, z: Any, axis: int = -1) -> Any:
        """Apply each parameter's latent -> natural map along ``axis`` (size P)."""
        xp = _namespace(z)
        z = xp.moveaxis(z, axis, -1)
        out = xp.stack([p.to_natural(z[..., i]) for i, p in enumerate(self._params)], axis=-1)
        return xp.moveaxis(out, -1, axis)

    def to_latent(self, x: Any, axis: int = -1) -> Any:
        xp = _namespace(x)
        x = xp.moveaxis(x, axis, -1)
        out = xp.stack([p.to_latent(x[..., i]) for i, p in enumerate(self._params)], axis=-1)
        return xp.moveaxis(out, -1, axis)

    def replace(self, name: str, **changes: Any) -> ParameterTable:
        """A copy with one parameter's fields changed (e.g. ``prior=Normal(0, 0.5)``)."""
        out = []
        for p in self._params:
            if p.name == name:
                d = p.to_dict()
                d.update({k: (v.to_dict() if isinstance(v, Prior) else v)
                          for k, v in changes.items()})
                p = Parameter.from_dict(d)
            out.append(p)
        if name not in self.names:
            raise UnknownNameError(f"no parameter named {name!r}; have {self.names}")
        return ParameterTable(out)

    def to_list(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self._params]

    @classmethod
    def from_list(cls, items: list[dict[str, Any]]) -> ParameterTable:
        return cls(Parameter.from_dict(d) for d in items)


def default_latent_prior() -> Prior:
    """Standard-normal latent prior (one e-fold either way for log parameters)."""
    return Normal(0.0, 1.0)
