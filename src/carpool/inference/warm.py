"""Held-out refits that share one compiled sampler and start where the full fit ended.

A comparison refits each pooling mode without some observations: leave-future-out without
the last part of every series, leave-groups-out without whole groups (one refit per fold).
Refitted from scratch, each refit lays out its own data (new array shapes, so a new XLA
program to compile), searches a start and adapts a mass matrix for 1,000 warm-up
iterations; on the NGSIM drivers that made a comparison cost about 9 default fits.

Here every refit of one fit is the *same model on the same array shapes*, with the held-out
observations masked (:func:`carpool.pooling.model.build_model`'s ``keep_rows``) and the
held-out groups' latent values drawn from the population alone (``held_out``, non-centred:
a group without data is a prior draw, not a funnel). So:

- one program is compiled per fit and serves all its folds (the data and the start are its
  arguments);
- each chain starts at a draw of the full fit (its unconstrained coordinates, rebuilt from
  the saved posterior by :func:`unconstrained_draws`), which is already in the typical set
  of a posterior that differs by a fifth of the data;
- the mass matrix is the full fit's posterior variance in those coordinates (unit variance
  for the held-out groups' innovations, which are standard normal in the refit); warm-up
  only adapts the step size (:data:`WARM_WARMUP` iterations, NumPyro's dual averaging).

The refits are exact MCMC of the held-out posterior; the warm start changes how fast they
get there, not where they go. ``benchmarks/compare_cost.py`` measures the cost against cold
refits and how far the held-out scores move between them.

Refits from scratch (:func:`carpool.inference.run.refit`) remain where this does not apply:
SVI, and AR / GP residuals (whose per-group residual parameters would be unidentified for
held-out groups).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from carpool.inference.fit import Fit, to_inference_data
from carpool.inference.fit_cache import cached_fit
from carpool.inference.nuts import NutsSettings, SamplerOutput, warm_sampler
from carpool.pooling.model import BuiltModel, build_model

if TYPE_CHECKING:
    from carpool.inference.svi import SviSettings

__all__ = ["HeldOut", "WARM_WARMUP", "missing_sites", "unconstrained_draws", "warm_refits",
           "warm_settings", "warm_start_applies"]

log = logging.getLogger(__name__)

#: Warm-up iterations of a warm-started refit: the step size only (the start and the mass
#: matrix come from the full fit).
WARM_WARMUP = 150


@dataclass(frozen=True)
class HeldOut:
    """One refit's data: ``keep`` (n,) bool, the observations it sees, and ``groups``, the
    positions of groups left out entirely (leave-groups-out; empty for leave-future-out)."""

    keep: np.ndarray
    groups: np.ndarray


def warm_start_applies(fit: Fit, sampler: NutsSettings | SviSettings | None) -> bool:
    """Whether :func:`warm_refits` can refit ``fit``: a NUTS fit (and NUTS refits) with
    i.i.d. residuals and draws of its sampler's statistics (not an SVI fit), whose every
    latent site :func:`raw_draws` rebuilds from the saved posterior (:func:`missing_sites`
    empty; a site it does not know, e.g. of a spec feature added later, makes the refits
    start from scratch rather than fail)."""
    from carpool.inference.svi import SviSettings

    if not (not isinstance(sampler, SviSettings)
            and isinstance(fit.sampler, NutsSettings)
            and not fit.spec.residual.is_dynamic
            and "sample_stats" in fit.idata.groups()):
        return False
    missing = missing_sites(fit)
    if missing:
        log.info("warm start does not apply: the posterior does not rebuild site(s) %s",
                 missing)
        return False
    return True


def _whole(fit: Fit) -> HeldOut:
    """No observation held out."""
    return HeldOut(np.ones(fit.data.num_obs, dtype=bool), np.zeros(0, dtype=int))


def _sample_sites(built: BuiltModel) -> set[str]:
    """The latent sample sites of ``built``'s model (the start must give each one)."""
    return {*built.global_sites, *(name for name, _ in built.local_sites)}


