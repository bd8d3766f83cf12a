"""Automatic, data-driven choice of centred or non-centred parameterisation per parameter.

Why it matters: for a group parameter ``theta_g ~ Normal(mu, tau)`` observed through data with
standard error ``s_g``, the centred form samples ``theta_g`` directly and is efficient when the
data pin ``theta_g`` down (``s_g << tau``); the non-centred form samples
``eps_g = (theta_g - mu) / tau`` and is efficient when the data are weak (``s_g >> tau``), where
the centred form shows Neal's funnel (Papaspiliopoulos, Roberts & Skold 2007; Betancourt &
Girolami 2015). On 39 real congested highD drivers, the all-centred IDM took 5x fewer leapfrog
steps than the all-non-centred one but diverged on the weakly identified desired speed v0
(67 divergent transitions; v0 non-centred and the rest centred: 1-5).

The rule:

1. Fit the *pooled* model by maximum a posteriori (cheap: P + noise unknowns, BFGS on one
   compiled gradient).
2. From there, damped Newton steps per group give each group's own regularised estimate
   (:func:`refined_group_estimates`); there compute the Fisher information of the group's
   data about its latent parameters, ``I_g = -d^2 log p(y_g | theta_g) / d theta_g^2``
   (P x P), negative curvature clipped to zero, plus a tiny ridge (1 / (10 prior scale)^2).
3. Estimate the population scale ``tau_p`` the data imply (:func:`population_scale`): a
   DerSimonian-Laird moment estimate from the estimates of the groups whose data identify
   the parameter at least as well as its prior does, each with variance
   ``1 / I_g[p, p]``. Where fewer than :data:`MIN_IDENTIFYING_GROUPS` groups identify a
   parameter, the median of its hyperprior stands in; a fixed tau is used as given.
4. Each group's shrinkage factor is ``kappa_gp = s_gp^2 / (s_gp^2 + tau_p^2)`` with the
   conditional data-only variance ``s_gp^2 = 1 / I_g[p, p]``: 0 = the data stand alone,
   1 = the population decides.
5. A parameter is non-centred where its median over groups (:data:`QUANTILE`) is >=
   :data:`CENTRE_BELOW` (0.5, where the two forms mix equally fast in the Gaussian theory)
   when its tau is known (estimated or fixed), and >= :data:`CENTRE_BELOW_PRIOR_TAU` (0.3)
   when its tau is the hyperprior's median; else centred.

The lower threshold for a hyperprior tau is asymmetric on purpose: a wrongly centred
parameter makes NUTS diverge or stick in the funnel, a wrongly non-centred one only costs
leapfrog steps, and a tau nobody estimated may be far too large. At 0.5 with the
hyperprior's tau, a linear model's intercept and slope on 6 groups (kappa 0.33) were
centred and its fits and held-out refits diverged 1-5 times each. An estimated tau errs
low (below), which already leans towards non-centring.

Why the data's tau: the hyperprior's median (0.337) is what the model expects before it
sees data, not the population the sampler explores. On the 76 NGSIM drivers the posterior
tau is 1.4-3.7x that (v0 0.48, s0 1.24, T 0.69, a 0.61, b 1.13), and with the hyperprior's
tau the rule non-centred all five parameters (one fit: 97 s, min ESS 610); the data's tau
(0.21, 0.52, 0.38, 0.49, 0.59) non-centres v0 alone (one fit: 55 s, min ESS 686, twice the
ESS per second; ``benchmarks/centring_choice.py``). The moment estimate is conservative:
below the posterior mean on real drivers, and groups whose data say nothing are left out
rather than counted at the prior's centre, where they would pull the spread down. A tau
too small only non-centres more (cost: leapfrog steps), a tau too large would centre a
parameter into a funnel (cost: divergences).

Why the conditional variance: it is the sampler's view of one coordinate with the others
held. Marginalising the non-centred block (a Schur complement, the previous rule, with
threshold 0.3) cascades in congested data: the unidentified v0 is confounded with a, T
and b, so marginalising v0 pushed their kappa up and non-centred them in turn (all five on
NGSIM). Measured failures of centring are still avoided: under AR(4) residuals (20
simulated drivers) b, whose data tau is at the floor, is non-centred (centred at kappa
0.47 its tau stuck: min ESS 7, R-hat 1.25); under GP residuals v0 (kappa 0.94) is
non-centred (centred, 351 transitions diverged).

With a diagonal population (``correlated=False``, or ``"auto"`` with few groups) the choice is
finer: each group gets its own centring weight (:func:`_partial_centring`), so groups that
identify a parameter are centred and groups that do not are non-centred. That path keeps the
hyperprior's median (or the fixed tau) and the full-step group estimates: a diagonal
population is the choice for few groups, too few for a moment estimate of tau to centre on
(on the demo's 14 NGSIM drivers the data's tau made its fit diverge 7 times).

The kappas are kept in the fit, so users can see why each choice was made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from carpool.pooling.grouped import GroupedData
from carpool.pooling.scoring import data_log_likelihood, point_log_density
from carpool.pooling.spec import GROUPS_PER_PARAMETER_FOR_CORRELATION, ModelSpec, PoolingConfig

__all__ = ["CentringChoice", "choose_centring", "pooled_map", "pooled_map_with_residual",
           "population_scale", "refined_group_estimates", "centring_by_kappa", "CENTRE_BELOW",
           "CENTRE_BELOW_PRIOR_TAU", "identifying_groups",
           "QUANTILE"]

#: Which quantile over groups of the shrinkage factor decides: the median (the typical group).
#: The 75th percentile was tried: it non-centred k_gap and s0 on the bundled 4-vehicle platoon
#: (linear ACC), which then took 70 s and diverged twice against 7 s and none (measured).
QUANTILE = 0.5

#: A parameter whose tau is known (estimated from the data, or fixed) is centred when its
#: shrinkage factor is below this (step 5): where the two forms mix equally fast.
CENTRE_BELOW = 0.5

#: The threshold where tau is the hyperprior's median (too few groups identify the
#: parameter): lower on purpose (step 5).
CENTRE_BELOW_PRIOR_TAU = 0.3


@dataclass(frozen=True)
class CentringChoice:
    """Per-parameter choice with its evidence.

    ``choice``: parameter -> ``"centred"`` / ``"noncentred"``; ``kappa``: parameter ->
    shrinkage factor at the :data:`QUANTILE` over groups; ``tau_ref``: the population scale
    used in the rule.
    """

    choice: dict[str, str]
    kappa: dict[str, float] = field(default_factory=dict)  # median over groups
    tau_ref: dict[str, float] = field(default_factory=dict)
    weights: dict[str, list[float]] = field(default_factory=dict)

    def weight_matrix(self, names: list[str], num_groups: int) -> np.ndarray:
        """Centring weight per group and parameter, (G, P): 1 centred, 0 non-centred."""
        cols = []
        for n in names:
            if n in self.weights:
                cols.append(np.asarray(self.weights[n], dtype=float))
            else:
                cols.append(np.full(num_groups, 1.0 if self.choice[n] == "centred" else 0.0))
        return np.stack(cols, axis=1)


def pooled_map(spec: ModelSpec, data: GroupedData, *, seed: int = 0,
               maxiter: int = 500) -> tuple[np.ndarray, dict[str, float]]:
    """Maximum a posteriori of the pooled model: latent parameters (P,) and noise values.

    See :func:`pooled_map_with_residual`, which also returns the residual process's
    shared parameters."""
    z, noise, _ = pooled_map_with_residual(spec, data, seed=seed, maxiter=maxiter)
    return z, noise


def pooled_map_with_residual(spec: ModelSpec, data: GroupedData, *, seed: int = 0,
                             maxiter: int = 500
                             ) -> tuple[np.ndarray, dict[str, float], dict[str, np.ndarray]]:
    """Maximum a posteriori of the pooled model: latent parameters (P,), the shared values
    (noise, and the natural values of any common parameters, by name) and (AR / GP
    residuals) the residual parameters, shared by all groups.

    The pooled log posterior is written out directly (latent parameters and log noise scales,
    with the log-Jacobian) and compiled once; SciPy's BFGS drives it on the host. (Going
    through NumPyro's ``initialize_model`` instead cost ~9 s of op-by-op compilation per fit
    on the bundled platoon, measured.) ``seed`` is unused: the start is the prior centre.
    """
    from scipy.optimize import minimize

    del seed
    params = spec.pooled_parameters  # the group parameters, then any common ones
    lik = spec.likelihood
    names = params.names
    P = len(names)
    noise_priors = lik.noise_priors()
    noise_names = list(noise_priors)
    residual = spec.residual
    K = len(noise_names)
    if residual.is_dynamic:  # series as padded rows, so the residual runs along time
        pad = data.padded()
        y = jnp.asarray(pad.y)
        covs = {k: jnp.asarray(v) for k, v in pad.covariates.items()}
        mask = jnp.asarray(pad.mask)
        step = residual.step_for(pad.covariates, int(data.group_sizes.max()))
    else:
        y = jnp.asarray(data.y)
        covs = {k: jnp.asarray(v) for k, v in data.covariates.items()}
        mask = None

    value_and_grad = _map_value_and_grad(spec, None if mask is None else step)
    loc, _ = params.latent_prior_arrays()
    x0 = np.concatenate([loc, [np.log(noise_priors[n].median()) for n in noise_names],
                         residual.map_x0() if residual.is_dynamic else []])

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        v, g = value_and_grad(jnp.asarray(x, dtype=y.dtype), y, covs, mask)
        return float(v), np.asarray(g, dtype=float)

    _, prior_sd = params.latent_prior_arrays()
    lower = np.concatenate([loc - 10 * prior_sd, np.full(len(x0) - P, -20.0)])
    upper = np.concatenate([loc + 10 * prior_sd, np.full(len(x0) - P, 10.0)])

    def usable(r: Any) -> bool:
        return bool(np.all(np.isfinite(r.x)) and np.isfinite(r.fun)
                    and np.all(r.x >= lower) and np.all(r.x <= upper))

    res = minimize(objective, x0, jac=True, method="BFGS", options={"maxiter": maxiter})
    if not usable(res):
        # A noise prior far below the data's scale (the reference's Exponential(1e4), prior
        # median 7e-5 m/s^2) starts BFGS where the likelihood is ~1e8 steep: its first
        # steps threw v0's latent to 83 (e^83 m/s) on 6 simulated drivers. Restart from the
        # data's residual scale, inside +-10 prior sds.
        x1 = x0.copy()
        x1[P:P + K] = np.log(_residual_scale(objective, x0, P, K))
        res = minimize(objective, np.clip(x1, lower, upper), jac=True, method="L-BFGS-B",
                       bounds=list(zip(lower, upper, strict=True)),
                       options={"maxiter": maxiter})
    x = res.x if usable(res) else x0
    residual_params = ({k: np.asarray(v, dtype=float)
                        for k, v in residual.map_params(jnp.asarray(x[P + K:]))[0].items()}
                       if residual.is_dynamic else {})
    shared = {n: float(np.exp(x[P + k])) for k, n in enumerate(noise_names)}
    if spec.common is not None:  # common parameters join the shared values, natural units
        G = len(spec.parameters)
        shared.update(zip(spec.common_names,
                          np.asarray(spec.common.to_natural(x[G:P]), dtype=float).tolist(),
                          strict=True))
        P = G
    return x[:P].astype(float), shared, residual_params


#: Functions kept per spec: (kind, id(spec), ...) -> (functions, spec); the spec is kept
#: alive beside them so its id is not reused. The oldest go first beyond :data:`_KEPT`.
_PER_SPEC: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_KEPT = 16


def _kept_per_spec(key: tuple[Any, ...] | None, spec: ModelSpec, build: Any) -> Any:
    """``build()`` once per ``key`` (``None``: not kept, built every time)."""
    if key is None:
        return build()
    if key not in _PER_SPEC:
        while len(_PER_SPEC) >= _KEPT:
            _PER_SPEC.pop(next(iter(_PER_SPEC)))
        _PER_SPEC[key] = (build(), spec)
    return _PER_SPEC[key][0]


def _map_value_and_grad(spec: ModelSpec, step: Any) -> Any:
    """``(x, y, covs, mask) -> (value, gradient)`` of the pooled negative log posterior in
    ``x = (z (P,), log noise (K,), residual parameters)``, jitted once per spec (and GP
    step): ``mask=None`` is the flat i.i.d. layout, a mask the padded one of a residual
    process. The data are arguments, so refits of one spec trace and compile it once."""
    # a GP step with one dt per group (an array) is not a key: such specs are traced anew
    key = (("map", id(spec), step) if step is None or isinstance(step[0], float)
           else None)
    return _kept_per_spec(key, spec, lambda: _build_map_value_and_grad(spec, step))


def _build_map_value_and_grad(spec: ModelSpec, step: Any) -> Any:
    dynamic = spec.residual.is_dynamic
    log_density = point_log_density(spec, residual=dynamic, step=step)

    def neg_log_post(x, y, covs, mask):
        return -log_density(x, y, mask, covs)

    return jax.jit(jax.value_and_grad(neg_log_post))


def _residual_scale(objective: Any, x0: np.ndarray, P: int, K: int) -> float:
    """A noise scale where the likelihood is not absurdly steep: the scale (among 1e-3 ..
    10, log grid) that minimises the objective at the prior-centre parameters ``x0``."""
    grid = np.logspace(-3, 1, 17)
    values = []
    for scale in grid:
        x = x0.copy()
        x[P:P + K] = np.log(scale)
        v, _ = objective(x)
        values.append(v if np.isfinite(v) else np.inf)
    return float(grid[int(np.argmin(values))])


def _row_loglik_fn(spec: ModelSpec, static: Any = None):
    """``f(z_g (P,), y (T,), mask (T,), covs, residual params, noise) -> log p(y_g | z_g)``
    on one padded row (with AR / GP residuals, the series' joint density given the residual
    parameters, laid out per row by the process's ``row_params``, whose static part, e.g.
    the GP's window, is ``static``). ``noise`` maps each learned noise parameter to its
    value. Data and noise are arguments, so the compiled function serves any data of one
    shape."""
    params = spec.parameters

    def row_loglik(zg, y_row, mask_row, cov_row, rp_row, noise):
        natural = params.to_natural(zg)
        p = {n: natural[i] for i, n in enumerate(params.names)}
        residual = (spec.residual.row_args(rp_row, static) if spec.residual.is_dynamic
                    else None)
        return data_log_likelihood(spec, p, y_row, mask_row, cov_row, noise,
                                   residual=residual)

    return row_loglik


#: Step halvings per Newton step before a group keeps its current value.
BACKTRACK_HALVINGS = 8


def row_functions(spec: ModelSpec, static: Any = None) -> tuple[Any, Any]:
    """``(loglik, grad_hess)``: the row log-likelihood of :func:`_row_loglik_fn` and its
    gradient and Hessian in ``z_g``, jitted and vectorised over rows (arguments ``z (G, P),
    y (G, T), mask (G, T), covs {name: (G, T)}, residual params {name: (G, ...)}, noise``).
    Kept per spec, so refits and comparisons of one model trace them once."""
    def build() -> tuple[Any, Any]:
        row = _row_loglik_fn(spec, static)
        axes = (0, 0, 0, 0, 0, None)
        loglik = jax.jit(jax.vmap(row, in_axes=axes))
        grad_hess = jax.jit(jax.vmap(lambda *a: (jax.grad(row)(*a), jax.hessian(row)(*a)),
                                     in_axes=axes))
        return loglik, grad_hess

    return _kept_per_spec(("rows", id(spec), static), spec, build)


def group_estimates(spec: ModelSpec, data: GroupedData, z: np.ndarray,
                    noise: Mapping[str, float], *, newton_steps: int = 8,
                    residual_params: Mapping[str, np.ndarray] | None = None,
                    backtrack: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each group's regularised estimate (G, P) and its data's information there (G, P, P).

    ``newton_steps`` Newton steps per group from the pooled latent value ``z`` (P,) on the
    group's log-likelihood plus the parameters' latent prior, each step at most 1 per
    coordinate (an e-fold of a log parameter). The estimate is the best point visited
    (highest objective), so a step that oscillates (+-1 per step on simulated IDM drivers,
    a latent a reaching 7.4) is not where the information is taken.

    ``backtrack=True`` halves each step up to :data:`BACKTRACK_HALVINGS` times until the
    group's objective improves, so the objective never decreases. It is not the default:
    on the bundled platoon (linear ACC) the first full steps pass through worse values on
    the way to a better optimum, and backtracking stopped two vehicles at objectives of
    2208 and 1976 against 2441 and 2318 for the full steps (measured); the centring then
    non-centred k_gap and s0, which the fit pays for (see :data:`QUANTILE`).

    The information is the negative Hessian of the group's log-likelihood, negative
    curvature clipped to 0. AR / GP residuals need ``residual_params`` (see
    :func:`group_information`).
    """
    pad = data.padded()
    y = jnp.asarray(pad.y)
    mask = jnp.asarray(pad.mask)
    covs = {k: jnp.asarray(v) for k, v in pad.covariates.items()}
    loc, scale = spec.parameters.latent_prior_arrays()
    G, P = data.num_groups, len(spec.parameters)
    residual = spec.residual
    static = None
    rp: dict[str, Any] = {}
    if residual.is_dynamic:
        if residual_params is None:
            raise ValueError("group_information with AR / GP residuals needs residual_params")
        time_step = residual.step_for(pad.covariates, int(data.group_sizes.max()))
        rp, static = residual.row_params(residual_params, time_step, G, y.dtype)
    loglik, grad_hess = row_functions(spec, static)
    noise_j = {k: jnp.asarray(v, y.dtype) for k, v in noise.items()}
    prior_prec = 1.0 / scale**2

    def objective(zg: np.ndarray) -> np.ndarray:
        ll = np.asarray(loglik(jnp.asarray(zg, y.dtype), y, mask, covs, rp, noise_j),
                        dtype=float)
        value = ll - 0.5 * np.sum(prior_prec * (zg - loc) ** 2, axis=1)
        return np.where(np.isfinite(value), value, -np.inf)

    zg = np.broadcast_to(np.asarray(z, dtype=float), (G, P)).copy()
    current = objective(zg)
    best, best_value = zg.copy(), current.copy()
    for _ in range(newton_steps):
        g, h = grad_hess(jnp.asarray(zg, y.dtype), y, mask, covs, rp, noise_j)
        g = np.asarray(g, dtype=float) - prior_prec * (zg - loc)
        info = _psd(-np.asarray(h, dtype=float)) + np.diag(prior_prec)
        step = np.clip(np.nan_to_num(np.linalg.solve(info, g[..., None])[..., 0]), -1.0, 1.0)
        if not backtrack:
            zg = zg + step
            current = objective(zg)
        else:
            t = np.ones(G)
            for _ in range(BACKTRACK_HALVINGS):
                trial = objective(zg + t[:, None] * step)
                better = trial >= current
                if better.all():
                    break
                t = np.where(better, t, 0.5 * t)
            trial = objective(zg + t[:, None] * step)
            better = trial >= current
            zg = np.where(better[:, None], zg + t[:, None] * step, zg)
            current = np.where(better, trial, current)
        improved = current > best_value
        best = np.where(improved[:, None], zg, best)
        best_value = np.where(improved, current, best_value)
    _, h = grad_hess(jnp.asarray(best, y.dtype), y, mask, covs, rp, noise_j)
    return best, _psd(-np.asarray(h, dtype=float))


def _psd(h: np.ndarray) -> np.ndarray:
    h = 0.5 * (h + np.swapaxes(h, -1, -2))
    w, v = np.linalg.eigh(h)
    w = np.clip(np.nan_to_num(w, nan=0.0), 0.0, None)
    return np.einsum("gij,gj,gkj->gik", v, w, v)


def group_information(spec: ModelSpec, data: GroupedData, z: np.ndarray,
                      noise: Mapping[str, float], *, newton_steps: int = 8,
                      residual_params: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Fisher information of each group's data about its latent parameters, (G, P, P).

    With AR / GP residuals the information is that of the series under the residual process
    at ``residual_params`` (shared values, or AR ``kappa`` per group (G, p)): autocorrelated
    errors carry less information about slowly varying states than i.i.d. ones, and
    centring decisions taken from the i.i.d. information sent NUTS to its maximum tree
    depth on every draw (hierarchical IDM + AR(2), 20 simulated drivers; measured).

    Evaluated at each group's own regularised estimate (:func:`group_estimates`:
    ``newton_steps`` damped Newton steps from the pooled value ``z`` (P,) on the group's
    log-likelihood plus its latent prior, the best point visited). The
    information of a log parameter scales with the parameter squared, so evaluating it at the
    pooled value instead misjudged groups far from the pool (7x smaller k_gap on the bundled
    platoon: 50x too little information). Negative curvature is clipped to 0.
    """
    return group_estimates(spec, data, z, noise, newton_steps=newton_steps,
                           residual_params=residual_params)[1]


def choose_centring(spec: ModelSpec, data: GroupedData, config: PoolingConfig,
                    *, seed: int = 0, pooled: tuple[Any, ...] | None = None
                    ) -> CentringChoice:
    """Resolve ``config.param`` to a centring per parameter (see module docstring).

    ``pooled``: :func:`pooled_map_with_residual` of ``spec`` on ``data`` where the caller
    has it already (SVI's start needs it too), else it is computed here when needed."""
    names = spec.parameters.names
    config = config.with_defaults(spec, data.num_groups)
    explicit = {n: config.param_choice(n) for n in names}
    if config.pooling != "hierarchical":
        return CentringChoice({n: "centred" for n in names})
    auto = [n for n in names if explicit[n] == "auto"]
    if not auto:
        return CentringChoice(explicit)
    z, noise, residual_params = (pooled if pooled is not None else
                                 pooled_map_with_residual(spec, data, seed=seed))
    loc, prior_scale = spec.parameters.latent_prior_arrays()
    fallback = (config.fixed_tau(spec.parameters) if config.tau_is_fixed else
                np.array([config.hyperpriors.tau_prior(n).median() for n in names]))
    diagonal = not config.resolve_correlated(data.num_groups, len(names))
    few = data.num_groups < GROUPS_PER_PARAMETER_FOR_CORRELATION * len(names)
    if diagonal and (few or config.tau_is_fixed):
        # few groups (a diagonal population): per-group weights at the hyperprior's (or the
        # fixed) tau and the full-step estimates. With 14 NGSIM drivers (the demo) the data's
        # tau (b: 1.08, from 10-14 drivers) and the refined estimates centred more groups and
        # the demo's hierarchical fit diverged 7 and 1 times (seeds 0, 1; the hyperprior's
        # tau with refined estimates: 1 and 0, R-hat 1.012), where these weights gave none:
        # a moment estimate from so few groups (relative standard error about
        # sqrt(2 / (k - 1)), 39% at k = 14) is too uncertain to centre on
        info = group_information(spec, data, z, noise, residual_params=residual_params)
        return _partial_centring(info + np.diag(1.0 / (10.0 * prior_scale) ** 2), names,
                                 explicit, fallback)
    # a correlated population, or a diagonal one asked for over many groups (a formula's
    # ( || g)): one choice per parameter at the data's tau. For radon's uncorrelated county
    # intercepts and floor slopes (85 counties) per-group partial weights at the data's tau
    # mixed worse than this choice (non-centred both): min bulk ESS 212-482 against
    # 705-841 and 0-4 divergences against none over 3 seeds, 4 x 1000 draws (measured)
    zhat, info = refined_group_estimates(spec, data, z, noise, residual_params=residual_params)
    A = info + np.diag(1.0 / (10.0 * prior_scale) ** 2)
    known = np.ones(len(names), dtype=bool)  # tau given or estimated, not the hyperprior's
    tau_ref = fallback
    if not config.tau_is_fixed:
        tau_ref = population_scale(zhat, A, loc, prior_scale, fallback)
        known = identifying_groups(A, prior_scale) >= MIN_IDENTIFYING_GROUPS
    return centring_by_kappa(A, tau_ref, names, explicit,
                             np.where(known, CENTRE_BELOW, CENTRE_BELOW_PRIOR_TAU))




def centring_by_kappa(A: np.ndarray, tau_ref: np.ndarray, names: list[str],
                      explicit: Mapping[str, str], threshold: Any = CENTRE_BELOW
                      ) -> CentringChoice:
    """Steps 4-5 of the rule: the median conditional shrinkage factor per parameter from the
    information ``A`` (G, P, P) and ``tau_ref`` (P,); ``"auto"`` parameters are centred
    below ``threshold`` (scalar or (P,)), the others keep their explicit choice."""
    s2 = 1.0 / np.diagonal(A, axis1=-2, axis2=-1)
    kappa = np.quantile(s2 / (s2 + tau_ref**2), QUANTILE, axis=0)
    threshold = np.broadcast_to(np.asarray(threshold, dtype=float), kappa.shape)
    choice = {n: (explicit[n] if explicit[n] != "auto" else
                  "noncentred" if kappa[i] >= threshold[i] else "centred")
              for i, n in enumerate(names)}
    return CentringChoice(choice, {n: float(k) for n, k in zip(names, kappa, strict=True)},
                          {n: float(t) for n, t in zip(names, tau_ref, strict=True)})


#: Extra Newton steps, each backtracked, that :func:`refined_group_estimates` takes.
POLISH_STEPS = 12


def refined_group_estimates(spec: ModelSpec, data: GroupedData, z: np.ndarray,
                            noise: Mapping[str, float], *,
                            residual_params: Mapping[str, np.ndarray] | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`group_estimates` (full steps from the pooled value ``z``), then
    :data:`POLISH_STEPS` backtracked steps from each group's best point: (G, P), (G, P, P).

    The full steps alone left 50 of the 76 NGSIM drivers (and 33 of the 39-driver
    simulated stand-in) at the pooled value, where every step went downhill: the spread of
    their estimates then says nothing about the population, and their information is taken
    at the pool. The backtracked polish never lowers a group's objective, so groups that the
    full steps served well (the bundled platoon, see :func:`group_estimates`) keep their
    point."""
    zg, _ = group_estimates(spec, data, z, noise, residual_params=residual_params)
    return group_estimates(spec, data, zg, noise, newton_steps=POLISH_STEPS,
                           residual_params=residual_params, backtrack=True)


#: Fewest groups whose data identify a parameter for :func:`population_scale` to estimate
#: its tau; with fewer, the hyperprior's median stands in (the relative standard error of a
#: moment estimate of tau^2 from k groups is about sqrt(2 / (k - 1)): 47% at k = 10).
MIN_IDENTIFYING_GROUPS = 10

#: The smallest data-based tau (latent scale): a population this narrow is non-centred
#: anyway (kappa near 1), the floor only keeps the reported value informative.
TAU_FLOOR = 0.01


def identifying_groups(A: np.ndarray, prior_scale: np.ndarray) -> np.ndarray:
    """How many groups' data identify each parameter at least as well as its latent prior
    (conditional information ``A_g[p, p] >= 1 / prior_scale_p^2``), (P,)."""
    c = np.diagonal(A, axis1=-2, axis2=-1)
    return np.sum(c >= 1.0 / np.asarray(prior_scale) ** 2, axis=0)


def population_scale(zhat: np.ndarray, A: np.ndarray, loc: np.ndarray,
                     prior_scale: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """The population scale tau per parameter the groups' estimates imply, (P,).

    A DerSimonian-Laird moment estimate per parameter from each group's regularised
    estimate ``zhat`` (G, P) and its data's information ``A`` (G, P, P):

    - only groups whose data identify the parameter at least as well as its latent prior
      count (conditional information ``c_gp = A_g[p, p] >= 1 / prior_scale_p^2``): a group
      whose data say nothing sits at the prior's centre and would pull the spread down;
    - the prior's pull on each counted estimate is undone (``u = zhat + (zhat - loc) /
      (c prior_scale^2)``), so ``u`` estimates the group's value with variance ``1 / c``;
    - ``tau^2 = (Q - (k - 1)) / (W - sum w^2 / W)`` with weights ``w = c``, ``W = sum w``
      and ``Q`` the weighted sum of squares around the weighted mean, floored at
      :data:`TAU_FLOOR`.

    Parameters that fewer than :data:`MIN_IDENTIFYING_GROUPS` groups identify get
    ``fallback`` (the hyperprior's median).
    """
    lam = 1.0 / prior_scale**2
    c = np.diagonal(A, axis1=-2, axis2=-1)
    u = zhat + (lam / c) * (zhat - loc)
    tau = np.asarray(fallback, dtype=float).copy()
    for p in range(zhat.shape[1]):
        ok = c[:, p] >= lam[p]
        k = int(ok.sum())
        if k < MIN_IDENTIFYING_GROUPS:
            continue
        w, x = c[ok, p], u[ok, p]
        mean = np.sum(w * x) / w.sum()
        q = np.sum(w * (x - mean) ** 2)
        t2 = (q - (k - 1)) / (w.sum() - np.sum(w**2) / w.sum())
        tau[p] = max(TAU_FLOOR, float(np.sqrt(max(t2, 0.0))))
    return tau


def _partial_centring(A: np.ndarray, names: list[str], explicit: dict[str, str],
                      tau_ref: np.ndarray) -> CentringChoice:
    """Per-group partial centring for a diagonal population.

    Each automatic parameter of group g gets weight ``w_gp = 1 - kappa_gp`` with
    ``kappa_gp = s_gp^2 / (s_gp^2 + tau_p^2)`` and ``s_gp^2 = 1 / A_g[p, p]`` (conditional
    information): the partially non-centred form ``x ~ Normal(w mu, tau^w)``,
    ``theta = mu + tau^(1 - w) (x - w mu)`` is exact for any w, and ``w = 1 - kappa`` makes
    the Gaussian posterior of ``x`` independent of (mu, tau) (Papaspiliopoulos, Roberts &
    Skold 2003, 2007). Well-identified groups are centred and weak ones non-centred *within
    the same parameter*, which a per-parameter choice cannot do.
    """
    s2 = 1.0 / np.diagonal(A, axis1=-2, axis2=-1)
    kappa = s2 / (s2 + tau_ref**2)  # (G, P)
    choice, weights = dict(explicit), {}
    for i, n in enumerate(names):
        if explicit[n] == "auto":
            w = 1.0 - kappa[:, i]
            weights[n] = w.tolist()
            choice[n] = ("centred" if np.all(w > 0.99) else
                         "noncentred" if np.all(w < 0.01) else "partial")
    return CentringChoice(choice, {n: float(np.median(kappa[:, i]))
                                   for i, n in enumerate(names)},
                          {n: float(t) for n, t in zip(names, tau_ref, strict=True)}, weights)
