"""The Numba engine against the NumPy reference engine, through the public ops.

Hypothesis draws small problems over every option (1-3 spatial dims, odd
sizes, stride > kernel, dilation reaching past the image, padding > kernel
reach, batch > 1, groups, shared filters, transposed with output_padding,
pooling, mask, normalize, every kernel kind incl. asym and per-channel
alpha/lam, precomputed K, plain conv/conv_transpose) and compares forward
outputs and every vector-Jacobian product: float64 within 1e-10 and float32
(against the float64 reference) within 1e-4 (1e-3 for the alpha/lam
gradients, sums over every pixel and tap), relative to the largest magnitude
of the expected array.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pacnd  # noqa: E402
from pacnd._geometry import Geometry, conv_output_size, conv_transpose_output_size  # noqa: E402

cpu = pytest.importorskip("pacnd.engines.cpu")
from pacnd.engines.cpu import layout as cpu_layout  # noqa: E402

SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
from parity import (TOL, _wrt, check_kernel_parity, check_parity, kernel_problems,  # noqa: E402,F401
                    problems, rel_err, run_forward, run_vjp)


# --------------------------------------------------------------------------- tests
@settings(max_examples=200, **SETTINGS)
@given(prob=problems(), data=st.data())
def test_parity_float64(prob, data):
    allowed = prob["wrt_allowed"]
    wrt = data.draw(st.sampled_from([allowed, allowed,
                                     tuple(w for w in allowed if w != "input"),
                                     (allowed[-1],), ("input",)]))
    if not wrt:
        wrt = allowed
    check_parity(prob, wrt, np.float64)


@settings(max_examples=60, **SETTINGS)
@given(prob=problems())
def test_parity_float32(prob):
    check_parity(prob, prob["wrt_allowed"], np.float32)


@settings(max_examples=50, **SETTINGS)
@given(problem=kernel_problems())
def test_adapting_kernel_parity(problem):
    check_kernel_parity(problem)


@settings(max_examples=60, **SETTINGS)
@given(problem=kernel_problems())
def test_layout_matches_geometry_tables(problem):
    guide, k, opts = problem
    nd = len(k)
    size = tuple(opts["mask"].shape[2:]) if "mask" in opts else None
    s, p, d = opts["stride"], opts["padding"], opts["dilation"]
    if opts.get("transposed"):
        out = tuple(guide.shape[2:])
        op_pad = opts["output_padding"]
        in_size = tuple((o - q - 1 - (kk - 1) * dd + 2 * pp) // ss + 1
                        for o, kk, ss, pp, q, dd in zip(out, k, s, p, op_pad, d))
        geom = Geometry(k, s, p, d, in_size, out, True, op_pad)
    else:
        size = tuple(guide.shape[2:])
        geom = Geometry(k, s, p, d, size, conv_output_size(size, k, s, p, d))
    for all_taps in (False, True):
        lay = cpu_layout.check_against_geometry(geom, all_taps)
        covered = np.zeros(cpu_layout._embed(geom.out_size, 1), dtype=int)
        for tc in lay.classes:
            covered[tc.slices] += 1
        for sl in lay.empty:
            covered[sl] += 1
        assert (covered == 1).all()
        if all_taps:
            assert not lay.empty
            assert all(tc.ntaps == geom.taps for tc in lay.classes)
    assert nd == geom.ndim


# --------------------------------------------------------------------------- tiling, dtype
FIXED = [
    {"op": "conv", "arrays": None, "opts": {"stride": (1, 2), "padding": (2, 1),
                                            "dilation": (1, 2), "groups": 2,
                                            "kernel": "inverse", "alpha": 0.1, "lam": -1.0,
                                            "normalize": True}},
    {"op": "conv_transpose", "arrays": None,
     "opts": {"stride": (2, 3), "padding": (2, 1), "dilation": (1, 1), "groups": 1,
              "output_padding": (1, 2), "kernel": "gaussian", "normalize": True}},
    {"op": "pool", "arrays": None, "opts": {"stride": (2, 1), "padding": (1, 2),
                                            "dilation": (1, 1), "kernel_size": (3, 5),
                                            "kernel": "laplacian", "channel_wise": True}},
    {"op": "conv", "arrays": None, "opts": {"stride": (1, 1), "padding": (1, 1),
                                            "dilation": (1, 1), "shared": True,
                                            "kernel": "gaussian", "asym": True}},
]


def _fixed_problem(spec, rng):
    op, o = spec["op"], spec["opts"]
    B, size = 2, (9, 14)
    k = o.get("kernel_size", (3, 5))
    if op == "pool":
        cin = cout = 3
    elif o.get("shared"):
        cin = cout = 3
    else:
        cin, cout = 4, 6
    x = rng.standard_normal((B, cin) + size)
    arrays = {"input": x}
    if op == "conv_transpose":
        out = conv_transpose_output_size(size, k, o["stride"], o["padding"], o["dilation"],
                                         o["output_padding"])
    else:
        out = conv_output_size(size, k, o["stride"], o["padding"], o["dilation"])
    gsize = out if op == "conv_transpose" else size
    cg = cin if o.get("channel_wise") else 2
    arrays["guide"] = rng.standard_normal((B, cg) + tuple(gsize))
    if op != "pool":
        g = o.get("groups", 1)
        if o.get("shared"):
            arrays["weight"] = rng.standard_normal((1, 1) + k)
        elif op == "conv_transpose":
            arrays["weight"] = rng.standard_normal((cin, cout // g) + k)
        else:
            arrays["weight"] = rng.standard_normal((cout, cin // g) + k)
        arrays["bias"] = rng.standard_normal(cout)
        arrays["mask"] = (rng.random((B, 1) + size) > 0.2).astype(np.float64)
    return {"op": op, "arrays": arrays, "opts": dict(o),
            "wrt_allowed": _wrt(arrays, o.get("kernel"))}


@pytest.mark.parametrize("spec", FIXED, ids=[f["op"] for f in FIXED])
def test_small_tiles_give_identical_results(spec, monkeypatch):
    prob = _fixed_problem(spec, np.random.default_rng(11))
    wrt = prob["wrt_allowed"]
    out = run_forward(prob, "numba")
    g = np.random.default_rng(5).standard_normal(out.shape)
    grads = run_vjp(prob, "numba", g, wrt)
    # 1 pixel per tile up to a few rows: every tile boundary case
    for budget in (1, 700, 5000):
        monkeypatch.setattr(cpu, "TILE_BYTES", budget)
        out2 = run_forward(prob, "numba")
        assert rel_err(out2, out) <= 1e-13
        grads2 = run_vjp(prob, "numba", g, wrt)
        for n in wrt:
            assert rel_err(grads2[n], grads[n]) <= 1e-12, (budget, n)
    monkeypatch.undo()
    ref = run_forward(prob, "numpy")
    assert rel_err(out, ref) <= 1e-10


@pytest.mark.parametrize("spec", FIXED, ids=[f["op"] for f in FIXED])
def test_float32_in_float32_out(spec):
    prob = _fixed_problem(spec, np.random.default_rng(12))
    out = run_forward(prob, "numba", np.float32)
    assert out.dtype == np.float32
    g = np.ones(out.shape, dtype=np.float32)
    grads = run_vjp(prob, "numba", g, prob["wrt_allowed"], np.float32)
    for n, v in grads.items():
        assert np.asarray(v).dtype == np.float32, n
    K = pacnd.adapting_kernel(prob["arrays"]["guide"].astype(np.float32), (3, 5),
                              engine="numba")
    assert K.dtype == np.float32


def test_plain_conv_matches_reference_large_channels():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 12, 11, 10))
    w = rng.standard_normal((8, 12, 3, 3))
    b = rng.standard_normal(8)
    for kw in ({"padding": 1}, {"stride": 2, "dilation": 2, "padding": 3}):
        ref = pacnd.conv(x, w, b, engine="numpy", **kw)
        got = pacnd.conv(x, w, b, engine="numba", **kw)
        assert rel_err(got, ref) <= 1e-12
    wt = rng.standard_normal((12, 8, 5, 5))
    ref = pacnd.conv_transpose(x, wt, b, stride=2, padding=2, output_padding=1, engine="numpy")
    got = pacnd.conv_transpose(x, wt, b, stride=2, padding=2, output_padding=1, engine="numba")
    assert rel_err(got, ref) <= 1e-12


def test_vectorised_exp():
    from pacnd.engines.cpu.fastexp import _selftest
    for dt, tol in ((np.float64, 4e-16), (np.float32, 3e-7)):
        xs = np.concatenate([np.linspace(-700, 80, 100001), np.linspace(-3, 0, 3001)]).astype(dt)
        out = np.empty_like(xs)
        _selftest(xs, out)
        ref = np.exp(xs.astype(np.float64))
        normal = ref > np.finfo(dt).tiny
        assert (np.abs(out[normal] - ref[normal]) / ref[normal]).max() <= tol
        assert (np.abs(out[~normal] - ref[~normal]) <= np.finfo(dt).tiny).all()
        assert out[xs == 0].item(0) == 1.0


@pytest.mark.parametrize("transposed", [False, True])
def test_working_memory_is_bounded_by_the_tile_budget(transposed, monkeypatch):
    """No full-size K, columns or zero-inserted input: the NumPy allocations of a
    forward and a vjp stay within the outputs plus a few tile budgets."""
    import tracemalloc

    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 8, 48, 48))
    w = rng.standard_normal((8, 8, 5, 5))
    b = rng.standard_normal(8)
    kw = dict(padding=2, engine="numba")
    if transposed:
        kw.update(stride=2, output_padding=1)
        guide = rng.standard_normal((1, 4, 96, 96))
        fwd, vjp = pacnd.pac_conv_transpose, pacnd.pac_conv_transpose_vjp
    else:
        guide = rng.standard_normal((1, 4, 48, 48))
        fwd, vjp = pacnd.pac_conv, pacnd.pac_conv_vjp
    budget = 64 * 1024
    monkeypatch.setattr(cpu, "TILE_BYTES", budget)
    y = fwd(x, guide, w, b, normalize=True, **kw)             # compile outside the trace
    vjp(y, x, guide, w, b, normalize=True, **kw)
    full_cols = 8 * 25 * y[0, 0].size * 8                     # what an im2col would need
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        y = fwd(x, guide, w, b, normalize=True, **kw)
        _, peak_fwd = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        grads = vjp(y, x, guide, w, b, normalize=True, **kw)
        _, peak_vjp = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out_bytes = sum(g.nbytes for g in grads.values())
    assert peak_fwd <= y.nbytes + 4 * budget < full_cols
    assert peak_vjp - base <= out_bytes + 8 * budget < full_cols

