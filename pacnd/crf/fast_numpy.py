"""NumPy twin of the PAC-CRF fast path's score conversion (:mod:`pacnd.crf.fast`).

Same arguments and results as the Numba kernel it stands for (to rounding):
it serves the first calls of a process while the kernels are compiled in the
background on an empty cache (:mod:`pacnd.engines.cpu.coldstart`); mean-field
inference itself runs on the graph path meanwhile (:func:`pacnd.crf.fast.mean_field`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["scores_to_planes"]


def scores_to_planes(P, clip, is_prob, out, stats):
    tot = P.sum(axis=2, dtype=np.float64)
    bad = ~np.isfinite(tot)
    stats[:, 0] = np.where(bad[..., None], ~np.isfinite(P), False).sum(axis=(1, 2))
    stats[:, 1] = P.min(axis=(1, 2))
    stats[:, 2] = np.abs(tot - 1.0).max(axis=1)
    planes = P.transpose(2, 0, 1)
    out[...] = np.maximum(planes, clip) if is_prob else planes
