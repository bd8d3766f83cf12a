"""Separate fits: one independent NUTS posterior per driver, compiled ONCE for all drivers.

``carpool.fit(..., pooling="unpooled")`` samples every driver's parameters in one joint
posterior (with a noise scale shared by all drivers): one step size and one tree depth
for all of them, so the worst-identified driver sets the cost of every draw.
:func:`fit_separately` fits each driver alone (its own parameters AND its own noise scale,
the reference's unpooled model), with its own step size and mass matrix, and never
recompiles: every driver's series is padded to one length (masked), so one compiled
program serves every driver.

Two strategies, same draws' distribution:

``"loop"`` (default)
    One compiled function fits ``devices`` drivers per call (one per CPU device, chains
    vectorised inside), called once per batch: each driver's trees are as deep as it needs.
``"vmap"``
    ``batch_size`` drivers per call vectorised (``jax.vmap``) and split over the devices:
    one program, fewer calls, but the drivers of a batch step in lockstep (every leapfrog of
    the vectorised tree is paid for the deepest tree in the batch).

``benchmarks/scale_drivers.py`` measures both.

Per driver the latent vector is ``x = (z (P,), log noise (K,))``: the model's latent
parameters (the parameter table's transforms and priors) and the log of each learned noise
scale (its prior plus the log-Jacobian). The result holds ``theta`` (chain, draw, driver,
parameter) in natural units and each noise (chain, draw, driver).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from carpool.errors import InputError, UnknownNameError
from carpool.inference.nuts import NutsSettings
from carpool.pooling.grouped import GroupedData
from carpool.pooling.linear_mean import censored_bucket, row_projected_terms
from carpool.pooling.scoring import point_log_density
from carpool.pooling.spec import ModelSpec

__all__ = ["SeparateFits", "fit_separately", "load_separate", "row_terms"]

STRATEGIES = ("loop", "vmap")

#: Drivers per call of the ``"vmap"`` strategy unless given: at 64 the lockstep trees cost
#: about what the vectorisation saves (0.49 s per driver for 1,000 drivers, as the loop's
#: 0.48); at 500 the same 1,000 drivers had not finished in 14 minutes (2 cores, 2 chains x
#: (1,000 + 1,000), benchmarks/scale_drivers.py).
VMAP_BATCH = 64
KIND = "separate"

#: The sampler of :func:`fit_separately` by default: 2 chains per driver.
SAMPLER = NutsSettings(chains=2)


def row_terms(spec: ModelSpec, y: np.ndarray, mask: np.ndarray,
              covs: Mapping[str, np.ndarray], *, projected: bool = False
              ) -> dict[str, Any] | None:
    """Each row's data-only likelihood terms (``observed_terms``), stacked: arrays with a
    leading axis of rows (G), or ``None`` where the likelihood has no summed form.

    ``y``, ``mask`` and each covariate are padded (G, T). A censored likelihood's
    positions are per row (indices into the row), padded to one size over the rows
    (:func:`censored_bucket`). ``projected``: each row's ``projected_terms`` of the spec's
    linear mean instead (:mod:`carpool.pooling.linear_mean`; the caller checks that it
    holds on these data)."""
    lik = spec.likelihood
    if projected:
        return row_projected_terms(spec, y, mask, covs)
    rows = [lik.observed_terms(y[g], mask[g], {k: v[g] for k, v in covs.items()})
            for g in range(y.shape[0])]
    if rows[0] is None:
        return None
    out: dict[str, Any] = {k: np.stack([np.asarray(r[k], dtype=float) for r in rows])
                           for k in rows[0] if k not in ("censored", "c_censored")}
    if "censored" in rows[0]:
        counts = [int(np.sum(r["censored"][1])) for r in rows]
        size = censored_bucket(max(counts), y.shape[1])
        positions = np.zeros((len(rows), size), np.int32)
        valid = np.zeros((len(rows), size), np.float32)
        c_cens = np.ones((len(rows), size))
        for g, (r, n) in enumerate(zip(rows, counts, strict=True)):
            positions[g, :n] = r["censored"][0][:n]
            valid[g, :n] = 1.0
            c_cens[g, :n] = r["c_censored"][:n]
        out["censored"] = (positions, valid)
        out["c_censored"] = c_cens
    return out


@dataclass(frozen=True)
class SeparateFits:
    """Independent per-driver posteriors (see the module docstring).

    Attributes
    ----------
    idata
        ArviZ ``InferenceData``: ``posterior`` with ``theta`` (chain, draw, driver,
        parameter), natural units, and each noise scale (chain, draw, driver);
        ``sample_stats`` with ``diverging`` and ``n_steps`` (chain, draw, driver).
    spec
        The model specification.
    """

    idata: Any
    spec: ModelSpec

    @property
    def group_ids(self) -> tuple[str, ...]:
        return tuple(str(g) for g in self.idata.posterior["driver"].values)

    @property
    def timing(self) -> dict[str, float]:
        return json.loads(self.idata.posterior.attrs.get("carpool_timing", "{}"))

    def diagnostics(self) -> dict[str, Any]:
        """Worst R-hat and bulk ESS over every driver's variables, divergences in all."""
        import arviz as az

        post = self.idata.posterior
        ess, rhat = az.ess(post, method="bulk"), az.rhat(post)
        return {
            "max_rhat": float(max(float(rhat[v].max()) for v in rhat.data_vars)),
            "min_ess_bulk": float(min(float(ess[v].min()) for v in ess.data_vars)),
            "divergences": int(self.idata.sample_stats["diverging"].values.sum()),
            "drivers_with_divergences": int(
                (self.idata.sample_stats["diverging"].values.sum(axis=(0, 1)) > 0).sum()),
        }

    def summary(self, hdi_prob: float = 0.94) -> pd.DataFrame:
        """One row per driver and variable: mean, sd, HDI, bulk ESS, R-hat (natural units)."""
        import arviz as az

        table = az.summary(self.idata, hdi_prob=hdi_prob, kind="all")
        table.index.name = "variable"
        return table

    def select(self, drivers: list[str] | tuple[str, ...]) -> SeparateFits:
        """The fits of ``drivers`` only (each driver's draws are its own: nothing is
        refitted); its checksums are those of the selection."""
        missing = sorted(set(drivers) - set(self.group_ids))
        if missing:
            raise UnknownNameError(f"no fit for driver(s) {missing}")
        idata = self.idata.sel(driver=list(drivers))
        attrs = dict(self.idata.posterior.attrs)  # a copy: sel may share the dict
        idata.posterior.attrs = attrs
        inputs = json.loads(attrs["carpool_inputs"])
        attrs["carpool_inputs"] = json.dumps({d: inputs[d] for d in drivers})
        _stamp(idata)
        return SeparateFits(idata, self.spec)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fits as netCDF, atomically (temporary file, then rename). The file
        carries the carpool version and checksums of the draws and of what was fitted
        (:mod:`carpool.inference.integrity`), checked by :func:`load_separate`."""
        from carpool.io import atomic_write

        return atomic_write(path, self.idata.to_netcdf)


def load_separate(path: str | os.PathLike[str]) -> SeparateFits:
    """Read :meth:`SeparateFits.save` output (netCDF; the spec is rebuilt by name).

    The checksums of the draws and of what was fitted are verified: an edited or corrupted
    file raises :class:`~carpool.inference.integrity.FitFileError` (a ``ValueError``).
    """
    import arviz as az

    from carpool.inference.integrity import verify
    from carpool.inference.run import resolve_spec

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such fit file: {path}")
    try:
        idata = az.from_netcdf(str(path))
        idata.load()  # read everything now: the file may be replaced later
        attrs = idata.posterior.attrs
        kind = attrs.get("carpool_kind")
        options = json.loads(attrs["carpool_model_options"])
    except (OSError, KeyError, AttributeError, ValueError) as exc:
        raise InputError(f"{path} is not a carpool fit file ({exc})") from None
    if kind != KIND:
        raise InputError(f"{path} is not a file of separate per-driver fits")
    verify(idata, None, str(path), spec_attrs=SPEC_ATTRS)
    return SeparateFits(idata, resolve_spec(attrs["carpool_model"], **options))


#: The attributes that state what a separate fit fitted (hashed into its checksum).
SPEC_ATTRS = ("carpool_kind", "carpool_model", "carpool_model_options", "carpool_settings",
              "carpool_inputs")


def _stamp(idata: Any) -> None:
    """Write the version and the checksums of the draws and of :data:`SPEC_ATTRS`."""
    from carpool.inference.integrity import stamp

    stamp(idata, None, spec_attrs=SPEC_ATTRS)


def _input_checksums(drivers: tuple[str, ...], y: np.ndarray, mask: np.ndarray,
                     covs: np.ndarray) -> dict[str, str]:
    """``{driver: SHA-256 of its observations and covariates}`` from the padded arrays."""
    import hashlib

    out = {}
    for g, name in enumerate(drivers):
        m = mask[g]
        h = hashlib.sha256(np.ascontiguousarray(y[g][m], dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(covs[g][m], dtype="<f8").tobytes())
        out[str(name)] = h.hexdigest()
    return out


def _padded(grouped: GroupedData, covariates: tuple[str, ...], multiple: int = 1
            ) -> tuple[np.ndarray, ...]:
    """(y (G, T), mask (G, T), covs (G, T, C)) with T rounded up to ``multiple`` (the
    extra cells repeat the last one, masked)."""
    pad = grouped.padded()
    y, mask = np.asarray(pad.y), np.asarray(pad.mask)
    covs = np.stack([np.asarray(pad.covariates[c]) for c in covariates], axis=-1)
    extra = -y.shape[1] % max(1, int(multiple))
    if extra:
        y = np.concatenate([y, np.repeat(y[:, -1:], extra, axis=1)], axis=1)
        covs = np.concatenate([covs, np.repeat(covs[:, -1:], extra, axis=1)], axis=1)
        mask = np.concatenate([mask, np.zeros((mask.shape[0], extra), bool)], axis=1)
    return y, mask, covs


def _sampler(spec: ModelSpec, covariates: tuple[str, ...], warmup: int, draws: int,
             chains: int, target_accept: float, max_tree_depth: int,
             init_radius: float, dense_mass: bool = False) -> Any:
    """``run(keys (chains, 2), y (T,), mask (T,), covs (T, C), terms) -> (x, diverging,
    steps)`` for one driver, all chains vectorised: draws (chains, S, P + K). ``terms``: the
    driver's row of :func:`row_terms`, or ``None`` (per-observation log density)."""
    from numpyro.infer.hmc import hmc

    log_density = point_log_density(spec)
    loc, _ = spec.parameters.latent_prior_arrays()
    noise0 = np.log([p.median() for p in spec.likelihood.noise_priors().values()])
    x_centre = jnp.asarray(np.concatenate([loc, noise0]))

    def potential_gen(y, mask, covs, terms):
        named = {c: covs[..., i] for i, c in enumerate(covariates)}
        return lambda x: -log_density(x, y, mask, named, terms)

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")

    def one_chain(key, y, mask, covs, terms):
        k_init, k_run = jax.random.split(key)
        x0 = x_centre + jax.random.uniform(k_init, x_centre.shape, minval=-init_radius,
                                           maxval=init_radius)
        data = (y, mask, covs, terms)
        state = init_kernel(x0, warmup, target_accept_prob=target_accept,
                            max_tree_depth=max_tree_depth, dense_mass=dense_mass,
                            model_args=data, rng_key=k_run)

        def step(s, _):
            s = sample_kernel(s, model_args=data)
            return s, (s.z, s.diverging, s.num_steps)

        state, _ = jax.lax.scan(lambda s, _: (sample_kernel(s, model_args=data), None),
                                state, None, length=warmup)
        _, out = jax.lax.scan(step, state, None, length=draws)
        return out

    def run(keys, y, mask, covs, terms):
        return jax.vmap(one_chain, in_axes=(0, None, None, None, None))(keys, y, mask, covs,
                                                                        terms)

    return run


