"""PAC forward and vector-Jacobian products: Numba CUDA kernels (twins of the
direct and tiled kernels of ``kernels/pac.cu``) and the engine functions.

Forward and transposed geometry share every kernel (the index maps switch on
``P[TRANSPOSED]``; nothing zero-inserted or unfolded is built). K source
``P[KMODE]``: 0 none, 1 buffer (B, CK, T, out), 2 from the guide (fused in the
forward; the backward kernels scale by the normaliser 1/Z).
"""

from numba import cuda, float32, float64, int32

from . import _device as dv
from . import config
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


# --------------------------------------------------------------------------- tiled forward
# The tiled kernels' compile-time shape (module globals, frozen when a kernel is
# compiled): TILE x TILE outputs (out channels x pixels) per block, 4 x 4 per
# thread, so QT = TILE / 4 threads per tile side and TILE_THREADS = QT^2; k-chunks
# of TK. Set by set_tile() from config.TILE / config.TILE_K (64 / 16, as
# kernels/pac.cu; the simulator tests shrink them).
TILE = TK = QT = TILE_THREADS = STAGE = QWORDS = CWORDS = RED = 0


def set_tile(tile, tk):
    """Set the tiled kernels' shape and build fresh (uncompiled) kernels for it."""
    global TILE, TK, QT, TILE_THREADS, STAGE, QWORDS, CWORDS, RED
    TILE, TK, QT = tile, tk, tile // 4
    TILE_THREADS = QT * QT
    STAGE = TK * TILE          # elements of one staged operand chunk
    QWORDS = 4 * TK            # bwd_weight: b, y0, y1, y2 of a chunk's (b, y)
    CWORDS = 5 * TILE          # bwd_weight: c, t, t0, t1, t2 of the tile's columns
    RED = QT * TILE            # bwd_kernel: per-row-of-threads partial sums
    KERNELS.update({"pac_fwd_tiled": _per_dtype(_fwd_tiled_for),
                    "pac_bwd_input_tiled": _per_dtype(_bwd_input_tiled_for),
                    "pac_bwd_weight_tiled": _per_dtype(_bwd_weight_tiled_for),
                    "pac_bwd_kernel_tiled": _per_dtype(_bwd_kernel_tiled_for)})


@dv.device
def _dims(P):
    """(taps, in pixels, out pixels, Cin, Cout, Cin/groups, Cout/groups) of a launch."""
    return (P[dv.NTAPS], P[dv.NIN], P[dv.NOUT], P[dv.CIN], P[dv.COUT], P[dv.CIN_G],
            P[dv.COUT_G])


@dv.device
def _row_tile(rows_g):
    """(group, first row) of this block: grid y enumerates (group, 64-row tile)."""
    mtiles = (rows_g + TILE - 1) // TILE
    return cuda.blockIdx.y // mtiles, (cuda.blockIdx.y % mtiles) * TILE


@dv.device
def _zero(acc):
    for i in range(acc.shape[0]):
        acc[i] = 0


@dv.device
def _store_tile(acc, dst, base, stride, M, N, tr, tc, bias, bias0, has_bias):
    """``dst[base + m * stride + n] = acc[m, n] (+ bias[bias0 + m])`` for the thread's
    4 x 4 outputs inside the tile's M x N."""
    for i in range(4):
        m = tr * 4 + i
        if m < M:
            for j in range(4):
                n = tc * 4 + j
                if n < N:
                    v = acc[i * 4 + j]
                    if has_bias:
                        v += bias[bias0 + m]
                    dst[base + m * stride + n] = v


@dv.device
def _mma_chunk(As, Bs, acc, tr, tc):
    """acc[i, j] += sum_kk As[kk, 4 tr + i] Bs[kk, 4 tc + j] over a staged TK-chunk."""
    for kk in range(TK):
        for i in range(4):
            a = As[kk * TILE + tr * 4 + i]
            for j in range(4):
                acc[i * 4 + j] += a * Bs[kk * TILE + tc * 4 + j]


