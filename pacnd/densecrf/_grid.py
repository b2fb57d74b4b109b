"""Finding the grid in pydensecrf pairwise features.

``DenseCRF(N, L).addPairwiseEnergy(features)`` gets a (D, N) array: one row
per feature, one column per point. PAC-CRF runs on a grid, so the features of
every term must hold the points' grid coordinates, scaled — what
:func:`pacnd.densecrf.utils.create_pairwise_gaussian` and
``create_pairwise_bilateral`` make (``index_a / sdims_a``, row-major), or what
``DenseCRF2D`` uses internally (``x / sx``, ``y / sy``). :func:`find_grid`
recognises such rows in any order and with any offset: a coordinate row is
``offset + step * ((n // stride) % size)``, and the rows found must tile N as
a mixed-radix number (strides 1, size_0, size_0 size_1, ...). The grid shape
follows (slowest axis first), the spatial std of each axis is ``1 / |step|``
pixels, and every other row is a guide feature (already divided by its std).
"""

from __future__ import annotations

import numpy as np

__all__ = ["find_grid", "GridFeatures"]


class GridFeatures:
    """What a pairwise term's features say: grid ``shape`` (slowest axis first), spatial
    std per axis ``sxy`` (pixels), guide features ``extra`` (C, N) float32 or None."""

    def __init__(self, shape, sxy, extra):
        self.shape, self.sxy, self.extra = tuple(shape), tuple(sxy), extra


def _coordinate_row(v, n):
    """(stride, size, step) if ``v`` is a grid coordinate row, else None."""
    v0 = v[0]
    span = float(np.abs(v).max()) if v.size else 0.0
    tol = 1e-5 * span + 1e-6
    moved = np.flatnonzero(np.abs(v - v0) > tol)
    if moved.size == 0:
        return None
    stride = int(moved[0])
    step = float(v[stride]) - float(v0)
    samples = v[::stride]
    back = np.flatnonzero(np.abs(samples[1:] - v0) <= tol)
    size = int(back[0]) + 1 if back.size else len(samples)
    if size < 2 or n % (stride * size):
        return None
    expected = (float(v0) + step * np.arange(size)).astype(v.dtype)
    if np.abs(v.reshape(-1, size, stride) - expected[None, :, None]).max() > tol:
        return None
    return stride, size, step


def find_grid(features, n_points):
    """Split a term's features into grid coordinates and guide features.

    Parameters
    ----------
    features : ndarray (D, N) float32
    n_points : int
        N.

    Returns
    -------
    GridFeatures

    Raises
    ------
    ValueError
        When the rows do not contain the coordinates of a grid of N points.
    """
    D, N = features.shape
    cands = {}
    for r in range(D):
        found = _coordinate_row(features[r], N)
        if found is not None:
            stride, size, step = found
            cands.setdefault(stride, []).append((r, size, step))
    chain, used, stride = [], set(), 1
    while stride < N:
        opts = [c for c in cands.get(stride, []) if c[0] not in used and N % (stride * c[1]) == 0]
        if not opts:
            break
        r, size, step = opts[0]
        chain.append((r, size, step))
        used.add(r)
        stride *= size
    if stride != N or not chain:
        got = ", ".join(f"row {r}: stride {s}, size {size}" for s, cs in sorted(cands.items())
                        for r, size, _ in cs) or "no row is a coordinate row"
        raise ValueError(
            f"pacnd.densecrf runs the CRF on a grid: the pairwise features ({D} x {N}) must hold "
            f"the pixel/voxel coordinates divided by sxy, as create_pairwise_gaussian and "
            f"create_pairwise_bilateral make them, and these do not tile {N} points ({got}). "
            f"Arbitrary point features (point clouds, graphs) are not supported; build the "
            f"features with pacnd.densecrf.utils.create_pairwise_* for your grid's shape")
    chain = chain[::-1]  # slowest axis first
    shape = tuple(size for _, size, _ in chain)
    sxy = tuple(1.0 / abs(step) for _, _, step in chain)
    if len(shape) > 3:
        raise ValueError(f"the features describe a {len(shape)}-D grid {shape}; pacnd.densecrf "
                         f"runs on 1-D, 2-D and 3-D grids")
    rest = [r for r in range(D) if r not in used]
    extra = np.ascontiguousarray(features[rest]) if rest else None
    return GridFeatures(shape, sxy, extra)
