"""PacCRF: the authors' reference cases (graph path, output and every gradient, float64,
<= 1e-10 relative), the reference initialisation, and fast array path == graph path."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_reference_case, reference_case_names

from pacnd.autograd import Tensor
from pacnd.crf import PacCRF, PairwiseKernel
from pacnd.crf.model import crf_filter_init

RTOL = 1e-10
CRF_CASES = reference_case_names(ops=("paccrf",), exclude_ops=())


def rel_err(actual, expected):
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected).max()) / max(float(np.abs(expected).max()), 1e-300)


def _crf_of(case):
    L = case["unary"].shape[1]
    return PacCRF(L, int(case["num_steps"]), case["pairwise_kernels"], dtype=np.float64,
                  perturbed_init=bool(case["perturbed_init"]))


def test_reference_cases_exist():
    assert len(CRF_CASES) >= 5, CRF_CASES


@pytest.mark.parametrize("name", CRF_CASES)
def test_reference_init_matches_used_parameters(name):
    """The reference init (computed as the reference does, in float32) is bit-exact."""
    case = load_reference_case(name)
    crf = _crf_of(case)
    for i, spec in enumerate(crf.kernels):
        np.testing.assert_array_equal(crf.messengers[i].weight.data,
                                      case[f"expect_used_crf_weight_{i}"])
        if spec.compat == "2d":
            np.testing.assert_array_equal(crf.compat[i].weight.data,
                                          case[f"expect_used_crf_compat_{i}"])
        # the sign convention: logQ = w_u U - sum_i w_i msg_i ('potts': w_i = -weight)
        assert crf.effective_pairwise_weight(i) == case[f"expect_used_crf_pairwise_weight_{i}"]
    assert float(crf.unary_weight.data) == case["expect_used_crf_unary_weight"]


@pytest.mark.parametrize("name", CRF_CASES)
def test_reference_case_output_and_gradients(name):
    case = load_reference_case(name)
    crf = _crf_of(case)
    u = Tensor(case["unary"], requires_grad=True)
    f = Tensor(case["edge_feat"], requires_grad=True)
    out = crf(u, f)
    assert out.dtype == np.float64
    assert rel_err(out.data, case["expect_output"]) <= RTOL
    out.backward(case["grad_output"])
    assert rel_err(u.grad, case["expect_grad_unary"]) <= RTOL
    assert rel_err(f.grad, case["expect_grad_edge_feat"]) <= RTOL
    assert rel_err(crf.unary_weight.grad, case["expect_grad_crf_unary_weight"]) <= RTOL
    for i, spec in enumerate(crf.kernels):
        assert rel_err(crf.messengers[i].weight.grad,
                       case[f"expect_grad_crf_weight_{i}"]) <= RTOL
        if spec.compat == "2d":
            assert rel_err(crf.compat[i].weight.grad,
                           case[f"expect_grad_crf_compat_{i}"]) <= RTOL
        # pairwise weights are constants in the reference (not learnable here)
        assert crf.pairwise_weights[i].grad is None


@pytest.mark.parametrize("name", CRF_CASES)
def test_reference_case_fast_path(name):
    case = load_reference_case(name)
    crf = _crf_of(case)
    out = crf.infer(case["unary"], case["edge_feat"])
    assert rel_err(out, case["expect_output"]) <= RTOL


def test_precomputed_edge_kernel_and_starting_logq(rng):
    case = load_reference_case(CRF_CASES[0])
    crf = _crf_of(case)
    K = crf.edge_kernels(case["edge_feat"])
    a = crf(case["unary"], case["edge_feat"]).data
    b = crf(case["unary"], None, edge_kernel=[np.asarray(k.data if hasattr(k, "data") else k)
                                              for k in K]).data
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    c = crf.infer(case["unary"], None, edge_kernel=[np.asarray(getattr(k, "data", k))
                                                    for k in K])
    np.testing.assert_allclose(a, c, rtol=0, atol=1e-12)
    logq0 = rng.normal(size=case["unary"].shape)
    g = crf(case["unary"], case["edge_feat"], logQ=logq0).data
    from pacnd.crf.fast import mean_field
    h = mean_field(crf, case["unary"], case["edge_feat"], logQ=logq0)
    np.testing.assert_allclose(g, h, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ fast path == graph path
CONFIGS = {
    "potts_sym_blur3": [dict(kernel_size=5, dilation=2, blur=3, compat="potts",
                             normalize="symmetric", feat_scale=[0.5, 1.0, 2.0])],
    "2d_and_potts_blur2": [dict(kernel_size=3, blur=2, compat="2d", feat_scale=0.7),
                           dict(kernel_size=5, dilation=2, blur=2, compat="potts",
                                pairwise_weight=2.0)],
    "mixed_levels": [dict(kernel_size=3, compat="none"),
                     dict(kernel_size=5, blur=4, compat="potts", spatial_filter=False,
                          normalize="symmetric"),
                     dict(kernel_size=3, dilation=3, blur=2, compat="4d")],
    "grouped_norm": [dict(kernel_size=5, blur=2, compat="potts", normalize="symmetric",
                          group=0, feat_scale=0.3),
                     dict(kernel_size=3, dilation=3, blur=2, compat="potts",
                          normalize="symmetric", group=0, feat_scale=0.3,
                          pairwise_weight=3.0),
                     dict(kernel_size=3, blur=2, compat="2d", normalize="symmetric",
                          feat_scale=0.0)],
    "anisotropic_blur": [dict(kernel_size=3, blur=(1, 3), compat="potts",
                              normalize="symmetric", group=0, feat_scale=0.5),
                         dict(kernel_size=3, dilation=2, blur=(1, 3), compat="potts",
                              normalize="symmetric", group=0, feat_scale=0.5),
                         dict(kernel_size=3, blur=(2, 1), compat="2d")],
    "before_after": [dict(kernel_size=5, blur=2, compat="potts", normalize="before",
                          group=0, feat_scale=0.4),
                     dict(kernel_size=3, dilation=3, blur=2, compat="potts",
                          normalize="before", group=0, feat_scale=0.4),
                     dict(kernel_size=3, compat="2d", normalize="after", feat_scale=0.8)],
}


@pytest.mark.parametrize("size", [(17, 23), (16, 20)])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_fast_path_equals_graph_path(config, size, rng):
    crf = PacCRF(4, 4, CONFIGS[config], dtype=np.float64, perturbed_init=True, rng=0,
                 unary_weight=0.8, learn_pairwise_weights=True)
    u = rng.normal(size=(2, 4) + size)
    f = rng.normal(size=(2, 3) + size)
    for out in ("log_Q", "softmax", "log_softmax"):
        crf.final_output = out
        g = crf(u, f).data
        assert rel_err(crf.infer(u, f), g) <= 1e-12, out
    crf.final_output = "log_Q"
    labels = crf.infer(u, f, output="labels")
    assert labels.shape == (2,) + size
    np.testing.assert_array_equal(labels, crf(u, f).data.argmax(axis=1))


def test_fast_path_float32_close_to_float64(rng):
    crf64 = PacCRF(5, 5, CONFIGS["grouped_norm"], dtype=np.float64)
    crf32 = PacCRF(5, 5, CONFIGS["grouped_norm"], dtype=np.float32)
    u = rng.normal(size=(1, 5, 30, 41))
    f = rng.normal(size=(1, 3, 30, 41))
    a = crf64.infer(u, f, output="softmax")
    b = crf32.infer(u.astype(np.float32), f.astype(np.float32), output="softmax")
    assert b.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_zero_steps_returns_unary(rng):
    crf = PacCRF(3, 0, [dict(kernel_size=3, compat="potts")], dtype=np.float64)
    u = rng.normal(size=(1, 3, 6, 7))
    f = rng.normal(size=(1, 3, 6, 7))
    np.testing.assert_array_equal(crf.infer(u, f), u)
    np.testing.assert_array_equal(crf(u, f).data, u)


def test_gradients_of_extensions_match_finite_differences(rng):
    """feat_scale, learnable pairwise weights and grouped symmetric normalisation are
    differentiated correctly (central differences, float64)."""
    crf = PacCRF(3, 2, CONFIGS["grouped_norm"], dtype=np.float64,
                 learn_pairwise_weights=True)
    u = rng.normal(size=(1, 3, 9, 10))
    f = rng.normal(size=(1, 3, 9, 10))
    g_out = rng.normal(size=u.shape)
    out = crf(u, f)
    out.backward(g_out)
    for name, p in crf.named_parameters():
        if not p.requires_grad:
            continue
        d = rng.normal(size=p.shape)
        eps = 1e-6
        base = p.data.copy()
        p.data[...] = base + eps * d
        plus = float((crf(u, f).data * g_out).sum())
        p.data[...] = base - eps * d
        minus = float((crf(u, f).data * g_out).sum())
        p.data[...] = base
        fd = (plus - minus) / (2 * eps)
        an = float((p.grad * d).sum())
        assert abs(fd - an) <= 1e-6 * max(1.0, abs(fd)), (name, fd, an)


# --------------------------------------------------------------------------- validation
def test_spec_validation():
    with pytest.raises(ValueError, match="kernel_size=4 must be odd"):
        PairwiseKernel(kernel_size=4)
    with pytest.raises(ValueError, match="compat='3d'"):
        PairwiseKernel(compat="3d")
    with pytest.raises(ValueError, match="blur=0"):
        PairwiseKernel(blur=0)
    with pytest.raises(ValueError, match="needs a shared spatial filter"):
        PairwiseKernel(compat="4d", normalize="symmetric")
    with pytest.raises(ValueError, match="unknown pairwise-kernel key"):
        PairwiseKernel.from_any({"kernel_sz": 3})
    assert PairwiseKernel.from_any({"compat_type": "na"}).compat == "none"
    with pytest.raises(ValueError, match="different blur"):
        PacCRF(3, 1, [dict(compat="potts", normalize="symmetric", group=1, blur=1),
                      dict(compat="potts", normalize="symmetric", group=1, blur=2)])
    with pytest.raises(ValueError, match="normalise differently"):
        PacCRF(3, 1, [dict(compat="potts", normalize="symmetric", group=1),
                      dict(compat="potts", normalize="before", group=1)])
    with pytest.raises(ValueError, match="ndim=4"):
        PacCRF(3, 1, ndim=4)


def test_input_validation(rng):
    crf = PacCRF(3, 1, [dict(kernel_size=3, compat="potts")])
    f = rng.normal(size=(1, 3, 5, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="n_labels=3"):
        crf(rng.normal(size=(1, 4, 5, 6)).astype(np.float32), f)
    with pytest.raises(ValueError, match="B, L, H, W"):
        crf(rng.normal(size=(3, 5, 6)).astype(np.float32), f)
    with pytest.raises(ValueError, match="edge_feat has shape"):
        crf.infer(rng.normal(size=(1, 3, 5, 7)).astype(np.float32), f)
    with pytest.raises(ValueError, match="edge_feat is required"):
        crf.infer(rng.normal(size=(1, 3, 5, 6)).astype(np.float32), None)
    with pytest.raises(ValueError, match="final_output"):
        crf.final_output = "probs"
    with pytest.raises(ValueError, match="n_labels"):
        PacCRF(1)


def test_crf_filter_init_shapes():
    assert crf_filter_init(5, 4, "4d").shape == (4, 4, 5, 5)
    w = crf_filter_init(5)
    assert w.shape == (1, 1, 5, 5) and w[0, 0, 2, 2] == 0
    assert 0 < w.sum() < 25
    np.testing.assert_array_equal(w, w[..., ::-1, :])
    np.testing.assert_array_equal(w, np.swapaxes(w, 2, 3))


def test_symmetric_normalisation_with_negative_taps(rng):
    """Learned filters may have negative taps: the normaliser uses |W| (stays finite) and
    both paths agree."""
    crf = PacCRF(3, 3, CONFIGS["grouped_norm"], dtype=np.float64)
    for m in crf.messengers:
        m.weight.data[...] = rng.normal(size=m.weight.shape)
    u = rng.normal(size=(1, 3, 12, 14))
    f = rng.normal(size=(1, 3, 12, 14))
    g = crf(u, f).data
    assert np.isfinite(g).all() and np.abs(g).max() < 1e3
    assert rel_err(crf.infer(u, f), g) <= 1e-12
