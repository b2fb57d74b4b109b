"""Gather and scatter of one kernel tap through per-dimension index tables."""

import numpy as np


def gather(a, idx):
    """``out[..., y0, y1, ...] = a[..., idx[0][y0], idx[1][y1], ...]``, 0 where any idx is -1.

    ``a`` has shape (B, C, *S); ``idx`` is one int array per spatial dim.
    """
    out = a
    for d, i in enumerate(idx):         # one axis at a time (np.take is far faster than np.ix_)
        out = np.take(out, np.where(i < 0, 0, i), axis=2 + d)
    valid = valid_of(idx)
    if not valid.all():
        out = out * valid
    return out


def scatter_add(target, vals, idx):
    """Adjoint of :func:`gather`: ``target[..., idx...] += vals`` over valid entries.

    Each table maps distinct outputs to distinct indices (the maps are
    injective for one tap), so plain fancy-index accumulation is exact.
    """
    keep = [np.nonzero(i >= 0)[0] for i in idx]
    if any(len(k) == 0 for k in keep):
        return
    dst = np.ix_(*[i[k] for i, k in zip(idx, keep)])
    src = np.ix_(*keep)
    target[(Ellipsis,) + dst] += vals[(Ellipsis,) + src]


def tap_index(tables, tap):
    """The per-dim index arrays of one tap (a tuple of per-dim tap numbers)."""
    return [tbl[t] for tbl, t in zip(tables, tap)]


def valid_of(idx):
    """Boolean (*out) array: True where every per-dim index is valid."""
    nd = len(idx)
    valid = np.ones([len(i) for i in idx], dtype=bool)
    for d, i in enumerate(idx):
        shape = [1] * nd
        shape[d] = len(i)
        valid = valid & (i >= 0).reshape(shape)
    return valid
