"""Literal transcriptions of the PAC definitions (DESIGN.md 1), the oracles of
``test_identities.py``: each indexes zero-padded copies of the arrays directly, the
way the formulas read, and shares no code with pacnd."""

from __future__ import annotations

import itertools

import numpy as np

EPS = 1e-4  # the kernels' constant (DESIGN.md 1)


def _tup(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def pad_crop(a, before, after):
    """Zero-pad (positive) or crop (negative) the trailing len(before) dims."""
    nd = len(before)
    lead = a.ndim - nd
    pads = [(0, 0)] * lead + [(max(b, 0), max(e, 0)) for b, e in zip(before, after)]
    a = np.pad(a, pads)
    sl = [slice(None)] * lead + [slice(max(-b, 0), a.shape[lead + i] - max(-e, 0))
                                 for i, (b, e) in enumerate(zip(before, after))]
    return a[tuple(sl)]


def window(a_pad, tap, out, stride, dilation):
    """``a_pad[..., y*s + t*d]`` for all output positions y (trailing dims)."""
    sl = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
               for t, o, s, d in zip(tap, out, stride, dilation))
    res = a_pad[(Ellipsis,) + sl]
    assert res.shape[-len(out):] == tuple(out)
    return res


def phi(kind, d2, alpha=0.0, lam=-1.0):
    if kind == "gaussian":
        return np.exp(-0.5 * d2)
    if kind == "laplacian":
        return np.exp(-np.sqrt(d2 + EPS))
    return alpha + (d2 + EPS) ** (lam / 2)


def literal_kernel(guide, k, stride, padding, dilation, *, kind="gaussian", alpha=0.0,
                   lam=-1.0, asym=False, channel_wise=False):
    """Unnormalised K[b, c|0, *t, *y] = phi(sum_c (f_pad[y*s+t*d] - f_pad[y*s+(k//2)*d])^2)."""
    nd = guide.ndim - 2
    k, s, p, d = (_tup(v, nd) for v in (k, stride, padding, dilation))
    gp = pad_crop(guide, p, p)
    out = tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1
                for n, kk, ss, pp, dd in zip(guide.shape[2:], k, s, p, d))
    f0 = window(gp, tuple(kk // 2 for kk in k), out, s, d)
    B, C = guide.shape[:2]
    ck = C if channel_wise else 1
    K = np.empty((B, ck) + k + out)
    a = np.asarray(alpha, dtype=np.float64).reshape((1, -1) + (1,) * nd)
    lm = np.asarray(lam, dtype=np.float64).reshape((1, -1) + (1,) * nd)
    for tap in itertools.product(*map(range, k)):
        diff = window(gp, tap, out, s, d) - f0
        if asym:
            diff = np.maximum(diff, 0.0)
        d2 = diff ** 2 if channel_wise else (diff ** 2).sum(axis=1, keepdims=True)
        K[(slice(None), slice(None)) + tap] = phi(kind, d2, a, lm)
    return K


def literal_validity(valid, k, stride, padding, dilation, out=None):
    """M[b, 0, *t, *y] = valid_pad[y*s + t*d] for a (B, 1, *S) validity array."""
    nd = valid.ndim - 2
    k, s, p, d = (_tup(v, nd) for v in (k, stride, padding, dilation))
    vp = pad_crop(valid, p, p)
    if out is None:
        out = tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1
                    for n, kk, ss, pp, dd in zip(valid.shape[2:], k, s, p, d))
    M = np.empty(valid.shape[:2] + k + out)
    for tap in itertools.product(*map(range, k)):
        M[(slice(None), slice(None)) + tap] = window(vp, tap, out, s, d)
    return M


def normalise(K, M):
    nd = (K.ndim - 2) // 2
    K = K * M
    Z = K.sum(axis=tuple(range(2, 2 + nd)), keepdims=True)
    return K / np.where(Z == 0, 1.0, Z)


def literal_pac(x, K, W, stride, padding, dilation, groups=1, bias=None):
    """out[b,o,y] = bias[o] + sum_{c in group(o), t} W[o,c,t] K[b,c|0,t,y] x_pad[b,c,y*s+t*d].

    ``K=None`` is a plain correlation. ``W`` is (Cout, Cin/groups, *k)."""
    nd = x.ndim - 2
    k = W.shape[2:]
    s, p, d = (_tup(v, nd) for v in (stride, padding, dilation))
    xp = pad_crop(x, p, p)
    out = tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1
                for n, kk, ss, pp, dd in zip(x.shape[2:], k, s, p, d))
    B, cin = x.shape[:2]
    cout = W.shape[0]
    cin_g, cout_g = cin // groups, cout // groups
    res = np.zeros((B, cout) + out)
    for tap in itertools.product(*map(range, k)):
        xt = window(xp, tap, out, s, d)
        if K is not None:
            xt = xt * K[(slice(None), slice(None)) + tap]
        for o in range(cout):
            g = o // cout_g
            for ci in range(cin_g):
                res[:, o] += W[(o, ci) + tap] * xt[:, g * cin_g + ci]
    if bias is not None:
        res += bias.reshape((1, cout) + (1,) * nd)
    return res


