"""Test cases shared by the GPU-engine tests (simulator, host emulation, real GPU).

* :data:`CONFIGS`: small random problems covering every option of the ops
  (1-D/2-D/3-D, forward and transposed geometry, stride, padding, dilation,
  output_padding, groups, shared, normalize, mask, gaussian/laplacian/inverse
  with scalar or per-channel alpha/lam, asym, channel_wise, precomputed K with
  one or per-channel K, plain conv / conv_transpose, pooling);
* :func:`reference_cases`: the authors' non-CRF reference cases;
* :func:`run_all`: every public call of a case (forward, adapting kernel, all
  gradients) on a given engine module;
* :func:`with_engine`: route the public ops to an engine *module* directly (so
  the GPU engines can run on NumPy arrays under the simulator / emulator).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

import pacnd
import pacnd._plan as _plan

REPO = Path(__file__).resolve().parents[2]
#: The authors' reference cases: ``<repo>/../shared/reference``, or in ``$PACND_SHARED_DIR``.
REFERENCE_DIR = Path(os.environ.get("PACND_SHARED_DIR") or REPO.parent / "shared").resolve() \
    / "reference"


@contextlib.contextmanager
def with_engine(engine_module):
    """Every public op in the block runs on ``engine_module`` (the dispatch is bypassed)."""
    old = _plan.select_engine
    _plan.select_engine = lambda arrays, engine=None: engine_module
    try:
        yield
    finally:
        _plan.select_engine = old


class PoisonNumpy:
    """NumPy, except that ``empty`` / ``empty_like`` return NaN-filled arrays: any
    element a kernel fails to write shows up as NaN."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(shape, dtype=float):
        return np.full(shape, np.nan, dtype=dtype)

    @staticmethod
    def empty_like(a, dtype=None):
        return np.full(a.shape, np.nan, dtype=dtype or a.dtype)


