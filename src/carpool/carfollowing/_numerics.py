"""Gradient-safe elementary functions shared by the models (private)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["safe_sqrt", "safe_power"]


def safe_sqrt(x: ArrayLike) -> jax.Array:
    """``sqrt(max(x, 0))`` with finite gradients everywhere (zero gradient where ``x <= 0``).

    The plain ``jnp.sqrt`` has an infinite derivative at 0 and a NaN one below 0; the double
    ``where`` keeps the untaken branch from poisoning the gradient.
    """
    x = jnp.asarray(x)
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def safe_power(x: ArrayLike, exponent: ArrayLike) -> jax.Array:
    """``max(x, 0) ** exponent`` for ``exponent > 0``, with finite gradients at ``x = 0``.

    At ``x = 0`` the value is 0 and the gradients with respect to ``x`` and ``exponent`` are
    0 (the plain power has a NaN derivative in the exponent there, ``log 0 * 0``).
    """
    x = jnp.asarray(x)
    if isinstance(exponent, int | float) and float(exponent).is_integer() and exponent > 0:
        # a whole exponent known when tracing (the IDM's delta = 4): repeated multiplication
        # (lax.integer_pow) and its derivative instead of exp(delta log x); the hierarchical
        # IDM's gradient is ~2x cheaper for it (benchmarks/gradient_cost.py)
        return jnp.where(x > 0, x, 0.0) ** int(exponent)
    positive = x > 0
    return jnp.where(positive, jnp.power(jnp.where(positive, x, 1.0), exponent), 0.0)
