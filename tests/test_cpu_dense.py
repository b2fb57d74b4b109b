"""The Numba engine's fused dense forward: SIMD intrinsics, micro-kernel, panels.

The engine-parity suite draws small images (at most 9 pixels a side), which
only reach the per-element edge path of the panel packing; here the images are
wide enough for the vector path (whole panels inside the input), channel
counts are not multiples of the micro-kernel's block, and every K source
(guide, precomputed, none) and tap-class layout (forward, strided,
transposed) is compared with the NumPy reference engine.
"""

from __future__ import annotations

import numpy as np
import pytest

import pacnd

cpu = pytest.importorskip("pacnd.engines.cpu")
from pacnd.engines.cpu import dense, gemm, simd  # noqa: E402

TOL = {np.float32: 2e-6, np.float64: 1e-12}


def rel_err(a, e):
    a = np.asarray(a, np.float64)
    e = np.asarray(e, np.float64)
    assert a.shape == e.shape
    return float(np.abs(a - e).max() / np.abs(e).max())


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_simd_fma_and_splat(dt):
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(16).astype(dt) for _ in range(3))
    out = np.zeros(16, dt)
    simd._selftest(a, b, c, out)
    n = 32 // np.dtype(dt).itemsize
    expected = a * b + c
    expected[:n] = a[0] * b[:n] + c[:n]
    np.testing.assert_allclose(out, expected, rtol=4 * np.finfo(dt).eps, atol=0)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("kdim", [1, 7, 200])
def test_micro_kernel_is_a_matrix_product(dt, kdim):
    rng = np.random.default_rng(kdim)
    n = gemm.nr(dt)
    W = rng.standard_normal((2, gemm.MR, kdim)).astype(dt)       # two blocks of MR rows
    Wp = np.ascontiguousarray(W.transpose(0, 2, 1)).reshape(-1)
    B = rng.standard_normal((kdim, n)).astype(dt)
    cbuf = np.full(3 * gemm.MR * n, np.nan, dtype=dt)
    co = gemm.MR * n                                            # the middle block of cbuf
    gemm.micro_kernel(Wp, kdim * gemm.MR, B.reshape(-1), 0, n, kdim, cbuf, co, n, False)
    expected = W[1].astype(np.float64) @ B.astype(np.float64)
    assert rel_err(cbuf[co:2 * co].reshape(gemm.MR, n), expected) < TOL[dt] * 10
    assert np.isnan(cbuf[:co]).all() and np.isnan(cbuf[2 * co:]).all()
    # accumulate: a second pass with the first block of weights adds its product
    gemm.micro_kernel(Wp, 0, B.reshape(-1), 0, n, kdim, cbuf, co, n, True)
    expected += W[0].astype(np.float64) @ B.astype(np.float64)
    assert rel_err(cbuf[co:2 * co].reshape(gemm.MR, n), expected) < TOL[dt] * 10


def test_pack_weights_layout_and_padding():
    rng = np.random.default_rng(1)
    cout, cin_g, T, groups = 6, 2, 9, 2          # 3 outputs per group: one padded block
    W3 = rng.standard_normal((cout, cin_g, T))
    taps = np.array([0, 2, 4, 8])
    Wp, nob = gemm.pack_weights(W3, groups, taps)
    assert nob == 1
    P = Wp.reshape(groups, nob, cin_g * len(taps), gemm.MR)
    for g in range(groups):
        Wg = W3[g * 3:(g + 1) * 3][:, :, taps].transpose(0, 2, 1).reshape(3, -1)  # tap-major
        np.testing.assert_array_equal(P[g, 0, :, :3].T, Wg)
        assert (P[g, 0, :, 3] == 0).all()


@pytest.mark.parametrize("ncol", [1, 23, 24, 100, 256, 257, 1000])
def test_chunking_covers_each_row_within_the_block(ncol):
    per_row, width = dense.chunking(ncol, 24)
    assert width <= dense.COL_BLOCK
    assert per_row * width >= ncol > (per_row - 1) * width


def _pair(fn, **kw):
    return fn(engine="numpy", **kw), fn(engine="numba", **kw)


