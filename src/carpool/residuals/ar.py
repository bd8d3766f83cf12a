"""AR(p) residuals: stationarity by construction, exact likelihood, forward simulation.

Parameterisation. An AR(p) process ``r_t = phi_1 r_{t-1} + ... + phi_p r_{t-p} + e_t`` with
innovations ``e_t ~ Normal(0, sigma^2)`` is written through its *partial autocorrelations*
``kappa_1 .. kappa_p``, each in ``(-1, 1)``. The Durbin-Levinson recursion (Barndorff-Nielsen
& Schou 1973; Monahan 1984) maps every such vector to the coefficients of a *stationary*
process and back, so any value the sampler visits is stationary: no check, no rejection.

Exact likelihood. The series starts in its stationary distribution. By the prediction-error
decomposition, ``r_t`` given ``r_0 .. r_{t-1}`` is Normal with mean
``sum_j phi^(k)_j r_{t-j}`` and variance ``v_k``, where ``k = min(t, p)``, ``phi^(k)`` are the
coefficients of the AR(k) best linear predictor (the rows of the recursion) and
``v_k = sigma^2 / prod_{j > k} (1 - kappa_j^2)``. Every term is element-wise in ``t``, so the
likelihood of all drivers' series is one vectorised expression (no loop over time or
drivers); it equals the multivariate normal density with the Toeplitz autocovariance
(tested against it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["durbin_levinson", "pacf_to_phi", "ar_conditional", "ar_autocovariance",
           "ar_forward", "shift_lags"]


def durbin_levinson(kappa: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Predictor coefficients of every order from partial autocorrelations.

    Parameters
    ----------
    kappa
        Partial autocorrelations, shape ``(..., p)``, each in ``(-1, 1)``.

    Returns
    -------
    coefficients
        ``(..., p + 1, p)``: row ``k`` holds ``phi^(k)_1 .. phi^(k)_k`` (zeros after), the
        best linear predictor of ``r_t`` from its ``k`` predecessors; row ``p`` is the AR(p)
        coefficient vector.
    sd_factor
        ``(..., p + 1)``: ``sqrt(v_k) / sigma``, the conditional standard deviation of order
        ``k`` relative to the innovation scale (``>= 1``, equal to 1 at ``k = p``).
    """
    kappa = jnp.asarray(kappa)
    p = kappa.shape[-1]
    batch = kappa.shape[:-1]
    rows = [jnp.zeros(batch + (p,), kappa.dtype)]
    prev = jnp.zeros(batch + (0,), kappa.dtype)
    for k in range(1, p + 1):  # static, p <= 8: unrolled at trace time
        kk = kappa[..., k - 1 : k]
        cur = jnp.concatenate([prev - kk * prev[..., ::-1], kk], axis=-1)
        rows.append(jnp.concatenate([cur, jnp.zeros(batch + (p - k,), kappa.dtype)], axis=-1))
        prev = cur
    coefficients = jnp.stack(rows, axis=-2)
    one_minus = 1.0 - jnp.square(kappa)  # (..., p)
    # v_k / sigma^2 = 1 / prod_{j > k} (1 - kappa_j^2); reverse cumulative product
    tail = jnp.cumprod(one_minus[..., ::-1], axis=-1)[..., ::-1]  # prod_{j >= k+1}, k=0..p-1
    tail = jnp.concatenate([tail, jnp.ones(batch + (1,), kappa.dtype)], axis=-1)
    return coefficients, 1.0 / jnp.sqrt(tail)


def pacf_to_phi(kappa: ArrayLike) -> jax.Array:
    """AR(p) coefficients ``phi`` (..., p) of partial autocorrelations ``kappa`` (..., p)."""
    return durbin_levinson(kappa)[0][..., -1, :]


def shift_lags(r: jax.Array, p: int) -> jax.Array:
    """Lagged copies along the last axis: ``out[..., t, j-1] = r[..., t-j]`` (0 before 0).

    ``r`` has shape ``(..., T)``; the result ``(..., T, p)``.
    """
    T = r.shape[-1]
    padded = jnp.concatenate([jnp.zeros(r.shape[:-1] + (p,), r.dtype), r], axis=-1)
    return jnp.stack([padded[..., p - j : p - j + T] for j in range(1, p + 1)], axis=-1)


