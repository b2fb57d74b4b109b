"""Random PAC problems and the fast-engine-vs-reference check, shared by
tests/test_engine_parity.py and the memory-safety fuzz (tests/fuzz_geometry.py).

:func:`problems` draws one call of a public op (arrays and options);
:func:`check_parity` runs it forward and backward on the Numba engine and on the
NumPy reference and compares every output.
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import pacnd
from pacnd._geometry import conv_output_size, conv_transpose_output_size

TOL = {np.float64: 1e-10, np.float32: 1e-4}


def rel_err(actual, expected, floor=0.0):
    """Largest absolute difference over the largest magnitude of ``expected`` (at
    least ``floor``: a result that cancels to ~0 is compared at the scale of the
    problem's other results, not at its own rounding noise)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.abs(expected).max()) if expected.size else 0.0, floor)
    err = float(np.abs(actual - expected).max()) if expected.size else 0.0
    return err / scale if scale > 0 else err


def _scale(*arrays):
    return max((float(np.abs(np.asarray(a)).max()) for a in arrays if np.size(a)), default=0.0)


# --------------------------------------------------------------------------- problem strategy
@st.composite
def problems(draw, kinds=("conv", "conv_transpose", "pool", "plain", "plain_transpose"),
             extreme=False):
    """A dict: which op, its arrays (float64) and keyword options.

    ``extreme``: padding and dilation drawn up to several times the image size
    (the geometry of PAC-CRF's dilated messages on small grids, and of typos)."""
    op = draw(st.sampled_from(kinds))
    nd = draw(st.sampled_from((1, 2, 2, 3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    B = draw(st.integers(1, 2))
    small = nd == 3
    k = tuple(draw(st.sampled_from((1, 3, 3, 5) if not small else (1, 3))) for _ in range(nd))
    s = tuple(draw(st.integers(1, 4 if not small else 2)) for _ in range(nd))
    if extreme:
        # padding and dilation up to several times the image: windows that reach
        # past the image on both sides, taps that all miss it, 1-pixel images
        size = tuple(draw(st.integers(1, {1: 12, 2: 8, 3: 4}[nd])) for _ in range(nd))
        if nd < 3 and draw(st.booleans()):   # wide rows: the vector paths, several panels
            size = size[:-1] + (draw(st.integers(13, 90)),)
        d = tuple(draw(st.one_of(st.integers(1, 3), st.integers(1, 3 * n + 2))) for n in size)
        p = tuple(draw(st.one_of(st.integers(0, 4), st.integers(0, 3 * n + dd * (kk - 1))))
                  for n, dd, kk in zip(size, d, k))
    else:
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
    if any(o < 1 for o in out) or np.prod(out) > (600 if extreme else 400):
        assume(False)
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
    # a gradient that cancels to ~0 (e.g. the guide gradient of a window with one
    # valid tap under normalize) is compared at 1% of the largest result
    floor = 1e-2 * _scale(ref, *gref.values())
    for name in wrt:
        e = rel_err(ggot[name], gref[name], floor)
        tol = TOL[dtype]
        if dtype == np.float32 and name in ("alpha", "lam"):
            tol = 1e-3      # one or a few sums over every pixel and tap, with cancellation
        assert e <= tol, (name, e)
        assert np.asarray(ggot[name]).dtype == dtype, name


@st.composite
def kernel_problems(draw, extreme=False):
    """(guide, kernel_size, options) of one :func:`pacnd.adapting_kernel` call."""
    nd = draw(st.sampled_from((1, 2, 3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    k = tuple(draw(st.sampled_from((1, 3, 5) if nd < 3 else (1, 3))) for _ in range(nd))
    s = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    size = tuple(draw(st.integers(1, 8 if nd < 3 else 4)) for _ in range(nd))
    if extreme:
        d = tuple(draw(st.one_of(st.integers(1, 2), st.integers(1, 3 * n + 2))) for n in size)
        p = tuple(draw(st.one_of(st.integers(0, 3), st.integers(0, 3 * n + dd * (kk - 1))))
                  for n, dd, kk in zip(size, d, k))
    else:
        d = tuple(draw(st.integers(1, 2)) for _ in range(nd))
        p = tuple(draw(st.integers(0, 3)) for _ in range(nd))
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
    if any(o < 1 for o in out) or np.prod(out) * np.prod(k) > 20000:
        assume(False)
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


def check_kernel_parity(problem):
    """:func:`pacnd.adapting_kernel` and its vjp, Numba vs the NumPy reference."""
    guide, k, opts = problem
    ref = pacnd.adapting_kernel(guide, k, engine="numpy", **opts)
    got = pacnd.adapting_kernel(guide, k, engine="numba", **opts)
    assert rel_err(got, ref) <= 1e-10
    g = np.random.default_rng(3).standard_normal(ref.shape)
    wrt = ("guide", "alpha", "lam") if opts["kernel"] == "inverse" else ("guide",)
    gref = pacnd.adapting_kernel_vjp(g, guide, k, engine="numpy", wrt=wrt, **opts)
    ggot = pacnd.adapting_kernel_vjp(g, guide, k, engine="numba", wrt=wrt, **opts)
    floor = 1e-2 * _scale(ref, *gref.values())
    for name in wrt:
        assert rel_err(ggot[name], gref[name], floor) <= 1e-10, name
    opts32 = {n: (v.astype(np.float32) if isinstance(v, np.ndarray) else v)
              for n, v in opts.items()}
    got32 = pacnd.adapting_kernel(guide.astype(np.float32), k, engine="numba", **opts32)
    assert got32.dtype == np.float32
    assert rel_err(got32, ref) <= 1e-4