def zero_insert(x, stride):
    nd = x.ndim - 2
    s = _tup(stride, nd)
    z = np.zeros(x.shape[:2] + tuple((n - 1) * ss + 1 for n, ss in zip(x.shape[2:], s)))
    z[(Ellipsis,) + tuple(slice(None, None, ss) for ss in s)] = x
    return z


def literal_transposed_pad(x, k, stride, padding, dilation, output_padding):
    """The zero-inserted input padded by (k-1)d - p before, (k-1)d - p + op after."""
    nd = x.ndim - 2
    k, s, p, d, op = (_tup(v, nd) for v in (k, stride, padding, dilation, output_padding))
    before = tuple((kk - 1) * dd - pp for kk, dd, pp in zip(k, d, p))
    after = tuple(b + o for b, o in zip(before, op))
    return pad_crop(zero_insert(x, s), before, after)


def transposed_weight_as_conv(W, groups):
    """(Cin, Cout/g, *k) applied unflipped -> the (Cout, Cin/g, *k) correlation weight."""
    cin, cout_g = W.shape[:2]
    cin_g = cin // groups
    Wc = np.empty((cout_g * groups, cin_g) + W.shape[2:])
    for g in range(groups):
        for ci in range(cin_g):
            for oi in range(cout_g):
                Wc[g * cout_g + oi, ci] = W[g * cin_g + ci, oi]
    return Wc


def literal_transposed_kernel(guide, x_shape, k, stride, padding, dilation, output_padding, *,
                              normalize=False, mask=None, **kopts):
    """K at output resolution: stride 1, padding (k-1)d//2; M from the zero-inserted grid."""
    nd = guide.ndim - 2
    k, d = _tup(k, nd), _tup(dilation, nd)
    same = tuple((kk - 1) * dd // 2 for kk, dd in zip(k, d))
    K = literal_kernel(guide, k, 1, same, d, **kopts)
    if normalize or mask is not None:
        valid = np.ones((1, 1) + tuple(x_shape[2:])) if mask is None else mask
        vz = literal_transposed_pad(valid, k, stride, padding, d, output_padding)
        M = literal_validity(vz, k, 1, 0, d)
        K = normalise(K, M) if normalize else K * M
    return K


def literal_pac_transpose(x, guide, W, bias=None, *, stride=1, padding=0, dilation=1,
                          output_padding=0, groups=1, K=None, **kopts):
    k = W.shape[2:]
    xz = literal_transposed_pad(x, k, stride, padding, dilation, output_padding)
    if K is None and guide is not None:
        K = literal_transposed_kernel(guide, x.shape, k, stride, padding, dilation,
                                      output_padding, **kopts)
    return literal_pac(xz, K, transposed_weight_as_conv(W, groups), 1, 0, dilation, groups,
                       bias)


def assert_close(a, b, rtol=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-300)
    err = float(np.abs(a - b).max(initial=0.0)) / scale
    assert err <= rtol, f"relative error {err:.3e} > {rtol:.1e}"
