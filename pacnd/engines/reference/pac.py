"""PAC forward and vector-Jacobian products, NumPy reference.

``out[b,o,y] = bias[o] + sum_{c in group(o), t} W[o,c,t] K[b,c|0,t,y] x[b,c,in(y,t)]``
with ``in(y,t)`` from :attr:`Geometry.input_index` (forward or transposed).
"""

import numpy as np

from .adapting import adapting_kernel, adapting_kernel_vjp
from .taps import gather, scatter_add, tap_index


def _contract(Wm, a):
    """``out[b, o, ...] = sum_c Wm[o, c] a[b, c, ...]`` (a matrix product per batch item)."""
    B, c = a.shape[:2]
    return np.matmul(Wm, a.reshape(B, c, -1)).reshape((B, Wm.shape[0]) + a.shape[2:])


def _flat_kernel(x, geom, K, guide, spec, mask):
    """K as (B, Ck, T, *out), or None for a plain convolution."""
    if K is None and guide is not None:
        K = adapting_kernel(guide, geom, spec, mask)
    if K is None:
        return None
    return K.reshape(K.shape[:2] + (geom.taps,) + tuple(geom.out_size))


def pac_forward(x, weight, bias, geom, groups, *, K=None, guide=None, spec=None, mask=None):
    B, cin = x.shape[:2]
    cout = weight.shape[0]
    cin_g, cout_g = cin // groups, cout // groups
    Kf = _flat_kernel(x, geom, K, guide, spec, mask)
    W = weight.reshape(cout, cin_g, geom.taps)
    out = np.zeros((B, cout) + tuple(geom.out_size), dtype=x.dtype)
    for ti, tap in enumerate(geom.tap_coords()):
        xt = gather(x, tap_index(geom.input_index, tap))
        if Kf is not None:
            xt = xt * Kf[:, :, ti]
        if cin_g == 1 and cout_g == 1:                  # depthwise: one weight per channel
            out += W[:, 0, ti].reshape((1, cout) + (1,) * geom.ndim) * xt
            continue
        for g in range(groups):
            o, c = slice(g * cout_g, (g + 1) * cout_g), slice(g * cin_g, (g + 1) * cin_g)
            out[:, o] += _contract(W[o, :, ti], xt[:, c])
    if bias is not None:
        out += bias.reshape((1, cout) + (1,) * geom.ndim)
    return out


def pac_vjp(grad_out, x, weight, geom, groups, *, K=None, guide=None, spec=None, mask=None,
            needs=("input", "weight", "bias", "guide")):
    B, cin = x.shape[:2]
    cout = weight.shape[0]
    cin_g, cout_g = cin // groups, cout // groups
    nd = geom.ndim
    res = {}
    if "bias" in needs:
        res["bias"] = grad_out.sum(axis=(0,) + tuple(range(2, 2 + nd)))
    k_needs = {"adapting"} if K is not None else {"guide", "alpha", "lam"}
    need_k = bool(k_needs & set(needs)) and (K is not None or guide is not None)
    need_x, need_w = "input" in needs, "weight" in needs
    if not (need_x or need_w or need_k):
        return res
    Kf = _flat_kernel(x, geom, K, guide, spec, mask)
    W = weight.reshape(cout, cin_g, geom.taps)
    gx = np.zeros_like(x) if need_x else None
    gW = np.zeros_like(W) if need_w else None
    gK = np.zeros_like(Kf) if need_k else None
    groups_sl = [(slice(g * cout_g, (g + 1) * cout_g), slice(g * cin_g, (g + 1) * cin_g))
                 for g in range(groups)]
    for ti, tap in enumerate(geom.tap_coords()):
        idx = tap_index(geom.input_index, tap)
        xt = gather(x, idx)
        kt = None if Kf is None else Kf[:, :, ti]
        if need_w:
            xk = xt if kt is None else xt * kt
            for o, c in groups_sl:
                # sum_b gout_b (Cout/g, P) @ xk_b^T (P, Cin/g)
                gW[o, :, ti] = np.matmul(grad_out[:, o].reshape(B, cout_g, -1),
                                         xk[:, c].reshape(B, cin_g, -1).transpose(0, 2, 1)
                                         ).sum(axis=0)
        if need_x or need_k:
            G = np.empty_like(xt)
            for o, c in groups_sl:
                G[:, c] = _contract(W[o, :, ti].T, grad_out[:, o])
            if need_x:
                scatter_add(gx, G if kt is None else G * kt, idx)
            if need_k:
                prod = G * xt
                gK[:, :, ti] = prod.sum(axis=1, keepdims=True) if gK.shape[1] == 1 else prod
    if need_x:
        res["input"] = gx
    if need_w:
        res["weight"] = gW.reshape(weight.shape)
    if need_k:
        if K is not None:
            res["adapting"] = gK.reshape(K.shape)
        else:
            res.update(adapting_kernel_vjp(gK, guide, geom, spec, mask,
                                           needs=tuple(n for n in needs if n in k_needs)))
    return res
