"""Acceleration-noise processes for the simulations: a small hook, i.i.d. Gaussian for now.

The simulations draw *white noise* (independent standard normals) on the host with
``numpy.random.default_rng(seed)`` and hand it to a *noise function* that shapes it into
the acceleration noise inside the compiled simulation::

    noise_fn(white, sigma) -> noise    # same shape as white, m/s^2

``white`` has shape ``(num_steps, *batch)``: time is the leading axis (the axis the
simulations scan over), ``batch`` indexes independent series (posterior draws, vehicles of a
ring, windows). ``sigma`` (m/s^2) is the fitted scale of the acceleration error,
broadcastable against ``batch`` (one value per posterior draw). A noise function is pure
JAX and deterministic given ``white``; keeping the random-number generation out of it keeps
compilation fast (JAX's generator costs about a second of compilation per array shape)
and makes every simulation reproducible from its integer seed.

:func:`iid_noise` matches the fitted i.i.d. observation model
``v(t + dt) ~ Normal(v + acc dt, sigma dt)``: the acceleration error of each step is an
independent ``Normal(0, sigma^2)``. A fit with AR / GP residuals needs no noise function:
the simulations draw its process with :mod:`carpool.simulate.residual_noise` (carried
forward from the record in ``follow``, stationary in ``ring``). A noise function of your
own, e.g. an AR(1) with a fixed coefficient ``phi``, looks like::

    def ar1_noise(white, sigma, phi=0.9):  # marginal scale sigma once stationary
        def step(previous, w):
            current = phi * previous + jnp.sqrt(1.0 - phi**2) * sigma * w
            return current, current
        return jax.lax.scan(step, jnp.zeros_like(white[0]), white)[1]

and a Gaussian process as ``L @ white`` along time with ``L`` the Cholesky factor of its
covariance over the time grid.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["NoiseFn", "iid_noise", "white_noise", "zero_noise"]

#: ``noise_fn(white, sigma) -> noise`` (m/s^2), time on axis 0; see the module docstring.
NoiseFn = Callable[[jax.Array, ArrayLike], jax.Array]


def iid_noise(white: jax.Array, sigma: ArrayLike) -> jax.Array:
    """Independent ``Normal(0, sigma^2)`` accelerations (m/s^2): ``sigma * white``.

    Parameters
    ----------
    white
        Standard normal draws, shape ``(num_steps, *batch)``.
    sigma
        Scale of the acceleration error, m/s^2, ``>= 0``, broadcastable against ``batch``.

    Examples
    --------
    >>> import numpy as np
    >>> iid_noise(np.ones((3, 2)), np.array([0.5, 2.0])).tolist()
    [[0.5, 2.0], [0.5, 2.0], [0.5, 2.0]]
    """
    white = jnp.asarray(white)
    return jnp.asarray(sigma, white.dtype) * white


def zero_noise(white: jax.Array, sigma: ArrayLike) -> jax.Array:
    """No noise: zeros like ``white`` (a deterministic simulation)."""
    del sigma
    return jnp.zeros_like(jnp.asarray(white))


def white_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal draws (float32) of ``shape`` from a NumPy generator."""
    return rng.standard_normal(shape, dtype=np.float32)
