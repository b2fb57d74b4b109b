"""Resolved geometry of a PAC operation and its per-dimension tap tables.

Every engine works from the same tables, so the index arithmetic of the
convolution, the transposed convolution and the adapting kernel is written
once, here.

For spatial dimension ``i``, output coordinate ``y`` and tap ``t``
(``0 <= t < k``):

* input index, forward op:     ``z = y*s - p + t*d``, valid if ``0 <= z < S_in``
* input index, transposed op:  ``z' = y + t*d - ((k-1)*d - p)``, valid if
  ``z' % s == 0`` and ``0 <= z'/s < S_in`` (the tap lands on a real input
  sample of the zero-inserted grid); the index is ``z'/s``
* guide index (the K tap):     forward ``y*s - p + t*d``; transposed
  ``y - (k//2)*d + t*d`` (stride 1, "same" padding at output resolution)
* centre guide index:          the guide index of tap ``k//2``

An index of ``-1`` marks a zero-padded position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

__all__ = ["Geometry", "conv_output_size", "conv_transpose_output_size"]


def conv_output_size(size, kernel_size, stride, padding, dilation):
    """Spatial output size of a (PAC) convolution, per dimension."""
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(size, kernel_size, stride, padding, dilation)
    )


def conv_transpose_output_size(size, kernel_size, stride, padding, dilation, output_padding):
    """Spatial output size of a transposed (PAC) convolution, per dimension."""
    return tuple(
        (n - 1) * s - 2 * p + d * (k - 1) + 1 + op
        for n, k, s, p, d, op in zip(size, kernel_size, stride, padding, dilation, output_padding)
    )


@dataclass(frozen=True)
class Geometry:
    """Fully resolved geometry: every field a tuple with one entry per spatial dim.

    ``in_size`` is the spatial size of the input ``x``, ``out_size`` that of the
    output, and the guide has ``guide_size`` (``in_size`` for the forward op,
    ``out_size`` for the transposed op).
    """

    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    in_size: tuple
    out_size: tuple
    transposed: bool = False
    output_padding: tuple = field(default=())

    @property
    def ndim(self):
        return len(self.kernel_size)

    @property
    def guide_size(self):
        return self.out_size if self.transposed else self.in_size

    @property
    def taps(self):
        return int(np.prod(self.kernel_size))

    # ------------------------------------------------------------------ tables
    @cached_property
    def input_index(self):
        """Per dim: int64 array (k, out) of input indices, -1 where zero."""
        tables = []
        for n_in, n_out, k, s, p, d in zip(self.in_size, self.out_size, self.kernel_size,
                                           self.stride, self.padding, self.dilation):
            y = np.arange(n_out)[None, :]
            t = np.arange(k)[:, None]
            if self.transposed:
                z = y + t * d - ((k - 1) * d - p)
                ok = (z % s == 0) & (z >= 0) & (z // s < n_in)
                idx = np.where(ok, z // s, -1)
            else:
                z = y * s - p + t * d
                idx = np.where((z >= 0) & (z < n_in), z, -1)
            tables.append(np.ascontiguousarray(idx, dtype=np.int64))
        return tuple(tables)

    @cached_property
    def guide_index(self):
        """Per dim: int64 array (k, out) of guide indices of each tap, -1 where zero-padded."""
        tables = []
        for n_g, n_out, k, s, p, d in zip(self.guide_size, self.out_size, self.kernel_size,
                                          self.stride, self.padding, self.dilation):
            y = np.arange(n_out)[None, :]
            t = np.arange(k)[:, None]
            if self.transposed:
                z = y - (k // 2) * d + t * d
            else:
                z = y * s - p + t * d
            idx = np.where((z >= 0) & (z < n_g), z, -1)
            tables.append(np.ascontiguousarray(idx, dtype=np.int64))
        return tuple(tables)

    @cached_property
    def centre_index(self):
        """Per dim: int64 array (out,) of the centre-tap guide index, -1 where zero-padded."""
        return tuple(np.ascontiguousarray(g[k // 2]) for g, k in zip(self.guide_index, self.kernel_size))

    def tap_coords(self):
        """All taps as tuples of per-dim tap indices, in C (row-major) order."""
        return list(np.ndindex(*self.kernel_size))
