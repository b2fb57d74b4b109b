"""Bad arguments raise TypeError / ValueError with a message that names the
argument (and, where it helps, the fix)."""

from __future__ import annotations

import numpy as np
import pytest

import pacnd

R = np.random.default_rng(0)
X = R.standard_normal((2, 2, 5, 6))          # input
G = R.standard_normal((2, 3, 5, 6))          # guide
W = R.standard_normal((3, 2, 3, 3))          # weight (Cout, Cin, k, k)
B = np.zeros(3)                               # bias
WT = R.standard_normal((2, 3, 3, 3))         # transposed weight (Cin, Cout, k, k)
GT = R.standard_normal((2, 3, 10, 12))       # guide at PAC^T output size (s2 p1 op1)
TOPTS = dict(stride=2, padding=1, output_padding=1)
E = "numpy"


def _with(a, idx, value):
    a = a.copy()
    a[idx] = value
    return a


def test_valid_baseline_calls_work():
    """The bad calls below differ from these in one argument only."""
    assert pacnd.pac_conv(X, G, W, B, padding=1, engine=E).shape == (2, 3, 5, 6)
    assert pacnd.pac_conv_transpose(X, GT, WT, **TOPTS, engine=E).shape == (2, 3, 10, 12)
    assert pacnd.pac_pool(X, G, 3, padding=1, engine=E).shape == (2, 2, 5, 6)
    assert pacnd.adapting_kernel(G, 3, padding=1, engine=E).shape == (2, 1, 3, 3, 5, 6)
    assert pacnd.adapting_kernel(GT, 3, transposed=True, **TOPTS, engine=E).shape == \
        (2, 1, 3, 3, 10, 12)
    assert pacnd.conv(X, W, B, engine=E).shape == (2, 3, 3, 4)
    assert pacnd.conv_transpose(X, WT, **TOPTS, engine=E).shape == (2, 3, 10, 12)


