"""Model specifications: the one description from which all three pooling modes are built.

A :class:`ModelSpec` says *what* is modelled (parameters, mean function, covariates,
likelihood). A :class:`PoolingConfig` says *how groups share* (pooled / unpooled /
hierarchical, the population scale tau, hyperpriors, per-parameter centring). The engine in
:mod:`carpool.pooling.model` combines the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from carpool.errors import InputError
from carpool.parameters import ParameterTable
from carpool.pooling.grouped import GroupedData
from carpool.pooling.likelihoods import AbstractLikelihood, Gaussian, likelihood_from_dict
from carpool.priors import HalfNormal, LogNormal, Prior

__all__ = [
    "GroupingFactor",
    "ModelSpec",
    "Hyperpriors",
    "PoolingConfig",
    "POOLING_MODES",
    "PARAM_CHOICES",
]

POOLING_MODES = ("pooled", "unpooled", "hierarchical")
PARAM_CHOICES = ("centred", "noncentred", "auto")

MeanFn = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]


@dataclass(frozen=True)
class GroupingFactor:
    """A grouping factor beside the groups (crossed, or nested within them): zero-mean
    varying effects of some terms, one row per level of the factor.

    In a hierarchical fit the effects are ``b[j] = tau * eps[j]`` (non-centred, ``eps`` i.i.d.
    standard normal; with ``correlated``, ``tau * (L @ eps[j])`` with an LKJ prior on ``L``),
    in an unpooled fit ``b[j] ~ Normal(0, unpooled_scale)`` independently, and a pooled fit
    has none. The engine passes the effects to ``mean_fn`` as ``params[effects_name]``,
    shape (J, W) (absent when pooled), and ``mean_fn`` adds
    ``sum_w b[index, w] * covariates[columns[w]]``.

    Parameters
    ----------
    name
        Identifier of the factor (site names ``tau_<name>``, ``eps_<name>``, ``b_<name>``).
    label
        The factor as written (``"county:house"``).
    index
        Covariate holding each observation's level, ``0..J-1`` (stored as a float).
    levels
        Level names, length J.
    terms
        Identifiers of the varying terms, length W.
    columns
        Covariates holding each term's value per observation, length W.
    scale_priors
        Prior of each term's population scale tau (positive support), length W.
    unpooled_scale
        Scale of each term's independent Normal(0, scale) prior in an unpooled fit.
    correlated
        An LKJ-correlated population of the W terms (W > 1).
    """

    name: str
    label: str
    index: str
    levels: tuple[str, ...]
    terms: tuple[str, ...]
    columns: tuple[str, ...]
    scale_priors: tuple[Prior, ...]
    unpooled_scale: tuple[float, ...]
    correlated: bool = False

    def __post_init__(self) -> None:
        for f in ("levels", "terms", "columns", "scale_priors", "unpooled_scale"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        W = len(self.terms)
        if not (W and len(self.columns) == W == len(self.scale_priors)
                == len(self.unpooled_scale)):
            raise InputError(f"grouping factor {self.label!r}: terms, columns and priors "
                             "must have one entry per term")
        if any(p.support != "positive" for p in self.scale_priors):
            raise InputError(f"grouping factor {self.label!r}: scale priors need positive "
                             "support")

    @property
    def effects_name(self) -> str:
        """The key of the effects in ``mean_fn``'s ``params``."""
        return f"b_{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "index": self.index,
                "levels": list(self.levels), "terms": list(self.terms),
                "columns": list(self.columns),
                "scale_priors": [p.to_dict() for p in self.scale_priors],
                "unpooled_scale": [float(v) for v in self.unpooled_scale],
                "correlated": bool(self.correlated)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupingFactor:
        return cls(d["name"], d["label"], d["index"], tuple(d["levels"]), tuple(d["terms"]),
                   tuple(d["columns"]), tuple(Prior.from_dict(p) for p in d["scale_priors"]),
                   tuple(float(v) for v in d["unpooled_scale"]), bool(d["correlated"]))