def rel_err(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if not np.all(np.isfinite(actual)):
        return float("inf")
    # relative to the largest expected value (floored at 1e-3 so that an all-zero
    # expected gradient is compared to roundoff, not divided by zero)
    return float(np.abs(actual - expected).max()) / max(float(np.abs(expected).max()), 1e-3)


# --------------------------------------------------------------------------- random cases
CONFIGS = {
    "conv2d": dict(op="conv", B=2, cin=3, cout=2, size=(5, 6), k=(3, 3), cg=2, padding=1),
    "conv2d_stride_dil_norm": dict(op="conv", B=1, cin=2, cout=3, size=(7, 6), k=(3, 3), cg=2,
                                   stride=2, padding=2, dilation=2, normalize=True),
    "conv2d_offcentre_k5": dict(op="conv", B=1, cin=2, cout=2, size=(6, 6), k=(5, 3), cg=1,
                                padding=(1, 0)),
    "conv2d_groups_mask_norm": dict(op="conv", B=1, cin=4, cout=4, groups=2, size=(5, 5),
                                    k=(3, 3), cg=1, padding=1, normalize=True, mask=True),
    "conv2d_mask_laplacian": dict(op="conv", B=1, cin=2, cout=2, size=(5, 4), k=(3, 3), cg=2,
                                  padding=1, mask=True, kernel="laplacian"),
    "conv2d_inverse_asym": dict(op="conv", B=1, cin=2, cout=2, size=(5, 5), k=(3, 3), cg=2,
                                padding=1, kernel="inverse", alpha=0.3, lam=-1.5, asym=True),
    "conv2d_cw_inverse_per_channel_norm": dict(
        op="conv", B=1, cin=3, cout=2, size=(4, 5), k=(3, 3), padding=1, channel_wise=True,
        kernel="inverse", alpha=[0.1, 0.2, 0.3], lam=[-1.0, -0.5, 0.5], normalize=True),
    "conv2d_cw_gaussian_mask": dict(op="conv", B=1, cin=2, cout=2, size=(4, 4), k=(3, 3),
                                    padding=1, channel_wise=True, mask=True),
    "conv2d_shared": dict(op="conv", B=1, cin=3, size=(5, 5), k=(3, 3), cg=2, padding=1,
                          shared=True),
    "conv2d_precomputed_K": dict(op="conv", B=1, cin=2, cout=3, size=(5, 4), k=(3, 3),
                                 padding=1, adapting=1),
    "conv2d_precomputed_K_per_channel": dict(op="conv", B=1, cin=2, cout=2, size=(4, 5),
                                             k=(3, 3), padding=1, stride=2, adapting="cin"),
    "conv1d": dict(op="conv", B=2, cin=2, cout=2, size=(9,), k=(3,), cg=1, padding=1, stride=2),
    "conv3d_norm": dict(op="conv", B=1, cin=2, cout=2, size=(3, 4, 3), k=(3, 3, 3), cg=1,
                        padding=1, normalize=True),
    "convT2d_s2_op1_norm": dict(op="convT", B=1, cin=2, cout=3, size=(3, 4), k=(3, 3), cg=2,
                                stride=2, padding=1, output_padding=1, normalize=True),
    "convT2d_groups_dil_mask": dict(op="convT", B=1, cin=4, cout=2, groups=2, size=(3, 3),
                                    k=(3, 3), cg=1, stride=2, padding=2, dilation=2,
                                    output_padding=1, mask=True),
    "convT1d_s3": dict(op="convT", B=1, cin=2, cout=2, size=(4,), k=(5,), cg=1, stride=3,
                       padding=1),
    "pool2d_cw_norm": dict(op="pool", B=1, cin=2, size=(6, 5), k=(3, 3), channel_wise=True,
                           stride=2, padding=1, normalize=True),
    "pool2d_dpp": dict(op="pool", B=1, cin=2, size=(5, 6), k=(3, 3), cg=2, stride=2,
                       padding=1, kernel="inverse", alpha=0.2, lam=1.0, normalize=True),
    "plain_conv": dict(op="plain", B=1, cin=3, cout=2, size=(5, 5), k=(3, 3), stride=2,
                       padding=1),
    "plain_convT": dict(op="plainT", B=1, cin=2, cout=2, size=(3, 3), k=(3, 3), stride=2,
                        padding=1, output_padding=1),
    # geometry that reaches far past the image (memory safety: every tap of a window
    # can miss the input, windows start and end outside it)
    "far_conv2d_dilation_past_image": dict(op="conv", B=1, cin=2, cout=2, size=(5, 6),
                                           k=(3, 3), cg=2, padding=9, dilation=9,
                                           normalize=True, mask=True),
    "far_conv2d_padding_stride": dict(op="conv", B=1, cin=2, cout=3, size=(4, 5), k=(5, 3),
                                      cg=1, padding=(11, 7), stride=3, dilation=(1, 4)),
    "far_conv3d_dilation": dict(op="conv", B=1, cin=1, cout=2, size=(3, 4, 3), k=(3, 3, 3),
                                cg=1, padding=4, dilation=4),
    "far_convT2d_dilation": dict(op="convT", B=1, cin=2, cout=2, size=(3, 2), k=(3, 3), cg=1,
                                 stride=2, padding=(0, 1), dilation=5, output_padding=(1, 0),
                                 mask=True),
    "far_pool2d": dict(op="pool", B=1, cin=2, size=(4, 4), k=(3, 3), cg=1, stride=2,
                       padding=6, dilation=5, normalize=True),
    "far_plain_conv": dict(op="plain", B=1, cin=2, cout=2, size=(3, 4), k=(3, 3), padding=8,
                           dilation=7),
}

#: the larger problems the tiled CUDA C kernels are meant for (several 64-wide tiles)
TILED_CONFIGS = {
    "tiled_conv2d_norm": dict(op="conv", B=2, cin=70, cout=66, size=(9, 8), k=(3, 3), cg=3,
                              padding=1, normalize=True),
    "tiled_conv2d_groups_stride": dict(op="conv", B=1, cin=16, cout=24, groups=2, size=(11, 9),
                                       k=(5, 5), cg=2, stride=2, padding=2),
    "tiled_convT2d": dict(op="convT", B=1, cin=12, cout=10, size=(5, 6), k=(5, 5), cg=2,
                          stride=2, padding=2, output_padding=1, mask=True),
    "tiled_conv2d_K": dict(op="conv", B=1, cin=9, cout=8, size=(6, 7), k=(3, 3), padding=1,
                           adapting=1),
    "tiled_plain_conv3d": dict(op="plain", B=1, cin=8, cout=9, size=(3, 5, 4), k=(3, 3, 3),
                               padding=1),
    "tiled_far_conv2d": dict(op="conv", B=1, cin=20, cout=18, size=(6, 5), k=(3, 3), cg=2,
                             padding=10, dilation=10, normalize=True, mask=True),
    "tiled_far_convT2d": dict(op="convT", B=1, cin=12, cout=10, size=(3, 4), k=(5, 5), cg=1,
                              stride=2, padding=0, dilation=4, output_padding=1),
}


def make_inputs(cfg, dtype=np.float64, seed=0):
    """Arrays of a config: input, guide, weight, bias, mask, adapting, grad_output."""
    rng = np.random.default_rng(seed)
    nd = len(cfg["size"])
    k = cfg["k"]
    B, cin = cfg["B"], cfg["cin"]
    groups = cfg.get("groups", 1)
    out = {"input": rng.standard_normal((B, cin) + cfg["size"])}
    op = cfg["op"]
    if op in ("conv", "plain"):
        if cfg.get("shared"):
            out["weight"] = rng.standard_normal((1, 1) + k)
        else:
            out["weight"] = rng.standard_normal((cfg["cout"], cin // groups) + k)
    elif op in ("convT", "plainT"):
        out["weight"] = rng.standard_normal((cin, cfg["cout"] // groups) + k)
    geo = {n: (v if isinstance(v, tuple) else (v,) * nd) for n, v in geometry(cfg).items()}
    if op in ("conv", "plain", "pool"):
        out_size = pacnd._geometry.conv_output_size(cfg["size"], k, geo["stride"], geo["padding"],
                                                    geo["dilation"])
    else:
        out_size = pacnd._geometry.conv_transpose_output_size(
            cfg["size"], k, geo["stride"], geo["padding"], geo["dilation"],
            geo["output_padding"])
    guide_size = out_size if op == "convT" else cfg["size"]
    if op not in ("plain", "plainT") and not cfg.get("adapting"):
        cg = cin if cfg.get("channel_wise") else cfg["cg"]
        out["guide"] = rng.standard_normal((B, cg) + tuple(guide_size))
    if op != "pool":
        cout = cin if cfg.get("shared") else cfg["cout"]
        out["bias"] = rng.standard_normal(cout)
    if cfg.get("mask"):
        out["mask"] = (rng.random((B, 1) + cfg["size"]) > 0.3).astype(np.float64)
    if cfg.get("adapting"):
        ck = 1 if cfg["adapting"] == 1 else cin
        out["adapting"] = rng.random((B, ck) + tuple(k) + tuple(out_size)) + 0.1
    cout = cin if (cfg.get("shared") or op == "pool") else cfg["cout"]
    out["grad_output"] = rng.standard_normal((B, cout) + tuple(out_size))
    out["_nd"] = nd
    return {n: (a.astype(dtype) if isinstance(a, np.ndarray) else a) for n, a in out.items()}


def geometry(cfg):
    return {"stride": cfg.get("stride", 1), "padding": cfg.get("padding", 0),
            "dilation": cfg.get("dilation", 1), "output_padding": cfg.get("output_padding", 0)}


def kernel_opts(cfg):
    o = {}
    for n in ("kernel", "alpha", "lam", "asym", "normalize", "channel_wise"):
        if n in cfg:
            o[n] = np.asarray(cfg[n], dtype=np.float64) if n in ("alpha", "lam") and \
                isinstance(cfg[n], list) else cfg[n]
    return o


def calls(cfg, arrs):
    """{name: zero-argument callable} of every public call of a config."""
    op = cfg["op"]
    geo = geometry(cfg)
    kop = kernel_opts(cfg)
    x, go = arrs["input"], arrs["grad_output"]
    w, b = arrs.get("weight"), arrs.get("bias")
    f, m, K = arrs.get("guide"), arrs.get("mask"), arrs.get("adapting")
    groups = cfg.get("groups", 1)
    res = {}
    if op in ("conv", "convT"):
        fwd_fn = pacnd.pac_conv if op == "conv" else pacnd.pac_conv_transpose
        vjp_fn = pacnd.pac_conv_vjp if op == "conv" else pacnd.pac_conv_transpose_vjp
        kw = dict(stride=geo["stride"], padding=geo["padding"], dilation=geo["dilation"],
                  groups=groups, shared=cfg.get("shared", False), mask=m, adapting=K, **kop)
        if op == "convT":
            kw["output_padding"] = geo["output_padding"]
        wrt = ["input", "weight", "bias"] + (["adapting"] if K is not None else ["guide"])
        if kop.get("kernel") == "inverse":
            wrt += ["alpha", "lam"]
        res["forward"] = lambda: fwd_fn(x, f, w, b, **kw)
        res["vjp"] = lambda: vjp_fn(go, x, f, w, b, wrt=tuple(wrt), **kw)
    elif op == "pool":
        kw = dict(stride=geo["stride"], padding=geo["padding"], dilation=geo["dilation"],
                  mask=m, adapting=K, **kop)
        wrt = ["input"] + (["adapting"] if K is not None else ["guide"])
        if kop.get("kernel") == "inverse":
            wrt += ["alpha", "lam"]
        res["forward"] = lambda: pacnd.pac_pool(x, f, cfg["k"], **kw)
        res["vjp"] = lambda: pacnd.pac_pool_vjp(go, x, f, cfg["k"], wrt=tuple(wrt), **kw)
    elif op == "plain":
        kw = dict(stride=geo["stride"], padding=geo["padding"], dilation=geo["dilation"],
                  groups=groups)
        res["forward"] = lambda: pacnd.conv(x, w, b, **kw)
        res["vjp"] = lambda: pacnd.conv_vjp(go, x, w, b, **kw)
    else:
        kw = dict(stride=geo["stride"], padding=geo["padding"], dilation=geo["dilation"],
                  groups=groups, output_padding=geo["output_padding"])
        res["forward"] = lambda: pacnd.conv_transpose(x, w, b, **kw)
        res["vjp"] = lambda: pacnd.conv_transpose_vjp(go, x, w, b, **kw)
    if f is not None:
        kk = dict(stride=geo["stride"], padding=geo["padding"], dilation=geo["dilation"],
                  mask=m, **kop)
        if op == "convT":
            kk.update(transposed=True, output_padding=geo["output_padding"])
        res["adapting_kernel"] = lambda: pacnd.adapting_kernel(f, cfg["k"], **kk)
        kwrt = ("guide", "alpha", "lam") if kop.get("kernel") == "inverse" else ("guide",)

        def kvjp():
            Kf = pacnd.adapting_kernel(f, cfg["k"], **kk)
            gk = np.random.default_rng(7).standard_normal(Kf.shape).astype(Kf.dtype)
            if type(Kf).__module__.split(".")[0] == "cupy":
                gk = _to_cupy(gk)
            return pacnd.adapting_kernel_vjp(gk, f, cfg["k"], wrt=kwrt, **kk)

        res["adapting_kernel_vjp"] = kvjp
    return res


def _to_cupy(a):
    import cupy  # noqa: PLC0415 - only for CuPy arrays (GPU tests)
    return cupy.asarray(a)


def run_all(engine_module, cfg, arrs):
    """{call name: result} of every call of a config on ``engine_module`` (NumPy arrays out)."""
    out = {}
    with with_engine(engine_module):
        for name, fn in calls(cfg, arrs).items():
            out[name] = fn()
    return out


def compare(got, want):
    """{call/grad: relative error} over every result of :func:`run_all`."""
    errs = {}
    for name, w in want.items():
        g = got[name]
        if isinstance(w, dict):
            assert set(g) == set(w), (name, set(g), set(w))
            for k in w:
                errs[f"{name}.{k}"] = rel_err(_np(g[k]), w[k])
        else:
            errs[name] = rel_err(_np(g), w)
    return errs


def _np(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


# --------------------------------------------------------------------------- reference cases
def reference_case_names():
    if not REFERENCE_DIR.is_dir():
        return []
    names = []
    for f in sorted(REFERENCE_DIR.glob("*.npz")):
        with np.load(f, allow_pickle=False) as z:
            if str(z["op"]) != "paccrf":
                names.append(f.stem)
    return names


def load_reference_case(name):
    out = {"name": name}
    with np.load(REFERENCE_DIR / f"{name}.npz", allow_pickle=False) as z:
        for k in z.files:
            v = z[k]
            out[k] = v.item() if v.ndim == 0 else v
    if isinstance(out.get("pairwise_kernels"), str):
        out["pairwise_kernels"] = json.loads(out["pairwise_kernels"])
    return out


GRAD_NAMES = {"input": "input", "weight": "weight", "bias": "bias", "guide": "guide",
              "inv_alpha": "alpha", "inv_lambda": "lam"}


def _kernel_type_opts(kt):
    if kt == "gaussian":
        return {"kernel": "gaussian"}
    parts = kt.split("_")
    return {"kernel": "inverse", "alpha": float(parts[1]), "lam": float(parts[2]),
            "asym": len(parts) == 4}


def reference_calls(case):
    """{name: callable} for a reference case, and {name: expected} to compare with."""
    op = case["op"]
    geo = {"stride": case["stride"], "padding": case["padding"], "dilation": case["dilation"]}
    norm = bool(case["normalize_kernel"])
    go = case["grad_output"]
    grads = [n for n in GRAD_NAMES if f"expect_grad_{n}" in case]
    if op == "pacconv2d":
        kop = _kernel_type_opts(case["kernel_type"])
        opts = dict(geo, normalize=norm, shared=bool(case["shared_filters"]), **kop)
        args = (case["input"], case["guide"], case["weight"], case["bias"])
        k = case["weight"].shape[-1]
        fwd = lambda: pacnd.pac_conv(*args, **opts)  # noqa: E731
        vjp = lambda: pacnd.pac_conv_vjp(go, *args, wrt=tuple(GRAD_NAMES[g] for g in grads),  # noqa: E731
                                         **opts)
        kern = lambda: pacnd.adapting_kernel(case["guide"], k, normalize=norm, **geo, **kop)  # noqa: E731
    elif op == "pacconv_transpose2d":
        opts = dict(geo, output_padding=case["output_padding"], normalize=norm)
        args = (case["input"], case["guide"], case["weight"], case["bias"])
        k = case["weight"].shape[-1]
        fwd = lambda: pacnd.pac_conv_transpose(*args, **opts)  # noqa: E731
        vjp = lambda: pacnd.pac_conv_transpose_vjp(  # noqa: E731
            go, *args, wrt=tuple(GRAD_NAMES[g] for g in grads), **opts)
        kern = lambda: pacnd.adapting_kernel(case["guide"], k, transposed=True, **opts)  # noqa: E731
    else:
        kop = _kernel_type_opts(case["kernel_type"])
        opts = dict(geo, normalize=norm, channel_wise=bool(case["channel_wise"]), **kop)
        args = (case["input"], case["guide"])
        k = case["kernel_size"]
        fwd = lambda: pacnd.pac_pool(*args, k, **opts)  # noqa: E731
        vjp = lambda: pacnd.pac_pool_vjp(go, *args, k, wrt=tuple(GRAD_NAMES[g] for g in grads),  # noqa: E731
                                         **opts)
        kern = lambda: pacnd.adapting_kernel(case["guide"], k, **opts)  # noqa: E731
    expected = {"forward": case["expect_output"], "adapting_kernel": case["expect_kernel"],
                "vjp": {GRAD_NAMES[g]: case[f"expect_grad_{g}"] for g in grads}}
    if case["name"] == "pool_k3_channelwise":
        # the reference's grad_input is wrong there (it contracts with the channel-summed
        # K; see tests/test_reference_cases.py::test_pool_channelwise_grad_input)
        del expected["vjp"]["input"]
    return {"forward": fwd, "adapting_kernel": kern, "vjp": vjp}, expected


def run_reference_case(engine_module, case):
    fns, expected = reference_calls(case)
    got = {}
    with with_engine(engine_module):
        for n, fn in fns.items():
            got[n] = fn()
    if "vjp" in got:
        got["vjp"] = {k: v for k, v in got["vjp"].items() if k in expected["vjp"]}
    return compare(got, expected)


def random_configs(n, seed=0):
    """``n`` random valid configs (op, shapes and options drawn at random)."""
    rng = np.random.default_rng(seed)
    out = {}
    while len(out) < n:
        op = str(rng.choice(["conv", "conv", "convT", "pool", "plain"]))
        nd = int(rng.choice([1, 2, 2, 2, 3]))
        k = tuple(int(v) for v in rng.choice([1, 3, 5], size=nd, p=[0.15, 0.6, 0.25]))
        size = tuple(int(v) for v in rng.integers(3, 9 if nd < 3 else 5, size=nd))
        stride = int(rng.choice([1, 1, 2, 3]))
        dil = int(rng.choice([1, 1, 2]))
        pad = int(rng.integers(0, max(k) // 2 * dil + 2))
        groups = int(rng.choice([1, 1, 2]))
        cin = groups * int(rng.integers(1, 4))
        cout = groups * int(rng.integers(1, 4))
        cfg = dict(op=op, B=int(rng.integers(1, 3)), cin=cin, cout=cout, size=size, k=k,
                   stride=stride, dilation=dil, padding=pad, groups=groups,
                   cg=int(rng.integers(1, 4)))
        if op == "convT":
            cfg["output_padding"] = int(rng.integers(0, max(stride, dil)))
        if op == "pool":
            cfg.pop("groups")
        if op != "plain":
            cfg["normalize"] = bool(rng.random() < 0.5)
            if rng.random() < 0.3:
                cfg["mask"] = True
            kind = str(rng.choice(["gaussian", "laplacian", "inverse"]))
            cfg["kernel"] = kind
            if kind == "inverse":
                cfg["alpha"] = float(rng.uniform(0, 0.5))
                cfg["lam"] = float(rng.choice([-1.0, -0.5, 1.0]))
                cfg["asym"] = bool(rng.random() < 0.5)
            if op in ("pool", "conv") and rng.random() < 0.3:
                cfg["channel_wise"] = True
        try:
            make_inputs(cfg)
            geo = geometry(cfg)
            shape_ok = True
            if op == "convT" and cfg["output_padding"] >= max(stride, dil):
                shape_ok = False
        except Exception:
            continue
        outs = make_inputs(cfg)["grad_output"].shape[2:]
        if not shape_ok or min(outs) < 1 or (op == "convT" and geo["padding"] >
                                             (max(k) - 1) * dil):
            continue
        out[f"random{len(out)}"] = cfg
    return out
