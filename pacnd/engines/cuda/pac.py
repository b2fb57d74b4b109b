"""PAC forward and vector-Jacobian products: Numba CUDA kernels (twins of the
direct kernels of ``kernels/pac.cu``) and the engine functions.

Forward and transposed geometry share every kernel (the index maps switch on
``P[TRANSPOSED]``; nothing zero-inserted or unfolded is built). K source
``P[KMODE]``: 0 none, 1 buffer (B, CK, T, out), 2 from the guide (fused in the
forward; the backward kernels scale by the normaliser 1/Z).
"""

from numba import cuda, float64

from . import _device as dv
from ._backend import backend
from .. import _gpu_common as common

__all__ = ["pac_forward", "pac_vjp", "KERNELS"]


@cuda.jit
def pac_fwd_direct(P, x, w, bias, K, guide, mask, alpha, lam, out):
    """out[b, o, y], thread per (b, o, y), K computed in the loop (fused)."""
    T = P[dv.NTAPS]
    nin = P[dv.NIN]
    nout = P[dv.NOUT]
    cin = P[dv.CIN]
    cout = P[dv.COUT]
    cin_g = P[dv.CIN_G]
    cout_g = P[dv.COUT_G]
    kmode = P[dv.KMODE]
    ck = P[dv.CK]
    norm = kmode == 2 and P[dv.NORMALIZE] != 0
    total = P[dv.PB] * cout * nout
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        yf = e % nout
        bo = e // nout
        o = bo % cout
        b = bo // cout
        cbase = (o // cout_g) * cin_g
        y0, y1, y2 = dv.unflat3(yf, P, dv.OUT)
        cf = -1
        if kmode == 2:
            cf = dv.centre_flat(P, y0, y1, y2)
        wo = o * cin_g * T
        xo = (b * cin + cbase) * nin
        acc = 0.0
        if kmode == 0 or ck == 1:
            Z = 0.0
            for t in range(T):
                t0, t1, t2 = dv.unflat3(t, P, dv.KS)
                xf = dv.in_flat(P, y0, y1, y2, t0, t1, t2)
                kv = 1.0
                if kmode == 1:
                    kv = float64(K[(b * T + t) * nout + yf])
                elif kmode == 2:
                    kv = dv.kraw(P, guide, mask, alpha, lam, b, 0, y0, y1, y2, t0, t1, t2, cf)[0]
                Z += kv
                if xf < 0:
                    continue
                s = 0.0
                for c in range(cin_g):
                    s += float64(w[wo + c * T + t]) * float64(x[xo + c * nin + xf])
                acc += kv * s
            if norm:
                if Z == 0.0:
                    Z = 1.0
                acc /= Z
        else:
            for c in range(cin_g):
                cc = cbase + c
                Z = 0.0
                s = 0.0
                for t in range(T):
                    t0, t1, t2 = dv.unflat3(t, P, dv.KS)
                    xf = dv.in_flat(P, y0, y1, y2, t0, t1, t2)
                    if kmode == 1:
                        kv = float64(K[((b * ck + cc) * T + t) * nout + yf])
                    else:
                        kv = dv.kraw(P, guide, mask, alpha, lam, b, cc, y0, y1, y2, t0, t1, t2,
                                     cf)[0]
                    Z += kv
                    if xf >= 0:
                        s += kv * float64(w[wo + c * T + t]) * float64(x[xo + c * nin + xf])
                if norm:
                    if Z == 0.0:
                        Z = 1.0
                    s /= Z
                acc += s
        if P[dv.HAS_BIAS] != 0:
            acc += float64(bias[o])
        out[e] = acc


@cuda.jit
def pac_bwd_input_direct(P, w, gout, K, guide, mask, alpha, lam, zinv, gx):
    """dL/dx[b, c, z] as a gather over the outputs reading z, thread per (b, c, z)."""
    T = P[dv.NTAPS]
    nin = P[dv.NIN]
    nout = P[dv.NOUT]
    cin = P[dv.CIN]
    cout = P[dv.COUT]
    cin_g = P[dv.CIN_G]
    cout_g = P[dv.COUT_G]
    total = P[dv.PB] * cin * nin
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        zf = e % nin
        bc = e // nin
        c = bc % cin
        b = bc // cin
        grp = c // cin_g
        cl = c - grp * cin_g
        obase = grp * cout_g
        z0, z1, z2 = dv.unflat3(zf, P, dv.IN)
        acc = 0.0
        for t in range(T):
            t0, t1, t2 = dv.unflat3(t, P, dv.KS)
            yf = dv.in_inverse_flat(P, z0, z1, z2, t0, t1, t2)
            if yf < 0:
                continue
            y0, y1, y2 = dv.unflat3(yf, P, dv.OUT)
            kv = dv.k_at(P, K, guide, mask, alpha, lam, zinv, b, c, t, t0, t1, t2, yf,
                         y0, y1, y2)
            s = 0.0
            for oo in range(cout_g):
                s += (float64(w[((obase + oo) * cin_g + cl) * T + t])
                      * float64(gout[(b * cout + obase + oo) * nout + yf]))
            acc += kv * s
        gx[e] = acc


@cuda.jit
def pac_bwd_weight_direct(P, x, gout, K, guide, mask, alpha, lam, zinv, ws):
    """Thread per (split, o, c, t): sum over the split's share of (b, y) into
    ws[split, o, c, t]; the splits are summed afterwards (no atomics)."""
    T = P[dv.NTAPS]
    nin = P[dv.NIN]
    nout = P[dv.NOUT]
    cin = P[dv.CIN]
    cout = P[dv.COUT]
    cin_g = P[dv.CIN_G]
    cout_g = P[dv.COUT_G]
    wn = cout * cin_g * T
    ntot = P[dv.PB] * nout
    total = wn * P[dv.NSPLIT]
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        we = e % wn
        split = e // wn
        t = we % T
        r = we // T
        cl = r % cin_g
        o = r // cin_g
        c = (o // cout_g) * cin_g + cl
        lo = split * P[dv.SPLIT_LEN]
        hi = min(lo + P[dv.SPLIT_LEN], ntot)
        t0, t1, t2 = dv.unflat3(t, P, dv.KS)
        s = 0.0
        for q in range(lo, hi):
            yf = q % nout
            b = q // nout
            y0, y1, y2 = dv.unflat3(yf, P, dv.OUT)
            xf = dv.in_flat(P, y0, y1, y2, t0, t1, t2)
            if xf < 0:
                continue
            kv = dv.k_at(P, K, guide, mask, alpha, lam, zinv, b, c, t, t0, t1, t2, yf,
                         y0, y1, y2)
            s += (float64(gout[(b * cout + o) * nout + yf]) * kv
                  * float64(x[(b * cin + c) * nin + xf]))
        ws[e] = s


@cuda.jit
def pac_bwd_kernel_direct(P, x, w, gout, gK):
    """dL/dK (B, CK, T, out), thread per element; CK == 1 sums over all input
    channels, CW covers channels C0 + kc."""
    T = P[dv.NTAPS]
    nin = P[dv.NIN]
    nout = P[dv.NOUT]
    cin = P[dv.CIN]
    cout = P[dv.COUT]
    cin_g = P[dv.CIN_G]
    cout_g = P[dv.COUT_G]
    ck = P[dv.CK]
    cw = P[dv.CW] != 0
    total = P[dv.PB] * ck * T * nout
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        yf = e % nout
        r = e // nout
        t = r % T
        r = r // T
        kc = r % ck
        b = r // ck
        y0, y1, y2 = dv.unflat3(yf, P, dv.OUT)
        t0, t1, t2 = dv.unflat3(t, P, dv.KS)
        xf = dv.in_flat(P, y0, y1, y2, t0, t1, t2)
        acc = 0.0
        if xf >= 0:
            c_lo = 0
            c_hi = cin
            if cw:
                c_lo = P[dv.C0] + kc
                c_hi = c_lo + 1
            for c in range(c_lo, c_hi):
                grp = c // cin_g
                cl = c - grp * cin_g
                obase = grp * cout_g
                s = 0.0
                for oo in range(cout_g):
                    s += (float64(w[((obase + oo) * cin_g + cl) * T + t])
                          * float64(gout[(b * cout + obase + oo) * nout + yf]))
                acc += s * float64(x[(b * cin + c) * nin + xf])
        gK[e] = acc


KERNELS = {"pac_fwd_direct": pac_fwd_direct, "pac_bwd_input_direct": pac_bwd_input_direct,
           "pac_bwd_weight_direct": pac_bwd_weight_direct,
           "pac_bwd_kernel_direct": pac_bwd_kernel_direct}


def pac_forward(x, weight, bias, geom, groups, *, K=None, guide=None, spec=None, mask=None):
    return common.pac_forward(backend(), x, weight, bias, geom, groups, K=K, guide=guide,
                              spec=spec, mask=mask)


def pac_vjp(grad_out, x, weight, geom, groups, *, K=None, guide=None, spec=None, mask=None,
            needs=("input", "weight", "bias", "guide")):
    return common.pac_vjp(backend(), grad_out, x, weight, geom, groups, K=K, guide=guide,
                          spec=spec, mask=mask, needs=needs)