CASES = [
    # cin, cout, groups, k, stride, padding, dilation, H, W, options
    (5, 7, 1, 3, 1, 1, 1, 6, 61, {}),
    (6, 9, 3, 5, 1, 2, 1, 5, 77, {"normalize": True}),
    (4, 5, 1, 3, 2, 1, 1, 7, 90, {"kernel": "inverse", "alpha": 0.2, "lam": -1.5}),
    (8, 4, 2, 3, 1, 3, 2, 4, 70, {"kernel": "laplacian", "normalize": True}),
    (3, 6, 1, 5, 3, 0, 1, 9, 101, {"mask": True}),
    (33, 5, 1, 1, 1, 0, 1, 3, 50, {}),
]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_pac_conv_wide_rows_match_reference(dt, case):
    cin, cout, groups, k, s, p, d, H, W, opts = case
    rng = np.random.default_rng(cin * 100 + W)
    x = rng.standard_normal((2, cin, H, W))
    f = rng.standard_normal((2, 3, H, W))
    w = rng.standard_normal((cout, cin // groups, k, k))
    b = rng.standard_normal(cout)
    opts = dict(opts)
    if opts.pop("mask", False):
        opts["mask"] = (rng.random((2, 1, H, W)) > 0.3).astype(dt)
    ref = pacnd.pac_conv(x, f, w, b, stride=s, padding=p, dilation=d, groups=groups,
                         engine="numpy", **opts)
    got = pacnd.pac_conv(x.astype(dt), f.astype(dt), w.astype(dt), b.astype(dt), stride=s,
                         padding=p, dilation=d, groups=groups, engine="numba", **opts)
    assert got.dtype == dt
    assert rel_err(got, ref) < TOL[dt]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_precomputed_and_channel_wise_K_and_plain_conv(dt):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 4, 5, 64)).astype(dt)
    f = rng.standard_normal((1, 2, 5, 64)).astype(dt)
    w = rng.standard_normal((6, 4, 3, 3)).astype(dt)
    K = pacnd.adapting_kernel(f, 3, padding=1)
    ref, got = _pair(pacnd.pac_conv, input=x, guide=None, weight=w, adapting=K, padding=1)
    assert rel_err(got, ref) < TOL[dt]
    Kc = rng.random((1, 4, 3, 3, 5, 64)).astype(dt)            # one K per input channel
    ref, got = _pair(pacnd.pac_conv, input=x, guide=None, weight=w, adapting=Kc, padding=1)
    assert rel_err(got, ref) < TOL[dt]
    ref, got = _pair(pacnd.conv, input=x, weight=w, padding=1, stride=(1, 2))
    assert rel_err(got, ref) < TOL[dt]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("stride,padding,output_padding,groups", [(2, 2, 1, 1), (3, 1, 2, 2)])
def test_pac_conv_transpose_wide_rows_match_reference(dt, stride, padding, output_padding,
                                                      groups):
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((1, 4, 4, 40)).astype(dt)
    w = rng.standard_normal((4, 6 // groups, 5, 5)).astype(dt)
    H = (4 - 1) * stride - 2 * padding + 5 + output_padding
    W = (40 - 1) * stride - 2 * padding + 5 + output_padding
    f = rng.standard_normal((1, 3, H, W)).astype(dt)
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups)
    ref, got = _pair(pacnd.pac_conv_transpose, input=x, guide=f, weight=w, **kw)
    assert rel_err(got, ref) < TOL[dt] * 10


class _NaNEmpty:
    """numpy, except that ``empty`` returns NaN-filled arrays."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(shape, dtype=float, **kw):
        return np.full(shape, np.nan, dtype=dtype, **kw)


def test_every_output_element_is_written(monkeypatch):
    from pacnd.engines.cpu import pac
    monkeypatch.setattr(pac, "np", _NaNEmpty())
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 3, 53)).astype(np.float32)
    f = rng.standard_normal((2, 2, 3, 53)).astype(np.float32)
    w = rng.standard_normal((9, 5, 3, 3)).astype(np.float32)
    y = pacnd.pac_conv(x, f, w, padding=1, stride=(1, 2), engine="numba")
    assert np.isfinite(y).all()
    yt = pacnd.pac_conv_transpose(x, np.ones((2, 1, 6, 106), np.float32),
                                  w.transpose(1, 0, 2, 3).copy(), stride=2, padding=1,
                                  output_padding=1, engine="numba")
    assert np.isfinite(yt).all()


@pytest.mark.parametrize("n", [0, 1, 2, 5, 97])
def test_parallel_for_runs_every_unit_once(n):
    import numba
    from numba import njit

    from pacnd.engines.cpu.threads import claim, parallel_for

    @njit(nogil=True)
    def mark(tid, ctl, n, hits, who):
        u = claim(ctl, tid)
        while u < n:
            hits[u] += 1
            who[u] = tid
            u = claim(ctl, tid)

    hits = np.zeros(n, dtype=np.int64)
    who = np.full(n, -1, dtype=np.int64)
    parallel_for(mark, n, hits, who)
    assert (hits == 1).all()
    assert ((who >= 0) & (who < max(1, min(numba.get_num_threads(), n)))).all()
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        hits[:] = 0
        parallel_for(mark, n, hits, who)
        assert (hits == 1).all()
    finally:
        numba.set_num_threads(old)


def test_warmup_command_compiles_and_reports(capsys):
    from pacnd.cli import main

    assert main(["warmup", "--dtype", "float64", "--quiet"]) == 0
    assert "CPU kernels for float64 ready" in capsys.readouterr().out


def test_warmup_rejects_a_non_float_dtype():
    with pytest.raises(ValueError, match="int32.*float32"):
        cpu.warmup(("int32",))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_parallel_for_works_in_a_forked_child():
    import os

    from numba import njit

    from pacnd.engines.cpu.threads import claim, parallel_for

    @njit(nogil=True)
    def mark(tid, ctl, n, hits):
        u = claim(ctl, tid)
        while u < n:
            hits[u] += 1
            u = claim(ctl, tid)

    hits = np.zeros(8, dtype=np.int64)
    parallel_for(mark, 8, hits)                 # the parent's pool exists now
    pid = os.fork()
    if pid == 0:                                # child: must not wait for the parent's threads
        try:
            h = np.zeros(8, dtype=np.int64)
            parallel_for(mark, 8, h)
            os._exit(0 if (h == 1).all() else 1)
        except BaseException:
            os._exit(2)
    import signal
    import time

    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:             # the child waits on threads that are gone
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("parallel_for hung in a forked child")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