def ar_conditional(r: jax.Array, kappa: jax.Array, sigma: ArrayLike
                   ) -> tuple[jax.Array, jax.Array]:
    """Conditional mean and standard deviation of each ``r_t`` given its own past.

    Parameters
    ----------
    r
        Residual series, shape ``(G, T)``, each row one driver's series from its first
        observation (time on the last axis; what lies after a row's end does not matter).
    kappa
        Partial autocorrelations, ``(G, p)`` (per driver) or ``(p,)`` (shared).
    sigma
        Innovation standard deviation, scalar or broadcastable against ``(G, 1)``.

    Returns
    -------
    mean, sd
        Both ``(G, T)``: ``r_t | r_0..r_{t-1} ~ Normal(mean_t, sd_t)`` exactly, from the
        stationary start (see the module docstring).
    """
    G, T = r.shape
    p = kappa.shape[-1]
    kappa = jnp.broadcast_to(kappa, (G, p))
    coefficients, sd_factor = durbin_levinson(kappa)  # (G, p+1, p), (G, p+1)
    # from t = p on every step uses the AR(p) row: p shifted multiply-adds over the whole
    # series, no per-step gather of coefficients (whose gradient is a scatter, the costly
    # part of this likelihood: 1.4-1.9x its gradient, benchmarks/gradient_cost.py);
    # the first min(p, T) steps use the lower-order rows and are replaced below
    padded = jnp.concatenate([jnp.zeros((G, p), r.dtype), r], axis=-1)
    phi = coefficients[:, p, :]
    mean = sum(phi[:, j - 1:j] * padded[:, p - j:p - j + T] for j in range(1, p + 1))
    h = min(p, T)
    head = jnp.sum(shift_lags(r[:, :h], p) * coefficients[:, :h, :], axis=-1)  # (G, h)
    mean = jnp.concatenate([head, mean[:, h:]], axis=-1)
    sigma = jnp.asarray(sigma, r.dtype)
    if sigma.ndim == 1:
        sigma = sigma[:, None]
    # sd_factor is 1 at order p
    factor = jnp.concatenate([sd_factor[:, :h], jnp.ones((G, T - h), r.dtype)], axis=-1)
    sd = sigma * factor
    return mean, jnp.broadcast_to(sd, mean.shape)


def ar_autocovariance(kappa: ArrayLike, sigma: float, num_lags: int) -> jax.Array:
    """Stationary autocovariances ``gamma_0 .. gamma_{num_lags-1}`` of one AR(p) process.

    By the Yule-Walker recursion ``gamma_h = sum_j phi_j gamma_{h-j}``, started from the
    exact ``gamma_0 .. gamma_p`` (a small linear solve). Shapes: ``kappa`` (p,), result
    ``(num_lags,)``. Used by tests and by the documentation's checks.
    """
    kappa = jnp.asarray(kappa, float)
    p = kappa.shape[0]
    phi = pacf_to_phi(kappa)
    # Yule-Walker for gamma_0..gamma_p: gamma_h - sum_j phi_j gamma_|h-j| = sigma^2 [h == 0]
    A = jnp.eye(p + 1)
    for h in range(p + 1):
        for j in range(1, p + 1):
            A = A.at[h, abs(h - j)].add(-phi[j - 1])
    b = jnp.zeros(p + 1).at[0].set(sigma**2)
    gamma = list(jnp.linalg.solve(A, b))
    for h in range(p + 1, num_lags):
        gamma.append(sum(phi[j - 1] * gamma[h - j] for j in range(1, p + 1)))
    return jnp.stack(gamma[:num_lags])


def ar_forward(white: jax.Array, kappa: jax.Array, sigma: jax.Array, history: jax.Array,
               num_known: jax.Array) -> jax.Array:
    """Simulate AR(p) residuals forward from a known past (or from stationarity).

    Parameters
    ----------
    white
        Standard normal draws, ``(num_steps, *batch)``; time on axis 0.
    kappa
        Partial autocorrelations, ``(*batch, p)``.
    sigma
        Innovation standard deviations, broadcastable against ``batch``.
    history
        The last ``p`` known residuals before the first step, ``(*batch, p)``, most recent
        LAST; entries before the series' start are ignored (see ``num_known``).
    num_known
        How many of the history entries are real (``0 .. p``), broadcastable against
        ``batch``. With 0 the simulation starts from the stationary distribution.

    Returns
    -------
    Residuals ``(num_steps, *batch)``, each step drawn from its exact conditional
    distribution given everything before it (the history and the earlier steps).
    """
    p = kappa.shape[-1]
    coefficients, sd_factor = durbin_levinson(kappa)
    lags0 = history[..., ::-1]  # most recent first: lags0[..., j-1] = r_{t-j}
    count0 = jnp.broadcast_to(jnp.asarray(num_known, jnp.int32), white.shape[1:])
    sigma = jnp.broadcast_to(jnp.asarray(sigma, white.dtype), white.shape[1:])

    def step(carry, w):
        lags, count = carry
        order = jnp.minimum(count, p)
        coef = jnp.take_along_axis(coefficients, order[..., None, None], axis=-2)[..., 0, :]
        factor = jnp.take_along_axis(sd_factor, order[..., None], axis=-1)[..., 0]
        # orders below p use only the first `order` lags (the rest of coef is zero)
        value = jnp.sum(coef * lags, axis=-1) + sigma * factor * w
        lags = jnp.concatenate([value[..., None], lags[..., :-1]], axis=-1)
        return (lags, count + 1), value

    _, out = jax.lax.scan(step, (lags0.astype(white.dtype), count0), white)
    return out
