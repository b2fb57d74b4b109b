"""Weight initialisers, as used by the reference implementation.

Random draws come from a NumPy ``Generator``: pass ``rng=`` to a layer, or
seed the package-wide default with :func:`manual_seed`.

- :func:`kaiming_uniform_bound` / :func:`conv_bounds` — PyTorch's default for
  ``Conv*``: weights ``U(-b, b)`` with kaiming-uniform ``a = sqrt(5)``, i.e.
  ``b = 1/sqrt(fan_in)``, biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``;
  ``fan_in = weight.shape[1] * prod(kernel_size)``.
- :func:`pac_uniform_bound` — the reference PAC layers' ``'uniform'`` filler:
  weights and biases ``U(-s, s)``, ``s = 1/sqrt(in_channels * prod(k))``,
  times ``in_channels`` for shared filters.
- :func:`bilinear_tent` — the reference's ``'linear'`` filler for transposed
  layers: a separable tent of width ``2*stride - 1`` that makes a stride-s
  transposed conv a (bi)linear upsampler (with the normalised-kernel variant).
- :func:`gaussian_kernel`, :func:`crf_weight` — the PAC-CRF init (DESIGN.md
  section 2): truncated Gaussian, ``sigma = k/4``, normalised to sum 1, times
  ``k^2``, centre tap zeroed, zero on the label diagonal for ``'4d'``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["manual_seed", "default_rng", "resolve_rng", "uniform", "kaiming_uniform_bound",
           "conv_bounds", "pac_uniform_bound", "bilinear_tent", "gaussian_kernel", "crf_weight"]

_rng = np.random.default_rng()


def manual_seed(seed):
    """Re-seed the default generator used when a layer gets no ``rng``."""
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def default_rng():
    """The package-wide default generator."""
    return _rng


def resolve_rng(rng):
    """``rng`` as a Generator: None -> the default one, an int -> a new seeded one."""
    if rng is None:
        return _rng
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {rng!r}")


def uniform(shape, bound, rng=None, dtype=np.float32):
    """Array of ``shape`` drawn from ``U(-bound, bound)``."""
    rng = resolve_rng(rng)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def kaiming_uniform_bound(fan_in, a=math.sqrt(5)):
    """Bound of kaiming-uniform init with leaky-ReLU slope ``a``:
    ``sqrt(2/(1+a^2)) * sqrt(3/fan_in)`` (``1/sqrt(fan_in)`` for the default)."""
    if fan_in <= 0:
        return 0.0
    return math.sqrt(2.0 / (1 + a * a)) * math.sqrt(3.0 / fan_in)


def conv_bounds(weight_shape):
    """(weight bound, bias bound) of PyTorch's default ``Conv*`` init."""
    fan_in = int(weight_shape[1]) * int(np.prod(weight_shape[2:]))
    return kaiming_uniform_bound(fan_in), (1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)


def pac_uniform_bound(in_channels, kernel_size, shared=False):
    """The reference PAC layers' uniform bound (weights and biases)."""
    n = int(in_channels) * int(np.prod(kernel_size))
    s = 1.0 / math.sqrt(n)
    return s * in_channels if shared else s


def bilinear_tent(kernel_size, stride, normalize=False):
    """Separable tent for a transposed layer that upsamples linearly.

    Per dim: ``(0,)*p + (1, 2, ..., s, ..., 2, 1)/s + (0,)*p`` with
    ``p = (k - (2s - 1)) // 2``; with ``normalize`` each tap is multiplied by
    ``(k - j - 1)//s + j//s + 1`` (the reference's normalised variant).
    Needs ``k >= 2s - 1``.
    """
    kernel_size, stride = tuple(kernel_size), tuple(stride)
    w = np.ones((), dtype=np.float64)
    for k, s in zip(kernel_size, stride):
        ek = 2 * s - 1
        if k < ek:
            raise ValueError(f"the linear filler needs kernel_size >= 2*stride - 1, got "
                             f"kernel_size {kernel_size} with stride {stride}")
        p = (k - ek) // 2
        prof = np.array((0.0,) * p + tuple(range(1, s)) + tuple(range(s, 0, -1)) + (0.0,) * p)
        prof = np.concatenate([prof, np.zeros(k - len(prof))]) / s
        if normalize:
            prof = prof * np.array([((k - j - 1) // s) + (j // s) + 1.0 for j in range(k)])
        w = np.multiply.outer(w, prof)
    return w


def gaussian_kernel(kernel_size, sigma=None):
    """Truncated Gaussian over an odd ``kernel_size`` (tuple), normalised to
    sum 1; ``sigma`` defaults to ``k/4`` per dim (the reference's choice)."""
    kernel_size = tuple(kernel_size)
    g = np.ones((), dtype=np.float64)
    for i, k in enumerate(kernel_size):
        if k % 2 != 1:
            raise ValueError(f"kernel_size {kernel_size} must be odd")
        sg = (k / 4.0) if sigma is None else (sigma[i] if np.ndim(sigma) else sigma)
        r = np.arange(-(k // 2), k // 2 + 1, dtype=np.float64)
        g = np.multiply.outer(g, np.exp(-0.5 * r * r / (sg * sg)))
    return g / g.sum()


def crf_weight(kernel_size, n_labels=None, compat="4d"):
    """The PAC-CRF message filter init.

    ``gaussian_kernel(k) * prod(k)`` with the centre tap zeroed (no
    self-message). ``compat='4d'`` gives a full ``(L, L, *k)`` weight times
    the Potts compatibility ``1 - I`` (zero label diagonal); ``'2d'`` and
    ``'potts'`` a shared ``(1, 1, *k)`` spatial filter.
    """
    kernel_size = tuple(kernel_size)
    g = gaussian_kernel(kernel_size) * float(np.prod(kernel_size))
    g[tuple(k // 2 for k in kernel_size)] = 0.0
    if compat == "4d":
        if n_labels is None or n_labels < 1:
            raise ValueError("compat='4d' needs n_labels")
        compat_m = 1.0 - np.eye(n_labels)
        return compat_m.reshape((n_labels, n_labels) + (1,) * len(kernel_size)) * g
    if compat in ("2d", "potts", "shared"):
        return g.reshape((1, 1) + kernel_size)
    raise ValueError(f"compat={compat!r}; choose '4d', '2d' or 'potts'")