def missing_sites(fit: Fit, built: BuiltModel | None = None) -> list[str]:
    """The latent sites of ``fit``'s model (``built``: its masked model; default the
    whole-data one) that :func:`raw_draws` cannot rebuild from the posterior, sorted; empty
    where a warm start applies. Any error rebuilding the draws (a posterior without a
    variable the spec expects) counts every site as missing."""
    built = _build(fit, _whole(fit)) if built is None else built
    sites = _sample_sites(built)
    try:
        have = set(raw_draws(fit, built))
    except (KeyError, ValueError, np.linalg.LinAlgError) as exc:
        log.info("warm start: rebuilding the draws failed: %r", exc)
        return sorted(sites)
    return sorted(sites - have)


def warm_settings(fit: Fit, sampler: NutsSettings | None) -> NutsSettings:
    """The warm refits' settings: ``sampler`` where given, else the fit's own chains, seed
    and target acceptance with :data:`WARM_WARMUP` warm-up iterations and half its draws
    (at least 250 per chain)."""
    if sampler is not None:
        return sampler.for_pooling(fit.pooling)
    own = fit.sampler
    assert isinstance(own, NutsSettings)
    return replace(own, warmup=WARM_WARMUP, draws=max(250, own.draws // 2)
                   ).for_pooling(fit.pooling)


def _build(fit: Fit, held: HeldOut) -> BuiltModel:
    weights = (fit.centring.weight_matrix(fit.parameter_names, fit.data.num_groups)
               if fit.centring.weights else None)
    return build_model(fit.spec, fit.data, fit.config, centring=fit.centring.choice,
                       layout=fit.settings.get("layout", "auto"), weights=weights,
                       keep_rows=held.keep, held_out=held.groups)


def raw_draws(fit: Fit, built: BuiltModel) -> dict[str, np.ndarray]:
    """The model's latent sample sites (constrained values), (chains, draws, ...) each,
    rebuilt from ``fit``'s saved posterior in ``built``'s parameterisation (its centring,
    centring order and held-out groups)."""
    post = fit.idata.posterior
    params = fit.spec.parameters
    config = built.config
    z = np.asarray(params.to_latent(post["theta"].values, axis=-1), dtype=float)
    out = {n: np.asarray(post[n].values, dtype=float)
           for n in fit.spec.likelihood.noise_priors()}
    out.update(_shared_sites(fit, built))
    if config.pooling != "hierarchical":
        out["z"] = z
        return out
    mu = np.asarray(post["mu"].values, dtype=float)
    tau = np.asarray(post["tau"].values, dtype=float)
    out["mu"] = mu
    if "tau" in built.global_sites:
        out["tau"] = tau
    centre = np.broadcast_to(mu[:, :, None, :], z.shape)
    if "tau_level" in built.global_sites:
        tau_level = np.asarray(post["tau_level"].values, dtype=float)
        level_mu = np.asarray(params.to_latent(post["level_population"].values, axis=-1))
        out["tau_level"] = tau_level
        out["level_eta"] = (level_mu - mu[:, :, None, :]) / tau_level[:, :, None, :]
        centre = level_mu[:, :, np.asarray(fit.data.level_index), :]
    held = built.arrays["held_out"]
    h = (np.zeros(z.shape[2]) if held is None else np.asarray(held))[:, None]
    t = tau[:, :, None, :]
    if "L_corr" not in built.global_sites:  # diagonal: z_dec, weights 1 centred 0 not
        w = np.asarray(built.arrays["weights"])
        out["z_dec"] = w * centre + (z - centre) / t ** (1.0 - w)
        return out
    order = list(built.order)
    corr = np.asarray(post["corr"].values, dtype=float)[..., order, :][..., :, order]
    L = np.linalg.cholesky(corr)
    out["L_corr"] = L
    n_nc = sum(c == "noncentred" for c in built.centring.values())
    u = (z[..., order] - centre[..., order]) / t[..., order]  # L @ eps = u per group
    eps = np.linalg.solve(L[:, :, None], u[..., None])[..., 0]
    if n_nc:
        out["z_nc"] = eps[..., :n_nc]
    if n_nc < len(order):
        # centred columns hold the values themselves; held-out groups their innovations
        out["theta_c"] = (1.0 - h) * z[..., order][..., n_nc:] + h * eps[..., n_nc:]
    return out


def _shared_sites(fit: Fit, built: BuiltModel) -> dict[str, np.ndarray]:
    """The sites of the values every group shares besides the noise, (chains, draws, ...)
    each: the common parameters' ``beta`` (latent) and each other grouping factor's
    effects (unpooled: ``b_<name>`` itself; hierarchical: its scale ``tau_<name>``, the
    Cholesky factor ``L_<name>`` of a correlated population and the innovations
    ``eps_<name>`` with ``b = tau * (eps @ L.T)``, see :func:`carpool.pooling.model`)."""
    post = fit.idata.posterior
    spec = fit.spec
    sites = _sample_sites(built)
    out: dict[str, np.ndarray] = {}
    if spec.common is not None and "beta" in sites:
        out["beta"] = np.asarray(spec.common.to_latent(post["beta"].values, axis=-1),
                                 dtype=float)
    for f in spec.factors:
        b_name, tau_name = f.effects_name, f"tau_{f.name}"
        if b_name in sites:  # unpooled: the effects are the site
            out[b_name] = np.asarray(post[b_name].values, dtype=float)
            continue
        if tau_name not in sites:  # pooled: no effects
            continue
        tau_f = np.asarray(post[tau_name].values, dtype=float)  # (C, D, W)
        u = np.asarray(post[b_name].values, dtype=float) / tau_f[:, :, None, :]
        L_name = f"L_{f.name}"
        if L_name in sites:
            L = np.linalg.cholesky(np.asarray(post[f"corr_{f.name}"].values, dtype=float))
            out[L_name] = L
            u = np.linalg.solve(L[:, :, None], u[..., None])[..., 0]  # L @ eps_j = u_j
        out[tau_name] = tau_f
        out[f"eps_{f.name}"] = u
    return out


def unconstrained_draws(fit: Fit, built: BuiltModel, supports: Any = None
                        ) -> dict[str, np.ndarray]:
    """:func:`raw_draws` mapped to the sampler's unconstrained coordinates (each site's
    ``biject_to(support)`` inverse), (chains, draws, ...) each. ``supports``: site ->
    support, where the caller has them (:func:`site_supports`)."""
    from numpyro.distributions.transforms import biject_to

    raw = raw_draws(fit, built)
    supports = site_supports(built) if supports is None else supports
    return {n: np.asarray(biject_to(supports[n]).inv(jnp.asarray(v))) for n, v in raw.items()}


def site_supports(built: BuiltModel) -> dict[str, Any]:
    """The support of every sample site of ``built``'s model (one traced run)."""
    import numpyro

    with numpyro.handlers.block():
        trace = numpyro.handlers.trace(numpyro.handlers.seed(built.model, 0)).get_trace(True)
    return {n: site["fn"].support for n, site in trace.items() if site["type"] == "sample"}


def _posterior_coordinates(fit: Fit, supports: Any) -> dict[str, np.ndarray]:
    """The full fit's draws in the refit model's unconstrained coordinates, chains stacked,
    (S, ...) per site: built once per fit, with no group held out (a fold's held-out groups
    get their own start and variance in :func:`_start_and_mass`; every other group's
    coordinates are the same in every fold)."""
    whole = _build(fit, _whole(fit))
    u = unconstrained_draws(fit, whole, supports)
    return {n: v.reshape((-1,) + v.shape[2:]) for n, v in u.items()}


def _start_and_mass(fit: Fit, built: BuiltModel, flat: dict[str, np.ndarray], chains: int,
                    held: np.ndarray, seed: int, keep: np.ndarray | None = None
                    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-chain starts (chains, ...) at draws of the full fit spread over its chains, and
    the diagonal inverse mass matrix (the posterior variance of every unconstrained
    coordinate, raveled as NumPyro ravels the start); a held-out group's innovations start
    at standard-normal draws with unit variance (their refit posterior is the prior), and
    so do the effects of another grouping factor's levels that ``keep`` (the observations
    the refit sees) leaves without data (a hierarchical factor's innovations; an unpooled
    factor's effects at draws of their prior, with its variance).
    ``flat``: :func:`_posterior_coordinates`."""
    from jax.flatten_util import ravel_pytree

    S = next(iter(flat.values())).shape[0]
    at = np.linspace(S - 1, 0, chains).round().astype(int)
    start = {n: v[at].copy() for n, v in flat.items()}
    var = {n: np.maximum(v.var(axis=0), 1e-8) for n, v in flat.items()}
    rng = np.random.default_rng(seed)
    for name, _ in built.local_sites:
        if len(held) and name in start and fit.pooling == "hierarchical":
            start[name][:, held] = rng.standard_normal(start[name][:, held].shape)
            var[name][held] = 1.0
    if keep is not None and not keep.all():
        for f in fit.spec.factors:
            index = np.asarray(fit.data.covariates[f.index]).astype(int)
            empty = np.setdiff1d(np.arange(len(f.levels)), index[keep])
            if not empty.size:
                continue
            scale = np.asarray(f.unpooled_scale, dtype=float)
            for name, sd in ((f"eps_{f.name}", np.ones_like(scale)),
                             (f.effects_name, scale)):
                if name in start:
                    shape = start[name][:, empty].shape
                    start[name][:, empty] = sd * rng.standard_normal(shape)
                    var[name][empty] = sd ** 2
    inverse_mass, _ = ravel_pytree({n: jnp.asarray(v) for n, v in var.items()})
    return start, np.asarray(inverse_mass)


def warm_refits(fit: Fit, folds: Sequence[HeldOut], sampler: NutsSettings | None = None,
                *, seeds: Sequence[int] | None = None) -> list[Fit]:
    """Refit ``fit`` once per fold of ``folds``, warm-started (see the module docstring).

    Every refit is the fit's model on its full data with the fold's held-out observations
    masked; the returned fits hold all groups (a held-out group's parameters are draws from
    the population). ``sampler``: see :func:`warm_settings`; ``seeds``: one per fold
    (default the sampler's seed). One program is compiled for all folds where their arrays
    have one shape (a censored likelihood's positions can differ in size: that fold compiles
    its own). Warm refits are kept in the fit cache
    (:mod:`carpool.inference.fit_cache`) like fits, keyed on their start too.
    """
    settings = warm_settings(fit, sampler)
    seeds = [settings.seed] * len(folds) if seeds is None else list(seeds)
    built = [_build(fit, h) for h in folds]
    missing = missing_sites(fit, built[0])
    if missing:
        raise ValueError(f"a warm start cannot rebuild the site(s) {missing} from the fit's "
                         "posterior; refit from scratch (carpool.refit), or check "
                         "warm_start_applies first")
    run = warm_sampler(built[0], settings)
    flat = _posterior_coordinates(fit, site_supports(built[0]))
    out: list[Fit] = []
    layout = fit.settings.get("layout", "auto")
    for b, h, s in zip(built, folds, seeds, strict=True):
        start, inverse_mass = _start_and_mass(fit, b, flat, settings.chains, h.groups, s,
                                              h.keep)
        run_settings = replace(settings, seed=s)

        def one(b=b, start=start, inverse_mass=inverse_mass, s=s,
                run_settings=run_settings) -> Fit:
            result: SamplerOutput = run(b.arrays, start, inverse_mass, s)
            idata = to_inference_data(b, result, fit.centring, run_settings)
            idata.posterior.attrs["carpool_warm_start"] = "full fit"
            log.info("warm refit: %s", result.timing)
            return Fit(idata, fit.spec, fit.config, fit.data, fit.centring)

        # the refit depends on the full fit through its start and mass matrix only
        digest = hashlib.sha256(np.ascontiguousarray(inverse_mass).tobytes())
        for name in sorted(start):
            digest.update(np.ascontiguousarray(start[name]).tobytes())
        extra = {"warm_start": digest.hexdigest(),
                 "keep": hashlib.sha256(np.packbits(h.keep).tobytes()).hexdigest(),
                 "held_out": [int(g) for g in h.groups], "centring": fit.centring.choice,
                 "weights": fit.centring.weights}
        out.append(cached_fit(fit.spec, fit.data, fit.config, run_settings, layout, one,
                              extra=extra))
    return out
