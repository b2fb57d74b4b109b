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
TOL = {np.float64: 1e-10, np.float32: 1e-4}


def rel_err(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    err = float(np.abs(actual - expected).max()) if expected.size else 0.0
    return err / scale if scale > 0 else err


# --------------------------------------------------------------------------- problem strategy
@st.composite
def problems(draw, kinds=("conv", "conv_transpose", "pool", "plain", "plain_transpose")):
    """A dict: which op, its arrays (float64) and keyword options."""
    op = draw(st.sampled_from(kinds))
    nd = draw(st.sampled_from((1, 2, 2, 3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    B = draw(st.integers(1, 2))
    small = nd == 3
    k = tuple(draw(st.sampled_from((1, 3, 3, 5) if not small else (1, 3))) for _ in range(nd))
    s = tuple(draw(st.integers(1, 4 if not small else 2)) for _ in range(nd))
    d = tuple(draw(st.integers(1, 3 if not small else 2)) for _ in range(nd))
    p = tuple(draw(st.integers(0, 4 if not small else 2)) for _ in range(nd))
    size = tuple(draw(st.integers(1, 9 if not small else 5)) for _ in range(nd))
    transposed = op in ("conv_transpose", "plain_transpose")
    opts = {"stride": s, "padding": p, "dilation": d}
    if transposed:
        op_pad = tuple(draw(st.integers(0, max(s[i], d[i]) - 1)) for i in range(nd))
        out = conv_transpose_output_size(size, k, s, p, d, op_pad)
        opts["output_padding"] = op_pad
    else:
        out = conv_output_size(size, k, s, p, d)
    if any(o < 1 for o in out) or np.prod(out) > 400:
        hypothesis.assume(False)
    guide_size = out if transposed else size

    if op == "pool":
        C = draw(st.integers(1, 3))
        cin = cout = C
        groups, shared = C, False
    else:
        groups = draw(st.sampled_from((1, 1, 2, 3)))
        shared = op in ("conv", "conv_transpose") and groups == 1 and draw(st.booleans())
        cin = groups * draw(st.integers(1, 3))
        cout = cin if shared else groups * draw(st.integers(1, 3))
    x = rng.standard_normal((B, cin) + size)
    arrays = {"input": x}
    if op != "pool":
        if shared:
            wshape = (1, 1) + k
        elif transposed:
            wshape = (cin, cout // groups) + k
        else:
            wshape = (cout, cin // groups) + k
        arrays["weight"] = rng.standard_normal(wshape)
        if draw(st.booleans()):
            arrays["bias"] = rng.standard_normal(cout)
        if not shared:
            opts["groups"] = groups
        else:
            opts["shared"] = True
    else:
        opts["kernel_size"] = k

    if op in ("plain", "plain_transpose"):
        return {"op": op, "arrays": arrays, "opts": opts, "wrt_allowed": _wrt(arrays, None)}

    source = draw(st.sampled_from(("guide", "guide", "guide", "adapting")))
    channel_wise = draw(st.booleans())
    if source == "adapting":
        ck = cin if channel_wise else 1
        arrays["adapting"] = rng.random((B, ck) + k + tuple(out)) + 0.1
        arrays["guide"] = None
    else:
        cg = cin if channel_wise else draw(st.integers(1, 3))
        if channel_wise:
            opts["channel_wise"] = True
        # a coarse grid of values makes exact guide ties (asym's relu kink at 0) common
        arrays["guide"] = np.round(rng.standard_normal((B, cg) + tuple(guide_size)) * 2) / 2 \
            if draw(st.booleans()) else rng.standard_normal((B, cg) + tuple(guide_size)) * 0.7
        kind = draw(st.sampled_from(("gaussian", "laplacian", "inverse")))
        opts["kernel"] = kind
        if kind == "inverse":
            per_channel = channel_wise and draw(st.booleans())
            n = cg if per_channel else None
            a = rng.uniform(0.0, 0.5, n) if per_channel else float(rng.uniform(0.0, 0.5))
            lam = rng.uniform(-2.0, 1.0, n) if per_channel else float(rng.uniform(-2.0, 1.0))
            opts["alpha"], opts["lam"] = a, lam
        opts["asym"] = draw(st.booleans())
        opts["normalize"] = draw(st.booleans())
        if draw(st.booleans()):
            m = rng.random((B, 1) + size)
            if draw(st.booleans()):
                m = (m > 0.3).astype(np.float64)
            arrays["mask"] = m
    return {"op": op, "arrays": arrays, "opts": opts,
            "wrt_allowed": _wrt(arrays, opts.get("kernel"))}


def _wrt(arrays, kind):
    w = ["input"]
    if "weight" in arrays:
        w.append("weight")
    if "bias" in arrays:
        w.append("bias")
    if arrays.get("adapting") is not None:
        w.append("adapting")
    elif arrays.get("guide") is not None:
        w.append("guide")
        if kind == "inverse":
            w += ["alpha", "lam"]
    return tuple(w)


def _cast(arrays, dtype):
    return {n: (None if a is None else a.astype(dtype)) for n, a in arrays.items()}


def run_forward(prob, engine, dtype=np.float64):
    a = _cast(prob["arrays"], dtype)
    o = dict(prob["opts"])
    op = prob["op"]
    mask = a.get("mask")
    kw = dict(o, engine=engine)
    if mask is not None:
        kw["mask"] = mask
    if op == "conv":
        return pacnd.pac_conv(a["input"], a["guide"], a["weight"], a.get("bias"),
                              adapting=a.get("adapting"), **kw)
    if op == "conv_transpose":
        return pacnd.pac_conv_transpose(a["input"], a["guide"], a["weight"], a.get("bias"),
                                        adapting=a.get("adapting"), **kw)
    if op == "pool":
        k = kw.pop("kernel_size")
        return pacnd.pac_pool(a["input"], a["guide"], k, adapting=a.get("adapting"), **kw)
    if op == "plain":
        return pacnd.conv(a["input"], a["weight"], a.get("bias"), **kw)
    return pacnd.conv_transpose(a["input"], a["weight"], a.get("bias"), **kw)


def run_vjp(prob, engine, g, wrt, dtype=np.float64):
    a = _cast(prob["arrays"], dtype)
    g = g.astype(dtype)
    o = dict(prob["opts"])
    op = prob["op"]
    kw = dict(o, engine=engine, wrt=wrt)
    if a.get("mask") is not None:
        kw["mask"] = a["mask"]
    if op == "conv":
        return pacnd.pac_conv_vjp(g, a["input"], a["guide"], a["weight"], a.get("bias"),
                                  adapting=a.get("adapting"), **kw)
    if op == "conv_transpose":
        return pacnd.pac_conv_transpose_vjp(g, a["input"], a["guide"], a["weight"],
                                            a.get("bias"), adapting=a.get("adapting"), **kw)
    if op == "pool":
        k = kw.pop("kernel_size")
        return pacnd.pac_pool_vjp(g, a["input"], a["guide"], k, adapting=a.get("adapting"),
                                  **kw)
    if op == "plain":
        return pacnd.conv_vjp(g, a["input"], a["weight"], a.get("bias"), **kw)
    return pacnd.conv_transpose_vjp(g, a["input"], a["weight"], a.get("bias"), **kw)


def check_parity(prob, wrt, dtype):
    ref = run_forward(prob, "numpy")
    got = run_forward(prob, "numba", dtype)
    assert got.dtype == dtype
    assert rel_err(got, ref) <= TOL[dtype], ("forward", rel_err(got, ref))
    g = np.random.default_rng(7).standard_normal(ref.shape)
    gref = run_vjp(prob, "numpy", g, wrt)
    ggot = run_vjp(prob, "numba", g, wrt, dtype)
    assert set(ggot) == set(wrt)
    for name in wrt:
        e = rel_err(ggot[name], gref[name])
        tol = TOL[dtype]
        if dtype == np.float32 and name in ("alpha", "lam"):
            tol = 1e-3      # one or a few sums over every pixel and tap, with cancellation
        assert e <= tol, (name, e)
        assert np.asarray(ggot[name]).dtype == dtype, name


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


@st.composite
def kernel_problems(draw):
    nd = draw(st.sampled_from((1, 2, 3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    k = tuple(draw(st.sampled_from((1, 3, 5) if nd < 3 else (1, 3))) for _ in range(nd))
    s = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    d = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    p = tuple(draw(st.integers(0, 3)) for _ in range(nd))
    size = tuple(draw(st.integers(1, 8 if nd < 3 else 4)) for _ in range(nd))
    transposed = draw(st.booleans())
    opts = {"stride": s, "padding": p, "dilation": d}
    if transposed:
        op_pad = tuple(draw(st.integers(0, max(s[i], d[i]) - 1)) for i in range(nd))
        out = conv_transpose_output_size(size, k, s, p, d, op_pad)
        opts.update(transposed=True, output_padding=op_pad)
        gsize = out
    else:
        out = conv_output_size(size, k, s, p, d)
        gsize = size
    if any(o < 1 for o in out):
        hypothesis.assume(False)
    B, cg = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    guide = rng.standard_normal((B, cg) + tuple(gsize))
    kind = draw(st.sampled_from(("gaussian", "laplacian", "inverse")))
    opts["kernel"] = kind
    opts["channel_wise"] = draw(st.booleans())
    if kind == "inverse":
        opts["alpha"] = float(rng.uniform(0, 1))
        opts["lam"] = (rng.uniform(-2, 1, cg) if opts["channel_wise"] and draw(st.booleans())
                       else float(rng.uniform(-2, 1)))
    opts["asym"] = draw(st.booleans())
    opts["normalize"] = draw(st.booleans())
    if draw(st.booleans()):
        opts["mask"] = (rng.random((B, 1) + size) > 0.3).astype(np.float64)
    return guide, k, opts


@settings(max_examples=50, **SETTINGS)
@given(problem=kernel_problems())
def test_adapting_kernel_parity(problem):
    guide, k, opts = problem
    ref = pacnd.adapting_kernel(guide, k, engine="numpy", **opts)
    got = pacnd.adapting_kernel(guide, k, engine="numba", **opts)
    assert rel_err(got, ref) <= 1e-10
    g = np.random.default_rng(3).standard_normal(ref.shape)
    wrt = ("guide", "alpha", "lam") if opts["kernel"] == "inverse" else ("guide",)
    gref = pacnd.adapting_kernel_vjp(g, guide, k, engine="numpy", wrt=wrt, **opts)
    ggot = pacnd.adapting_kernel_vjp(g, guide, k, engine="numba", wrt=wrt, **opts)
    for name in wrt:
        assert rel_err(ggot[name], gref[name]) <= 1e-10, name
    opts32 = {n: (v.astype(np.float32) if isinstance(v, np.ndarray) else v)
              for n, v in opts.items()}
    got32 = pacnd.adapting_kernel(guide.astype(np.float32), k, engine="numba", **opts32)
    assert got32.dtype == np.float32
    assert rel_err(got32, ref) <= 1e-4


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

