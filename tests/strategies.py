"""Hypothesis strategies for random PAC problems, shared by the test modules."""

import numpy as np
from hypothesis import strategies as st


@st.composite
def pac_problems(draw, transposed):
    nd = draw(st.integers(1, 3))
    maxn = {1: 9, 2: 6, 3: 4}[nd]
    k, s, p, d, op, size = [], [], [], [], [], []
    for _ in range(nd):
        kk = draw(st.sampled_from([1, 3, 5] if nd < 3 else [1, 3]))
        ss = draw(st.integers(1, 3))
        dd = draw(st.integers(1, 2))
        pp = draw(st.integers(0, (kk - 1) * dd + 1))
        if transposed:
            oo = draw(st.integers(0, max(ss, dd) - 1))
            # smallest input size with a non-empty output
            lo = max(1, -((-(2 * pp - dd * (kk - 1) - oo)) // ss) + 1)
        else:
            oo = 0
            lo = max(1, dd * (kk - 1) + 1 - 2 * pp)
        n = draw(st.integers(lo, max(lo, maxn if not transposed else min(maxn, 4))))
        k.append(kk), s.append(ss), p.append(pp), d.append(dd), op.append(oo), size.append(n)
    groups = draw(st.integers(1, 2))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kind = draw(st.sampled_from(["gaussian", "laplacian", "inverse"]))
    kopts = {"kind": kind}
    if kind == "inverse":
        kopts.update(alpha=draw(st.sampled_from([0.0, 0.5])),
                     lam=draw(st.sampled_from([-1.0, 1.0])))
    kopts["asym"] = draw(st.booleans())
    kopts["channel_wise"] = draw(st.booleans())
    extra = {"normalize": draw(st.booleans())}
    if draw(st.booleans()):
        extra["mask"] = True
    geo = dict(stride=tuple(s), padding=tuple(p), dilation=tuple(d), groups=groups)
    if transposed:
        geo["output_padding"] = tuple(op)
    return dict(size=tuple(size), k=tuple(k), cin=cin, cout=cout, geo=geo, kopts=kopts,
                extra=extra, seed=draw(st.integers(0, 2**31)))


def _realise(prob, transposed):
    rng = np.random.default_rng(prob["seed"])
    size, k, cin, cout, geo = prob["size"], prob["k"], prob["cin"], prob["cout"], prob["geo"]
    g = geo["groups"]
    if transposed:
        out = tuple((n - 1) * s - 2 * p + d * (kk - 1) + 1 + o for n, s, p, d, kk, o in zip(
            size, geo["stride"], geo["padding"], geo["dilation"], k, geo["output_padding"]))
        W = rng.standard_normal((cin, cout // g) + k)
        gsize = out
    else:
        W = rng.standard_normal((cout, cin // g) + k)
        gsize = size
    x = rng.standard_normal((2, cin) + size)
    cg = cin if prob["kopts"]["channel_wise"] else 2
    guide = rng.standard_normal((2, cg) + gsize)
    b = rng.standard_normal(cout)
    extra = dict(prob["extra"])
    if extra.get("mask"):
        extra["mask"] = (rng.random((2, 1) + size) > 0.3).astype(np.float64)
    return x, guide, W, b, extra
