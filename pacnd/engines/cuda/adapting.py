"""Adapting kernel K and its vector-Jacobian product: Numba CUDA kernels
(twins of ``kernels/adapting.cu``) and the engine functions.

K has layout (B, CK, T, out); a launch covers K channels kc < CK, which are
guide channels C0 + kc with a channel-wise K (CW), else the distance sums
over all guide channels.
"""

from numba import cuda, float64

from . import _device as dv
from ._backend import backend
from .. import _gpu_common as common

__all__ = ["adapting_kernel", "adapting_kernel_vjp", "KERNELS"]

#: static shared buffer of the block reductions (>= threads per block)
_RED = dv.MAX_THREADS


@cuda.jit
def adapting_fwd(P, guide, mask, alpha, lam, K):
    """K = phi * M (/ Z), thread per (b, kc, y)."""
    T = P[dv.NTAPS]
    nout = P[dv.NOUT]
    ck = P[dv.CK]
    total = P[dv.PB] * ck * nout
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        yf = e % nout
        bk = e // nout
        kc = bk % ck
        b = bk // ck
        y0, y1, y2 = dv.unflat3(yf, P, dv.OUT)
        cf = dv.centre_flat(P, y0, y1, y2)
        base = bk * T * nout + yf
        Z = 0.0
        for t in range(T):
            t0, t1, t2 = dv.unflat3(t, P, dv.KS)
            kr = dv.kraw(P, guide, mask, alpha, lam, b, kc, y0, y1, y2, t0, t1, t2, cf)[0]
            K[base + t * nout] = kr
            Z += kr
        if P[dv.NORMALIZE] != 0:
            if Z == 0.0:
                Z = 1.0
            for t in range(T):
                t0, t1, t2 = dv.unflat3(t, P, dv.KS)
                kr = dv.kraw(P, guide, mask, alpha, lam, b, kc, y0, y1, y2, t0, t1, t2, cf)[0]
                K[base + t * nout] = kr / Z


@cuda.jit
def adapting_zinv(P, guide, mask, alpha, lam, zinv):
    """1 / Z (Z + [Z == 0] to be exact), thread per (b, kc, y)."""
    T = P[dv.NTAPS]
    nout = P[dv.NOUT]
    ck = P[dv.CK]
    total = P[dv.PB] * ck * nout
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        yf = e % nout
        bk = e // nout
        kc = bk % ck
        b = bk // ck
        y0, y1, y2 = dv.unflat3(yf, P, dv.OUT)
        cf = dv.centre_flat(P, y0, y1, y2)
        Z = 0.0
        for t in range(T):
            t0, t1, t2 = dv.unflat3(t, P, dv.KS)
            Z += dv.kraw(P, guide, mask, alpha, lam, b, kc, y0, y1, y2, t0, t1, t2, cf)[0]
        if Z == 0.0:
            Z = 1.0
        zinv[e] = 1.0 / Z


@cuda.jit
def adapting_bwd_d2(P, guide, mask, alpha, lam, gK, partial):
    """dL/dK -> dL/dd2 in place; grid (gx, B * CK), block row (b, kc). partial[row, bx, 0|1]
    = the block's sums of dL/dalpha, dL/dlam."""
    buf = cuda.shared.array(_RED, float64)
    T = P[dv.NTAPS]
    nout = P[dv.NOUT]
    ck = P[dv.CK]
    kind = P[dv.KIND]
    row = cuda.blockIdx.y
    kc = row % ck
    b = row // ck
    norm = P[dv.NORMALIZE] != 0
    masked = norm or P[dv.HAS_MASK] != 0
    pc = 0
    if P[dv.CW] != 0:
        pc = P[dv.C0] + kc
    lamv = 0.0
    if kind == 2:
        lamv = float64(lam[pc])
    sa = 0.0
    sl = 0.0
    start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    for yf in range(start, nout, cuda.gridDim.x * cuda.blockDim.x):
        y0, y1, y2 = dv.unflat3(yf, P, dv.OUT)
        cf = dv.centre_flat(P, y0, y1, y2)
        base = row * T * nout + yf
        zs = 1.0
        S = 0.0
        if norm:
            Z = 0.0
            U = 0.0
            for t in range(T):
                t0, t1, t2 = dv.unflat3(t, P, dv.KS)
                kr = dv.kraw(P, guide, mask, alpha, lam, b, kc, y0, y1, y2, t0, t1, t2, cf)[0]
                Z += kr
                U += float64(gK[base + t * nout]) * kr
            zs = Z
            if Z == 0.0:
                zs = 1.0
            S = U / zs
        for t in range(T):
            t0, t1, t2 = dv.unflat3(t, P, dv.KS)
            kr, ph, d2, m = dv.kraw(P, guide, mask, alpha, lam, b, kc, y0, y1, y2, t0, t1, t2, cf)
            gt = float64(gK[base + t * nout])
            if norm:
                gt = (gt - S) / zs
            if masked:
                gt *= m
            if kind == 2:
                sa += gt
                sl += gt * dv.dphi_dlam_of(d2, lamv)
            gK[base + t * nout] = gt * dv.dphi_of(kind, d2, ph, lamv)
    ta = dv.block_sum(sa, buf)
    tl = dv.block_sum(sl, buf)
    if cuda.threadIdx.x == 0:
        o = (row * cuda.gridDim.x + cuda.blockIdx.x) * 2
        partial[o] = ta
        partial[o + 1] = tl


