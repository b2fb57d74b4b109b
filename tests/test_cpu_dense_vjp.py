"""The Numba engine's fused dense backward (pacnd/engines/cpu/dense_vjp.py).

The parity suite's images are at most 9 pixels wide; here rows are wide enough
for whole panels and several work units per row, channel counts are not
multiples of the micro-kernels' blocks, the column matrix spans several
``KB`` blocks, and every K source (guide, precomputed, per-channel, none) and
tap-class layout (forward, strided, dilated, transposed, grouped) is compared
with the NumPy reference, every gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

import pacnd

cpu = pytest.importorskip("pacnd.engines.cpu")
from pacnd.engines.cpu import dense_vjp, gemm, pac  # noqa: E402
from pacnd.engines.cpu.layout import layout_of  # noqa: E402

TOL = {np.float32: 1e-4, np.float64: 1e-10}
ALL = ("input", "weight", "bias", "guide")


def rel_err(a, e):
    a = np.asarray(a, np.float64)
    e = np.asarray(e, np.float64)
    assert a.shape == e.shape
    return float(np.abs(a - e).max() / max(np.abs(e).max(), 1e-300))


def _check_vjp(fwd, vjp, arrays, kw, wrt, dt):
    """Forward and every gradient of the numba engine (dtype ``dt``) against the float64
    reference."""
    rng = np.random.default_rng(99)
    ref = fwd(*arrays, engine="numpy", **kw)
    g = rng.standard_normal(ref.shape)
    gref = vjp(g, *arrays, engine="numpy", wrt=wrt, **kw)
    cast = [None if a is None else a.astype(dt) for a in arrays]
    ckw = {k: (v.astype(dt) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    got = fwd(*cast, engine="numba", **ckw)
    assert got.dtype == dt and rel_err(got, ref) < TOL[dt]
    ggot = vjp(g.astype(dt), *cast, engine="numba", wrt=wrt, **ckw)
    assert set(ggot) == set(gref)
    for n in gref:
        assert np.asarray(ggot[n]).dtype == dt, n
        assert rel_err(ggot[n], gref[n]) < TOL[dt] * (10 if n in ("alpha", "lam") else 1), n


CASES = [
    # cin, cout, groups, k, stride, padding, dilation, H, W, options
    (5, 7, 1, 3, 1, 1, 1, 6, 61, {}),
    (6, 9, 3, 5, 1, 2, 1, 5, 77, {"normalize": True}),
    (4, 5, 1, 3, 2, 1, 1, 7, 90, {"kernel": "inverse", "alpha": 0.2, "lam": -1.5}),
    (8, 4, 2, 3, 1, 3, 2, 4, 70, {"kernel": "laplacian", "normalize": True}),
    (3, 6, 1, 5, 3, 0, 1, 9, 101, {"mask": True}),
    (33, 17, 1, 5, 1, 2, 1, 3, 300, {}),          # several KB blocks, wide rows
    (2, 3, 1, 3, 1, 9, 7, 5, 40, {"normalize": True}),   # reach past the image
]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_pac_conv_vjp_wide_rows(dt, case):
    cin, cout, groups, k, s, p, d, H, W, opts = case
    rng = np.random.default_rng(cin * 100 + W)
    x = rng.standard_normal((2, cin, H, W))
    f = rng.standard_normal((2, 3, H, W))
    w = rng.standard_normal((cout, cin // groups, k, k))
    b = rng.standard_normal(cout)
    opts = dict(opts)
    if opts.pop("mask", False):
        opts["mask"] = (rng.random((2, 1, H, W)) > 0.3).astype(np.float64)
    wrt = ALL + (("alpha", "lam") if opts.get("kernel") == "inverse" else ())
    _check_vjp(pacnd.pac_conv, pacnd.pac_conv_vjp, (x, f, w, b),
               dict(stride=s, padding=p, dilation=d, groups=groups, **opts), wrt, dt)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding,output_padding,groups", [(2, 2, 1, 1), (3, 1, 2, 2)])
def test_pac_conv_transpose_vjp_wide_rows(dt, stride, padding, output_padding, groups):
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((1, 4, 4, 40))
    w = rng.standard_normal((4, 6 // groups, 5, 5))
    b = rng.standard_normal(6)
    H = (4 - 1) * stride - 2 * padding + 5 + output_padding
    W = (40 - 1) * stride - 2 * padding + 5 + output_padding
    f = rng.standard_normal((1, 3, H, W))
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
              normalize=True)
    _check_vjp(pacnd.pac_conv_transpose, pacnd.pac_conv_transpose_vjp, (x, f, w, b), kw, ALL, dt)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_precomputed_per_channel_and_plain(dt):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 5, 64))
    f = rng.standard_normal((2, 2, 5, 64))
    w = rng.standard_normal((6, 4, 3, 3))
    b = rng.standard_normal(6)
    K = pacnd.adapting_kernel(f, 3, padding=1, engine="numpy")

    def fwd(x_, w_, b_, engine, adapting, **kw):
        return pacnd.pac_conv(x_, None, w_, b_, adapting=adapting, engine=engine, **kw)

    def vjp(g, x_, w_, b_, engine, adapting, wrt, **kw):
        return pacnd.pac_conv_vjp(g, x_, None, w_, b_, adapting=adapting, engine=engine,
                                  wrt=wrt, **kw)

    wrt = ("input", "weight", "bias", "adapting")
    _check_vjp(fwd, vjp, (x, w, b), dict(adapting=K, padding=1), wrt, dt)
    Kc = rng.random((2, 4, 3, 3, 5, 32))                 # one K per input channel, stride 2
    _check_vjp(fwd, vjp, (x, w, b), dict(adapting=Kc, padding=1, stride=(1, 2)), wrt, dt)
    _check_vjp(pacnd.conv, pacnd.conv_vjp, (x, w, b), dict(padding=(2, 1), dilation=(2, 1)),
               ("input", "weight", "bias"), dt)


def test_3d_pac_conv_vjp():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 5, 6, 30))
    f = rng.standard_normal((1, 2, 5, 6, 30))
    w = rng.standard_normal((4, 3, 3, 3, 3))
    b = rng.standard_normal(4)
    _check_vjp(pacnd.pac_conv, pacnd.pac_conv_vjp, (x, f, w, b),
               dict(padding=(1, 2, 1), dilation=(1, 2, 1), normalize=True), ALL, np.float64)


def test_narrow_units_give_identical_results(monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 5, 6, 80))
    f = rng.standard_normal((1, 3, 6, 80))
    w = rng.standard_normal((7, 5, 3, 3))
    g = rng.standard_normal((1, 7, 6, 80))
    kw = dict(padding=1, normalize=True, engine="numba")
    y = pacnd.pac_conv(x, f, w, **kw)
    gr = pacnd.pac_conv_vjp(g, x, f, w, wrt=("input", "weight", "guide"), **kw)
    monkeypatch.setattr(pac, "UNIT_BYTES", 1)               # one panel per unit
    assert rel_err(pacnd.pac_conv(x, f, w, **kw), y) < 1e-13
    gn = pacnd.pac_conv_vjp(g, x, f, w, wrt=("input", "weight", "guide"), **kw)
    for n in gr:
        assert rel_err(gn[n], gr[n]) < 1e-12, n


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("kdim", [1, 5, 64])
def test_micro_kernel_w_adds_a_product(dt, kdim):
    rng = np.random.default_rng(kdim)
    ncols = gemm.nrw(dt)
    lda, ldb, ldc = kdim + 3, ncols + 5, ncols + 2
    A = rng.standard_normal((gemm.MRW, lda)).astype(dt)
    Bt = rng.standard_normal((kdim, ldb)).astype(dt)
    C0 = rng.standard_normal((gemm.MRW, ldc)).astype(dt)
    C = C0.copy()
    gemm.micro_kernel_w(A.reshape(-1), 0, lda, Bt.reshape(-1), 1, ldb, kdim, C.reshape(-1), 0,
                        ldc)
    want = C0[:, :ncols] + A[:, :kdim].astype(np.float64) @ Bt[:, 1:1 + ncols]
    assert rel_err(C[:, :ncols], want) < 10 * TOL[dt]
    assert (C[:, ncols:] == C0[:, ncols:]).all()


@pytest.mark.parametrize("shape", [((3, 3), (1, 1), (1, 1), False),
                                   ((5, 5), (2, 2), (1, 1), False),
                                   ((5, 3), (1, 3), (2, 1), False),
                                   ((5, 5), (2, 2), (1, 1), True)])
def test_phases_keep_concurrent_units_apart(shape):
    """Blocks of one phase are further apart than any two rows that add to a common
    input or guide row (checked by brute force over the class tables)."""
    from pacnd._geometry import Geometry, conv_output_size, conv_transpose_output_size

    k, d, s, transposed = shape
    size = (9, 12)
    p = tuple((kk - 1) * dd // 2 for kk, dd in zip(k, d))
    if transposed:
        out = conv_transpose_output_size(size, k, s, p, d, (1, 1))
        geom = Geometry(k, s, p, d, size, out, True, (1, 1))
    else:
        geom = Geometry(k, s, p, d, size, conv_output_size(size, k, s, p, d))
    for tc in layout_of(geom).classes:
        nrows = 2 * tc.n[0] * tc.n[1]
        reach = dense_vjp.row_reach(tc, True, True)
        touched = []
        for r in range(nrows):
            b, rem = divmod(r, tc.n[0] * tc.n[1])
            jd, jh = divmod(rem, tc.n[1])
            rows = set()
            for ti in range(tc.cls[0, 3]):
                for tj in range(tc.cls[1, 3]):
                    rows.add(("x", b, tc.taps[0, ti, 1] + jd * tc.cls[0, 4],
                              tc.taps[1, tj, 1] + jh * tc.cls[1, 4]))
                    rows.add(("g", b, tc.taps[0, ti, 2] + jd * tc.cls[0, 5],
                              tc.taps[1, tj, 2] + jh * tc.cls[1, 5]))
            rows.add(("g", b, tc.cls[0, 6] + jd * tc.cls[0, 5], tc.cls[1, 6] + jh * tc.cls[1, 5]))
            touched.append(rows)
        for blocks in dense_vjp.phases(nrows, reach):
            owner = {}
            for i, (r0, r1) in enumerate(blocks):
                for r in range(r0, r1):
                    for row in touched[r]:
                        assert owner.setdefault(row, i) == i, (shape, row)
        covered = sorted(r for bl in dense_vjp.phases(nrows, reach) for a, z in bl
                         for r in range(a, z))
        assert covered == list(range(nrows))


@pytest.mark.parametrize("groups", [1, 6])       # dense path; depthwise (the K tile backward)
def test_gradients_are_bit_identical_for_any_thread_count_and_run(groups):
    """Weight and alpha/lam gradients are sums over work units that threads claim
    dynamically; per-slot partial sums added in slot order (threads.SLOTS) make them
    bit-identical from run to run and for 1 or 2 threads (training resumes bit for bit)."""
    import numba

    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 6, 9, 150)).astype(np.float32)
    f = rng.standard_normal((2, 3, 9, 150)).astype(np.float32)
    w = rng.standard_normal((6, 6 // groups, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 6, 9, 150)).astype(np.float32)
    kw = dict(padding=1, groups=groups, kernel="inverse", alpha=0.3, lam=-1.2, normalize=True,
              engine="numba", wrt=("input", "weight", "guide", "alpha", "lam"))
    before = numba.get_num_threads()
    runs = []
    try:
        for nt in (2, 1, 2, 2, 1, 2):
            numba.set_num_threads(min(nt, numba.config.NUMBA_NUM_THREADS))
            runs.append(pacnd.pac_conv_vjp(g, x, f, w, **kw))
    finally:
        numba.set_num_threads(before)
    for r in runs[1:]:
        for n in runs[0]:
            np.testing.assert_array_equal(np.asarray(r[n]), np.asarray(runs[0][n]), err_msg=n)
