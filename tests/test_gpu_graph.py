"""The training stack on CuPy arrays against the same computation on NumPy.

pacnd's autodiff graph (:mod:`pacnd.autograd`, :mod:`pacnd.functional`), layers
(:mod:`pacnd.nn`), optimizers (:mod:`pacnd.optim`, updates fused with
``cupy.fuse``), joint-upsampling networks and training loop (:mod:`pacnd.models`,
:mod:`pacnd.train`) and the PAC-CRF module (:class:`pacnd.crf.PacCRF`, graph path)
take their array module from their inputs, so they are meant to run on CuPy arrays
unchanged. Only a GPU shows whether they do: NumPy constants mixed into device
arithmetic, NumPy-only calls, ufunc methods and dtype promotion all behave
differently on CuPy. Each check runs one computation twice — on NumPy with the
``"numpy"`` reference engine (the independent oracle) and on CuPy, with each GPU
engine (``"cuda"``, ``"cupy"``) where PAC ops are involved — and requires every
CuPy-side result (outputs, gradients, parameters, optimizer state) to be a CuPy
array of the NumPy result's dtype and shape, within 1e-10 (float64) / 1e-5
(float32) of it relative to its largest magnitude:

* every case of ``tests/test_autograd_ops.py`` (``CASES``, ``PAC_CASES``): the
  output and the gradient of every input of ``sum(out * u)``, ``u`` fixed random;
* Adam (no decay, L2, decoupled) and SGD (plain, L2, momentum with dampening,
  Nesterov) over several steps, updating the parameter's array in place;
* the joint-upsampling networks (PAC-lite on depth and on two-channel flow, DJF,
  JBU), moved with ``Module.map_arrays(cupy.asarray)`` and loaded with the NumPy
  model's state dict: output and every parameter gradient of the masked training
  loss, and PAC-lite after a few ``train_upsampler`` steps (float64 only: Adam
  normalises each gradient entry, so float32 rounding noise in a near-zero entry
  may flip a whole ``lr``-sized step);
* PacCRF on the authors' reference cases and on pacnd's extensions (blur,
  symmetric normalisation, compatibility transforms, learnable pairwise weights
  and feature scales): output and the gradients of the inputs and of every
  parameter.

Marked ``gpu``: skipped with the reason where CuPy or a CUDA device is missing
(``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from conftest import load_reference_case, reference_case_names
from test_autograd_ops import CASES, PAC_CASES
from test_crf import CONFIGS as CRF_CONFIGS

import pacnd
from pacnd import nn, optim
from pacnd._validate import array_module
from pacnd.autograd import Tensor
from pacnd.crf import PacCRF
from pacnd.data import JointUpsamplingPairs, SyntheticScenes
from pacnd.models import (DJF, JointBilateralUpsample, PacJointUpsampleLite, train_upsampler,
                          upsampling_loss)

pytestmark = pytest.mark.gpu

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
DTYPES = pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])


# --------------------------------------------------------------------------- helpers
def _cupy():
    from pacnd._cupy import require_gpu  # noqa: PLC0415
    return require_gpu()


def to_gpu(value):
    """NumPy arrays (also the values of a dict) as CuPy arrays; anything else unchanged."""
    if isinstance(value, dict):
        return {k: to_gpu(v) for k, v in value.items()}
    return _cupy().asarray(value) if isinstance(value, np.ndarray) else value


def to_cpu(value):
    """The NumPy side's counterpart of :func:`to_gpu`: a copy, so both sides start alike."""
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    return value.copy() if isinstance(value, np.ndarray) else value


def both(compute, engine=None):
    """``(on CuPy, on NumPy)`` results of ``compute(to)``, where ``to`` moves NumPy
    inputs to the side's device; NumPy runs the reference engine, CuPy ``engine``."""
    with pacnd.use_engine("numpy"):
        want = compute(to_cpu)
    with pacnd.use_engine(engine) if engine else contextlib.nullcontext():
        got = compute(to_gpu)
    return got, want