@dataclass(frozen=True)
class ModelSpec:
    """What is modelled.

    Parameters
    ----------
    name
        Registry name used to rebuild the spec when a saved fit is loaded.
    parameters
        The per-group parameter table (see :class:`~carpool.parameters.Parameter`).
    mean_fn
        ``mean_fn(params, covariates) -> mean``: ``params`` maps each parameter name to its
        natural-unit value, either a scalar (pooled) or an array broadcastable against the
        covariates ((G, 1) against (G, T) padded arrays, or (n,) against (n,) flat arrays);
        ``covariates`` maps names to arrays. Must be JAX-traceable and element-wise.
    covariates
        Names of the covariates ``mean_fn`` reads.
    likelihood
        The observation model, default Gaussian with a learned HalfNormal(1) noise scale.
    options
        JSON-serialisable options of the registered builder that made this spec.
    group_dim
        Name of the group dimension in results (``"group"``, or ``"driver"``).
    prepare_fn
        ``prepare_fn(table, level=None, **options) -> GroupedData``: how a user's table (e.g.
        trajectories) becomes grouped observations for this model.
    default_hyperpriors
        Population priors used when the user gives none (else :class:`Hyperpriors()`).
    residual
        The residual process within each group's series
        (:class:`carpool.residuals.IID` by default; :class:`~carpool.residuals.AR` or
        :class:`~carpool.residuals.GP` for dynamic residuals, which need a Gaussian
        likelihood and observations in time order within each group).
    linear_mean
        Optional :class:`~carpool.pooling.linear_mean.LinearMean`: ``mean_fn`` as data
        features times functions of the parameters. With i.i.d. Gaussian residuals the fits
        then score each group's series from its projected statistics (exact; checked
        against ``mean_fn`` on the data first, see :mod:`carpool.pooling.linear_mean`).
    physical_ranges
        ``{parameter: (low, high)}`` natural-unit bounds outside which a group's estimate is
        not physically meaningful (e.g. a driver's comfortable deceleration above 6 m/s^2);
        the fits flag such groups (:func:`carpool.inference.plausibility.plausibility`).
    common
        Optional :class:`~carpool.parameters.ParameterTable` of *common* parameters: one
        value shared by every group in every pooling mode (a regression's common terms
        beside its varying ones, e.g. a county-level predictor). ``mean_fn`` receives them
        by name beside the group parameters, as scalars. Their names must differ from the
        group parameters'.
    factors
        Other grouping factors (:class:`GroupingFactor`): crossed or nested varying effects
        beside the groups' own parameters.
    """

    name: str
    parameters: ParameterTable
    mean_fn: MeanFn
    covariates: tuple[str, ...] = ()
    likelihood: AbstractLikelihood = field(default_factory=Gaussian)
    options: Mapping[str, Any] = field(default_factory=dict)
    group_dim: str = "group"
    prepare_fn: Callable[..., GroupedData] | None = None
    default_hyperpriors: Hyperpriors | None = None
    residual: Any = field(default_factory=lambda: _iid())
    linear_mean: Any = None
    physical_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    common: ParameterTable | None = None
    factors: tuple[GroupingFactor, ...] = ()

    @property
    def shared_names(self) -> list[str]:
        """Keys of ``mean_fn``'s ``params`` shared by all groups: the common parameters and
        the other factors' effects (see :func:`carpool.pooling.scoring.data_log_likelihood`)."""
        return [*self.common_names, *(f.effects_name for f in self.factors)]

    @property
    def common_names(self) -> list[str]:
        """Names of the common parameters (empty without any)."""
        return [] if self.common is None else self.common.names

    @property
    def pooled_parameters(self) -> ParameterTable:
        """The group parameters then the common ones: the parameter vector of one group
        fitted alone, or of the pooled model (:func:`carpool.pooling.scoring.point_log_density`)."""
        if self.common is None:
            return self.parameters
        return ParameterTable([*self.parameters, *self.common])

    def prepare(self, table: Any, *, level: str | None = None, **kwargs: Any) -> GroupedData:
        """Turn a user's table into :class:`GroupedData` with this model's ``prepare_fn``."""
        if isinstance(table, GroupedData):
            return table
        if self.prepare_fn is None:
            raise InputError(f"model {self.name!r} takes GroupedData, not a table")
        return self.prepare_fn(table, level=level, **kwargs)

    def __post_init__(self) -> None:
        if not isinstance(self.parameters, ParameterTable):
            object.__setattr__(self, "parameters", ParameterTable(self.parameters))
        object.__setattr__(self, "factors", tuple(self.factors))
        if self.common is not None:
            if not isinstance(self.common, ParameterTable):
                object.__setattr__(self, "common", ParameterTable(self.common))
            clash = sorted(set(self.parameters.names) & set(self.common.names))
            if clash:
                raise InputError(f"parameter(s) {clash} are both group and common parameters")
        object.__setattr__(self, "covariates", tuple(self.covariates))
        if not callable(self.mean_fn):
            raise TypeError("mean_fn must be callable")
        from carpool.residuals.process import ResidualProcess

        if not isinstance(self.residual, ResidualProcess):
            raise TypeError(f"residual must be a carpool.residuals process, got "
                            f"{type(self.residual).__name__}")
        if self.residual.is_dynamic and type(self.likelihood) is not Gaussian:
            raise InputError(f"{self.residual.name} residuals need a Gaussian likelihood, "
                             f"got {type(self.likelihood).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parameters": self.parameters.to_list(),
            "covariates": list(self.covariates),
            "likelihood": self.likelihood.to_dict(),
            "options": dict(self.options),
            "group_dim": self.group_dim,
            "residual": self.residual.to_dict(),
            **({"common": self.common.to_list()} if self.common is not None else {}),
            **({"factors": [f.to_dict() for f in self.factors]} if self.factors else {}),
        }

    def with_saved(self, d: Mapping[str, Any]) -> ModelSpec:
        """This spec with the saved parameter table, likelihood and residual of ``d``."""
        from carpool.residuals.process import residual_from_dict

        return replace(
            self,
            parameters=ParameterTable.from_list(d["parameters"]),
            likelihood=likelihood_from_dict(d["likelihood"]),
            group_dim=d.get("group_dim", self.group_dim),
            residual=residual_from_dict(d.get("residual")),
            common=(ParameterTable.from_list(d["common"]) if d.get("common") else self.common),
            factors=(tuple(GroupingFactor.from_dict(f) for f in d["factors"])
                     if d.get("factors") else self.factors),
        )