def fit_separately(
    data: Any,
    model: str | ModelSpec = "idm",
    *,
    sampler: NutsSettings | None = None,
    strategy: str = "loop",
    batch_size: int | None = None,
    model_options: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    pad_multiple: int = 1,
) -> SeparateFits:
    """Fit every driver on its own with NUTS, one compiled program for all drivers.

    Parameters
    ----------
    data
        Trajectories (or :class:`~carpool.pooling.grouped.GroupedData`), as for
        :func:`carpool.fit`.
    model, model_options, data_options
        As for :func:`carpool.fit`; i.i.d. residuals only.
    strategy
        ``"loop"`` or ``"vmap"`` (module docstring).
    batch_size
        Drivers per call for ``"vmap"`` (default :data:`VMAP_BATCH`, at most all of them;
        rounded up to the device count); ignored by ``"loop"`` (one driver per device per
        call).
    sampler
        :class:`~carpool.inference.nuts.NutsSettings`, the same for every driver
        (``None``: :data:`SAMPLER`, 2 chains); ``target_accept=None`` is the unpooled
        default. A driver's chains use keys folded from ``seed`` and its id, so its draws
        do not depend on the strategy's batching or on which other drivers are fitted
        with it.
    pad_multiple
        Round the padded series length up to a multiple of this (masked cells): calls
        whose drivers' longest series round to the same length reuse the compiled program
        (kept per process for the last few settings), e.g. the tasks of a batch.
    """
    from carpool.inference.run import resolve_spec

    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    sampler = SAMPLER if sampler is None else sampler
    if not isinstance(sampler, NutsSettings):
        raise InputError(f"separate fits sample with NUTS: give NutsSettings, got "
                         f"{type(sampler).__name__}")
    nuts = sampler.for_pooling("unpooled")
    if isinstance(model, str) and "~" in model:
        raise InputError("separate fits take a registered model; fit a formula's groups "
                         "with carpool.fit(table, formula, pooling='unpooled')")
    from carpool.inference.compile_cache import enable_compilation_cache

    enable_compilation_cache()  # the compiled sampler is kept on disk, as carpool.fit's
    spec = resolve_spec(model, **dict(model_options or {}))
    if spec.residual.is_dynamic:
        raise InputError(f"separate fits support i.i.d. residuals only (got "
                         f"{spec.residual.name!r}); use carpool.fit(pooling='unpooled')")
    if spec.common is not None or spec.factors:
        raise InputError(f"model {spec.name!r} has parameters shared by its groups (common "
                         "terms or other grouping factors), so its groups cannot be fitted "
                         "apart; use carpool.fit(pooling='unpooled')")
    grouped = data if isinstance(data, GroupedData) else spec.prepare(
        data, **dict(data_options or {}))
    covariates = tuple(spec.covariates)
    y, mask, covs = _padded(grouped, covariates, pad_multiple)
    from carpool.pooling.model import linear_mean_usable

    named_covs = {c: covs[..., i] for i, c in enumerate(covariates)}
    terms = row_terms(spec, y, mask, named_covs,
                      projected=linear_mean_usable(spec, grouped))
    G = grouped.num_groups
    devices = max(1, min(jax.local_device_count(), G))
    # loop: one driver per device per call; vmap: batches rounded up to the devices
    per_call = drivers_per_call(strategy, batch_size, G, devices)
    per_device = per_call // devices

    settings = (covariates, int(nuts.warmup), int(nuts.draws), int(nuts.chains),
                float(nuts.target_accept), int(nuts.max_tree_depth), float(nuts.init_radius),
                devices, bool(nuts.dense_mass))
    if isinstance(model, str):
        key = ("registered", model, json.dumps(dict(model_options or {}), sort_keys=True,
                                               default=str), settings)
    else:
        key = ("spec", id(model), settings)
    program = _program(key, spec, settings)
    base = jax.random.PRNGKey(nuts.seed)
    keys = np.stack([np.asarray(jax.random.split(jax.random.fold_in(base, _driver_key(g)),
                                                 nuts.chains))
                     for g in grouped.group_ids])  # (G, chains, 2)

    t0 = time.perf_counter()
    outputs = []
    for start in range(0, G, per_call):
        idx = np.arange(start, start + per_call) % G  # the last batch wraps (and is cut)
        shape = (devices, per_device)
        # this call's drivers of every argument (terms may be None: an empty pytree)
        out = program(*jax.tree.map(
            lambda a, i=idx, s=shape: jnp.asarray(a[i]).reshape(s + a.shape[1:]),
            (keys, y, mask, covs, terms)))
        outputs.append((out, min(per_call, G - start)))
    results = [[np.asarray(o).reshape((per_call,) + o.shape[2:])[:n] for o in out]
               for out, n in outputs]
    jax.block_until_ready(results)
    wall = time.perf_counter() - t0
    x, diverging, steps = (np.concatenate([r[i] for r in results]) for i in range(3))
    inputs = _input_checksums(tuple(grouped.group_ids), y, mask, covs)
    idata = _to_inference_data(spec, grouped, x, diverging, steps, inputs, {
        "total_s": wall, "strategy": strategy, "drivers_per_call": per_call,
        "calls": len(outputs)},
        settings=nuts.to_dict())
    return SeparateFits(idata, spec)


