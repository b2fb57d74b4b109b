"""What the two GPU engines share: the launch parameter layout and the driver.

The Numba CUDA engine (:mod:`pacnd.engines.cuda`) and the CuPy RawKernel
engine (:mod:`pacnd.engines.cupy`) run the same decomposition of every
operation into kernels; only how a kernel is launched differs. A *backend*
object supplies that (``launch``, the threads per block, whether it has the
tiled GEMM kernels); the functions here decide which kernels run, with which
buffers, and reduce their partial results.

Kernels (each in CUDA C in ``kernels/*.cu`` and in Numba in
``pacnd/engines/cuda/*.py``; parameter layout :data:`PARAM`, mirrored by the
``PacParam`` enum of ``kernels/pac_common.cuh``):

==================== ===================================================
adapting_fwd         K (B, CK, T, out), thread per (b, kc, y)
adapting_zinv        1 / Z, the normaliser, thread per (b, kc, y)
adapting_bwd_d2      dL/dK -> dL/dd2 in place, per-block alpha/lam partials
adapting_bwd_guide   dL/dguide as a gather, thread per (b, c, z)
pac_fwd_*            output, K fused (computed from the guide in the kernel)
pac_bwd_input_*      dL/dx as a gather over the outputs reading each pixel
pac_bwd_weight_*     dL/dW, per-block partial sums over splits of (b, y)
pac_bwd_kernel_*     dL/dK, thread (direct) or block (tiled) per (t, y)
==================== ===================================================

Working memory is bounded: the largest buffers are (B, 1, T, out) (the
adapting kernel and its gradient in the backward pass when K is shared by all
channels); with a channel-wise K the backward works through channel chunks of
at most :data:`CHUNK_ELEMENTS` elements. Nothing of size B*C*T*out is ever
allocated unless the caller passed (or asked for) such a K.
"""

from __future__ import annotations

import math

import numpy as np

from .._kernelspec import KIND_CODE

__all__ = ["PARAM", "P_COUNT", "make_params", "adapting_kernel", "adapting_kernel_vjp",
           "pac_forward", "pac_vjp", "CHUNK_ELEMENTS",
           "tiled_launch_config"]

#: index of each launch parameter in the int32 array ``P`` (3 entries for the
#: per-dimension ones); must match ``enum PacParam`` in kernels/pac_common.cuh
PARAM = {
    "IN": 0, "OUT": 3, "GS": 6, "KS": 9, "ST": 12, "PD": 15, "DL": 18, "TRANSPOSED": 21,
    "T": 22, "NIN": 23, "NOUT": 24, "NG": 25, "B": 26, "CIN": 27, "COUT": 28, "GROUPS": 29,
    "CG": 30, "CK": 31, "KIND": 32, "ASYM": 33, "NORMALIZE": 34, "HAS_MASK": 35, "KMODE": 36,
    "HAS_BIAS": 37, "CW": 38, "C0": 39, "NSPLIT": 40, "SPLIT_LEN": 41, "CIN_G": 42,
    "COUT_G": 43,
}
P_COUNT = 48

#: largest channel-wise K-gradient chunk (elements) the backward allocates
CHUNK_ELEMENTS = 1 << 25

_INT32_MAX = 2**31 - 1


def _pad3(values, fill):
    values = tuple(int(v) for v in values)
    return (fill,) * (3 - len(values)) + values


def make_params(geom, *, B, cin=0, cout=0, groups=1, cg=0, ck=1, spec=None, has_mask=False,
                kmode=0, has_bias=False, cw=False, c0=0, nsplit=1, split_len=0):
    """The int32 parameter array of one launch (1-D and 2-D embedded in 3-D)."""
    P = np.zeros(P_COUNT, dtype=np.int32)
    for key, vals, fill in (("IN", geom.in_size, 1), ("OUT", geom.out_size, 1),
                            ("GS", geom.guide_size, 1), ("KS", geom.kernel_size, 1),
                            ("ST", geom.stride, 1), ("PD", geom.padding, 0),
                            ("DL", geom.dilation, 1)):
        P[PARAM[key]:PARAM[key] + 3] = _pad3(vals, fill)
    n_in, n_out, n_g = (math.prod(geom.in_size), math.prod(geom.out_size),
                        math.prod(geom.guide_size))
    biggest = max(B * max(cin, cout, cg, ck, 1) * max(n_in, n_g), B * ck * geom.taps * n_out)
    if biggest > _INT32_MAX:
        raise ValueError(f"problem too large for the GPU kernels' 32-bit indexing ({biggest} "
                         f"elements in one tensor); split the batch")
    groups = max(int(groups), 1)
    vals = {
        "TRANSPOSED": int(geom.transposed), "T": geom.taps, "NIN": n_in, "NOUT": n_out,
        "NG": n_g, "B": B, "CIN": cin, "COUT": cout, "GROUPS": groups, "CG": cg, "CK": ck,
        "KIND": KIND_CODE[spec.kind] if spec is not None else 0,
        "ASYM": int(bool(spec is not None and spec.asym)),
        "NORMALIZE": int(bool(spec is not None and spec.normalize)),
        "HAS_MASK": int(bool(has_mask)), "KMODE": kmode, "HAS_BIAS": int(bool(has_bias)),
        "CW": int(bool(cw)), "C0": c0, "NSPLIT": nsplit, "SPLIT_LEN": split_len,
        "CIN_G": cin // groups if cin else 0, "COUT_G": cout // groups if cout else 0,
    }
    for key, v in vals.items():
        P[PARAM[key]] = v
    return P


