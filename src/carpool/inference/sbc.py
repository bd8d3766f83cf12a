"""Simulation-based calibration (SBC, Talts, Betancourt, Simpson, Vehtari & Gelman 2018).

For ``n = 1 .. N``: draw parameters ``theta_n`` from the prior, simulate data ``y_n`` from the
model given ``theta_n`` (the covariates, e.g. each driver's recorded speeds and gaps, are the
fixed design), sample the posterior ``p(theta | y_n)`` and record the rank of ``theta_n``
among ``L`` thinned posterior draws (0..L). If the model code and the sampler are right, each
scalar's ranks are uniform on ``0..L``; a sampler that is too narrow gives a U shape, too wide
a hump, a biased one a slope.

Cost. :func:`carpool.fit` compiles a new program per data set (the data are closed over as
constants), seconds each. Here the model is built once and conditioned on ``y`` passed as an
*argument* (``numpyro.handlers.condition``), and one jitted function runs warm-up and sampling
of one replication: it is compiled once per configuration and each further replication costs
only its leapfrog steps (pooled IDM: 11 s to compile, then 0.1-1 s per replication, measured
on 2 CPU cores). ``vmap`` over replications was measured slower (10 replications 9.6 s
against about 3 s one after another): the vectorised NUTS trees wait for the longest lane.

The uniformity tests are a chi-square test on ``num_bins`` equal bins of the ranks and a
Kolmogorov-Smirnov test of the randomised ranks ``(rank + U(0,1)) / (L + 1)`` (uniform on
(0, 1) under the null). :func:`chi_square_power` gives the power of the chi-square test
against a posterior that is too narrow or shifted, so the number of replications can be
chosen to have power.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from carpool.errors import InputError
from carpool.pooling.grouped import GroupedData
from carpool.pooling.spec import ModelSpec, PoolingConfig

__all__ = ["SbcSettings", "SbcResult", "chi_square_power", "chi_square_uniformity",
           "ks_uniformity", "rank_of_truth", "run_sbc", "sbc_quantities"]


@dataclass(frozen=True)
class SbcSettings:
    """SBC sampler settings.

    Attributes
    ----------
    num_replications
        N, the number of prior draws / simulated data sets / posterior fits.
    warmup
        NUTS warm-up iterations per replication (one chain each).
    num_ranks
        L, the posterior draws kept per replication (ranks are 0..L).
    thinning
        Keep every ``thinning``-th draw, so ``num_ranks * thinning`` draws are sampled; SBC
        assumes nearly independent draws (autocorrelated ones give a U-shaped histogram).
    num_bins
        Bins of the chi-square test; ``num_ranks + 1`` must be a multiple of it.
    target_accept, max_tree_depth
        NUTS settings.
    seed
        Seeds the prior draws and every replication's chain.
    """

    num_replications: int = 200
    warmup: int = 300
    num_ranks: int = 99
    thinning: int = 4
    num_bins: int = 10
    target_accept: float = 0.9
    max_tree_depth: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_replications < 2:
            raise InputError(f"num_replications must be >= 2, got {self.num_replications}")
        if (self.num_ranks + 1) % self.num_bins:
            raise InputError(f"num_ranks + 1 ({self.num_ranks + 1}) must be a multiple of "
                             f"num_bins ({self.num_bins})")
        if self.thinning < 1 or self.warmup < 1:
            raise InputError("thinning and warmup must be >= 1")


@dataclass(frozen=True)
class SbcResult:
    """Ranks of the true values and what each replication cost.

    Attributes
    ----------
    ranks
        Quantity name -> ranks, shape (N,), integers in ``0..num_ranks``.
    num_ranks
        L.
    divergences, num_steps
        Per replication: divergent transitions (after warm-up) and mean leapfrog steps per
        draw, shape (N,).
    compile_s, wall_s
        Seconds to compile (the first replication, minus the median of the others) and in
        all (prior draws, compilation and every replication).
    """

    ranks: dict[str, np.ndarray]
    num_ranks: int
    divergences: np.ndarray
    num_steps: np.ndarray
    compile_s: float
    wall_s: float
    settings: SbcSettings = field(default_factory=SbcSettings)

    def table(self, *, seed: int = 0) -> Any:
        """One row per quantity: ``chi2``, ``chi2_p``, ``ks_p`` (see the module docstring).

        ``seed`` seeds the randomisation of the KS test's ties.
        """
        import pandas as pd

        rows = []
        rng = np.random.default_rng(seed)
        for name, r in self.ranks.items():
            stat, p = chi_square_uniformity(r, self.num_ranks, self.settings.num_bins)
            rows.append({"quantity": name, "chi2": stat, "chi2_p": p,
                         "ks_p": ks_uniformity(r, self.num_ranks, rng)})
        return pd.DataFrame(rows).set_index("quantity")

    def min_p(self) -> float:
        """Smallest chi-square p-value over the quantities."""
        return float(self.table()["chi2_p"].min())

    def passes(self, alpha: float = 0.01) -> bool:
        """Whether every quantity's chi-square p-value exceeds ``alpha / m`` (Bonferroni over
        the m quantities: a correct sampler fails with probability at most ``alpha``)."""
        return self.min_p() > alpha / len(self.ranks)


def rank_of_truth(truth: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Rank of ``truth`` among posterior ``draws``: how many draws are smaller.

    Parameters
    ----------
    truth
        True values, shape (...).
    draws
        Posterior draws, shape (L, ...).

    Returns
    -------
    numpy.ndarray
        Integers in ``0..L``, shape (...). Ties (a discrete quantity) count half, rounded
        down, so they do not pile up at one end.
    """
    truth, draws = np.asarray(truth), np.asarray(draws)
    below = (draws < truth).sum(axis=0)
    ties = (draws == truth).sum(axis=0)
    return (below + ties // 2).astype(int)


def chi_square_uniformity(ranks: np.ndarray, num_ranks: int, num_bins: int
                          ) -> tuple[float, float]:
    """Pearson chi-square test that ``ranks`` (in ``0..num_ranks``) are uniform.

    Ranks are grouped in ``num_bins`` equal bins of ``(num_ranks + 1) / num_bins`` ranks;
    returns ``(statistic, p-value)`` with ``num_bins - 1`` degrees of freedom.
    """
    from scipy import stats

    counts = bin_counts(ranks, num_ranks, num_bins)
    expected = len(np.asarray(ranks)) / num_bins
    stat = float(((counts - expected) ** 2 / expected).sum())
    return stat, float(stats.chi2.sf(stat, num_bins - 1))


def bin_counts(ranks: np.ndarray, num_ranks: int, num_bins: int) -> np.ndarray:
    """Counts of ``ranks`` in ``num_bins`` equal bins of ``0..num_ranks``, shape (num_bins,)."""
    width = (num_ranks + 1) // num_bins
    return np.bincount(np.asarray(ranks, dtype=int) // width, minlength=num_bins)


def ks_uniformity(ranks: np.ndarray, num_ranks: int, rng: np.random.Generator) -> float:
    """Kolmogorov-Smirnov p-value of the randomised ranks ``(rank + U) / (L + 1)``."""
    from scipy import stats

    r = np.asarray(ranks, dtype=float)
    u = (r + rng.uniform(size=r.shape)) / (num_ranks + 1)
    return float(stats.kstest(u, "uniform").pvalue)


def chi_square_power(num_replications: int, *, num_ranks: int = 99, num_bins: int = 10,
                     alpha: float = 0.01, sd_ratio: float = 1.0, shift_sd: float = 0.0,
                     num_trials: int = 2000, seed: int = 0) -> float:
    """Power of the chi-square rank test against a miscalibrated Gaussian posterior.

    In a conjugate normal model the true value's standardised position in its posterior is
    ``N(0, 1)``; a sampler whose draws have ``sd_ratio`` times the posterior sd and are
    shifted by ``shift_sd`` posterior sds ranks the truth at
    ``L * Phi((x - shift_sd) / sd_ratio)`` on average. The power is the share of
    ``num_trials`` simulated SBC runs whose p-value falls below ``alpha``.

    Parameters
    ----------
    num_replications
        N of the SBC run.
    sd_ratio, shift_sd
        The alternative: e.g. ``sd_ratio=0.7`` (30% too narrow), ``shift_sd=0.5``.
    alpha
        The test's level (for a Bonferroni-corrected family, pass ``alpha / m``).
    """
    from scipy import stats

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_trials, num_replications))
    draws = shift_sd + sd_ratio * rng.standard_normal((num_trials, num_replications,
                                                       num_ranks))
    ranks = (draws < x[..., None]).sum(axis=-1)
    width = (num_ranks + 1) // num_bins
    counts = np.stack([(ranks // width == b).sum(axis=1) for b in range(num_bins)], axis=1)
    expected = num_replications / num_bins
    stat = ((counts - expected) ** 2 / expected).sum(axis=1)
    return float((stats.chi2.sf(stat, num_bins - 1) < alpha).mean())


def sbc_quantities(samples: Mapping[str, np.ndarray], pooling: str,
                   parameter_names: list[str], group_ids: tuple[str, ...],
                   noise_names: list[str], common_names: list[str] | tuple[str, ...] = ()
                   ) -> dict[str, np.ndarray]:
    """The scalars whose ranks are checked, each shape (S,) over draws ``S``.

    Latent group (or shared) parameters ``z`` (ranks are invariant to the monotone map to
    natural units), and for hierarchical models the population mean ``mu`` and scale
    ``tau``; then the common parameters (site ``beta``, one value in every mode, e.g. a
    formula's terms that do not vary by group) by ``common_names``; then the noise
    parameters.
    """
    out: dict[str, np.ndarray] = {}
    z = np.asarray(samples["z"])
    if pooling == "pooled":
        for i, p in enumerate(parameter_names):
            out[p] = z[:, i]
    else:
        if pooling == "hierarchical":
            for site in ("mu", "tau"):
                if site in samples:
                    for i, p in enumerate(parameter_names):
                        out[f"{site}[{p}]"] = np.asarray(samples[site])[:, i]
        for g, gid in enumerate(group_ids):
            for i, p in enumerate(parameter_names):
                out[f"{p}[{gid}]"] = z[:, g, i]
    if common_names:
        beta = np.asarray(samples["beta"])
        for i, c in enumerate(common_names):
            out[c] = beta[:, i]
    for name in noise_names:
        out[name] = np.asarray(samples[name])
    return out


def run_sbc(spec: ModelSpec, data: GroupedData, config: PoolingConfig,
            settings: SbcSettings, *, centring: Mapping[str, str] | None = None,
            fit_spec: ModelSpec | None = None, log_fn: Any = None, executor: Any = None,
            num_chunks: int | None = None) -> SbcResult:
    """Run SBC of ``spec`` in ``config.pooling`` mode on the design of ``data``.

    Parameters
    ----------
    spec, config
        The model and pooling mode (i.i.d. residuals; no levels).
    data
        The design: its covariates and group structure are kept, its ``y`` is replaced by
        each replication's simulated data.
    settings
        See :class:`SbcSettings`.
    centring
        Parameter -> ``"centred"`` / ``"noncentred"`` for hierarchical models (default: the
        engine's, non-centred where ``config.param`` is ``"auto"``). The data-driven choice
        of :func:`carpool.fit` would recompile per data set; any fixed choice leaves the
        posterior unchanged.
    fit_spec
        The model fitted to the simulated data (default ``spec``, which simulates them). A
        different one, e.g. with other priors, is a negative control: its ranks are not
        uniform.
    log_fn
        Called with a progress line every tenth of the replications (in this process) or as
        chunks finish (elsewhere), if given.
    executor
        Where the replications run: ``None`` in this process; or local worker processes, a
        scheduler address or a Dask client (:func:`carpool.batch.as_executor`). The
        replications are split into ``num_chunks`` tasks (default: 1 in this process, else
        8), each compiling once; the results do not depend on the split (each replication
        has its own key and data).

    Returns
    -------
    SbcResult
    """
    import jax
    from numpyro.infer import Predictive

    from carpool.parallel.executors import map_logged
    from carpool.pooling.model import build_model

    if spec.residual.is_dynamic:
        raise InputError("SBC supports i.i.d. residuals only")
    t_start = time.perf_counter()
    built = build_model(spec, data, config, centring=centring)
    key_prior, key_fit = jax.random.split(jax.random.PRNGKey(settings.seed))
    N = settings.num_replications
    prior = Predictive(built.model, num_samples=N)(key_prior, observed=False)
    prior = {k: np.asarray(v) for k, v in prior.items()}
    names = spec.parameters.names
    noise = list(spec.likelihood.noise_priors())
    common = spec.common_names
    truth = sbc_quantities(prior, config.pooling, names, data.group_ids, noise, common)
    keys = np.asarray(jax.random.split(key_fit, N))
    chunks = [c for c in np.array_split(np.arange(N), max(1, min(
        N, num_chunks or (1 if executor is None else 8)))) if len(c)]
    serial = executor is None
    tasks = [(spec, data, config, settings, centring, fit_spec, keys[c], prior["obs"][c],
              (log_fn if serial else None), int(c[0]), N, t_start) for c in chunks]
    labels = [f"SBC replications {c[0] + 1}-{c[-1] + 1} of {N}" for c in chunks]
    parts = map_logged(executor, _replications, tasks, labels,
                       (lambda _: None) if (serial or log_fn is None) else log_fn,
                       what="SBC chunks")
    ranks = {k: np.empty(N, dtype=int) for k in truth}
    divergences, steps, seconds = np.empty(N, dtype=int), np.empty(N), np.empty(N)
    for c, part in zip(chunks, parts, strict=True):
        for j, n in enumerate(c):
            for k in truth:
                ranks[k][n] = rank_of_truth(truth[k][n], part["draws"][j][k])
        divergences[c], steps[c], seconds[c] = part["divergences"], part["steps"], \
            part["seconds"]
    firsts = np.array([c[0] for c in chunks])
    rest = np.setdiff1d(np.arange(N), firsts)
    compile_s = (float(np.mean(seconds[firsts]) - np.median(seconds[rest])) if len(rest)
                 else math.nan)
    return SbcResult(ranks, settings.num_ranks, divergences, steps, max(compile_s, 0.0),
                     time.perf_counter() - t_start, settings)


def _replications(spec: ModelSpec, data: GroupedData, config: PoolingConfig,
                  settings: SbcSettings, centring: Mapping[str, str] | None,
                  fit_spec: ModelSpec | None, keys: np.ndarray, ys: np.ndarray,
                  log_fn: Any, offset: int, total: int, t_start: float) -> dict[str, Any]:
    """Fit replications ``offset ..`` (keys (n, 2), simulated data (n, ...)) with ONE
    compiled function; returns each one's posterior quantities and sampler statistics.
    Module level, so a worker process can import it."""
    import jax
    from numpyro import handlers
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.initialization import init_to_uniform

    from carpool.pooling.model import build_model

    fitted = build_model(fit_spec or spec, data, config, centring=centring)
    L = settings.num_ranks
    names = spec.parameters.names
    noise = list(spec.likelihood.noise_priors())
    common = spec.common_names

    def conditioned(y: Any) -> None:
        with handlers.condition(data={"obs": y}):
            fitted.model(observed=False)

    def one(rng_key: Any, y: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        mcmc = MCMC(NUTS(conditioned, target_accept_prob=settings.target_accept,
                         max_tree_depth=settings.max_tree_depth,
                         init_strategy=init_to_uniform(radius=0.5)),
                    num_warmup=settings.warmup, num_samples=L * settings.thinning,
                    thinning=settings.thinning, num_chains=1, progress_bar=False,
                    jit_model_args=True)
        mcmc.run(rng_key, y, extra_fields=("diverging", "num_steps"))
        return mcmc.get_samples(), mcmc.get_extra_fields()

    run_one = jax.jit(one)
    n = len(keys)
    out: dict[str, Any] = {"draws": [], "divergences": np.empty(n, dtype=int),
                           "steps": np.empty(n), "seconds": np.empty(n)}
    for j in range(n):
        t = time.perf_counter()
        samples, extra = run_one(jax.numpy.asarray(keys[j]), ys[j])
        samples = {k: np.asarray(v) for k, v in samples.items()}
        out["seconds"][j] = time.perf_counter() - t
        out["draws"].append(sbc_quantities(samples, config.pooling, names, data.group_ids,
                                           noise, common))
        out["divergences"][j] = int(np.asarray(extra["diverging"]).sum())
        out["steps"][j] = float(np.asarray(extra["num_steps"]).mean())
        done = offset + j + 1
        if log_fn is not None and done % max(1, total // 10) == 0:
            log_fn(f"{spec.name} {config.pooling}: {done}/{total} replications, "
                   f"{time.perf_counter() - t_start:.0f} s")
    return out