def drivers_per_call(strategy: str, batch_size: int | None, num_drivers: int,
                     devices: int) -> int:
    """Drivers fitted per call of the compiled program: one per device for ``"loop"``;
    ``batch_size`` (default :data:`VMAP_BATCH`, at most ``num_drivers``) rounded up to a
    multiple of the devices for ``"vmap"``."""
    if batch_size is not None and int(batch_size) < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if strategy == "loop":
        return devices
    batch = min(num_drivers, int(batch_size) if batch_size is not None else VMAP_BATCH)
    return -(-batch // devices) * devices


def _driver_key(driver: Any) -> int:
    """A stable 31-bit integer of a driver id (CRC-32 of its text), to fold into keys."""
    import zlib

    return zlib.crc32(str(driver).encode("utf-8")) & 0x7FFFFFFF


_PROGRAMS: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_PROGRAMS_KEPT = 4


def _program(key: tuple[Any, ...], spec: ModelSpec, settings: tuple[Any, ...]) -> Any:
    """The jitted (or pmapped) sampler for ``settings``, built once per process and key.

    ``f(keys, y, mask, covs, terms)`` with a leading (devices, drivers per device) shape; JAX
    compiles it once per distinct series length. A key holding a user's spec object also
    holds the object (so its ``id`` stays its own).
    """
    if key in _PROGRAMS:
        return _PROGRAMS[key][0]
    (covariates, warmup, draws, chains, target_accept, max_tree_depth, init_radius, devices,
     dense_mass) = settings
    run = _sampler(spec, covariates, warmup, draws, chains, target_accept, max_tree_depth,
                   init_radius, dense_mass)
    batched = jax.vmap(run)  # over the drivers of one device
    program = jax.pmap(batched) if devices > 1 else jax.jit(lambda *a: jax.tree.map(
        lambda t: t[None], batched(*jax.tree.map(lambda b: b[0], a))))
    while len(_PROGRAMS) >= _PROGRAMS_KEPT:
        _PROGRAMS.pop(next(iter(_PROGRAMS)))
    _PROGRAMS[key] = (program, spec)
    return program


def _to_inference_data(spec: ModelSpec, grouped: GroupedData, x: np.ndarray,
                       diverging: np.ndarray, steps: np.ndarray, inputs: dict[str, str],
                       timing: dict[str, Any], *, settings: dict[str, Any]) -> Any:
    """x (G, chains, S, P + K) -> InferenceData with natural theta and noise scales."""
    import arviz as az

    params = spec.parameters
    P = len(params)
    z = np.moveaxis(x[..., :P], 0, 2)  # (chains, S, G, P)
    theta = np.asarray(params.to_natural(jnp.asarray(z), axis=-1))
    posterior = {"theta": theta}
    for k, name in enumerate(spec.likelihood.noise_priors()):
        posterior[name] = np.exp(np.moveaxis(x[..., P + k], 0, 2))
    dims = {"theta": ["driver", "parameter"],
            **{n: ["driver"] for n in posterior if n != "theta"},
            "diverging": ["driver"], "n_steps": ["driver"]}
    coords = {"driver": list(grouped.group_ids), "parameter": params.names}
    attrs = {"carpool_kind": KIND, "carpool_model": spec.name,
             "carpool_model_options": json.dumps(dict(spec.options)),
             "carpool_timing": json.dumps(timing), "carpool_settings": json.dumps(settings),
             "carpool_inputs": json.dumps(inputs)}
    idata = az.from_dict(
        posterior=posterior,
        sample_stats={"diverging": np.moveaxis(diverging, 0, 2),
                      "n_steps": np.moveaxis(steps, 0, 2)},
        coords=coords, dims=dims)
    idata.posterior.attrs.update(attrs)
    _stamp(idata)
    return idata

