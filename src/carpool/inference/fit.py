"""The :class:`Fit` result: ArviZ ``InferenceData`` plus the specification to reload and predict.

Posterior variables (natural units unless marked latent):

- ``theta``: group parameters, dims (chain, draw, <group_dim>, parameter); for a pooled fit the
  shared parameters, dims (chain, draw, parameter);
- hierarchical: ``mu`` (latent population mean), ``population`` (its natural value: for a log
  parameter the population *median*), ``tau`` (latent population scale), ``corr`` (population
  correlation, dims parameter x parameter_), and with levels ``level_population`` (natural
  level medians, dims level x parameter) and ``tau_level``;
- ``beta``: the common parameters (:attr:`~carpool.pooling.spec.ModelSpec.common`, shared by
  every group in every mode; a formula's common terms that do not vary), dims (chain, draw,
  term);
- other grouping factors (:class:`~carpool.pooling.spec.GroupingFactor`, e.g. the crossed
  ``(1 | b)`` of a formula): their effects ``b_<name>`` (dims <name>, <name>_term) and, when
  hierarchical, their scales ``tau_<name>`` and correlations ``corr_<name>``;
- noise parameters of the likelihood (e.g. ``sigma``).

The file written by :meth:`Fit.save` is plain netCDF (ArviZ groups) with the specification as
JSON attributes; :func:`load` rebuilds the spec from the registry, so no code is unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from carpool.errors import InputError
from carpool.inference.diagnostics import compute_diagnostics
from carpool.inference.nuts import NutsSettings, SamplerOutput
from carpool.models.registry import get_spec
from carpool.pooling.centring import CentringChoice
from carpool.pooling.grouped import GroupedData
from carpool.pooling.model import BuiltModel
from carpool.pooling.spec import ModelSpec, PoolingConfig

if TYPE_CHECKING:
    from carpool.inference.svi import SviSettings

__all__ = ["Fit", "load", "to_inference_data"]

FORMAT_VERSION = 1

#: Sampler settings saved under older names, read under today's (:attr:`Fit.settings`).
OLD_SETTING_NAMES = {"num_chains": "chains", "num_warmup": "warmup", "num_samples": "draws",
                     "num_draws": "draws"}


@dataclass(frozen=True)
class Fit:
    """A fitted model.

    Attributes
    ----------
    idata
        ArviZ ``InferenceData`` (posterior, sample_stats, observed_data, constant_data).
    spec, config, data
        The model specification, pooling configuration and grouped data it was fitted to.
    centring
        The per-parameter centring used, with the evidence of the automatic choice.
    """

    idata: Any
    spec: ModelSpec
    config: PoolingConfig
    data: GroupedData
    centring: CentringChoice

    # ------------------------------------------------------------------ metadata
    @property
    def pooling(self) -> str:
        return self.config.pooling

    @property
    def parameter_names(self) -> list[str]:
        return self.spec.parameters.names

    @property
    def group_ids(self) -> tuple[str, ...]:
        return self.data.group_ids

    @property
    def timing(self) -> dict[str, float]:
        return json.loads(self.idata.posterior.attrs.get("carpool_timing", "{}"))

    @property
    def settings(self) -> dict[str, Any]:
        """The saved sampler settings (and how the chains ran: ``chain_method``,
        ``layout``), as a dict; files that saved older names are read under today's."""
        saved = json.loads(self.idata.posterior.attrs.get("carpool_settings", "{}"))
        return {OLD_SETTING_NAMES.get(k, k): v for k, v in saved.items()}

    @property
    def sampler(self) -> NutsSettings | SviSettings:
        """The :class:`~carpool.inference.nuts.NutsSettings` (or, for a variational fit,
        :class:`~carpool.inference.svi.SviSettings`) this fit was made with."""
        from dataclasses import fields

        from carpool.inference.svi import SviSettings

        cls = SviSettings if self.method == "svi" else NutsSettings
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in self.settings.items() if k in names})

    @property
    def method(self) -> str:
        """``"nuts"`` (MCMC) or ``"svi"`` (variational, approximate)."""
        return str(self.idata.posterior.attrs.get("carpool_method", "nuts"))

    @property
    def is_approximate(self) -> bool:
        """True for a variational fit: draws from an approximation, no R-hat / ESS."""
        return self.method != "nuts"

    @cached_property
    def diagnostics(self) -> dict[str, Any]:
        """max_rhat, min_ess_bulk, min_ess_tail, divergences, and the variables behind them.

        Computed once per fit (ArviZ R-hat and ESS over every variable are not free)."""
        return compute_diagnostics(self.idata)

    def theta_draws(self) -> np.ndarray:
        """Natural group parameters stacked over chains: (S, G, P), or (S, P) when pooled."""
        th = self.idata.posterior["theta"].values
        return th.reshape((-1,) + th.shape[2:])

    def residual_variables(self) -> dict[str, np.ndarray]:
        """The residual process's posterior variables this fit holds (name -> array of
        shape (chain, draw, ...); see its ``posterior_variables``). Empty for i.i.d."""
        post = self.idata.posterior
        return {n: post[n].values for n in self.spec.residual.posterior_variables()
                if n in post}

    def residual_draws(self) -> dict[str, np.ndarray]:
        """Residual-process parameters per posterior draw (chains stacked, S draws).

        AR: ``kappa`` (partial autocorrelations) and ``phi`` (coefficients), each (S, G, p)
        for the fitted groups whatever their pooling; GP: ``lengthscale`` (s) and ``scale``
        (m/s^2), each (S,). Empty for i.i.d. residuals.
        """
        return self.spec.residual.per_draw(self.residual_variables(),
                                           num_groups=self.data.num_groups,
                                           level_index=self.data.level_index)

    def noise_draws(self) -> dict[str, np.ndarray]:
        """Learned noise parameters as (S,) arrays, fixed ones as scalars."""
        lik = self.spec.likelihood
        out: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in lik.fixed_noise().items()}
        for name in lik.noise_priors():
            out[name] = self.idata.posterior[name].values.reshape(-1)
        return out

    # ------------------------------------------------------------------ views
    def summary(self, hdi_prob: float = 0.94) -> pd.DataFrame:
        """Population, per-group and noise parameters in natural units.

        Columns: ``kind`` (``population`` / ``population_scale`` / ``level`` / ``group`` /
        ``noise``), ``group``, ``parameter``, ``unit``, ``mean``, ``sd``, ``hdi_<lo>%``,
        ``hdi_<hi>%``, ``ess_bulk``, ``r_hat``. For a pooled fit the population rows are the
        shared parameters; for an unpooled fit they summarise the across-group geometric /
        arithmetic mean per draw.
        """
        from carpool.inference.summary import summarise

        return summarise(self, hdi_prob)

    # ------------------------------------------------------------------ io
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fit as netCDF, atomically (temporary file, then rename).

        The file carries the carpool version and SHA-256 checksums of the input data, the
        posterior draws and the specification (:mod:`carpool.inference.integrity`), which
        :func:`load` checks.
        """
        from carpool.inference.integrity import stamp
        from carpool.io import atomic_write

        stamp(self.idata, self.data)
        return atomic_write(path, self.idata.to_netcdf)


def to_inference_data(built: BuiltModel, out: SamplerOutput, centring: CentringChoice,
                      settings: NutsSettings | SviSettings) -> Any:
    """Assemble ArviZ ``InferenceData`` with named dims from raw sampler output."""
    import arviz as az

    spec, config, data = built.spec, built.config, built.data
    params = spec.parameters
    gdim = spec.group_dim
    s = out.samples
    posterior: dict[str, np.ndarray] = {}
    dims: dict[str, list[str]] = {}
    z = s["z"]
    posterior["theta"] = np.asarray(params.to_natural(z, axis=-1))
    dims["theta"] = ["parameter"] if config.pooling == "pooled" else [gdim, "parameter"]
    if config.pooling == "hierarchical":
        posterior["mu"] = s["mu"]
        posterior["population"] = np.asarray(params.to_natural(s["mu"], axis=-1))
        dims["mu"] = dims["population"] = ["parameter"]
        P = len(params)
        posterior["tau"] = (s["tau"] if "tau" in s else np.broadcast_to(
            config.fixed_tau(params), z.shape[:2] + (P,)).copy())
        dims["tau"] = ["parameter"]
        if "L_corr" in s:
            L = s["L_corr"]
            corr_o = L @ np.swapaxes(L, -1, -2)
            inv = np.argsort(built.order)
            posterior["corr"] = corr_o[..., inv, :][..., :, inv]
        else:
            posterior["corr"] = np.broadcast_to(np.eye(P), z.shape[:2] + (P, P)).copy()
        dims["corr"] = ["parameter", "parameter_"]
        if "tau_level" in s:
            lvl = s["mu"][:, :, None, :] + s["tau_level"][:, :, None, :] * s["level_eta"]
            posterior["level_population"] = np.asarray(params.to_natural(lvl, axis=-1))
            dims["level_population"] = ["level", "parameter"]
            posterior["tau_level"] = s["tau_level"]
            dims["tau_level"] = ["parameter"]
    if spec.common is not None:
        posterior["beta"] = np.asarray(spec.common.to_natural(s["beta"], axis=-1))
        dims["beta"] = ["term"]
    for f in spec.factors:
        if f.effects_name not in s:  # pooled: no effects
            continue
        posterior[f.effects_name] = s[f.effects_name]
        dims[f.effects_name] = [f.name, f"{f.name}_term"]
        if f"tau_{f.name}" in s:
            posterior[f"tau_{f.name}"] = s[f"tau_{f.name}"]
            dims[f"tau_{f.name}"] = [f"{f.name}_term"]
        if f"L_{f.name}" in s:
            L = s[f"L_{f.name}"]
            posterior[f"corr_{f.name}"] = L @ np.swapaxes(L, -1, -2)
            dims[f"corr_{f.name}"] = [f"{f.name}_term", f"{f.name}_term_"]
    for name in spec.likelihood.noise_priors():
        posterior[name] = s[name]
    residual = spec.residual
    for name in residual.posterior_variables():
        if name not in s:  # e.g. the population of per-driver AR coefficients when pooled
            continue
        posterior[name] = s[name]
        var_dims = residual.posterior_dims(name, s[name].ndim - 2, gdim)
        if var_dims is not None:
            dims[name] = var_dims
    st = out.stats
    sample_stats = {  # none for an approximate (SVI) fit
        "diverging": st["diverging"].astype(bool),
        "n_steps": st["num_steps"],
        "tree_depth": np.floor(np.log2(st["num_steps"] + 1)).astype(int),
        "acceptance_rate": st["accept_prob"],
        "energy": st["energy"],
        "lp": -st["potential_energy"],
    } if st else None
    coords: dict[str, Any] = {
        gdim: list(data.group_ids),
        "parameter": params.names,
        "parameter_": params.names,
        "obs": np.arange(data.num_obs),
    }
    if data.level_ids:
        coords["level"] = list(data.level_ids)
    if spec.common is not None:
        coords["term"] = spec.common_names
    for f in spec.factors:
        coords[f.name] = list(f.levels)
        coords[f"{f.name}_term"] = coords[f"{f.name}_term_"] = list(f.terms)
    coords.update(residual.posterior_coords())
    constant = {"group_index": data.group_index, **{f"cov_{k}": v
                                                     for k, v in data.covariates.items()}}
    cdims = {k: ["obs"] for k in constant}
    if data.level_index is not None:
        constant["level_index"] = data.level_index
        cdims["level_index"] = [gdim]
    idata = az.from_dict(
        posterior=posterior,
        sample_stats=sample_stats,
        observed_data={"y": data.y},
        constant_data=constant,
        coords=coords,
        dims={**dims, "y": ["obs"], **cdims},
    )
    attrs = {
        "carpool_format": str(FORMAT_VERSION),
        "carpool_spec": json.dumps(spec.to_dict()),
        "carpool_config": json.dumps(config.to_dict()),
        "carpool_centring": json.dumps({"choice": centring.choice, "kappa": centring.kappa,
                                        "tau_ref": centring.tau_ref,
                                        "weights": centring.weights}),
        "carpool_settings": json.dumps({**settings.to_dict(), "chain_method": out.chain_method,
                                        "layout": built.layout}),
        "carpool_timing": json.dumps(out.timing),
        "carpool_levels": json.dumps(list(data.level_ids)),
        "carpool_groups": json.dumps(list(data.group_ids)),
    }
    idata.posterior.attrs.update(attrs)
    return idata


def load(path: str | os.PathLike[str], spec: ModelSpec | None = None) -> Fit:
    """Read a fit written by :meth:`Fit.save`.

    ``spec`` is needed only for a model that is not registered (a user's own mean function);
    registered models are rebuilt by name from the saved options. The file's checksums are
    verified: an edited or corrupted file raises
    :class:`~carpool.inference.integrity.FitFileError` (a ``ValueError``), one written by
    another carpool version warns (:class:`~carpool.inference.integrity.VersionWarning`).
    Nothing is unpickled: the file is netCDF, the spec JSON.
    """
    import arviz as az

    from carpool.inference.integrity import verify

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such fit file: {path}")
    try:
        idata = az.from_netcdf(str(path))
        idata.load()  # read everything now: the file may be replaced later
        attrs = idata.posterior.attrs
        saved_spec = json.loads(attrs["carpool_spec"])
    except (OSError, KeyError, AttributeError, ValueError) as exc:
        raise InputError(f"{path} is not a carpool fit file ({exc})") from None
    if spec is None:
        spec = get_spec(saved_spec["name"], **saved_spec.get("options", {}))
    spec = spec.with_saved(saved_spec)
    config = PoolingConfig.from_dict(json.loads(attrs["carpool_config"]))
    c = json.loads(attrs["carpool_centring"])
    centring = CentringChoice(c["choice"], c.get("kappa", {}), c.get("tau_ref", {}),
                              c.get("weights", {}))
    cd = idata.constant_data
    gdim = spec.group_dim
    covs = {k[4:]: cd[k].values for k in cd.data_vars if k.startswith("cov_")}
    level_ids = tuple(json.loads(attrs.get("carpool_levels", "[]")))
    level_index = cd["level_index"].values if level_ids else None
    data = GroupedData(
        y=idata.observed_data["y"].values,
        group_index=cd["group_index"].values,
        group_ids=tuple(json.loads(attrs["carpool_groups"]) if "carpool_groups" in attrs
                        else (str(g) for g in idata.posterior.coords[gdim].values.tolist())),
        covariates=covs,
        level_index=level_index,
        level_ids=level_ids,
    )
    verify(idata, data, str(path))
    return Fit(idata, spec, config, data, centring)
