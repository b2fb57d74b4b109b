"""Adapting kernel K and its vector-Jacobian product, NumPy reference."""

import numpy as np

from .taps import gather, scatter_add, tap_index, valid_of


def _params(spec, ck, dtype, nd):
    alpha, lam = spec.params_for(ck)
    shape = (1, ck) + (1,) * nd
    return alpha.astype(dtype).reshape(shape), lam.astype(dtype).reshape(shape)


def _diff(guide, f0, geom, tap, spec):
    diff = gather(guide, tap_index(geom.guide_index, tap)) - f0
    if spec.asym:
        diff = np.maximum(diff, 0)
    return diff


def _raw_kernel(guide, geom, spec):
    """Unmasked K and squared distances, both (B, Ck, T, *out)."""
    B, cg = guide.shape[:2]
    nd = geom.ndim
    ck = cg if spec.channel_wise else 1
    alpha, lam = _params(spec, ck, guide.dtype, nd)
    f0 = gather(guide, geom.centre_index)
    shape = (B, ck, geom.taps) + tuple(geom.out_size)
    Kr = np.empty(shape, dtype=guide.dtype)
    D2 = np.empty(shape, dtype=guide.dtype)
    for ti, tap in enumerate(geom.tap_coords()):
        diff = _diff(guide, f0, geom, tap, spec)
        d2 = diff * diff
        if not spec.channel_wise:
            d2 = d2.sum(axis=1, keepdims=True)
        D2[:, :, ti] = d2
        Kr[:, :, ti] = spec.phi(d2, alpha, lam)
    return Kr, D2


def _input_validity(geom, mask, batch, dtype):
    """M: (B|1, 1, T, *out), 1 where a tap lands on a real (and unmasked) input pixel."""
    nb = 1 if mask is None else batch
    M = np.empty((nb, 1, geom.taps) + tuple(geom.out_size), dtype=dtype)
    for ti, tap in enumerate(geom.tap_coords()):
        idx = tap_index(geom.input_index, tap)
        if mask is None:
            M[:, 0, ti] = valid_of(idx)
        else:
            M[:, :, ti] = gather(mask, idx)
    return M


def _is_masked(spec, mask):
    return spec.normalize or mask is not None


def adapting_kernel(guide, geom, spec, mask=None):
    B = guide.shape[0]
    Kr, _ = _raw_kernel(guide, geom, spec)
    K = Kr
    if _is_masked(spec, mask):
        K = Kr * _input_validity(geom, mask, B, guide.dtype)
    if spec.normalize:
        Z = K.sum(axis=2, keepdims=True)
        K = K / (Z + (Z == 0))
    return K.reshape(K.shape[:2] + tuple(geom.kernel_size) + tuple(geom.out_size))


def adapting_kernel_vjp(grad_K, guide, geom, spec, mask=None, needs=("guide", "alpha", "lam")):
    B, cg = guide.shape[:2]
    nd = geom.ndim
    Kr, D2 = _raw_kernel(guide, geom, spec)
    ck = Kr.shape[1]
    g = grad_K.reshape(Kr.shape)
    masked = _is_masked(spec, mask)
    if masked:
        M = _input_validity(geom, mask, B, guide.dtype)
        Km = Kr * M
    if spec.normalize:
        Z = Km.sum(axis=2, keepdims=True)
        Zs = Z + (Z == 0)
        Kn = Km / Zs
        g = (g - (g * Kn).sum(axis=2, keepdims=True)) / Zs
    if masked:
        g = g * M
    res = {}
    red = (0, 2) + tuple(range(3, 3 + nd))
    if spec.kind == "inverse":
        alpha, lam = _params(spec, ck, guide.dtype, nd)
        if "alpha" in needs:
            res["alpha"] = g.sum(axis=red)
        if "lam" in needs:
            res["lam"] = (g * spec.dphi_dlam(D2, lam[:, :, None])).sum(axis=red)
    else:
        alpha = lam = None
    if "guide" in needs:
        a = None if alpha is None else alpha[:, :, None]
        l_ = None if lam is None else lam[:, :, None]
        g_d2 = g * spec.dphi(D2, Kr, a, l_)
        grad_guide = np.zeros_like(guide)
        grad_f0 = np.zeros_like(gather(guide, geom.centre_index))
        f0 = gather(guide, geom.centre_index)
        for ti, tap in enumerate(geom.tap_coords()):
            diff = _diff(guide, f0, geom, tap, spec)
            gdiff = 2.0 * diff * g_d2[:, :, ti]
            scatter_add(grad_guide, gdiff, tap_index(geom.guide_index, tap))
            grad_f0 -= gdiff
        scatter_add(grad_guide, grad_f0, list(geom.centre_index))
        res["guide"] = grad_guide
    return res