def _magnitude(a):
    return 0.0 if a is None else float(np.abs(np.asarray(a, dtype=np.float64)).max(initial=0.0))


def assert_close(got, want, tol, what, floor=0.0):
    """``got`` is a CuPy array like NumPy's ``want`` (or both are None), within
    ``tol`` times the larger of ``want``'s largest magnitude and ``floor``."""
    if want is None or got is None:
        assert got is None and want is None, f"{what}: CuPy gave {type(got).__name__}, " \
                                             f"NumPy {type(want).__name__}"
        return
    cp = _cupy()
    assert isinstance(got, cp.ndarray), \
        f"{what}: a {type(got).__module__}.{type(got).__name__}, not a CuPy array"
    assert (got.dtype, got.shape) == (want.dtype, want.shape), \
        f"{what}: {got.dtype} {got.shape} on CuPy, {want.dtype} {want.shape} on NumPy"
    err = float(np.abs(cp.asnumpy(got) - np.asarray(want, dtype=np.float64)).max(initial=0.0))
    scale = max(_magnitude(want), floor)
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} x {scale:.3g}"


def compare(got, want, dtype):
    """Every entry of two ``{name: array or None}`` results (see :func:`assert_close`),
    each relative to its own largest magnitude; gradients (``"grad ..."``) relative to
    the largest gradient of the run at least: an analytically zero gradient (a bias
    that only shifts a guide, which the adapting kernel ignores) or a scalar's
    gradient summed over every pixel is rounding noise of the larger terms it sums."""
    assert list(got) == list(want)
    grad_scale = max([_magnitude(v) for k, v in want.items() if k.startswith("grad ")],
                     default=0.0)
    for k in want:
        assert_close(got[k], want[k], TOL[np.dtype(dtype)], k,
                     grad_scale if k.startswith("grad ") else 0.0)


def moved(model, to, state):
    """``model`` with its arrays moved by ``to`` (``map_arrays``), then ``state`` loaded."""
    model.map_arrays(to)
    model.load_state_dict(state)
    return model


# --------------------------------------------------------------------------- operations
def graph_run(fn, inputs, dtype):
    """``compute(to)`` for one operation: its output and the gradient of every input
    of ``sum(out * u)``."""
    def compute(to):
        ts = {k: Tensor(to(np.asarray(v, dtype=dtype)), requires_grad=True)
              for k, v in inputs.items()}
        out = fn(**ts)
        u = np.asarray(np.random.default_rng(1).standard_normal(out.shape), dtype=out.dtype)
        (out * Tensor(to(u))).sum().backward()
        return {"output": out.data, **{f"grad {k}": t.grad for k, t in ts.items()}}
    return compute


@DTYPES
@pytest.mark.parametrize("name", sorted(CASES))
def test_op(name, dtype):
    fn, inputs = CASES[name]
    compare(*both(graph_run(fn, inputs, dtype)), dtype)


@DTYPES
@pytest.mark.parametrize("name", sorted(PAC_CASES))
def test_pac_op(name, dtype, gpu_engine):
    fn, inputs = PAC_CASES[name]
    compare(*both(graph_run(fn, inputs, dtype), gpu_engine), dtype)


# --------------------------------------------------------------------------- optimizers
OPTIMIZERS = {
    "adam": lambda ps: optim.Adam(ps, lr=0.05, betas=(0.8, 0.95), eps=1e-6),
    "adam_l2": lambda ps: optim.Adam(ps, lr=0.05, betas=(0.8, 0.95), eps=1e-6,
                                     weight_decay=0.1),
    "adam_decoupled": lambda ps: optim.Adam(ps, lr=0.05, weight_decay=0.1, decoupled=True),
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "sgd_l2": lambda ps: optim.SGD(ps, lr=0.1, weight_decay=0.01),
    "sgd_momentum_l2": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.3,
                                            weight_decay=0.01),
    "sgd_nesterov_l2": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01,
                                            nesterov=True),
}


