"""Dense-groups PAC backward (Numba): the forward's fused units, run backwards.

One work unit is a segment of one output row of a tap class (at most
:data:`pacnd.engines.cpu.indexing.COL_BLOCK` pixels, as in :mod:`.dense`).
Per unit, everything stays in the thread's own buffers:

0. K of the segment (:func:`pacnd.engines.cpu.kernel_rows.segment_k`; phi
   and the squared distances kept when K's gradient goes on to the guide);
1. per group: the input rows the segment reads are staged (unit input
   stride; else read in place, as in :mod:`.dense`), the output gradient of
   the segment is packed as ``Gp`` (Cout/g, pixels) and transposed;
2. per block of :data:`KB` rows ``k = (cl, ti)`` of the (virtual) column
   matrix:

   * weight gradient: the block's K-weighted columns are packed and
     ``gW^T[k, o] += sum_p cols[k, p] gout[o, p]``
     (:func:`pacnd.engines.cpu.gemm.micro_kernel_w`, into per-thread sums);
   * ``G = W^T gout`` for the block (the forward's micro-kernel with the
     weights packed transposed), consumed row by row while in L1:
     ``gK[kc, ti, p] += G[k, p] x[in(p, ti)]`` and
     ``gx[in(p, ti)] += G[k, p] K[kc, ti, p]`` (into staged gradient rows,
     added to ``gx`` at the end of the group);

3. the K gradient: written to the full K gradient (a precomputed K), or
   through normalisation, mask and phi to alpha/lam sums and the guide
   (:func:`pacnd.engines.cpu.kernel_rows.kernel_rows_vjp`,
   :func:`pacnd.engines.cpu.kernel_rows.guide_grad_rows`).

No BLAS call, no tile-sized buffer, no column matrix: working memory is a few
row buffers per thread plus the per-thread weight-gradient sums.

Units write the input and guide gradients of neighbouring rows. Rows are cut
into blocks of at least ``reach`` rows (:func:`row_reach`: the largest row
distance at which two output rows touch a common input or guide row), and the
blocks run in two phases, even blocks then odd ones: blocks of one phase are
more than ``reach`` rows apart, so no two threads ever add to the same row,
and no atomics are needed. Blocks are claimed dynamically
(:func:`pacnd.engines.cpu.threads.parallel_for`).
"""

import numpy as np
from numba import njit

from .dense import _stage_rows
from .gemm import MR, MRW, NR_VECS, micro_kernel, micro_kernel_w
from .indexing import FASTMATH, decode_row, jrange, load_row, output_row, tap_of
from .kernel_rows import guide_grad_rows, kernel_rows_vjp, put_k_rows, segment_k
from .simd import lanes
from .threads import claim, parallel_for

__all__ = ["dense_vjp_class", "row_reach", "KB"]

#: Rows of the column matrix per block (a multiple of MR and MRW): packed
#: K-weighted columns of one block (KB x segment width) stay in L2.
KB = 120