# --------------------------------------------------------------------------- helpers
def _xp(be, a):
    return be.array_module(a)


def _dummy(be, like):
    return _xp(be, like).zeros(1, dtype=like.dtype)


def _params_arrays(be, spec, ck, like):
    """alpha, lam as (ck,) device arrays of the dtype of ``like`` (zeros unless inverse)."""
    xp = _xp(be, like)
    if spec is None:
        z = xp.zeros(max(ck, 1), dtype=like.dtype)
        return z, z
    a, l_ = spec.params_for(ck)
    return (xp.asarray(np.array(a, dtype=like.dtype, copy=True)),
            xp.asarray(np.array(l_, dtype=like.dtype, copy=True)))


def _grid1d(be, total):
    return max(1, min(-(-int(total) // be.threads), be.max_blocks))


def _launch1d(be, name, total, args, dtype):
    if total <= 0:
        return
    be.launch(name, dtype, (_grid1d(be, total), 1, 1), (be.threads, 1, 1), args)


# --------------------------------------------------------------------------- adapting kernel
def _adapting_fwd(be, guide, geom, spec, mask, *, ck, cw, c0=0, out=None):
    """K (B, ck, T, out) of channels c0.. (channel-wise) or of the summed distance."""
    xp = _xp(be, guide)
    B, cg = guide.shape[:2]
    nout = math.prod(geom.out_size)
    if out is None:
        out = xp.empty((B, ck, geom.taps, nout), dtype=guide.dtype)
    P = make_params(geom, B=B, cg=cg, ck=ck, spec=spec, has_mask=mask is not None, cw=cw, c0=c0,
                    kmode=2)
    alpha, lam = _params_arrays(be, spec, cg if cw else 1, guide)
    m = mask if mask is not None else _dummy(be, guide)
    _launch1d(be, "adapting_fwd", B * ck * nout, (be.params(P), guide, m, alpha, lam, out),
              guide.dtype)
    return out


def _adapting_zinv(be, guide, geom, spec, mask, *, ck, cw):
    xp = _xp(be, guide)
    B, cg = guide.shape[:2]
    nout = math.prod(geom.out_size)
    zinv = xp.empty((B, ck, nout), dtype=guide.dtype)
    P = make_params(geom, B=B, cg=cg, ck=ck, spec=spec, has_mask=mask is not None, cw=cw,
                    kmode=2)
    alpha, lam = _params_arrays(be, spec, cg if cw else 1, guide)
    m = mask if mask is not None else _dummy(be, guide)
    _launch1d(be, "adapting_zinv", B * ck * nout, (be.params(P), guide, m, alpha, lam, zinv),
              guide.dtype)
    return zinv


def _adapting_backward(be, gd2, guide, geom, spec, mask, *, ck, cw, c0, needs, grad_guide=None):
    """In place dL/dK -> dL/dd2 on ``gd2`` (B, ck, T, out); returns (alpha/lam sums of the ck
    channels (ck, 2) or None, grad_guide or None)."""
    xp = _xp(be, guide)
    B, cg = guide.shape[:2]
    nout = math.prod(geom.out_size)
    P = make_params(geom, B=B, cg=cg, ck=ck, spec=spec, has_mask=mask is not None, cw=cw, c0=c0,
                    kmode=2)
    Pd = be.params(P)
    alpha, lam = _params_arrays(be, spec, cg if cw else 1, guide)
    m = mask if mask is not None else _dummy(be, guide)
    rows = B * ck
    gx = max(1, min(-(-nout // be.threads), max(1, be.max_blocks // max(rows, 1))))
    partial = xp.empty((rows, gx, 2), dtype=guide.dtype)
    be.launch("adapting_bwd_d2", guide.dtype, (gx, rows, 1), (be.threads, 1, 1),
              (Pd, guide, m, alpha, lam, gd2, partial),
              shared_mem=be.threads * guide.dtype.itemsize)
    sums = partial.reshape(B, ck, gx, 2).sum(axis=(0, 2))
    if "guide" in needs:
        if grad_guide is None:
            grad_guide = xp.empty_like(guide)
        nch = ck if cw else cg
        _launch1d(be, "adapting_bwd_guide", B * nch * math.prod(geom.guide_size),
                  (Pd, guide, gd2, grad_guide), guide.dtype)
    return sums, grad_guide


def adapting_kernel(be, guide, geom, spec, mask=None):
    B, cg = guide.shape[:2]
    ck = cg if spec.channel_wise else 1
    K = _adapting_fwd(be, guide, geom, spec, mask, ck=ck, cw=spec.channel_wise)
    return K.reshape((B, ck) + tuple(geom.kernel_size) + tuple(geom.out_size))


def adapting_kernel_vjp(be, grad_K, guide, geom, spec, mask=None, needs=("guide", "alpha", "lam")):
    xp = _xp(be, guide)
    B, cg = guide.shape[:2]
    ck = cg if spec.channel_wise else 1
    nout = math.prod(geom.out_size)
    gd2 = xp.array(grad_K, dtype=guide.dtype, copy=True).reshape(B, ck, geom.taps, nout)
    sums, gg = _adapting_backward(be, gd2, guide, geom, spec, mask, ck=ck, cw=spec.channel_wise,
                                  c0=0, needs=needs)
    res = {}
    if spec.kind == "inverse":
        if "alpha" in needs:
            res["alpha"] = sums[:, 0].copy()
        if "lam" in needs:
            res["lam"] = sums[:, 1].copy()
    if "guide" in needs:
        res["guide"] = gg
    return res


# --------------------------------------------------------------------------- PAC
def _k_source(K, guide, spec, cin):
    """(kmode, ck) of the K that a PAC call uses."""
    if K is not None:
        return 1, int(K.shape[1])
    if guide is not None:
        return 2, (cin if spec.channel_wise else 1)
    return 0, 1


def _tiled(be, kind, *, ck, cin_g, cout_g, taps, dtype, kmode=1):
    """Whether the tiled GEMM kernel ``kind`` runs for this problem (K shared by all
    channels; the backward ones read K from a buffer, not from the guide)."""
    if not getattr(be, "has_tiled", False) or ck != 1:
        return False
    if kind != "fwd" and kmode == 2:
        return False
    mode = be.path()
    if mode == "direct":
        return False
    tile = getattr(be, "tile", TILE)
    if kind in ("fwd", "bwd_input") and taps * tile * (np.dtype(dtype).itemsize + 4) > 48 * 1024:
        return False
    if mode == "tiled":
        return True
    return cin_g * cout_g >= 64 and min(cin_g, cout_g) >= 4


def pac_forward(be, x, weight, bias, geom, groups, *, K=None, guide=None, spec=None, mask=None):
    xp = _xp(be, x)
    B, cin = x.shape[:2]
    cout = weight.shape[0]
    kmode, ck = _k_source(K, guide, spec, cin)
    nout = math.prod(geom.out_size)
    out = xp.empty((B, cout) + tuple(geom.out_size), dtype=x.dtype)
    cg = guide.shape[1] if guide is not None else 0
    P = make_params(geom, B=B, cin=cin, cout=cout, groups=groups, cg=cg, ck=ck,
                    spec=spec if kmode == 2 else None, has_mask=mask is not None and kmode == 2,
                    kmode=kmode, has_bias=bias is not None, cw=kmode == 2 and spec.channel_wise)
    d = _dummy(be, x)
    alpha, lam = (_params_arrays(be, spec, cg if spec.channel_wise else 1, x) if kmode == 2
                  else (d, d))
    args = (be.params(P), x, weight, bias if bias is not None else d,
            K if K is not None else d, guide if guide is not None else d,
            mask if (mask is not None and kmode == 2) else d, alpha, lam, out)
    if _tiled(be, "fwd", ck=ck, cin_g=cin // groups, cout_g=cout // groups, taps=geom.taps,
              dtype=x.dtype):
        be.launch_tiled("pac_fwd_tiled", x.dtype, geom, args, B=B, groups=groups,
                        rows=cout // groups, cols=nout)
    else:
        _launch1d(be, "pac_fwd_direct", B * cout * nout, args, x.dtype)
    return out


#: tiled kernels: TILE x TILE outputs per block, 4 x 4 per thread, so (TILE / 4)^2
#: threads (a backend may use a smaller tile: its ``tile`` attribute)
TILE = 64
TILE_THREADS = (TILE // 4) ** 2


def tiled_launch_config(name, dtype, geom, *, B, groups, rows, cols, nsplit=1, tile=TILE):
    """(grid, block, dynamic shared bytes) of a tiled kernel of kernels/pac.cu (or its
    Numba twin) with ``tile`` x ``tile`` output tiles."""
    item = np.dtype(dtype).itemsize
    shared = 0
    if name in ("pac_fwd_tiled", "pac_bwd_input_tiled"):
        grid = (-(-cols // tile), groups * -(-rows // tile), B)
        shared = geom.taps * tile * (item + 4)
    elif name == "pac_bwd_weight_tiled":
        grid = (-(-cols // tile), groups * -(-rows // tile), nsplit)
    elif name == "pac_bwd_kernel_tiled":
        grid = (-(-cols // tile), rows, B)
    else:
        raise KeyError(name)
    if grid[1] > 65535 or grid[2] > 65535:
        raise ValueError(f"{name}: grid {grid} exceeds CUDA's limits; split the batch")
    return grid, ((tile // 4) ** 2, 1, 1), shared


def _weight_splits(be, ntot, blocks_per_split):
    target = max(1, be.target_blocks // max(blocks_per_split, 1))
    nsplit = max(1, min(target, -(-ntot // be.min_split), 65535))
    split_len = -(-ntot // nsplit)
    split_len = -(-split_len // 16) * 16
    nsplit = -(-ntot // split_len)
    return nsplit, split_len


def pac_vjp(be, grad_out, x, weight, geom, groups, *, K=None, guide=None, spec=None, mask=None,
            needs=("input", "weight", "bias", "guide")):
    xp = _xp(be, x)
    B, cin = x.shape[:2]
    cout = weight.shape[0]
    cin_g, cout_g = cin // groups, cout // groups
    nd = geom.ndim
    T = geom.taps
    nout = math.prod(geom.out_size)
    dtype = x.dtype
    res = {}
    if "bias" in needs:
        res["bias"] = grad_out.sum(axis=(0,) + tuple(range(2, 2 + nd)))
    k_needs = {"adapting"} if K is not None else ({"guide", "alpha", "lam"} if guide is not None
                                                  else set())
    need_k = bool(k_needs & set(needs))
    need_x, need_w = "input" in needs, "weight" in needs
    if not (need_x or need_w or need_k):
        return res

    d = _dummy(be, x)
    cg = guide.shape[1] if guide is not None else 0
    cw = bool(guide is not None and spec.channel_wise)
    kmode, ck = _k_source(K, guide, spec, cin)
    Kbuf, zinv = (K if K is not None else d), d
    if guide is not None and not cw:
        # K shared by all channels: materialise it once, (B, 1, T, out)
        Kbuf = _adapting_fwd(be, guide, geom, spec, mask, ck=1, cw=False)
        kmode = 1
    elif cw and spec.normalize:
        zinv = _adapting_zinv(be, guide, geom, spec, mask, ck=cin, cw=True)
    alpha, lam = (_params_arrays(be, spec, cg if cw else 1, x) if kmode == 2 else (d, d))
    g_ = guide if (guide is not None and kmode == 2) else d
    m_ = mask if (mask is not None and kmode == 2) else d
    base = dict(B=B, cin=cin, cout=cout, groups=groups, cg=cg, ck=ck, kmode=kmode, cw=cw,
                spec=spec if kmode == 2 else None, has_mask=mask is not None and kmode == 2)

    if need_x:
        gx = xp.empty_like(x)
        Pd = be.params(make_params(geom, **base))
        if _tiled(be, "bwd_input", ck=ck, cin_g=cin_g, cout_g=cout_g, taps=T, dtype=dtype,
                  kmode=kmode):
            be.launch_tiled("pac_bwd_input_tiled", dtype, geom, (Pd, weight, grad_out, Kbuf, gx),
                            B=B, groups=groups, rows=cin_g, cols=math.prod(geom.in_size))
        else:
            _launch1d(be, "pac_bwd_input_direct", gx.size,
                      (Pd, weight, grad_out, Kbuf, g_, m_, alpha, lam, zinv, gx), dtype)
        res["input"] = gx

    if need_w:
        ntot = B * nout
        wn = cout * cin_g * T
        if _tiled(be, "bwd_weight", ck=ck, cin_g=cin_g, cout_g=cout_g, taps=T, dtype=dtype,
                  kmode=kmode) and ntot <= _INT32_MAX:
            tile = getattr(be, "tile", TILE)
            tiles = -(-cin_g * T // tile) * groups * -(-cout_g // tile)
            nsplit, split_len = _weight_splits(be, ntot, tiles)
            ws = xp.empty((nsplit, cout, cin_g * T), dtype=dtype)
            Pd = be.params(make_params(geom, **base, nsplit=nsplit, split_len=split_len))
            be.launch_tiled("pac_bwd_weight_tiled", dtype, geom, (Pd, x, grad_out, Kbuf, ws),
                            B=B, groups=groups, rows=cout_g, cols=cin_g * T, nsplit=nsplit)
        else:
            nsplit = max(1, min(be.target_threads // max(wn, 1), -(-ntot // be.min_split)))
            split_len = -(-ntot // nsplit)
            nsplit = -(-ntot // split_len)
            ws = xp.empty((nsplit, wn), dtype=dtype)
            Pd = be.params(make_params(geom, **base, nsplit=nsplit, split_len=split_len))
            _launch1d(be, "pac_bwd_weight_direct", ws.size,
                      (Pd, x, grad_out, Kbuf, g_, m_, alpha, lam, zinv, ws), dtype)
        res["weight"] = ws.sum(axis=0).reshape(weight.shape)

    if need_k:
        res.update(_kernel_grads(be, grad_out, x, weight, geom, groups, K=K, guide=guide,
                                 spec=spec, mask=mask, needs=needs, ck=ck, cw=cw))
    return res


def _bwd_kernel(be, grad_out, x, weight, geom, groups, *, ck, cw, c0, out):
    """dL/dK (B, ck, T, out) of channels c0.. (cw) or summed over channels."""
    B, cin = x.shape[:2]
    cout = weight.shape[0]
    nout = math.prod(geom.out_size)
    P = make_params(geom, B=B, cin=cin, cout=cout, groups=groups, ck=ck, cw=cw, c0=c0, kmode=1)
    args = (be.params(P), x, weight, grad_out, out)
    if not cw and ck == 1 and _tiled(be, "bwd_kernel", ck=1, cin_g=cin // groups,
                                     cout_g=cout // groups, taps=geom.taps, dtype=x.dtype):
        be.launch_tiled("pac_bwd_kernel_tiled", x.dtype, geom, args, B=B, groups=groups,
                        rows=geom.taps, cols=nout)
    else:
        _launch1d(be, "pac_bwd_kernel_direct", out.size, args, x.dtype)
    return out


def _kernel_grads(be, grad_out, x, weight, geom, groups, *, K, guide, spec, mask, needs, ck, cw):
    xp = _xp(be, x)
    B, cin = x.shape[:2]
    T = geom.taps
    nout = math.prod(geom.out_size)
    res = {}
    if K is not None:
        gK = xp.empty((B, ck, T, nout), dtype=x.dtype)
        _bwd_kernel(be, grad_out, x, weight, geom, groups, ck=ck, cw=ck > 1, c0=0, out=gK)
        res["adapting"] = gK.reshape(K.shape)
        return res
    kneeds = tuple(n for n in needs if n in ("guide", "alpha", "lam"))
    if not cw:
        gK = xp.empty((B, 1, T, nout), dtype=x.dtype)
        _bwd_kernel(be, grad_out, x, weight, geom, groups, ck=1, cw=False, c0=0, out=gK)
        sums, gg = _adapting_backward(be, gK, guide, geom, spec, mask, ck=1, cw=False, c0=0,
                                      needs=kneeds)
    else:
        per_channel = B * T * nout
        cc = max(1, min(cin, be.chunk_elements // max(per_channel, 1), 65535 // max(B, 1)))
        gK = xp.empty((B, cc, T, nout), dtype=x.dtype)
        gg = xp.empty_like(guide) if "guide" in kneeds else None
        parts = []
        for c0 in range(0, cin, cc):
            n = min(cc, cin - c0)
            buf = gK if n == cc else xp.empty((B, n, T, nout), dtype=x.dtype)
            _bwd_kernel(be, grad_out, x, weight, geom, groups, ck=n, cw=True, c0=c0, out=buf)
            s, _ = _adapting_backward(be, buf, guide, geom, spec, mask, ck=n, cw=True, c0=c0,
                                      needs=kneeds, grad_guide=gg)
            parts.append(s)
        sums = xp.concatenate(parts, axis=0)
    if spec.kind == "inverse":
        if "alpha" in needs:
            res["alpha"] = sums[:, 0].copy()
        if "lam" in needs:
            res["lam"] = sums[:, 1].copy()
    if "guide" in needs:
        res["guide"] = gg
    return res