@DTYPES
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_steps(name, dtype):
    rng = np.random.default_rng(3)
    p0, target = rng.standard_normal((2, 3, 5)).astype(dtype)

    def compute(to):
        p = nn.Parameter(to(p0))
        data = p.data
        opt = OPTIMIZERS[name]([p])
        t = to(target)
        xp = array_module(data)
        for _ in range(8):
            p.grad = 2 * (p.data - t) + 0.1 * xp.sin(p.data)
            opt.step()
        assert p.data is data, "the step replaced the parameter's array instead of updating it"
        state = {k: v for k, v in opt.state.get(id(p), {}).items() if k != "step"}
        return {"param": p.data, **state}

    compare(*both(compute), dtype)


# --------------------------------------------------------------------------- joint upsampling
MODELS = {  # name -> (build(seed), target kind)
    "pac_lite_depth": (lambda seed: PacJointUpsampleLite(4, rng=seed), "depth"),
    "pac_lite_flow": (lambda seed: PacJointUpsampleLite(4, 2, rng=seed), "flow"),
    "djf_depth": (lambda seed: DJF(4, rng=seed), "depth"),
    "jbu_flow": (lambda seed: JointBilateralUpsample(4), "flow"),
}


def upsampling_batch(kind, dtype):
    """A synthetic training batch (2 crops of 16x16, 4x) with unknown target rows."""
    data = JointUpsamplingPairs([], 4, kind=kind, crop=16,
                                synthetic=SyntheticScenes(kind, (16, 16)), batch_size=2)
    full = data(np.random.default_rng(0))
    batch = {k: full[k].astype(dtype) for k in ("low", "guide", "target", "mask")}
    batch["mask"][..., :3, :] = 0
    return batch


@DTYPES
@pytest.mark.parametrize("name", sorted(MODELS))
def test_upsampler_output_and_gradients(name, dtype, gpu_engine):
    build, kind = MODELS[name]
    state = build(0).astype(dtype).state_dict()
    batch = upsampling_batch(kind, dtype)

    def compute(to):
        m = moved(build(1).astype(dtype), to, state)
        res = {"output": m(Tensor(to(batch["low"])), Tensor(to(batch["guide"]))).data}
        params = dict(m.named_parameters())
        if params:
            loss, _ = upsampling_loss(m, to(batch), border=2)
            loss.backward()
            res["loss"] = loss.data
            res.update({f"grad {k}": p.grad for k, p in params.items()})
        return res

    compare(*both(compute, gpu_engine), dtype)


def test_upsampler_training_steps(gpu_engine):
    build, kind = MODELS["pac_lite_depth"]
    dtype = np.float64
    state = build(0).astype(dtype).state_dict()
    batch = upsampling_batch(kind, dtype)

    def compute(to):
        m = moved(build(1).astype(dtype), to, state)
        arrays = {k: p.data for k, p in m.named_parameters()}
        gpu_batch = to(batch)
        run = train_upsampler(m, lambda rng: gpu_batch, steps=3, lr=1e-3, milestones=(2,),
                              border=2, progress=False)
        assert run.step == 3
        assert all(p.data is arrays[k] for k, p in m.named_parameters()), \
            "training replaced parameter arrays instead of updating them in place"
        return dict(m.state_dict()), [row["loss"] for row in run.history]

    (got, got_loss), (want, want_loss) = both(compute, gpu_engine)
    np.testing.assert_allclose(got_loss, want_loss, rtol=TOL[np.dtype(dtype)])
    compare(got, want, dtype)


@pytest.mark.parametrize("name", ["pac_lite_depth", "pac_lite_flow"])
def test_upsample_call_runs_on_the_models_device(name, gpu_engine):
    """``model.upsample(low, guide)`` (NumPy in, NumPy out) on a model moved to the
    GPU runs there and returns the CPU model's result."""
    build, kind = MODELS[name]
    batch = upsampling_batch(kind, np.float32)
    low = batch["low"][0].transpose(1, 2, 0)
    low = low[..., 0] if low.shape[-1] == 1 else low
    guide = batch["guide"][0].transpose(1, 2, 0)
    cpu = build(0)
    with pacnd.use_engine("numpy"):
        want = cpu.upsample(low, guide, pad=2)
    gpu = build(0).map_arrays(_cupy().asarray)
    with pacnd.use_engine(gpu_engine):
        got = gpu.upsample(low, guide, pad=2)
    assert type(got) is np.ndarray and got.dtype == np.float32 and got.shape == want.shape
    scale = max(np.abs(want).max(), 1e-6)
    assert np.abs(got - want).max() <= 1e-5 * scale