@cuda.jit
def adapting_bwd_guide(P, guide, gd2, grad_guide):
    """dL/dguide as a gather (no atomics), thread per (b, c, z)."""
    T = P[dv.NTAPS]
    nout = P[dv.NOUT]
    ng = P[dv.NG]
    cg = P[dv.CG]
    cw = P[dv.CW] != 0
    asym = P[dv.ASYM] != 0
    nch = cg
    c_off = 0
    ckt = 1
    if cw:
        nch = P[dv.CK]
        c_off = P[dv.C0]
        ckt = P[dv.CK]
    ct0 = P[dv.KS] // 2
    ct1 = P[dv.KS + 1] // 2
    ct2 = P[dv.KS + 2] // 2
    total = P[dv.PB] * nch * ng
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        zf = e % ng
        bc = e // ng
        cl = bc % nch
        b = bc // nch
        c = c_off + cl
        kc = 0
        if cw:
            kc = cl
        foff = (b * cg + c) * ng
        goff = (b * ckt + kc) * T * nout
        z0, z1, z2 = dv.unflat3(zf, P, dv.GS)
        fz = float64(guide[foff + zf])
        acc = 0.0
        for t in range(T):
            t0, t1, t2 = dv.unflat3(t, P, dv.KS)
            yf = dv.guide_inverse_flat(P, z0, z1, z2, t0, t1, t2)
            if yf < 0:
                continue
            y0, y1, y2 = dv.unflat3(yf, P, dv.OUT)
            cf = dv.guide_flat(P, y0, y1, y2, ct0, ct1, ct2)
            f0 = 0.0
            if cf >= 0:
                f0 = float64(guide[foff + cf])
            diff = fz - f0
            if asym and diff < 0.0:
                diff = 0.0
            acc += 2.0 * diff * float64(gd2[goff + t * nout + yf])
        y0f = dv.guide_inverse_flat(P, z0, z1, z2, ct0, ct1, ct2)
        if y0f >= 0:
            y0, y1, y2 = dv.unflat3(y0f, P, dv.OUT)
            for t in range(T):
                t0, t1, t2 = dv.unflat3(t, P, dv.KS)
                nf = dv.guide_flat(P, y0, y1, y2, t0, t1, t2)
                fn = 0.0
                if nf >= 0:
                    fn = float64(guide[foff + nf])
                diff = fn - fz
                if asym and diff < 0.0:
                    diff = 0.0
                acc -= 2.0 * diff * float64(gd2[goff + t * nout + y0f])
        grad_guide[foff + zf] = acc


KERNELS = {"adapting_fwd": adapting_fwd, "adapting_zinv": adapting_zinv,
           "adapting_bwd_d2": adapting_bwd_d2, "adapting_bwd_guide": adapting_bwd_guide}


def adapting_kernel(guide, geom, spec, mask=None):
    return common.adapting_kernel(backend(), guide, geom, spec, mask)


def adapting_kernel_vjp(grad_K, guide, geom, spec, mask=None, needs=("guide", "alpha", "lam")):
    return common.adapting_kernel_vjp(backend(), grad_K, guide, geom, spec, mask, needs)
