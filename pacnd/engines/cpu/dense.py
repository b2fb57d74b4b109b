"""Dense-groups PAC forward (Numba): K-weighted panels and a register-blocked product.

One parallel work unit is a segment of one output row of a tap class, at most
:data:`pacnd.engines.cpu.indexing.COL_BLOCK` pixels. Per unit:

0. K of the segment into the unit's own buffer
   (:func:`pacnd.engines.cpu.kernel_rows.segment_k`: from the guide with mask
   and normalisation fused, or copied from a precomputed K; none for a plain
   convolution) -- no K tile exists;
1. per tap, where its input row is (or that it is absent);
2. per group: the input rows the segment reads are staged, zero-padded, into
   the thread's row slots, which keep them for its next segment
   (:func:`_stage_ring`; unit input stride only);
3. per panel of :func:`pacnd.engines.cpu.gemm.nr` pixels and block of
   :data:`pacnd.engines.cpu.gemm.KC` rows: pack
   ``Bp[ti*Cin/g + cl, j] = K[kc, ti, j] * x[b, c, in(j, ti)]`` (0 off the
   input; rows tap-major, so the tap's K stays in registers over its channels)
   and run :func:`pacnd.engines.cpu.gemm.micro_kernel` for every block of
   ``MR`` output channels (a last panel of at most two vectors of pixels:
   two-vector rows and :func:`pacnd.engines.cpu.gemm.micro_kernel_2`); then
   write ``result + bias`` to the output.

Working memory per thread is the segment's K, the staged rows, one panel
block and the result block, independent of the image; no column matrix exists.

``kmode`` (here and in :mod:`.dense_vjp`, :mod:`.depthwise`): 0 no K, 1 one K
channel for all input channels, 2 one K channel per input channel.
"""

import numpy as np
from numba import njit

from .gemm import KC, MR, NR_VECS, micro_kernel, micro_kernel_2
from .indexing import COL_BLOCK, FASTMATH, decode_row, jrange, load_row, tap_of
from .kernel_rows import guide_slots, segment_k
from .simd import lanes, prefetch, vadd, vload, vmul, vsplat, vstore, vzeros
from .threads import claim, parallel_for

__all__ = ["dense_forward", "chunking"]