def _fwd_tiled_for(ft):
    """``pac_fwd_tiled`` for storage type ``ft`` (numba float32/float64): the twin of
    kernels/pac.cu's — an implicit GEMM ``out[o, y] = sum_{c,t} W[o, c, t] (K[t, y]
    x[c, in(y, t)])`` over 64 x 64 tiles, K of the block's 64 pixels computed once
    into shared memory (fused: no K buffer), operands staged in shared memory,
    accumulated in ``ft``. Grid (ceil(out / 64), groups * ceil(Cout_g / 64), B);
    dynamic shared memory T * 64 * (itemsize + 4) bytes: K then the input indices."""
    words = ft.bitwidth // 32  # int32 slots per K value

    @cuda.jit
    def pac_fwd_tiled(P, x, w, bias, K, guide, mask, alpha, lam, out):
        As = cuda.shared.array(STAGE, ft)
        Bs = cuda.shared.array(STAGE, ft)
        sK = cuda.shared.array(0, ft)
        sI = cuda.shared.array(0, int32)
        T, nin, nout, cin, cout, cin_g, cout_g = _dims(P)
        kmode = P[dv.KMODE]
        ioff = T * TILE * words
        b = cuda.blockIdx.z
        n0 = cuda.blockIdx.x * TILE
        grp, m0 = _row_tile(cout_g)
        tid = cuda.threadIdx.x
        for e in range(tid, T * TILE, TILE_THREADS):
            t = e // TILE
            yf = n0 + e % TILE
            idx = -1
            kv = 0.0
            if yf < nout:
                y0, y1, y2 = dv.unflat3(yf, P, dv.OUT)
                t0, t1, t2 = dv.unflat3(t, P, dv.KS)
                idx = dv.in_flat(P, y0, y1, y2, t0, t1, t2)
                if kmode == 0:
                    kv = 1.0
                elif kmode == 1:
                    kv = float64(K[(b * T + t) * nout + yf])
                else:
                    cf = dv.centre_flat(P, y0, y1, y2)
                    kv = dv.kraw(P, guide, mask, alpha, lam, b, 0, y0, y1, y2, t0, t1, t2, cf)[0]
            sI[ioff + e] = idx
            sK[e] = kv
        cuda.syncthreads()
        if kmode == 2 and P[dv.NORMALIZE] != 0:
            for n in range(tid, TILE, TILE_THREADS):
                Z = 0.0
                for t in range(T):
                    Z += float64(sK[t * TILE + n])
                if Z == 0.0:
                    Z = 1.0
                for t in range(T):
                    sK[t * TILE + n] = float64(sK[t * TILE + n]) / Z
            cuda.syncthreads()

        kd = cin_g * T
        wbase = (grp * cout_g + m0) * kd
        xbase = (b * cin + grp * cin_g) * nin
        M = min(TILE, cout_g - m0)
        N = min(TILE, nout - n0)
        tr = tid // QT
        tc = tid % QT
        acc = cuda.local.array(16, ft)
        _zero(acc)
        for k0 in range(0, kd, TK):
            for i in range(STAGE // TILE_THREADS):  # A = W rows, k fastest
                e = tid + i * TILE_THREADS
                kk = e % TK
                mm = e // TK
                k = k0 + kk
                v = ft(0)
                if mm < M and k < kd:
                    v = w[wbase + mm * kd + k]
                As[kk * TILE + mm] = v
            for i in range(STAGE // TILE_THREADS):  # B = K-weighted input, pixel fastest
                e = tid + i * TILE_THREADS
                nn = e % TILE
                kk = e // TILE
                k = k0 + kk
                v = ft(0)
                if nn < N and k < kd:
                    c = k // T
                    t = k - c * T
                    idx = sI[ioff + t * TILE + nn]
                    if idx >= 0:
                        v = sK[t * TILE + nn] * x[xbase + c * nin + idx]
                Bs[kk * TILE + nn] = v
            cuda.syncthreads()
            _mma_chunk(As, Bs, acc, tr, tc)
            cuda.syncthreads()
        _store_tile(acc, out, (b * cout + grp * cout_g + m0) * nout + n0, nout, M, N, tr, tc,
                    bias, grp * cout_g + m0, P[dv.HAS_BIAS] != 0)

    return pac_fwd_tiled


def _bwd_input_tiled_for(ft):
    """``pac_bwd_input_tiled`` for storage type ``ft``: ``gx[c, z] = sum_{o,t} W[o, c, t]
    (K[t, y] gout[o, y])`` with ``y = in^-1(z, t)``, a gather over the outputs that
    read ``z`` (no atomics). Grid (ceil(in / 64), groups * ceil(Cin_g / 64), B);
    dynamic shared memory as the forward's; K from a buffer (kmode 1) or none."""
    words = ft.bitwidth // 32

    @cuda.jit
    def pac_bwd_input_tiled(P, w, gout, K, gx):
        As = cuda.shared.array(STAGE, ft)
        Bs = cuda.shared.array(STAGE, ft)
        sK = cuda.shared.array(0, ft)
        sI = cuda.shared.array(0, int32)
        T, nin, nout, cin, cout, cin_g, cout_g = _dims(P)
        kmode = P[dv.KMODE]
        ioff = T * TILE * words
        b = cuda.blockIdx.z
        n0 = cuda.blockIdx.x * TILE
        grp, m0 = _row_tile(cin_g)
        tid = cuda.threadIdx.x
        for e in range(tid, T * TILE, TILE_THREADS):
            t = e // TILE
            zf = n0 + e % TILE
            yi = -1
            kv = 0.0
            if zf < nin:
                z0, z1, z2 = dv.unflat3(zf, P, dv.IN)
                t0, t1, t2 = dv.unflat3(t, P, dv.KS)
                yi = dv.in_inverse_flat(P, z0, z1, z2, t0, t1, t2)
                if yi >= 0:
                    kv = 1.0
                    if kmode == 1:
                        kv = float64(K[(b * T + t) * nout + yi])
            sI[ioff + e] = yi
            sK[e] = kv
        cuda.syncthreads()

        kd = cout_g * T
        wbase = (grp * cout_g * cin_g + m0) * T
        gbase = (b * cout + grp * cout_g) * nout
        M = min(TILE, cin_g - m0)
        N = min(TILE, nin - n0)
        tr = tid // QT
        tc = tid % QT
        acc = cuda.local.array(16, ft)
        _zero(acc)
        for k0 in range(0, kd, TK):
            for i in range(STAGE // TILE_THREADS):  # A = W[o, c, t], k = (o, t) fastest
                e = tid + i * TILE_THREADS
                kk = e % TK
                mm = e // TK
                k = k0 + kk
                v = ft(0)
                if mm < M and k < kd:
                    o = k // T
                    t = k - o * T
                    v = w[wbase + (o * cin_g + mm) * T + t]
                As[kk * TILE + mm] = v
            for i in range(STAGE // TILE_THREADS):  # B = K-weighted gout, pixel fastest
                e = tid + i * TILE_THREADS
                nn = e % TILE
                kk = e // TILE
                k = k0 + kk
                v = ft(0)
                if nn < N and k < kd:
                    o = k // T
                    t = k - o * T
                    yi = sI[ioff + t * TILE + nn]
                    if yi >= 0:
                        v = sK[t * TILE + nn] * gout[gbase + o * nout + yi]
                Bs[kk * TILE + nn] = v
            cuda.syncthreads()
            _mma_chunk(As, Bs, acc, tr, tc)
            cuda.syncthreads()
        _store_tile(acc, gx, (b * cin + grp * cin_g + m0) * nin + n0, nin, M, N, tr, tc, gx, 0,
                    False)

    return pac_bwd_input_tiled


def _bwd_weight_tiled_for(ft):
    """``pac_bwd_weight_tiled`` for storage type ``ft``: ``ws[split, o, (c, t)] =
    sum_{(b, y) in split} gout[o, y] (K[t, y] x[c, in(y, t)])``, the splits summed
    afterwards (deterministic, no atomics). Grid (ceil(Cin_g * T / 64),
    groups * ceil(Cout_g / 64), NSPLIT)."""

    @cuda.jit
    def pac_bwd_weight_tiled(P, x, gout, K, ws):
        As = cuda.shared.array(STAGE, ft)
        Bs = cuda.shared.array(STAGE, ft)
        sQ = cuda.shared.array(QWORDS, int32)   # b, y0, y1, y2 of the chunk's (b, y)
        sQf = cuda.shared.array(TK, int32)      # flat y
        sC = cuda.shared.array(CWORDS, int32)  # c, t, t0, t1, t2 of the tile's columns
        T, nin, nout, cin, cout, cin_g, cout_g = _dims(P)
        kmode = P[dv.KMODE]
        ncol = cin_g * T
        n0 = cuda.blockIdx.x * TILE
        grp, m0 = _row_tile(cout_g)
        tid = cuda.threadIdx.x
        ntot = P[dv.PB] * nout
        lo = cuda.blockIdx.z * P[dv.SPLIT_LEN]
        hi = min(lo + P[dv.SPLIT_LEN], ntot)
        for n in range(tid, TILE, TILE_THREADS):
            col = n0 + n if n0 + n < ncol else 0
            cl = col // T
            t = col - cl * T
            t0, t1, t2 = dv.unflat3(t, P, dv.KS)
            sC[n * 5] = grp * cin_g + cl
            sC[n * 5 + 1] = t
            sC[n * 5 + 2] = t0
            sC[n * 5 + 3] = t1
            sC[n * 5 + 4] = t2
        cuda.syncthreads()

        gbase = grp * cout_g + m0
        M = min(TILE, cout_g - m0)
        N = min(TILE, ncol - n0)
        tr = tid // QT
        tc = tid % QT
        acc = cuda.local.array(16, ft)
        _zero(acc)
        for k0 in range(lo, hi, TK):
            if tid < TK:
                q = k0 + tid
                bb = 0
                yf = 0
                y0 = 0
                y1 = 0
                y2 = 0
                if q < hi:
                    bb = q // nout
                    yf = q - bb * nout
                    y0, y1, y2 = dv.unflat3(yf, P, dv.OUT)
                sQ[tid * 4] = bb
                sQ[tid * 4 + 1] = y0
                sQ[tid * 4 + 2] = y1
                sQ[tid * 4 + 3] = y2
                sQf[tid] = yf
            cuda.syncthreads()
            for i in range(STAGE // TILE_THREADS):  # A = gout rows, (b, y) fastest
                e = tid + i * TILE_THREADS
                kk = e % TK
                mm = e // TK
                v = ft(0)
                if mm < M and k0 + kk < hi:
                    v = gout[(sQ[kk * 4] * cout + gbase + mm) * nout + sQf[kk]]
                As[kk * TILE + mm] = v
            for i in range(STAGE // TILE_THREADS):  # B = K-weighted input, (b, y) fastest
                e = tid + i * TILE_THREADS
                kk = e % TK
                nn = e // TK
                v = ft(0)
                if nn < N and k0 + kk < hi:
                    bb = sQ[kk * 4]
                    xf = dv.in_flat(P, sQ[kk * 4 + 1], sQ[kk * 4 + 2], sQ[kk * 4 + 3],
                                    sC[nn * 5 + 2], sC[nn * 5 + 3], sC[nn * 5 + 4])
                    if xf >= 0:
                        v = x[(bb * cin + sC[nn * 5]) * nin + xf]
                        if kmode == 1:
                            v *= K[(bb * T + sC[nn * 5 + 1]) * nout + sQf[kk]]
                Bs[kk * TILE + nn] = v
            cuda.syncthreads()
            _mma_chunk(As, Bs, acc, tr, tc)
            cuda.syncthreads()
        _store_tile(acc, ws, (cuda.blockIdx.z * cout + grp * cout_g + m0) * ncol + n0, ncol, M, N,
                    tr, tc, ws, 0, False)

    return pac_bwd_weight_tiled


def _bwd_kernel_tiled_for(ft):
    """``pac_bwd_kernel_tiled`` for storage type ``ft``: ``gK[t, y] = sum_c x[c, in(y, t)]
    sum_o W[o, c, t] gout[o, y]``, a block per (64 pixels, tap), the inner sum as a
    tiled GEMM and the channel sum reduced in the block (deterministic). Grid
    (ceil(out / 64), T, B); gK (B, 1, T, out)."""

    @cuda.jit
    def pac_bwd_kernel_tiled(P, x, w, gout, gK):
        As = cuda.shared.array(STAGE, ft)
        Bs = cuda.shared.array(STAGE, ft)
        red = cuda.shared.array(RED, ft)
        sI = cuda.shared.array(TILE, int32)
        T, nin, nout, cin, cout, cin_g, cout_g = _dims(P)
        groups = P[dv.GROUPS]
        b = cuda.blockIdx.z
        t = cuda.blockIdx.y
        n0 = cuda.blockIdx.x * TILE
        tid = cuda.threadIdx.x
        tr = tid // QT
        tc = tid % QT
        N = min(TILE, nout - n0)
        for n in range(tid, TILE, TILE_THREADS):
            idx = -1
            if n < N:
                y0, y1, y2 = dv.unflat3(n0 + n, P, dv.OUT)
                t0, t1, t2 = dv.unflat3(t, P, dv.KS)
                idx = dv.in_flat(P, y0, y1, y2, t0, t1, t2)
            sI[n] = idx
        cuda.syncthreads()

        part = cuda.local.array(4, ft)
        acc = cuda.local.array(16, ft)
        for j in range(4):
            part[j] = 0
        for grp in range(groups):
            gbase = (b * cout + grp * cout_g) * nout + n0
            for m0 in range(0, cin_g, TILE):
                wbase = (grp * cout_g * cin_g + m0) * T + t
                M = min(TILE, cin_g - m0)
                _zero(acc)
                for k0 in range(0, cout_g, TK):
                    for i in range(STAGE // TILE_THREADS):  # A = W[o, c, t]^T, c fastest
                        e = tid + i * TILE_THREADS
                        mm = e % TILE
                        kk = e // TILE
                        k = k0 + kk
                        v = ft(0)
                        if mm < M and k < cout_g:
                            v = w[wbase + (k * cin_g + mm) * T]
                        As[kk * TILE + mm] = v
                    for i in range(STAGE // TILE_THREADS):  # B = gout, pixel fastest
                        e = tid + i * TILE_THREADS
                        nn = e % TILE
                        kk = e // TILE
                        k = k0 + kk
                        v = ft(0)
                        if nn < N and k < cout_g:
                            v = gout[gbase + k * nout + nn]
                        Bs[kk * TILE + nn] = v
                    cuda.syncthreads()
                    _mma_chunk(As, Bs, acc, tr, tc)
                    cuda.syncthreads()
                xb = (b * cin + grp * cin_g + m0) * nin
                for j in range(4):
                    idx = sI[tc * 4 + j]
                    if idx >= 0:
                        for i in range(4):
                            m = tr * 4 + i
                            if m < M:
                                part[j] += acc[i * 4 + j] * x[xb + m * nin + idx]
        for j in range(4):
            red[tr * TILE + tc * 4 + j] = part[j]
        cuda.syncthreads()
        for n in range(tid, N, TILE_THREADS):
            s = ft(0)
            for r in range(QT):
                s += red[r * TILE + n]
            gK[(b * T + t) * nout + n0 + n] = s

    return pac_bwd_kernel_tiled


def _per_dtype(factory):
    return {"float32": factory(float32), "float64": factory(float64)}


#: name -> kernel, or -> {dtype name: kernel} for kernels specialised per storage type
KERNELS = {"pac_fwd_direct": pac_fwd_direct, "pac_bwd_input_direct": pac_bwd_input_direct,
           "pac_bwd_weight_direct": pac_bwd_weight_direct,
           "pac_bwd_kernel_direct": pac_bwd_kernel_direct}
set_tile(config.TILE, config.TILE_K)


def pac_forward(x, weight, bias, geom, groups, *, K=None, guide=None, spec=None, mask=None):
    return common.pac_forward(backend(), x, weight, bias, geom, groups, K=K, guide=guide,
                              spec=spec, mask=mask)


def pac_vjp(grad_out, x, weight, geom, groups, *, K=None, guide=None, spec=None, mask=None,
            needs=("input", "weight", "bias", "guide")):
    return common.pac_vjp(backend(), grad_out, x, weight, geom, groups, K=K, guide=guide,
                          spec=spec, mask=mask, needs=needs)