def row_reach(tc, need_input, need_guide):
    """Largest distance between two class rows (flattened (b, j_d, j_h) order) whose
    units can add to a common input row (``need_input``) or guide row (``need_guide``)."""
    cls, taps = tc.cls, tc.taps
    reach = []
    for dim in (0, 1):
        nt = int(cls[dim, 3])
        spans = [0]
        if need_input:
            ib = taps[dim, :nt, 1]
            spans.append(int(ib.max() - ib.min()) // max(1, int(cls[dim, 4])))
        if need_guide:
            gb = np.append(taps[dim, :nt, 2], cls[dim, 6])
            spans.append(int(gb.max() - gb.min()) // max(1, int(cls[dim, 5])))
        reach.append(max(spans))
    return reach[0] * int(tc.n[1]) + reach[1]


def phases(nrows, reach):
    """Row blocks ``(r0, r1)`` of each phase: one phase when units never share a row,
    else even and odd blocks of ``max(reach, 1)`` rows."""
    if reach == 0:
        return [np.array([[r, r + 1] for r in range(nrows)], dtype=np.int64).reshape(-1, 2)]
    starts = list(range(0, nrows, reach))
    blocks = [(s, min(nrows, s + reach)) for s in starts]
    return [np.array(blocks[p::2], dtype=np.int64).reshape(-1, 2) for p in (0, 1)]


@njit(cache=True, fastmath=FASTMATH)
def _flush_rows(grows, rstride, gxf, x_shape, b, c_start, cin_g, cls, taps, jd, jh, w0):
    """Add the staged gradient rows to ``gx`` (inverse of :func:`.dense._stage_rows`:
    in-input rows and columns only)."""
    in_d, in_h, in_w = x_shape[2], x_shape[3], x_shape[4]
    td_n, th_n = cls[0, 3], cls[1, 3]
    lo = min(max(-w0, 0), rstride)
    hi = min(max(in_w - w0, lo), rstride)
    if hi <= lo:
        return
    for cl in range(cin_g):
        c = c_start + cl
        for tdi in range(td_n):
            idd = taps[0, tdi, 1] + jd * cls[0, 4]
            for thi in range(th_n):
                ihh = taps[1, thi, 1] + jh * cls[1, 4]
                if 0 <= idd < in_d and 0 <= ihh < in_h:
                    ro = ((cl * td_n + tdi) * th_n + thi) * rstride
                    src = grows[ro + lo:ro + hi]
                    base = (((b * x_shape[1] + c) * in_d + idd) * in_h + ihh) * in_w + w0
                    dst = gxf[base + lo:base + hi]
                    for i in range(hi - lo):
                        dst[i] += src[i]


@njit(cache=True, fastmath=FASTMATH)
def _pack_cols(Bb, ldb, src, Ktf, kmode, isw, staged, tab, ja, m, k0, k1):
    """``Bb[(k - k0)*ldb + j] = K[kc, ti, j] * x[in(ja + j, ti)]`` for rows ``[k0, k1)``,
    ``j < m`` (0 where the tap misses the input)."""
    for k in range(k0, k1):
        row = Bb[(k - k0) * ldb:(k - k0) * ldb + m]
        lo, hi = tab[k, 2], tab[k, 3]
        if lo >= hi:
            for j in range(m):
                row[j] = 0
            continue
        if staged:                       # every column readable: the padding holds zeros
            s = tab[k, 0] + ja
            xs = src[s:s + m]
            if kmode != 0:
                q = tab[k, 1] + ja
                ks = Ktf[q:q + m]
                for j in range(m):
                    row[j] = xs[j] * ks[j]
            else:
                for j in range(m):
                    row[j] = xs[j]
        else:
            a, e = lo - ja, hi - ja
            for j in range(a):
                row[j] = 0
            for j in range(e, m):
                row[j] = 0
            mid = row[a:e]
            xs = load_row(src, tab[k, 0], isw, lo, hi)
            if kmode != 0:
                ks = Ktf[tab[k, 1] + lo:tab[k, 1] + hi]
                for j in range(e - a):
                    mid[j] = xs[j] * ks[j]
            else:
                for j in range(e - a):
                    mid[j] = xs[j]


@njit(cache=True, fastmath=FASTMATH)
def _consume_g(grow, k, t_n, kc_of_c, c_start, src, grows, gxf, Ktf, gKf, ldk, kmode, isw, staged,
               tab, ja, m, need_x, need_k):
    """Row ``k`` of ``G`` (``grow``, the segment's pixels): K gradient and input gradient."""
    lo, hi = tab[k, 2], tab[k, 3]
    if lo >= hi:
        return
    cl = k // t_n
    ti = k - cl * t_n
    kc = (c_start + cl) * kc_of_c
    if staged:
        s = tab[k, 0] + ja
        if need_k:
            xs = src[s:s + m]
            gk = gKf[(kc * t_n + ti) * ldk:(kc * t_n + ti) * ldk + m]
            for j in range(m):
                gk[j] += grow[j] * xs[j]
        if need_x:
            gs = grows[s:s + m]
            if kmode != 0:
                q = tab[k, 1] + ja
                ks = Ktf[q:q + m]
                for j in range(m):
                    gs[j] += grow[j] * ks[j]
            else:
                for j in range(m):
                    gs[j] += grow[j]
    else:
        a, e = lo - ja, hi - ja
        gm = grow[a:e]
        if need_k:
            xs = load_row(src, tab[k, 0], isw, lo, hi)
            o = (kc * t_n + ti) * ldk
            gk = gKf[o + a:o + e]
            for j in range(e - a):
                gk[j] += gm[j] * xs[j]
        if need_x:
            p = tab[k, 0] + lo * isw
            if kmode != 0:
                ks = Ktf[tab[k, 1] + lo:tab[k, 1] + hi]
                for j in range(e - a):
                    gxf[p + j * isw] += gm[j] * ks[j]
            else:
                for j in range(e - a):
                    gxf[p + j * isw] += gm[j]


@njit(cache=True, fastmath=FASTMATH)
def _vjp_unit(r, ja, jb, tid, xf, x_shape, goutf, out_shape, WtP, nobt, groups, co_pad,
              ck, ksrc, kmode, guide, mask, geo, opt, alpha, lam, cst, Kfull, tap_ids, cls, taps,
              gxf, gWT, gKfull, grad_guide, part, need_x, need_w, need_k, need_guide, need_alpha,
              need_lam, rows, grows, Ku, Kr, D2, gKu, Gp, goutT, Bb, Gbuf, tab, tap_tab, f0, acc,
              buf):
    m = jb - ja
    td_n, th_n, tw_n = cls[0, 3], cls[1, 3], cls[2, 3]
    t_n = td_n * th_n * tw_n
    vw = lanes(xf)
    n = NR_VECS * vw
    mp = -(-m // n) * n
    cin_g = x_shape[1] // groups
    cout = out_shape[1]
    cout_g = cout // groups
    kdim = cin_g * t_n
    ldk = mp
    # 0. K of the segment, and its gradient buffer
    save = need_k and ksrc == 1
    K3 = Ku[:ck * t_n * ldk].reshape((ck, t_n, ldk))
    Kr3 = Kr[:ck * t_n * ldk].reshape((ck, t_n, ldk)) if save else K3
    D23 = D2[:ck * t_n * ldk].reshape((ck, t_n, ldk)) if save else K3
    if kmode != 0:
        # (no guide-row slots: the rows are staged per segment)
        segment_k(ksrc, r, ja, jb, guide, mask, geo, cls, taps, opt, alpha, lam, cst, Kfull,
                  tap_ids, K3, Kr3, D23, save, K3.reshape(-1)[:0],
                  np.full((0, 5), -1, dtype=np.int64))
    gKf = gKu[:ck * t_n * ldk]
    if need_k:
        for i in range(ck * t_n * ldk):
            gKf[i] = 0
    # 1. where each tap reads: staged rows (unit input stride) or the input itself
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    in_d, in_h, in_w = x_shape[2], x_shape[3], x_shape[4]
    cstride = in_d * in_h * in_w
    isw = cls[2, 4]
    staged = isw == 1
    wmin, wmax = taps[2, 0, 1], taps[2, 0, 1]
    for twi in range(tw_n):
        wmin = min(wmin, taps[2, twi, 1])
        wmax = max(wmax, taps[2, twi, 1])
    rstride = -(-(mp + wmax - wmin) // vw) * vw + vw
    nrow_buf = cin_g * td_n * th_n * rstride if staged else 0
    src = rows if staged else xf
    for ti in range(t_n):
        tap_tab[ti, 0] = 0
        tap_tab[ti, 1] = 0
        tap_tab[ti, 2] = 0
        tdi, thi, twi = tap_of(ti, th_n, tw_n)
        idd = taps[0, tdi, 1] + jd * cls[0, 4]
        ihh = taps[1, thi, 1] + jh * cls[1, 4]
        ibw = taps[2, twi, 1]
        if 0 <= idd < in_d and 0 <= ihh < in_h:
            l_, h_ = jrange(ibw, isw, in_w, ja, jb)
            if l_ < h_:
                if staged:
                    tap_tab[ti, 0] = (tdi * th_n + thi) * rstride + ibw - wmin - ja
                    tap_tab[ti, 1] = ja
                    tap_tab[ti, 2] = jb
                else:
                    tap_tab[ti, 0] = ((b * x_shape[1] * in_d + idd) * in_h + ihh) * in_w + ibw
                    tap_tab[ti, 1] = l_
                    tap_tab[ti, 2] = h_
    b_o, od, oh, o0w, osw = output_row(cls, r)
    oplane = out_shape[2] * out_shape[3] * out_shape[4]
    orow = ((b_o * cout * out_shape[2] + od) * out_shape[3] + oh) * out_shape[4] + o0w
    kc_of_c = 1 if kmode == 2 else 0
    for g in range(groups):
        c_start = g * cin_g
        if staged:
            _stage_rows(rows, rstride, xf, x_shape, b, c_start, cin_g, cls, taps, jd, jh,
                        ja + wmin)
            if need_x:
                for i in range(nrow_buf):
                    grows[i] = 0
        for cl in range(cin_g):
            c = c_start + cl
            cbase = cl * td_n * th_n * rstride if staged else c * cstride
            kc = c * kc_of_c
            for ti in range(t_n):
                k = cl * t_n + ti
                tab[k, 0] = tap_tab[ti, 0] + cbase
                tab[k, 1] = (kc * t_n + ti) * ldk - ja
                tab[k, 2] = tap_tab[ti, 1]
                tab[k, 3] = tap_tab[ti, 2]
        # the segment's output gradient (cout_g, mp), 0 past m; transposed for the weights
        for o in range(cout_g):
            gsrc = load_row(goutf, orow + (g * cout_g + o) * oplane, osw, ja, jb)
            dst = Gp[o * mp:(o + 1) * mp]
            for j in range(m):
                dst[j] = gsrc[j]
            for j in range(m, mp):
                dst[j] = 0
        if need_w:
            for j in range(m):
                row = goutT[j * co_pad:(j + 1) * co_pad]
                for o in range(cout_g):
                    row[o] = Gp[o * mp + j]
                for o in range(cout_g, co_pad):
                    row[o] = 0
        gw = gWT[tid, g]
        for kb0 in range(0, kdim, KB):
            kb1 = min(kdim, kb0 + KB)
            if need_w:
                _pack_cols(Bb, mp, src, Ku, kmode, isw, staged, tab, ja, m, kb0, kb1)
                kpad = -(-(kb1 - kb0) // MRW) * MRW
                for i in range((kb1 - kb0) * mp, kpad * mp):
                    Bb[i] = 0
                for i6 in range(0, kpad, MRW):
                    for ob in range(0, co_pad, 2 * vw):
                        micro_kernel_w(Bb, i6 * mp, mp, goutT, ob, co_pad, m, gw,
                                       (kb0 + i6) * co_pad + ob, co_pad)
            if need_x or need_k:
                for i4 in range(kb0, kb1, MR):
                    wo = (g * nobt + i4 // MR) * cout_g * MR
                    for j0 in range(0, mp, n):
                        micro_kernel(WtP, wo, Gp, j0, mp, cout_g, Gbuf, j0, mp, j0 < 0)
                    for i in range(min(MR, kb1 - i4)):
                        _consume_g(Gbuf[i * mp:i * mp + m], i4 + i, t_n, kc_of_c, c_start, src,
                                   grows, gxf, Ku, gKf, ldk, kmode, isw, staged, tab, ja, m,
                                   need_x, need_k)
        if need_x and staged:
            _flush_rows(grows, rstride, gxf, x_shape, b, c_start, cin_g, cls, taps, jd, jh,
                        ja + wmin)
    # 3. the K gradient (offset 0 in the unit's buffers: a run-time value, as the tile kernels
    # pass, so the row-segment cores compile once)
    pb0 = ja - ja
    if need_k:
        gK3 = gKf.reshape((ck, t_n, ldk))
        if ksrc == 2:
            put_k_rows(gK3, 0, b_o, od, oh, o0w, osw, tap_ids, ja, jb, gKfull)
        else:
            kernel_rows_vjp(r, ja, jb, pb0, mask, geo, cls, taps, opt, alpha, lam, cst, K3, Kr3,
                            D23, gK3, part[tid], need_guide, need_alpha, need_lam)
            if need_guide:
                for c in range(guide.shape[1]):
                    guide_grad_rows(c, r, ja, jb, pb0, guide, geo, cls, taps, opt, cst, gK3,
                                    grad_guide, f0, acc, buf)


@njit(nogil=True, cache=True)
def _vjp_blocks(tid, ctl, nslots, n, blocks, per_row, width, ncol, xf, x_shape, goutf, out_shape, WtP,
                nobt, groups, co_pad, ck, ksrc, kmode, guide, mask, geo, opt, alpha, lam, cst,
                Kfull, tap_ids, cls, taps, gxf, gWT, gKfull, grad_guide, part, need_x, need_w,
                need_k, need_guide, need_alpha, need_lam):
    """The row blocks ``blocks[u]`` of the slots claimed by this thread: slot ``s`` runs
    ``u = s, s + nslots, ...`` in order into ``gWT[s]`` / ``part[s]`` (deterministic sums,
    :data:`pacnd.engines.cpu.threads.SLOTS`); scratch allocated once per thread."""
    dt = xf.dtype
    vw = lanes(xf)
    nrp = NR_VECS * vw
    mp = -(-width // nrp) * nrp
    td_n, th_n, tw_n = cls[0, 3], cls[1, 3], cls[2, 3]
    t_n = td_n * th_n * tw_n
    cin_g = x_shape[1] // groups
    cout_g = out_shape[1] // groups
    kdim = cin_g * t_n
    wspan = 0
    for twi in range(tw_n):
        for twj in range(tw_n):
            wspan = max(wspan, taps[2, twi, 1] - taps[2, twj, 1])
    rstride = -(-(mp + wspan) // vw) * vw + vw
    nrow_buf = cin_g * td_n * th_n * rstride if cls[2, 4] == 1 else 1
    rows = np.empty(nrow_buf, dtype=dt)
    grows = np.empty(nrow_buf if need_x else 1, dtype=dt)
    kbuf = ck * t_n * mp if kmode != 0 else 1
    Ku = np.empty(kbuf, dtype=dt)
    Kr = np.empty(kbuf if need_k else 1, dtype=dt)
    D2 = np.empty(kbuf if need_k else 1, dtype=dt)
    gKu = np.empty(kbuf if need_k else 1, dtype=dt)
    Gp = np.empty(cout_g * mp, dtype=dt)
    goutT = np.empty(mp * co_pad if need_w else 1, dtype=dt)
    Bb = np.empty(KB * mp if need_w else 1, dtype=dt)
    Gbuf = np.empty(MR * mp, dtype=dt)
    tab = np.empty((kdim, 4), dtype=np.int64)
    tap_tab = np.empty((t_n, 3), dtype=np.int64)
    f0 = np.empty(mp, dtype=dt)
    acc = np.empty(mp, dtype=dt)
    buf = np.empty(mp, dtype=dt)
    slot = claim(ctl, tid)
    while slot < nslots:
        for u in range(slot, n, nslots):
            for r in range(blocks[u, 0], blocks[u, 1]):
                for s in range(per_row):
                    ja = s * width
                    jb = min(ja + width, ncol)
                    _vjp_unit(r, ja, jb, slot, xf, x_shape, goutf, out_shape, WtP, nobt, groups,
                              co_pad, ck, ksrc, kmode, guide, mask, geo, opt, alpha, lam, cst,
                              Kfull, tap_ids, cls, taps, gxf, gWT, gKfull, grad_guide, part,
                              need_x, need_w, need_k, need_guide, need_alpha, need_lam, rows,
                              grows, Ku, Kr, D2, gKu, Gp, goutT, Bb, Gbuf, tab, tap_tab, f0, acc,
                              buf)
        slot = claim(ctl, tid)


def dense_vjp_class(tc, xf, x_shape, goutf, out_shape, WtP, nobt, groups, co_pad, ksrc_args,
                    width, gxf, gWT, gKfull, grad_guide, part, flags):
    """Backward of one tap class (see module doc).

    ``WtP``/``nobt``: the class weights packed transposed
    (:func:`pacnd.engines.cpu.gemm.pack_rows` of ``W_g^T``); ``co_pad``: output
    channels per group rounded up to whole weight-gradient blocks;
    ``ksrc_args`` as in :func:`pacnd.engines.cpu.dense.dense_forward`; ``gWT``
    (slots, groups, kd_pad, co_pad): per-slot weight-gradient sums
    (transposed); ``part`` (slots, 2, Ck) float64: alpha/lam sums (same slots); ``flags``
    = (need_x, need_w, need_k, need_guide, need_alpha, need_lam).
    """
    need_x, need_w, need_k, need_guide = flags[:4]
    nrows = int(x_shape[0] * tc.n[0] * tc.n[1])
    ncol = int(tc.n[2])
    per_row = -(-ncol // width)
    reach = row_reach(tc, need_x, need_k and need_guide)
    for blocks in phases(nrows, reach):
        if len(blocks):
            parallel_for(_vjp_blocks, gWT.shape[0], len(blocks), blocks, per_row, width, ncol, xf, x_shape,
                         goutf, out_shape, WtP, nobt, groups, co_pad, *ksrc_args, tc.cls, tc.taps,
                         gxf, gWT, gKfull, grad_guide, part, *flags)