def _iid() -> Any:
    from carpool.residuals.process import IID

    return IID()


#: Below this many groups the default population-scale prior avoids zero.
FEW_GROUPS = 10

#: ``correlated="auto"`` learns a full correlation matrix when there are at least this many
#: groups per parameter (P parameters have P (P - 1) / 2 correlations to learn).
GROUPS_PER_PARAMETER_FOR_CORRELATION = 3


@dataclass(frozen=True)
class Hyperpriors:
    """Priors of the population distribution of a hierarchical model.

    The population mean of each parameter takes that parameter's own prior (the same prior the
    pooled model puts on the shared value), so tau -> 0 reproduces the pooled model exactly.

    Defaults (weakly informative, on the latent scale; see :meth:`default_for` for fewer than
    10 groups): ``tau ~ HalfNormal(0.5)`` per
    parameter, i.e. for log parameters groups typically differ by up to ~50%, with mass
    extending to several-fold differences; ``LKJ(eta=2)`` on the correlation, mildly favouring
    weak correlations (eta = 1 is uniform over correlation matrices); ``tau_level``
    (between-level spread of level means, e.g. car vs truck) ``~ HalfNormal(0.5)``.
    """

    tau: Prior | Mapping[str, Prior] = HalfNormal(0.5)
    lkj_eta: float = 2.0
    tau_level: Prior = HalfNormal(0.5)

    def __post_init__(self) -> None:
        priors = self.tau.values() if isinstance(self.tau, Mapping) else [self.tau]
        for p in [*priors, self.tau_level]:
            if not isinstance(p, Prior) or p.support != "positive":
                raise InputError(f"population scale priors need positive support, got {p}")
        if not self.lkj_eta > 0:
            raise InputError(f"lkj_eta must be positive, got {self.lkj_eta}")

    @classmethod
    def default_for(cls, num_groups: int) -> Hyperpriors:
        """carpool's weakly informative defaults for ``num_groups`` groups.

        With fewer than :data:`FEW_GROUPS` groups the data cannot rule out tau near 0, and a
        half-normal's mass there creates the funnel neck that made NUTS diverge on the bundled
        4-vehicle platoon (measured: 53 divergences with HalfNormal(0.5), none with the
        zero-avoiding LogNormal(log 0.3, 0.75), whose 95% interval is 0.07-1.3); zero-avoiding
        scale priors for few groups follow Gelman (2006) and Chung et al. (2013).
        """
        if num_groups < FEW_GROUPS:
            return cls(tau=LogNormal(math.log(0.3), 0.75))
        return cls()

    def tau_prior(self, name: str) -> Prior:
        if isinstance(self.tau, Mapping):
            if name not in self.tau:
                raise InputError(f"hyperpriors.tau has no prior for parameter {name!r}")
            return self.tau[name]
        return self.tau

    def to_dict(self) -> dict[str, Any]:
        tau = ({k: v.to_dict() for k, v in self.tau.items()} if isinstance(self.tau, Mapping)
               else self.tau.to_dict())
        return {"tau": tau, "lkj_eta": float(self.lkj_eta),
                "tau_level": self.tau_level.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Hyperpriors:
        tau = d["tau"]
        tau = (Prior.from_dict(tau) if "family" in tau
               else {k: Prior.from_dict(v) for k, v in tau.items()})
        return cls(tau, float(d["lkj_eta"]), Prior.from_dict(d["tau_level"]))


@dataclass(frozen=True)
class PoolingConfig:
    """How groups share information.

    Parameters
    ----------
    pooling
        ``"pooled"``, ``"unpooled"`` or ``"hierarchical"``.
    tau
        ``"learned"`` (default) or a fixed population scale: one positive number, or one per
        parameter (a mapping by name or a sequence in table order). Fixed tau is the pooling
        dial: small reproduces the pooled fit, large the unpooled one.
    correlated
        Full population correlation matrix with an LKJ prior (True), a diagonal population
        (False), or ``"auto"``: full when there are at least
        :data:`GROUPS_PER_PARAMETER_FOR_CORRELATION` groups per parameter (with 4 drivers and
        4 parameters the 6 correlations are prior only, and LKJ made NUTS diverge on the
        bundled platoon; measured), else diagonal. Resolve with :meth:`resolve_correlated`.
    hyperpriors
        :class:`Hyperpriors` of the population; ``None`` (default): the model's own
        (``ModelSpec.default_hyperpriors``), else :meth:`Hyperpriors.default_for` the
        number of groups, resolved when a model is built on data (:meth:`with_defaults`).
    param
        ``"centred"``, ``"noncentred"``, ``"auto"`` or a mapping parameter -> choice.
    use_levels
        Learn level means (e.g. car / truck) between the population and the groups.
    """

    pooling: str = "hierarchical"
    tau: str | float | Mapping[str, float] | tuple[float, ...] = "learned"
    correlated: bool | str = "auto"
    hyperpriors: Hyperpriors | None = None
    param: str | Mapping[str, str] = "auto"
    use_levels: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in POOLING_MODES:
            raise InputError(
                f"unknown pooling {self.pooling!r}; choose one of {list(POOLING_MODES)}"
            )
        if isinstance(self.tau, str) and self.tau != "learned":
            raise InputError(f"tau must be 'learned' or positive number(s), got {self.tau!r}")
        params = self.param.values() if isinstance(self.param, Mapping) else [self.param]
        for p in params:
            if p not in PARAM_CHOICES:
                raise InputError(f"unknown param {p!r}; choose one of {list(PARAM_CHOICES)}")
        if isinstance(self.correlated, str) and self.correlated != "auto":
            raise InputError(f"correlated must be True, False or 'auto', got {self.correlated!r}")
        if self.use_levels and self.pooling != "hierarchical":
            raise InputError("levels (e.g. --level class) need pooling='hierarchical'")

    def resolve_correlated(self, num_groups: int, num_params: int) -> bool:
        """Whether the population gets a full correlation matrix."""
        if self.correlated == "auto":
            return num_groups >= GROUPS_PER_PARAMETER_FOR_CORRELATION * num_params
        return bool(self.correlated)

    @property
    def tau_is_fixed(self) -> bool:
        return not isinstance(self.tau, str)

    def fixed_tau(self, parameters: ParameterTable) -> np.ndarray:
        """The fixed tau as an array of shape (P,)."""
        P = len(parameters)
        if isinstance(self.tau, Mapping):
            unknown = sorted(set(self.tau) - set(parameters.names))
            if unknown:
                raise InputError(f"tau given for unknown parameter(s) {unknown}")
            missing = [n for n in parameters.names if n not in self.tau]
            if missing:
                raise InputError(f"fixed tau missing for parameter(s) {missing}")
            tau = np.array([float(self.tau[n]) for n in parameters.names])
        else:
            tau = np.broadcast_to(np.asarray(self.tau, dtype=float), (P,)).copy() \
                if np.ndim(self.tau) == 0 else np.asarray(self.tau, dtype=float)
            if tau.shape != (P,):
                raise InputError(f"tau has {tau.size} values, the model has {P} parameters")
        if not np.all(tau > 0) or not np.all(np.isfinite(tau)):
            raise InputError(
                f"a fixed tau must be positive and finite, got {tau.tolist()} "
                "(for tau = 0 use pooling='pooled')"
            )
        return tau

    def param_choice(self, name: str) -> str:
        if isinstance(self.param, Mapping):
            return self.param.get(name, "auto")
        return self.param

    def with_defaults(self, spec: ModelSpec, num_groups: int) -> PoolingConfig:
        """This config with ``hyperpriors=None`` resolved for ``spec`` on ``num_groups``
        groups: the one place the default population priors are chosen, whatever the entry
        point (``carpool.fit``, ``build_model``, SVI, the centring choice)."""
        if self.hyperpriors is not None:
            return self
        return replace(self, hyperpriors=(spec.default_hyperpriors
                                          or Hyperpriors.default_for(num_groups)))

    def to_dict(self) -> dict[str, Any]:
        tau = self.tau
        if isinstance(tau, Mapping):
            tau = {k: float(v) for k, v in tau.items()}
        elif not isinstance(tau, str):
            tau = np.asarray(tau, dtype=float).tolist()
        return {"pooling": self.pooling, "tau": tau, "correlated": self.correlated,
                "hyperpriors": (None if self.hyperpriors is None
                                else self.hyperpriors.to_dict()),
                "param": dict(self.param) if isinstance(self.param, Mapping) else self.param,
                "use_levels": self.use_levels}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PoolingConfig:
        tau = d["tau"]
        if isinstance(tau, list):
            tau = tuple(tau)
        corr = d["correlated"]
        return cls(d["pooling"], tau, corr if isinstance(corr, str) else bool(corr),
                   (None if d.get("hyperpriors") is None
                    else Hyperpriors.from_dict(d["hyperpriors"])), d["param"],
                   bool(d.get("use_levels", False)))