BAD_CALLS = {
    # ---------------------------------------------------------------- ndim
    "input_ndim_3": (lambda: pacnd.pac_conv(X[0], G, W, engine=E), ValueError, r"input"),
    "input_ndim_5": (lambda: pacnd.pac_conv(X[..., None], G, W, engine=E), ValueError,
                     r"input"),
    "guide_ndim": (lambda: pacnd.pac_conv(X, G[0], W, engine=E), ValueError, r"guide"),
    "guide_ndim_kernel": (lambda: pacnd.adapting_kernel(G[0, 0], 3, engine=E), ValueError,
                          r"guide"),
    "weight_ndim_2": (lambda: pacnd.pac_conv(X, G, W[:, :, 0, 0], engine=E), ValueError,
                      r"weight"),
    "weight_ndim_6": (lambda: pacnd.pac_conv(X, G, W[..., None, None], engine=E), ValueError,
                      r"weight"),
    "weight_ndim_vs_input": (lambda: pacnd.pac_conv(X, G, W[0], engine=E), ValueError,
                             r"weight"),
    "pool_input_ndim": (lambda: pacnd.pac_pool(X[0, 0], G, 3, engine=E), ValueError, r"input"),
    # ---------------------------------------------------------------- guide shape
    "guide_spatial": (lambda: pacnd.pac_conv(X, G[..., :5], W, engine=E), ValueError,
                      r"guide has shape \(2, 3, 5, 5\)"),
    "guide_batch": (lambda: pacnd.pac_conv(X, G[:1], W, engine=E), ValueError,
                    r"guide has shape \(1, 3, 5, 6\).*batch"),
    "guide_input_res_for_transposed": (
        lambda: pacnd.pac_conv_transpose(X, G, WT, **TOPTS, engine=E), ValueError,
        r"guide has shape .*\(10, 12\)"),
    "pool_guide_spatial": (lambda: pacnd.pac_pool(X, G[..., :4], 3, engine=E), ValueError,
                           r"guide"),
    # ---------------------------------------------------------------- kernel size / geometry
    "even_kernel_weight": (lambda: pacnd.pac_conv(X, G, np.zeros((3, 2, 2, 3)), engine=E),
                           ValueError, r"kernel size.*even"),
    "even_kernel_pool": (lambda: pacnd.pac_pool(X, G, 4, engine=E), ValueError,
                         r"kernel_size.*even"),
    "even_kernel_adapting": (lambda: pacnd.adapting_kernel(G, (3, 2), engine=E), ValueError,
                             r"kernel_size.*even"),
    "zero_kernel_size": (lambda: pacnd.pac_pool(X, G, 0, engine=E), ValueError,
                         r"kernel_size"),
    "stride_0": (lambda: pacnd.pac_conv(X, G, W, stride=0, engine=E), ValueError,
                 r"stride.*positive"),
    "stride_negative": (lambda: pacnd.pac_conv(X, G, W, stride=(1, -2), engine=E), ValueError,
                        r"stride.*positive"),
    "stride_transposed_0": (lambda: pacnd.conv_transpose(X, WT, stride=0, engine=E),
                            ValueError, r"stride"),
    "stride_float": (lambda: pacnd.pac_conv(X, G, W, stride=1.5, engine=E), TypeError,
                     r"stride"),
    "stride_wrong_length": (lambda: pacnd.pac_conv(X, G, W, stride=(1, 1, 1), engine=E),
                            ValueError, r"stride has 3 entries"),
    "dilation_0": (lambda: pacnd.pac_conv(X, G, W, dilation=0, engine=E), ValueError,
                   r"dilation.*positive"),
    "dilation_negative_pool": (lambda: pacnd.pac_pool(X, G, 3, dilation=-1, engine=E),
                               ValueError, r"dilation"),
    "padding_negative": (lambda: pacnd.pac_conv(X, G, W, padding=-1, engine=E), ValueError,
                         r"padding.*>= 0"),
    "padding_negative_kernel": (lambda: pacnd.adapting_kernel(G, 3, padding=(0, -1), engine=E),
                                ValueError, r"padding"),
    "output_padding_ge_stride": (
        lambda: pacnd.pac_conv_transpose(X, GT, WT, stride=2, padding=1, output_padding=2,
                                         engine=E), ValueError,
        r"output_padding=\(2, 2\) must be smaller than stride"),
    "output_padding_ge_stride_and_dilation": (
        lambda: pacnd.conv_transpose(X, WT, stride=1, dilation=2, output_padding=2, engine=E),
        ValueError, r"output_padding.*dilation"),
    "output_padding_negative": (
        lambda: pacnd.conv_transpose(X, WT, stride=2, output_padding=-1, engine=E), ValueError,
        r"output_padding"),
    "output_padding_ge_stride_kernel": (
        lambda: pacnd.adapting_kernel(GT, 3, transposed=True, stride=2, padding=1,
                                      output_padding=3, engine=E), ValueError,
        r"output_padding"),
    "output_padding_not_transposed": (
        lambda: pacnd.adapting_kernel(G, 3, padding=1, output_padding=1, engine=E), ValueError,
        r"output_padding.*transposed"),
    "empty_output_conv": (lambda: pacnd.pac_conv(X, G, np.zeros((3, 2, 7, 7)), engine=E),
                          ValueError, r"empty"),
    "empty_output_dilation": (lambda: pacnd.conv(X, W, dilation=3, engine=E), ValueError,
                              r"empty"),
    "empty_output_transposed": (
        lambda: pacnd.conv_transpose(X[..., :1, :1], WT, padding=2, engine=E), ValueError,
        r"empty"),
    "empty_output_pool": (lambda: pacnd.pac_pool(X, G, 7, engine=E), ValueError, r"empty"),
    "empty_output_kernel": (lambda: pacnd.adapting_kernel(G, 7, engine=E), ValueError,
                            r"empty"),
    "empty_spatial_input": (lambda: pacnd.pac_conv(X[..., :0], G[..., :0], W, padding=1,
                                                   engine=E), ValueError, r"empty"),
    "transposed_kernel_bad_guide_size": (
        lambda: pacnd.adapting_kernel(np.zeros((2, 2, 7, 8)), 3, transposed=True, stride=2,
                                      padding=1, output_padding=1, engine=E), ValueError,
        r"guide spatial size \(7, 8\) is not an output size"),
    # ---------------------------------------------------------------- dtypes and types
    "int_input": (lambda: pacnd.pac_conv(X.astype(np.int64), G, W, engine=E), TypeError,
                  r"input has dtype int64"),
    "uint_guide": (lambda: pacnd.pac_conv(X, G.astype(np.uint8), W, engine=E), TypeError,
                   r"guide has dtype uint8"),
    "complex_guide": (lambda: pacnd.pac_conv(X, G.astype(np.complex128), W, engine=E),
                      TypeError, r"guide has dtype complex128"),
    "complex_weight": (lambda: pacnd.conv(X, W.astype(np.complex64), engine=E), TypeError,
                       r"weight has dtype complex64"),
    "bool_weight": (lambda: pacnd.pac_conv(X, G, W > 0, engine=E), TypeError,
                    r"weight has dtype bool"),
    "bool_bias": (lambda: pacnd.pac_conv(X, G, W, B > 0, engine=E), TypeError,
                  r"bias has dtype bool"),
    "float16_input": (lambda: pacnd.pac_conv(X.astype(np.float16), G, W, engine=E), TypeError,
                      r"input has dtype float16"),
    "int_guide_kernel": (lambda: pacnd.adapting_kernel(G.astype(np.int32), 3, engine=E),
                         TypeError, r"guide has dtype int32"),
    "int_input_pool": (lambda: pacnd.pac_pool(X.astype(np.int32), G, 3, engine=E), TypeError,
                       r"input has dtype int32"),
    "list_input": (lambda: pacnd.pac_conv(X.tolist(), G, W, engine=E), TypeError,
                   r"input must be a NumPy or CuPy array, got list"),
    "list_guide": (lambda: pacnd.pac_conv(X, G.tolist(), W, engine=E), TypeError,
                   r"guide must be a NumPy or CuPy array, got list"),
    "list_weight": (lambda: pacnd.pac_conv(X, G, W.tolist(), engine=E), TypeError,
                    r"weight must be a NumPy or CuPy array"),
    "list_bias": (lambda: pacnd.pac_conv(X, G, W, [0.0, 0.0, 0.0], engine=E), TypeError,
                  r"bias must be a NumPy or CuPy array"),
    "list_guide_kernel": (lambda: pacnd.adapting_kernel(G.tolist(), 3, engine=E), TypeError,
                          r"guide must be a NumPy or CuPy array"),
    "list_grad_output": (lambda: pacnd.conv_vjp(np.zeros((2, 3, 3, 4)).tolist(), X, W,
                                                engine=E), TypeError, r"grad_output"),
    "int_mask": (lambda: pacnd.pac_conv(X, G, W, mask=np.ones((2, 1, 5, 6), int), engine=E),
                 TypeError, r"mask has dtype int64"),
    "bool_mask": (lambda: pacnd.pac_conv(X, G, W, mask=np.ones((2, 1, 5, 6), bool), engine=E),
                  TypeError, r"mask has dtype bool"),
    "int_adapting": (lambda: pacnd.pac_conv(X, None, W, adapting=np.ones((2, 1, 3, 3, 3, 4),
                                                                         int), engine=E),
                     TypeError, r"adapting has dtype"),
    # ---------------------------------------------------------------- non-finite
    "nan_guide": (lambda: pacnd.pac_conv(X, _with(G, (0, 1, 2, 3), np.nan), W, engine=E),
                  ValueError, r"guide contains 1 NaN"),
    "inf_guide": (lambda: pacnd.pac_conv(X, _with(G, (1, 0, 0, 0), np.inf), W, engine=E),
                  ValueError, r"guide contains infinite"),
    "neg_inf_guide_transposed": (
        lambda: pacnd.pac_conv_transpose(X, _with(GT, (0, 0, 0, 0), -np.inf), WT, **TOPTS,
                                         engine=E), ValueError, r"guide contains infinite"),
    "nan_guide_pool": (lambda: pacnd.pac_pool(X, _with(G, (0, 0, 0, 0), np.nan), 3, engine=E),
                       ValueError, r"guide contains"),
    "nan_guide_kernel": (lambda: pacnd.adapting_kernel(_with(G, (0, 0, 0, 0), np.nan), 3,
                                                       engine=E), ValueError, r"guide contains"),
    "nan_guide_kernel_vjp": (
        lambda: pacnd.adapting_kernel_vjp(np.zeros((2, 1, 3, 3, 3, 4)),
                                          _with(G, (0, 0, 0, 0), np.nan), 3, engine=E),
        ValueError, r"guide contains"),
    "nan_mask": (lambda: pacnd.pac_conv(X, G, W, mask=_with(np.ones((2, 1, 5, 6)), 0, np.nan),
                                        engine=E), ValueError, r"mask contains"),
    "nan_adapting": (
        lambda: pacnd.pac_conv(X, None, W, adapting=_with(np.ones((2, 1, 3, 3, 3, 4)), 0,
                                                          np.nan), engine=E),
        ValueError, r"adapting contains"),
    "nan_alpha": (lambda: pacnd.pac_conv(X, G, W, kernel="inverse", alpha=np.nan, engine=E),
                  ValueError, r"alpha must be finite"),
    "inf_lam_array": (lambda: pacnd.pac_conv(X, G, W, kernel="inverse", lam=np.array([np.inf]),
                                             engine=E), ValueError, r"lam must be finite"),
    # ---------------------------------------------------------------- channels and groups
    "groups_input_channels": (lambda: pacnd.pac_conv(X[:, :1].copy(), G, W[:, :1], groups=2,
                                                     engine=E), ValueError, r"groups"),
    "groups_output_channels": (lambda: pacnd.pac_conv(X, G, np.zeros((3, 1, 3, 3)), groups=2,
                                                      engine=E), ValueError,
                               r"3 output channels, not divisible by groups=2"),
    "groups_transposed": (lambda: pacnd.conv_transpose(np.zeros((2, 3, 5, 6)),
                                                       np.zeros((3, 2, 3, 3)), groups=2,
                                                       engine=E), ValueError, r"groups=2"),
    "groups_zero": (lambda: pacnd.conv(X, W, groups=0, engine=E), ValueError, r"groups=0"),
    "groups_bool": (lambda: pacnd.conv(X, W, groups=True, engine=E), (TypeError, ValueError),
                    r"groups"),
    "weight_input_channels": (lambda: pacnd.pac_conv(X, G, np.zeros((3, 3, 3, 3)), engine=E),
                              ValueError, r"weight .*Cin/groups=2"),
    "weight_input_channels_transposed": (
        lambda: pacnd.pac_conv_transpose(X, GT, np.zeros((3, 3, 3, 3)), **TOPTS, engine=E),
        ValueError, r"weight"),
    "shared_weight_shape": (lambda: pacnd.pac_conv(X, G, W, shared=True, engine=E), ValueError,
                            r"shared=True needs one \(1, 1, \*k\) filter"),
    "shared_with_groups": (lambda: pacnd.pac_conv(X, G, np.zeros((1, 1, 3, 3)), shared=True,
                                                  groups=2, engine=E), ValueError, r"groups=1"),
    "channel_wise_guide_channels": (lambda: pacnd.pac_conv(X, G, W, channel_wise=True,
                                                           engine=E), ValueError,
                                    r"channel_wise.*guide has 3, input has 2"),
    "channel_wise_pool": (lambda: pacnd.pac_pool(X, G, 3, channel_wise=True, engine=E),
                          ValueError, r"channel_wise"),
    # ---------------------------------------------------------------- bias / mask / adapting
    "bias_length": (lambda: pacnd.pac_conv(X, G, W, np.zeros(2), engine=E), ValueError,
                    r"bias has shape \(2,\), expected \(3,\)"),
    "bias_2d": (lambda: pacnd.conv(X, W, np.zeros((3, 1)), engine=E), ValueError,
                r"bias has shape \(3, 1\)"),
    "bias_transposed": (lambda: pacnd.conv_transpose(X, WT, np.zeros(2), **TOPTS, engine=E),
                        ValueError, r"bias"),
    "mask_channels": (lambda: pacnd.pac_conv(X, G, W, mask=np.ones((2, 2, 5, 6)), engine=E),
                      ValueError, r"mask has shape \(2, 2, 5, 6\), expected \(2, 1, 5, 6\)"),
    "mask_spatial": (lambda: pacnd.pac_conv(X, G, W, mask=np.ones((2, 1, 5, 5)), engine=E),
                     ValueError, r"mask has shape"),
    "mask_transposed_output_res": (
        lambda: pacnd.pac_conv_transpose(X, GT, WT, **TOPTS, mask=np.ones((2, 1, 10, 12)),
                                         engine=E), ValueError, r"mask has shape"),
    "mask_kernel": (lambda: pacnd.adapting_kernel(G, 3, mask=np.ones((1, 1, 5, 6)), engine=E),
                    ValueError, r"mask has shape"),
    "guide_and_adapting": (
        lambda: pacnd.pac_conv(X, G, W, padding=1, adapting=np.ones((2, 1, 3, 3, 5, 6)),
                               engine=E), ValueError, r"either guide .* or adapting"),
    "guide_and_adapting_pool": (
        lambda: pacnd.pac_pool(X, G, 3, padding=1, adapting=np.ones((2, 1, 3, 3, 5, 6)),
                               engine=E), ValueError, r"either guide .* or adapting"),
    "no_guide_no_adapting": (lambda: pacnd.pac_pool(X, None, 3, engine=E), ValueError,
                             r"guide is required"),
    "adapting_shape": (lambda: pacnd.pac_conv(X, None, W, adapting=np.ones((2, 1, 3, 3, 5, 6)),
                                              engine=E), ValueError,
                       r"adapting has shape \(2, 1, 3, 3, 5, 6\)"),
    "adapting_channels": (lambda: pacnd.pac_conv(X, None, W, adapting=np.ones((2, 3, 3, 3, 3,
                                                                               4)), engine=E),
                          ValueError, r"adapting has shape"),
    "adapting_with_normalize": (
        lambda: pacnd.pac_conv(X, None, W, adapting=np.ones((2, 1, 3, 3, 3, 4)), normalize=True,
                               engine=E), ValueError, r"normalize.*adapting"),
    # ---------------------------------------------------------------- kernel options
    "alpha_with_gaussian": (lambda: pacnd.pac_conv(X, G, W, alpha=0.5, engine=E), ValueError,
                            r"alpha and lam only apply to kernel='inverse'"),
    "lam_with_laplacian": (lambda: pacnd.pac_pool(X, G, 3, kernel="laplacian", lam=1.0,
                                                  engine=E), ValueError, r"lam"),
    "alpha_with_gaussian_kernel": (lambda: pacnd.adapting_kernel(G, 3, alpha=0.5, engine=E),
                                   ValueError, r"alpha"),
    "alpha_wrong_length": (lambda: pacnd.pac_conv(X, G, W, kernel="inverse",
                                                  alpha=np.ones(3), engine=E), ValueError,
                           r"alpha has shape \(3,\)"),
    "lam_per_channel_without_channel_wise": (
        lambda: pacnd.pac_pool(X, G[:, :2], 3, kernel="inverse", lam=np.ones(2), engine=E),
        ValueError, r"lam has shape \(2,\)"),
    "alpha_string": (lambda: pacnd.pac_conv(X, G, W, kernel="inverse", alpha="0.5", engine=E),
                     TypeError, r"alpha"),
    "alpha_complex_array": (lambda: pacnd.pac_conv(X, G, W, kernel="inverse",
                                                   alpha=np.array([1j]), engine=E),
                            TypeError, r"alpha"),
    "bad_kernel_name": (lambda: pacnd.pac_conv(X, G, W, kernel="gauss", engine=E), ValueError,
                        r"kernel='gauss' is not supported.*gaussian"),
    "bad_kernel_name_pool": (lambda: pacnd.pac_pool(X, G, 3, kernel="bilateral", engine=E),
                             ValueError, r"kernel='bilateral'"),
    "bad_kernel_name_kernel": (lambda: pacnd.adapting_kernel(G, 3, kernel=1, engine=E),
                               ValueError, r"kernel=1"),
    "normalize_not_bool": (lambda: pacnd.pac_conv(X, G, W, normalize="yes", engine=E),
                           TypeError, r"normalize"),
    "asym_not_bool": (lambda: pacnd.adapting_kernel(G, 3, asym=None, engine=E), TypeError,
                      r"asym"),
    # ---------------------------------------------------------------- engine
    "unknown_engine": (lambda: pacnd.pac_conv(X, G, W, engine="torch"), ValueError,
                       r"engine='torch' is not known"),
    "unknown_engine_kernel": (lambda: pacnd.adapting_kernel(G, 3, engine="NUMPY"), ValueError,
                              r"engine='NUMPY'"),
    "gpu_engine_numpy_arrays": (lambda: pacnd.pac_conv(X, G, W, engine="cupy"), ValueError,
                                r"engine='cupy' runs on the GPU.*NumPy"),
    # ---------------------------------------------------------------- vjp arguments
    "grad_output_shape": (lambda: pacnd.pac_conv_vjp(np.zeros((2, 3, 5, 5)), X, G, W,
                                                     engine=E), ValueError,
                          r"grad_output has shape \(2, 3, 5, 5\), expected \(2, 3, 3, 4\)"),
    "grad_output_channels_transposed": (
        lambda: pacnd.pac_conv_transpose_vjp(np.zeros((2, 2, 10, 12)), X, GT, WT, **TOPTS,
                                             engine=E), ValueError, r"grad_output has shape"),
    "grad_output_shape_pool": (lambda: pacnd.pac_pool_vjp(np.zeros((2, 2, 5, 6)), X, G, 3,
                                                          engine=E), ValueError,
                               r"grad_output has shape"),
    "grad_output_shape_conv": (lambda: pacnd.conv_vjp(np.zeros((2, 3, 5, 6)), X, W, engine=E),
                               ValueError, r"grad_output has shape"),
    "grad_output_shape_conv_transpose": (
        lambda: pacnd.conv_transpose_vjp(np.zeros((2, 3, 10, 11)), X, WT, **TOPTS, engine=E),
        ValueError, r"grad_output has shape"),
    "grad_kernel_shape": (lambda: pacnd.adapting_kernel_vjp(np.zeros((2, 1, 3, 3, 5, 6)), G, 3,
                                                            engine=E), ValueError,
                          r"grad_kernel has shape"),
    "grad_output_int": (lambda: pacnd.pac_conv_vjp(np.zeros((2, 3, 3, 4), int), X, G, W,
                                                   engine=E), TypeError,
                        r"grad_output has dtype int64"),
    "wrt_unknown": (lambda: pacnd.pac_conv_vjp(np.zeros((2, 3, 3, 4)), X, G, W, engine=E,
                                               wrt=("inputs",)), ValueError,
                    r"cannot differentiate with respect to \['inputs'\]"),
    "wrt_alpha_gaussian": (lambda: pacnd.pac_conv_vjp(np.zeros((2, 3, 3, 4)), X, G, W,
                                                      engine=E, wrt=("input", "alpha")),
                           ValueError, r"\['alpha'\]"),
    "wrt_bias_without_bias": (lambda: pacnd.pac_conv_vjp(np.zeros((2, 3, 3, 4)), X, G, W,
                                                         engine=E, wrt=("bias",)), ValueError,
                              r"\['bias'\]"),
    "wrt_guide_with_adapting": (
        lambda: pacnd.pac_conv_vjp(np.zeros((2, 3, 3, 4)), X, None, W, engine=E,
                                   adapting=np.ones((2, 1, 3, 3, 3, 4)), wrt=("guide",)),
        ValueError, r"\['guide'\]"),
    "wrt_weight_pool": (lambda: pacnd.pac_pool_vjp(np.zeros((2, 2, 3, 4)), X, G, 3, engine=E,
                                                   wrt=("weight",)), ValueError,
                        r"\['weight'\]"),
    "wrt_guide_conv": (lambda: pacnd.conv_vjp(np.zeros((2, 3, 3, 4)), X, W, engine=E,
                                              wrt=("guide",)), ValueError, r"\['guide'\]"),
    "wrt_input_kernel": (lambda: pacnd.adapting_kernel_vjp(np.zeros((2, 1, 3, 3, 3, 4)), G, 3,
                                                           engine=E, wrt=("input",)),
                         ValueError, r"\['input'\]"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_arguments(case):
    call, exc, match = BAD_CALLS[case]
    with pytest.raises(exc, match=match):
        call()


def test_valid_wrt_forms():
    """A single name as a string and a list are accepted; the result has exactly
    the names asked for."""
    u = np.ones((2, 3, 3, 4))
    assert set(pacnd.pac_conv_vjp(u, X, G, W, engine=E, wrt="input")) == {"input"}
    assert set(pacnd.pac_conv_vjp(u, X, G, W, B, engine=E, wrt=["bias", "guide"])) == \
        {"bias", "guide"}
    assert set(pacnd.pac_conv_vjp(u, X, G, W, engine=E)) == {"input", "weight", "guide"}
    assert set(pacnd.pac_conv_vjp(u, X, G, W, B, engine=E)) == {"input", "weight", "bias",
                                                                "guide"}
    assert set(pacnd.pac_pool_vjp(np.ones((2, 2, 3, 4)), X, G, 3, engine=E)) == {"input",
                                                                                 "guide"}
    assert pacnd.pac_conv_vjp(u, X, G, W, engine=E, wrt=()) == {}


def test_messages_name_the_fix():
    """A few messages must say how to fix the problem, not just what is wrong."""
    with pytest.raises(TypeError, match=r"astype\(np\.float32\)"):
        pacnd.pac_conv(X.astype(int), G, W, engine=E)
    with pytest.raises(TypeError, match=r"np\.asarray\(input"):
        pacnd.pac_conv(X.tolist(), G, W, engine=E)
    with pytest.raises(ValueError, match=r"nan_to_num"):
        pacnd.pac_conv(X, _with(G, (0, 0, 0, 0), np.nan), W, engine=E)
    with pytest.raises(ValueError, match=r"use e\.g\. \(3, 3\)"):
        pacnd.pac_conv(X, G, np.zeros((3, 2, 2, 3)), engine=E)
    with pytest.raises(ValueError, match=r"choose one of .*'numpy'"):
        pacnd.pac_conv(X, G, W, engine="torch")


def test_inputs_are_not_modified():
    args = [a.copy() for a in (X, G, W, B)]
    pacnd.pac_conv(*args, padding=1, normalize=True, engine=E)
    pacnd.pac_conv_vjp(np.ones((2, 3, 5, 6)), *args, padding=1, normalize=True, engine=E)
    for a, orig in zip(args, (X, G, W, B)):
        assert np.array_equal(a, orig)


@pytest.mark.parametrize("shape", [(0, 2, 5, 5), (1, 0, 5, 5), (1, 2, 0, 5)])
def test_empty_input_is_rejected(shape):
    x = np.zeros(shape)
    g = np.zeros((shape[0], 1) + shape[2:])
    with pytest.raises(ValueError, match=r"input is empty: shape .* zero-sized axis"):
        pacnd.pac_conv(x, g, np.zeros((2, max(shape[1], 1), 3, 3)), engine="numpy")