# --------------------------------------------------------------------------- PAC-CRF
def crf_run(build, state, unary, edge_feat, grad_output):
    """``compute(to)`` for a PacCRF: output and the gradients of unary, edge
    features and every parameter for the upstream gradient ``grad_output``."""
    def compute(to):
        crf = moved(build(), to, state)
        u = Tensor(to(unary), requires_grad=True)
        f = Tensor(to(edge_feat), requires_grad=True)
        out = crf(u, f)
        out.backward(to(grad_output))
        return {"output": out.data, "grad unary": u.grad, "grad edge_feat": f.grad,
                **{f"grad {k}": p.grad for k, p in crf.named_parameters()}}
    return compute


@pytest.mark.parametrize("name", reference_case_names(ops=("paccrf",), exclude_ops=()))
def test_crf_reference_case(name, gpu_engine):
    case = load_reference_case(name)

    def build():
        return PacCRF(case["unary"].shape[1], int(case["num_steps"]), case["pairwise_kernels"],
                      dtype=np.float64, perturbed_init=bool(case["perturbed_init"]))

    arrays = [np.asarray(case[k], dtype=np.float64)
              for k in ("unary", "edge_feat", "grad_output")]
    compare(*both(crf_run(build, build().state_dict(), *arrays), gpu_engine), np.float64)


@DTYPES
@pytest.mark.parametrize("config", sorted(CRF_CONFIGS))
def test_crf_extensions(config, dtype, gpu_engine):
    def build():
        return PacCRF(4, 3, CRF_CONFIGS[config], final_output="log_softmax", dtype=dtype,
                      perturbed_init=True, rng=0, unary_weight=0.8, learn_pairwise_weights=True)

    rng = np.random.default_rng(5)
    unary, grad_output = rng.normal(size=(2, 2, 4, 13, 11)).astype(dtype)
    edge_feat = rng.normal(size=(2, 3, 13, 11)).astype(dtype)
    compare(*both(crf_run(build, build().state_dict(), unary, edge_feat, grad_output),
                  gpu_engine), dtype)


# --------------------------------------------------------------------------- state across devices
def test_state_dicts_move_between_host_and_gpu():
    """A GPU model's / optimizer's state dict loads into a CPU one and back (values
    are copied to the target's device), and training continues identically."""
    cp = _cupy()
    build, kind = MODELS["pac_lite_depth"]
    batch = upsampling_batch(kind, np.float64)
    gpu = build(0).astype(np.float64).map_arrays(cp.asarray)
    opt_gpu = optim.Adam(gpu.parameters(), lr=1e-3)
    loss, _ = upsampling_loss(gpu, to_gpu(batch), border=2)
    loss.backward()
    opt_gpu.step()
    cpu = build(1).astype(np.float64)
    cpu.load_state_dict(gpu.state_dict())
    opt_cpu = optim.Adam(cpu.parameters(), lr=1e-3)
    opt_cpu.load_state_dict(opt_gpu.state_dict())
    for (name, p), (_, q) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert type(p.data) is np.ndarray
        np.testing.assert_array_equal(p.data, q.data.get(), err_msg=name)
    for st in opt_cpu.state.values():
        assert all(type(v) is np.ndarray for v in st.values() if hasattr(v, "shape"))
    back = build(2).astype(np.float64).map_arrays(cp.asarray)
    back.load_state_dict(cpu.state_dict())
    for (name, p), (_, q) in zip(back.named_parameters(), cpu.named_parameters()):
        assert array_module(p.data) is cp
        np.testing.assert_array_equal(p.data.get(), q.data, err_msg=name)