def chunking(ncol, panel, max_width=COL_BLOCK):
    """(units per row, columns per unit): balanced segments of at most ``max_width``
    (at least one ``panel``) columns, whole panels where possible."""
    max_width = max(panel, min(COL_BLOCK, max_width))
    per_row = -(-ncol // max_width)
    width = -(-ncol // per_row)
    width = min(max_width, -(-width // panel) * panel)
    return -(-ncol // width), width


@njit(cache=True, fastmath=FASTMATH)
def _pack_staged(Bp, rows, ldb, Ktf, ldk, kmode, kc0, j0, ja, tap_tab, cin_g, t_n, k0, k1, nv):
    """Rows ``[k0, k1)`` (``k = ti*cin_g + cl``) of the panel of ``nv`` (3 or 2) vectors of
    columns ``j0 + j`` from the staged rows (:func:`_stage_ring`: every column readable,
    the padding holds the zeros; channel ``cl`` of tap ``ti`` at ``tap_tab[ti, 0] +
    cl*ldb``): ``Bp[k - k0, j] = K * x``, ``nv`` vector loads, multiplies and stores per
    row, the tap's K vectors loaded once per tap; absent taps give zero rows."""
    # nv as a constant of each inlined copy, so the loops hold no test of it
    if nv == NR_VECS:
        _pack_staged_nv(Bp, rows, ldb, Ktf, ldk, kmode, kc0, j0, ja, tap_tab, cin_g, t_n, k0, k1,
                        NR_VECS)
    else:
        _pack_staged_nv(Bp, rows, ldb, Ktf, ldk, kmode, kc0, j0, ja, tap_tab, cin_g, t_n, k0, k1,
                        2)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _pack_staged_nv(Bp, rows, ldb, Ktf, ldk, kmode, kc0, j0, ja, tap_tab, cin_g, t_n, k0, k1, nv):
    """:func:`_pack_staged` with ``nv`` a constant (``NR_VECS == 3`` or 2)."""
    vw = lanes(Bp)
    n = nv * vw
    z = vzeros(Bp)
    k = k0
    while k < k1:
        ti = k // cin_g
        c_lo = k - ti * cin_g
        c_hi = min(cin_g, k1 - ti * cin_g)
        d = (k - k0) * n
        s = tap_tab[ti, 0] + j0 + c_lo * ldb
        if tap_tab[ti, 1] >= tap_tab[ti, 2]:            # the tap's row is off the input
            for cl in range(c_lo, c_hi):
                vstore(Bp, d, z)
                vstore(Bp, d + vw, z)
                if nv > 2:
                    vstore(Bp, d + 2 * vw, z)
                d += n
        elif kmode == 1:
            q = ti * ldk + j0 - ja
            k0v = vload(Ktf, q)
            k1v = vload(Ktf, q + vw)
            k2v = vload(Ktf, q + 2 * vw) if nv > 2 else k0v
            for cl in range(c_lo, c_hi):
                vstore(Bp, d, vmul(vload(rows, s), k0v))
                vstore(Bp, d + vw, vmul(vload(rows, s + vw), k1v))
                if nv > 2:
                    vstore(Bp, d + 2 * vw, vmul(vload(rows, s + 2 * vw), k2v))
                s += ldb
                d += n
        elif kmode == 0:
            for cl in range(c_lo, c_hi):
                vstore(Bp, d, vload(rows, s))
                vstore(Bp, d + vw, vload(rows, s + vw))
                if nv > 2:
                    vstore(Bp, d + 2 * vw, vload(rows, s + 2 * vw))
                s += ldb
                d += n
        else:                                           # one K per input channel
            for cl in range(c_lo, c_hi):
                q = ((kc0 + cl) * t_n + ti) * ldk + j0 - ja
                vstore(Bp, d, vmul(vload(rows, s), vload(Ktf, q)))
                vstore(Bp, d + vw, vmul(vload(rows, s + vw), vload(Ktf, q + vw)))
                if nv > 2:
                    vstore(Bp, d + 2 * vw, vmul(vload(rows, s + 2 * vw),
                                                vload(Ktf, q + 2 * vw)))
                s += ldb
                d += n
        k = ti * cin_g + c_hi


@njit(cache=True, fastmath=FASTMATH)
def _pack_panel(Bp, xf, Ktf, kmode, j0, tab, k0, k1, isw, n):
    """Rows ``[k0, k1)`` of the panel of ``n`` columns ``j0 + j``, read from the input
    itself (strided input, no staging): ``Bp[k - k0, j] = K * x`` inside the
    row's columns ``[lo, hi)``, 0 outside. Loops run over 0-based slices so that
    they vectorise (see :func:`pacnd.engines.cpu.indexing.load_row`).
    """
    for k in range(k0, k1):
        row = Bp[(k - k0) * n:(k - k0 + 1) * n]
        a = min(max(tab[k, 2] - j0, 0), n)
        e = min(max(tab[k, 3] - j0, a), n)
        for j in range(a):
            row[j] = 0
        for j in range(e, n):
            row[j] = 0
        if e > a:
            mid = row[a:e]
            xs = load_row(xf, tab[k, 0], isw, j0 + a, j0 + e)
            if kmode != 0:
                q = tab[k, 1] + j0
                ks = Ktf[q + a:q + e]
                for j in range(e - a):
                    mid[j] = xs[j] * ks[j]
            else:
                for j in range(e - a):
                    mid[j] = xs[j]


@njit(cache=True, fastmath=FASTMATH)
def _stage_rows(rows, rstride, xf, x_shape, b, c_start, cin_g, cls, taps, jd, jh, w0):
    """Copy the input rows a segment reads into ``rows``, zero-padded.

    ``rows[((cl*Td + tdi)*Th + thi)*rstride + i] = x[b, c_start + cl, d(tdi), h(thi), w0 + i]``
    (0 off the input). Input channels are a power-of-two number of bytes
    apart for power-of-two images, so reading a panel straight from ``x``
    makes every channel's row compete for the same cache sets; the staged rows
    are ``rstride`` apart instead, and zero padding removes the column bounds
    from the packing.
    """
    in_d, in_h, in_w = x_shape[2], x_shape[3], x_shape[4]
    td_n, th_n = cls[0, 3], cls[1, 3]
    lo = min(max(-w0, 0), rstride)
    hi = min(max(in_w - w0, lo), rstride)
    for cl in range(cin_g):
        c = c_start + cl
        for tdi in range(td_n):
            idd = taps[0, tdi, 1] + jd * cls[0, 4]
            for thi in range(th_n):
                ihh = taps[1, thi, 1] + jh * cls[1, 4]
                ro = ((cl * td_n + tdi) * th_n + thi) * rstride
                row = rows[ro:ro + rstride]
                if 0 <= idd < in_d and 0 <= ihh < in_h and hi > lo:
                    for i in range(lo):
                        row[i] = 0
                    for i in range(hi, rstride):
                        row[i] = 0
                    base = (((b * x_shape[1] + c) * in_d + idd) * in_h + ihh) * in_w + w0
                    src = xf[base + lo:base + hi]
                    mid = row[lo:hi]
                    for i in range(hi - lo):
                        mid[i] = src[i]
                else:
                    for i in range(rstride):
                        row[i] = 0


@njit(cache=True, fastmath=FASTMATH)
def _stage_ring(rows, rstride, slot_key, slot_of, xf, x_shape, b, g, cin_g, cls, taps, jd, jh,
                w0):
    """:func:`_stage_rows` for the forward, keeping the rows the thread staged before.

    ``rows[(cl*nslot + s)*rstride + i] = x[b, g*cin_g + cl, d, h, w0 + i]`` (0 off the
    input) for the input row ``(d, h)`` that slot ``s`` holds, ``slot_key[s] = (b, g, d,
    h, w0)``; ``slot_of[tdi*Th + thi]`` is set to the slot of each tap row (-1 for a
    row off the input: the packing gives its taps zero rows). Consecutive segments of
    one thread are usually the next output row, which reads all but one of the same
    input rows (a 5x5 kernel: 4 of 5), so only the rows no slot holds are copied.
    ``nslot = Td*Th`` slots always leave one free for each row to copy.
    """
    nslot = slot_key.shape[0]
    in_d, in_h, in_w = x_shape[2], x_shape[3], x_shape[4]
    td_n, th_n = cls[0, 3], cls[1, 3]
    used = np.zeros(nslot, dtype=np.bool_)
    for q in range(td_n * th_n):        # rows a slot holds already
        slot_of[q] = -1
        idd = taps[0, q // th_n, 1] + jd * cls[0, 4]
        ihh = taps[1, q % th_n, 1] + jh * cls[1, 4]
        if not (0 <= idd < in_d and 0 <= ihh < in_h):
            continue
        for sl in range(nslot):
            if (not used[sl] and slot_key[sl, 0] == b and slot_key[sl, 1] == g
                    and slot_key[sl, 2] == idd and slot_key[sl, 3] == ihh
                    and slot_key[sl, 4] == w0):
                slot_of[q] = sl
                used[sl] = True
                break
    lo = min(max(-w0, 0), rstride)
    hi = min(max(in_w - w0, lo), rstride)
    sl = 0
    for q in range(td_n * th_n):        # the others, into free slots
        idd = taps[0, q // th_n, 1] + jd * cls[0, 4]
        ihh = taps[1, q % th_n, 1] + jh * cls[1, 4]
        if slot_of[q] >= 0 or not (0 <= idd < in_d and 0 <= ihh < in_h):
            continue
        while sl < nslot and used[sl]:
            sl += 1
        if sl == nslot:                 # cannot happen (one slot per tap row)
            raise RuntimeError("no free slot for an input row")
        used[sl] = True
        slot_of[q] = sl
        slot_key[sl, 0] = b
        slot_key[sl, 1] = g
        slot_key[sl, 2] = idd
        slot_key[sl, 3] = ihh
        slot_key[sl, 4] = w0
        for cl in range(cin_g):
            ro = (cl * nslot + sl) * rstride
            row = rows[ro:ro + rstride]
            for i in range(lo):
                row[i] = 0
            for i in range(hi, rstride):
                row[i] = 0
            base = (((b * x_shape[1] + g * cin_g + cl) * in_d + idd) * in_h + ihh) * in_w + w0
            src = xf[base + lo:base + hi]
            mid = row[lo:hi]
            for i in range(hi - lo):
                mid[i] = src[i]


@njit(cache=True)
def _prefetch_ring(slot_key, xf, x_shape, b, groups, cin_g, cls, taps, jd, jh, w0, ncols):
    """Prefetch the input rows :func:`_stage_ring` will copy for a segment (those no slot
    holds), all groups: issued before the segment's K is computed, so their latency
    from memory overlaps that work instead of stalling the copy (a few new rows per
    segment, each too short for the hardware prefetcher to pick up)."""
    in_d, in_h, in_w = x_shape[2], x_shape[3], x_shape[4]
    td_n, th_n = cls[0, 3], cls[1, 3]
    lo = min(max(-w0, 0), ncols)
    hi = min(max(in_w - w0, lo), ncols)
    line = 2 * lanes(xf)                                # elements per 64-byte line
    for g in range(groups if hi > lo else 0):
        for q in range(td_n * th_n):
            idd = taps[0, q // th_n, 1] + jd * cls[0, 4]
            ihh = taps[1, q % th_n, 1] + jh * cls[1, 4]
            if not (0 <= idd < in_d and 0 <= ihh < in_h):
                continue
            held = False
            for sl in range(slot_key.shape[0]):
                held = held or (slot_key[sl, 0] == b and slot_key[sl, 1] == g
                                and slot_key[sl, 2] == idd and slot_key[sl, 3] == ihh
                                and slot_key[sl, 4] == w0)
            if held:
                continue
            for cl in range(cin_g):
                base = (((b * x_shape[1] + g * cin_g + cl) * in_d + idd) * in_h + ihh) * in_w + w0
                for i in range(base + lo, base + hi, line):
                    prefetch(xf, i)


@njit(cache=True, fastmath=FASTMATH)
def _dense_unit(u, per_row, width, ncol, xf, x_shape, Wp, nob, bias, ck, ksrc, kmode, guide, mask,
                geo, opt, alpha, lam, cst, Kfull, tap_ids, cls, taps, groups, outf, out_shape,
                Kbuf, Sr, skey, rows, rstride, slot_key, slot_of, tap_tab, tab, Bp, cbuf):
    r = u // per_row
    ja = (u - r * per_row) * width
    jb = min(ja + width, ncol)
    m = jb - ja
    td_n, th_n, tw_n = cls[0, 3], cls[1, 3], cls[2, 3]
    t_n = td_n * th_n * tw_n
    dt = xf.dtype
    vw = lanes(xf)
    n = NR_VECS * vw
    mp = -(-m // n) * n               # columns rounded up to whole panels
    cin_g = x_shape[1] // groups
    cout_g = out_shape[1] // groups
    kdim = cin_g * t_n
    b, jd, jh = decode_row(r, cls[0, 2], cls[1, 2])
    isw = cls[2, 4]
    staged = isw == 1
    wmin = taps[2, 0, 1]
    for twi in range(tw_n):
        wmin = min(wmin, taps[2, twi, 1])
    if staged:
        _prefetch_ring(slot_key, xf, x_shape, b, groups, cin_g, cls, taps, jd, jh, ja + wmin,
                       rstride)
    # 0. K of the segment (columns past m: unused values, never written to the output)
    ldk = mp
    Ktf = Kbuf[:ck * t_n * ldk if kmode != 0 else 1]
    if kmode != 0:
        K3 = Ktf.reshape((ck, t_n, ldk))
        # run-time values, not constants, for save and the panel offset below: a literal
        # argument would make Numba compile one more specialisation of the callee
        segment_k(ksrc, r, ja, jb, guide, mask, geo, cls, taps, opt, alpha, lam, cst, Kfull,
                  tap_ids, K3, K3, K3, ksrc < 0, Sr, skey)
    # 1. where each tap reads: staged rows (unit input stride) or the input itself
    in_d, in_h, in_w = x_shape[2], x_shape[3], x_shape[4]
    cstride = in_d * in_h * in_w
    src = rows if staged else xf
    for ti in range(t_n):      # tap_tab: offset of column 0, columns [lo, hi)
        tap_tab[ti, 0] = 0
        tap_tab[ti, 1] = 0
        tap_tab[ti, 2] = 0
        tap_tab[ti, 3] = 0
        tdi, thi, twi = tap_of(ti, th_n, tw_n)
        idd = taps[0, tdi, 1] + jd * cls[0, 4]
        ihh = taps[1, thi, 1] + jh * cls[1, 4]
        ibw = taps[2, twi, 1]
        if 0 <= idd < in_d and 0 <= ihh < in_h:
            l_, h_ = jrange(ibw, isw, in_w, ja, jb)
            if l_ < h_:
                if staged:      # every column readable: the padding holds the zeros
                    tap_tab[ti, 3] = ibw - wmin - ja            # + its slot's row, below
                    tap_tab[ti, 1] = ja
                    tap_tab[ti, 2] = ja + mp
                else:
                    tap_tab[ti, 0] = ((b * x_shape[1] * in_d + idd) * in_h + ihh) * in_w + ibw
                    tap_tab[ti, 1] = l_
                    tap_tab[ti, 2] = h_
    # 2. per group: stage, the rows' table, then panels x output-channel blocks
    od = cls[0, 0] + jd * cls[0, 1]
    oh = cls[1, 0] + jh * cls[1, 1]
    o0w, osw = cls[2, 0], cls[2, 1]
    cout = out_shape[1]
    ostride = out_shape[2] * out_shape[3] * out_shape[4]
    orow = ((b * cout * out_shape[2] + od) * out_shape[3] + oh) * out_shape[4] + o0w
    ldb = td_n * th_n * rstride
    for g in range(groups):
        if staged:
            _stage_ring(rows, rstride, slot_key, slot_of, xf, x_shape, b, g, cin_g, cls, taps,
                        jd, jh, ja + wmin)
            for ti in range(t_n):       # the tap's offset in its row's slot
                if tap_tab[ti, 2] > tap_tab[ti, 1]:
                    tdi, thi, twi = tap_of(ti, th_n, tw_n)
                    tap_tab[ti, 0] = slot_of[tdi * th_n + thi] * rstride + tap_tab[ti, 3]
        for cl in range(cin_g if not staged else 0):   # rows k = ti*cin_g + cl, read in place
            c = g * cin_g + cl
            kc = c if kmode == 2 else 0
            for ti in range(t_n):
                k = ti * cin_g + cl
                tab[k, 0] = tap_tab[ti, 0] + c * cstride
                tab[k, 1] = (kc * t_n + ti) * ldk - ja
                tab[k, 2] = tap_tab[ti, 1]
                tab[k, 3] = tap_tab[ti, 2]
        for j0 in range(ja, jb, n):
            ncols = min(n, jb - j0)
            # a last panel of at most two vectors of pixels: two-vector rows and kernel
            nv = NR_VECS if ncols > 2 * vw else 2
            nn = nv * vw
            for k0 in range(0, kdim, KC):
                k1 = min(kdim, k0 + KC)
                if staged:
                    _pack_staged(Bp, rows, ldb, Ktf, ldk, kmode, g * cin_g, j0, ja, tap_tab, cin_g,
                                 t_n, k0, k1, nv)
                else:
                    _pack_panel(Bp, src, Ktf, kmode, j0, tab, k0, k1, isw, nn)
                for ob in range(nob):
                    wo = ((g * nob + ob) * kdim + k0) * MR
                    if nv == NR_VECS:
                        micro_kernel(Wp, wo, Bp, k0 - k0, nn, k1 - k0, cbuf, ob * MR * n, n, k0 > 0)
                    else:
                        micro_kernel_2(Wp, wo, Bp, k0 - k0, nn, k1 - k0, cbuf, ob * MR * n, n,
                                       k0 > 0)
            full = ncols == n and osw == 1
            for ob in range(nob):
                for i in range(min(MR, cout_g - ob * MR)):
                    oc = g * cout_g + ob * MR + i
                    bv = bias[oc]
                    dst = orow + oc * ostride + j0 * osw
                    cb = (ob * MR + i) * n
                    if full:            # a whole panel of contiguous outputs: vector stores
                        bb = vsplat(bv)
                        vstore(outf, dst, vadd(vload(cbuf, cb), bb))
                        vstore(outf, dst + vw, vadd(vload(cbuf, cb + vw), bb))
                        vstore(outf, dst + 2 * vw, vadd(vload(cbuf, cb + 2 * vw), bb))
                    else:
                        for j in range(ncols):
                            outf[dst + j * osw] = cbuf[cb + j] + bv


@njit(nogil=True, cache=True)
def _dense_units(tid, ctl, n, per_row, width, ncol, xf, x_shape, Wp, nob, bias, ck, ksrc, kmode,
                 guide, mask, geo, opt, alpha, lam, cst, Kfull, tap_ids, cls, taps, groups, outf,
                 out_shape):
    """The units this thread claims; its buffers are allocated once per call."""
    dt = xf.dtype
    vw = lanes(xf)
    nrp = NR_VECS * vw
    mp = -(-width // nrp) * nrp
    td_n, th_n, tw_n = cls[0, 3], cls[1, 3], cls[2, 3]
    t_n = td_n * th_n * tw_n
    cin_g = x_shape[1] // groups
    kdim = cin_g * t_n
    wspan = 0
    for twi in range(tw_n):
        for twj in range(tw_n):
            wspan = max(wspan, taps[2, twi, 1] - taps[2, twj, 1])
    rstride = -(-(mp + wspan) // vw) * vw + vw
    rows = np.empty(cin_g * td_n * th_n * rstride if cls[2, 4] == 1 else 1, dtype=dt)
    Kbuf = np.empty(ck * t_n * mp if kmode != 0 else 1, dtype=dt)
    if ksrc == 1:                   # guide rows kept from one segment to the next
        Sr, skey = guide_slots(guide, cls, taps, width, Kbuf)
    else:
        Sr, skey = np.empty(0, dtype=dt), np.full((0, 5), -1, dtype=np.int64)
    tap_tab = np.empty((t_n, 4), dtype=np.int64)
    nslot = td_n * th_n
    slot_key = np.full((nslot, 5), -1, dtype=np.int64)     # nothing staged yet
    slot_of = np.empty(nslot, dtype=np.int64)
    tab = np.empty((kdim, 4), dtype=np.int64)
    Bp = np.empty(min(kdim, KC) * nrp, dtype=dt)
    cbuf = np.empty(nob * MR * nrp, dtype=dt)
    u = claim(ctl, tid)
    while u < n:
        _dense_unit(u, per_row, width, ncol, xf, x_shape, Wp, nob, bias, ck, ksrc, kmode, guide,
                    mask, geo, opt, alpha, lam, cst, Kfull, tap_ids, cls, taps, groups, outf,
                    out_shape, Kbuf, Sr, skey, rows, rstride, slot_key, slot_of, tap_tab, tab, Bp,
                    cbuf)
        u = claim(ctl, tid)


def dense_forward(xf, x_shape, Wp, nob, bias, ksrc_args, cls, taps, nrows, ncol, groups, width,
                  outf, out_shape):
    """Forward of one tap class into the flat output ``outf`` (see module doc).

    ``xf``/``outf``: the flat C-contiguous 5-D input and output, shapes
    ``x_shape``/``out_shape``; ``Wp``/``nob`` from
    :func:`pacnd.engines.cpu.gemm.pack_weights`; ``ksrc_args`` the K source
    ``(ck, ksrc, kmode, guide, mask, geo, opt, alpha, lam, cst, Kfull, tap_ids)``
    (see :func:`pacnd.engines.cpu.kernel_rows.segment_k`); the class has
    ``nrows`` rows of ``ncol`` columns, ``width`` columns per unit
    (:func:`chunking`). Units run on :func:`.threads.parallel_for`.
    """
    per_row = (ncol + width - 1) // width
    parallel_for(_dense_units, nrows * per_row, per_row, width, ncol, xf, x_shape, Wp, nob, bias,
                 *ksrc_args, cls, taps, groups, outf, out_shape)
