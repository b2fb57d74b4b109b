"""Every differentiable operation against float64 central differences, plus
forward values where a closed form or PyTorch's documented behaviour is known."""

from __future__ import annotations

import numpy as np
import pytest
from autograd_gradcheck import check_graph

import pacnd.functional as F
from pacnd.autograd import Tensor

R = np.random.default_rng(7)


def r(*shape, lo=-1.0, hi=1.0):
    return R.uniform(lo, hi, size=shape)


def pos(*shape):
    return R.uniform(0.5, 2.0, size=shape)


LABELS = np.array([[0, 2, 1, 255], [1, 1, 0, 2]])

# name -> (fn(**tensors), inputs, extra check kwargs)
CASES = {
    "add_broadcast": (lambda a, b: a + b, dict(a=r(2, 3, 4), b=r(3, 1))),
    "sub_broadcast": (lambda a, b: a - b, dict(a=r(3, 1), b=r(2, 3, 4))),
    "mul_broadcast": (lambda a, b: a * b, dict(a=r(2, 1, 4), b=r(3, 1))),
    "div_broadcast": (lambda a, b: a / b, dict(a=r(2, 3), b=pos(1, 3))),
    "pow_scalar": (lambda a: a ** 3, dict(a=r(5))),
    "pow_square": (lambda a: a ** 2, dict(a=r(5))),
    "pow_tensor": (lambda a, b: a ** b, dict(a=pos(4), b=r(4))),
    "rpow": (lambda a: 2.0 ** a, dict(a=r(4))),
    "neg": (lambda a: -a, dict(a=r(3))),
    "exp": (lambda a: F.exp(a), dict(a=r(3, 2))),
    "log": (lambda a: F.log(a), dict(a=pos(3, 2))),
    "sqrt": (lambda a: F.sqrt(a), dict(a=pos(3, 2))),
    "abs": (lambda a: F.abs(a), dict(a=r(3, 2))),
    "relu": (lambda a: F.relu(a), dict(a=r(4, 3))),
    "leaky_relu": (lambda a: F.leaky_relu(a, 0.2), dict(a=r(4, 3))),
    "sigmoid": (lambda a: F.sigmoid(a * 5), dict(a=r(4, 3))),
    "tanh": (lambda a: F.tanh(a * 2), dict(a=r(4, 3))),
    "where": (lambda a, b: F.where(np.array([True, False, True]), a, b), dict(a=r(2, 3), b=r(3))),
    "clip": (lambda a: F.clip(a, -0.5, 0.4), dict(a=r(10))),
    "maximum": (lambda a, b: F.maximum(a, b), dict(a=r(6), b=r(6))),
    "minimum": (lambda a, b: F.minimum(a, b), dict(a=r(6), b=r(1))),
    "matmul_batched": (lambda a, b: a @ b, dict(a=r(2, 3, 4), b=r(4, 5))),
    "sum_all": (lambda a: a.sum(), dict(a=r(2, 3))),
    "sum_axis_keepdims": (lambda a: F.sum(a, axis=(0, 2), keepdims=True), dict(a=r(2, 3, 4))),
    "mean_axis": (lambda a: F.mean(a, axis=1), dict(a=r(2, 3, 4))),
    "softmax": (lambda a: F.softmax(a, axis=1), dict(a=r(2, 4, 3))),
    "log_softmax": (lambda a: F.log_softmax(a, axis=0), dict(a=r(4, 3))),
    "logsumexp": (lambda a: F.logsumexp(a, axis=1), dict(a=r(3, 5))),
    "reshape": (lambda a: a.reshape(3, -1) * 1.0, dict(a=r(2, 3, 2))),
    "transpose": (lambda a: F.transpose(a, (2, 0, 1)), dict(a=r(2, 3, 4))),
    "getitem_basic": (lambda a: a[1:, ::2, None, -1], dict(a=r(3, 5, 4))),
    "getitem_advanced_repeats": (lambda a: a[np.array([0, 2, 0, 0]), 1:], dict(a=r(3, 4))),
    "getitem_bool": (lambda a: a[np.array([True, False, True])], dict(a=r(3, 2))),
    "flip": (lambda a: F.flip(a, axis=(0, 2)), dict(a=r(2, 3, 4))),
    "concat": (lambda a, b, c: F.concat([a, b, c], axis=1), dict(a=r(2, 1), b=r(2, 3), c=r(2, 2))),
    "stack": (lambda a, b: F.stack([a, b], axis=1), dict(a=r(2, 3), b=r(2, 3))),
    "split": (lambda a: F.split(a, [1, 3], axis=1)[1] * F.split(a, 4, axis=1)[3][:, :, None].sum(),
              dict(a=r(2, 4))),
    "pad": (lambda a: F.pad(a, ((0, 0), (1, 2), (2, 0)), value=0.5), dict(a=r(2, 3, 2))),
    "broadcast_to": (lambda a: F.broadcast_to(a, (2, 3, 4)), dict(a=r(3, 1))),
    "squeeze_expand": (lambda a: F.expand_dims(F.squeeze(a, axis=1), 0), dict(a=r(2, 1, 3))),
    "cast_roundtrip": (lambda a: F.cast(a, np.float64) * 2, dict(a=r(3))),
    "bilinear_up": (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"),
                    dict(x=r(2, 2, 3, 4))),
    "bilinear_size_down": (lambda x: F.interpolate(x, size=(3, 2), mode="bilinear"),
                           dict(x=r(1, 2, 7, 5))),
    "bilinear_align_corners": (lambda x: F.interpolate(x, size=(5, 7), mode="bilinear",
                                                       align_corners=True),
                               dict(x=r(1, 1, 3, 4))),
    "bilinear_fractional_scale": (lambda x: F.interpolate(x, scale_factor=(0.7, 1.6),
                                                          mode="bilinear"),
                                  dict(x=r(1, 1, 5, 4))),
    "nearest_up": (lambda x: F.interpolate(x, size=(5, 8), mode="nearest"), dict(x=r(1, 2, 3, 4))),
    "nearest_down": (lambda x: F.interpolate(x, scale_factor=0.5, mode="nearest"),
                     dict(x=r(1, 1, 6, 5))),
    "linear_1d": (lambda x: F.interpolate(x, size=9, mode="linear"), dict(x=r(2, 1, 4))),
    "trilinear": (lambda x: F.interpolate(x, size=(3, 4, 2), mode="trilinear"),
                  dict(x=r(1, 1, 2, 3, 3))),
    "avg_pool": (lambda x: F.avg_pool(x, 3, stride=2, padding=1), dict(x=r(2, 2, 6, 7))),
    "avg_pool_exclude_pad": (lambda x: F.avg_pool(x, 3, stride=1, padding=1,
                                                  count_include_pad=False), dict(x=r(1, 2, 4, 5))),
    "avg_pool_1d": (lambda x: F.avg_pool(x, 2), dict(x=r(2, 3, 8))),
    "max_pool": (lambda x: F.max_pool(x, 3, stride=2, padding=1), dict(x=r(2, 2, 6, 7))),
    "max_pool_overlap_dilated": (lambda x: F.max_pool(x, 2, stride=1, dilation=2),
                                 dict(x=r(1, 2, 5, 5))),
    "max_pool_3d": (lambda x: F.max_pool(x, 2), dict(x=r(1, 1, 4, 4, 4))),
    "mse_loss": (lambda p, t: F.mse_loss(p, t), dict(p=r(2, 3, 4), t=r(2, 3, 4))),
    "mse_loss_sum": (lambda p, t: F.mse_loss(p, t, reduction="sum"), dict(p=r(5), t=r(5))),
    "l1_loss": (lambda p, t: F.l1_loss(p, t), dict(p=r(2, 3, 4), t=r(2, 3, 4))),
    "l1_loss_none": (lambda p, t: F.l1_loss(p, t, reduction="none"), dict(p=r(6), t=r(6))),
    "cross_entropy_ignore": (lambda x: F.cross_entropy(x, LABELS.reshape(2, 2, 2),
                                                       ignore_index=255),
                             dict(x=r(2, 3, 2, 2))),
    "cross_entropy_sum_axis_last": (lambda x: F.cross_entropy(x, LABELS[:, :3], axis=-1,
                                                              reduction="sum"),
                                    dict(x=r(2, 3, 3))),
    "cross_entropy_none": (lambda x: F.cross_entropy(x, LABELS, ignore_index=255,
                                                     reduction="none", axis=1),
                           dict(x=r(2, 3, 4))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_gradients(name):
    fn, inputs = CASES[name]
    check_graph(fn, inputs)


PAC_CASES = {
    "pac_conv_gaussian": (
        lambda x, f, w, b: F.pac_conv(x, f, w, b, padding=1),
        dict(x=r(2, 2, 5, 6), f=r(2, 3, 5, 6), w=r(3, 2, 3, 3), b=r(3))),
    "pac_conv_inverse_learnable_params": (
        lambda x, f, w, a, lam: F.pac_conv(x, f, w, padding=1, stride=2, kernel="inverse",
                                           alpha=a, lam=lam, normalize=True),
        dict(x=r(1, 2, 5, 5), f=r(1, 2, 5, 5), w=r(2, 2, 3, 3), a=np.array(0.3),
             lam=np.array(-0.8))),
    "pac_conv_shared_groups_off": (
        lambda x, f, w: F.pac_conv(x, f, w, padding=2, dilation=2, shared=True),
        dict(x=r(1, 3, 6, 5), f=r(1, 1, 6, 5), w=r(1, 1, 3, 3))),
    "pac_conv_adapting_given": (
        lambda x, k, w: F.pac_conv(x, None, w, padding=1, adapting=k),
        dict(x=r(1, 2, 4, 4), k=pos(1, 1, 3, 3, 4, 4), w=r(2, 2, 3, 3))),
    "pac_conv_transpose": (
        lambda x, f, w, b: F.pac_conv_transpose(x, f, w, b, stride=2, padding=1,
                                                output_padding=1),
        dict(x=r(1, 2, 3, 3), f=r(1, 2, 6, 6), w=r(2, 3, 3, 3), b=r(3))),
    "pac_pool_normalized": (
        lambda x, f: F.pac_pool(x, f, 3, stride=2, padding=1, normalize=True),
        dict(x=r(2, 2, 5, 5), f=r(2, 2, 5, 5))),
    "pac_pool_channel_wise_inverse": (
        lambda x, f, a: F.pac_pool(x, f, 3, padding=1, kernel="inverse", alpha=a, lam=-0.5,
                                   channel_wise=True),
        dict(x=r(1, 2, 4, 4), f=r(1, 2, 4, 4), a=pos(2))),
    "adapting_kernel": (
        lambda f: F.adapting_kernel(f, 3, padding=1, normalize=True),
        dict(f=r(1, 2, 4, 5))),
    "conv": (lambda x, w, b: F.conv(x, w, b, padding=1, stride=2, groups=2),
             dict(x=r(2, 4, 5, 5), w=r(2, 2, 3, 3), b=r(2))),
    "conv_1d": (lambda x, w: F.conv(x, w, padding=2, dilation=2), dict(x=r(2, 1, 7), w=r(3, 1, 3))),
    "conv_transpose": (lambda x, w, b: F.conv_transpose(x, w, b, stride=2, padding=1),
                       dict(x=r(1, 2, 3, 4), w=r(2, 3, 3, 3), b=r(3))),
}


@pytest.mark.parametrize("name", sorted(PAC_CASES))
def test_pac_op_gradients(name):
    fn, inputs = PAC_CASES[name]
    check_graph(fn, inputs)


def test_composite_network_gradient():
    """A small joint-upsampling-like graph: conv, PAC^T guided by a resized
    guide branch, ReLU, concat, loss over a cropped border."""

    def net(x, g, w1, w2, w3):
        h = F.relu(F.conv(x, w1, padding=1))
        gg = F.interpolate(F.conv(g, w2, padding=1), scale_factor=0.5, mode="bilinear")
        up = F.pac_conv_transpose(h, F.interpolate(gg, scale_factor=2, mode="bilinear"), w3,
                                  stride=2, padding=1, output_padding=1)
        both = F.concat([up, F.tanh(up)], axis=1)
        return F.mse_loss(both[:, :, 1:-1, 1:-1], np.zeros((1, 4, 4, 4)))

    check_graph(net, dict(x=r(1, 1, 3, 3), g=r(1, 2, 6, 6), w1=r(2, 1, 3, 3),
                          w2=r(2, 2, 3, 3), w3=r(2, 2, 3, 3)))


# ----------------------------------------------------------- forward values
def test_bilinear_matches_pytorch_known_values():
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    y = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    expect = np.array([[0.0, 0.25, 0.75, 1.0], [0.5, 0.75, 1.25, 1.5],
                       [1.5, 1.75, 2.25, 2.5], [2.0, 2.25, 2.75, 3.0]], dtype=np.float32)
    np.testing.assert_array_equal(y[0, 0], expect)
    assert y.dtype == np.float32
    y = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    np.testing.assert_allclose(y[0, 0, 0], [0, 1 / 3, 2 / 3, 1], rtol=1e-6)
    y = F.interpolate(x, scale_factor=2, mode="nearest")
    np.testing.assert_array_equal(y[0, 0], np.repeat(np.repeat(x[0, 0], 2, 0), 2, 1))


def test_linear_source_coordinates_follow_scale_factor():
    """On x = arange(n), linear interpolation returns the source coordinate:
    src = max(0, (dst + 0.5)/scale - 0.5), with scale the given factor unless
    recompute_scale_factor (then in/out), clamped to n-1 at the top."""
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 5)
    y = F.interpolate(x, scale_factor=0.7, mode="linear")
    d = np.arange(3)
    np.testing.assert_allclose(y[0, 0], np.maximum((d + 0.5) / 0.7 - 0.5, 0), rtol=1e-14)
    y = F.interpolate(x, scale_factor=0.7, mode="linear", recompute_scale_factor=True)
    np.testing.assert_allclose(y[0, 0], (d + 0.5) * 5 / 3 - 0.5, rtol=1e-14)
    y = F.interpolate(x, size=12, mode="linear")
    d = np.arange(12)
    np.testing.assert_allclose(y[0, 0], np.clip((d + 0.5) * 5 / 12 - 0.5, 0, 4), rtol=1e-14)


def test_nearest_indices_follow_pytorch():
    x = np.arange(5, dtype=np.float32).reshape(1, 1, 5)
    # scale_factor 0.7: 3 outputs, src = floor(d / 0.7) = 0, 1, 2
    np.testing.assert_array_equal(F.interpolate(x, scale_factor=0.7)[0, 0], [0, 1, 2])
    # recomputed: floor(d * 5/3) = 0, 1, 3
    np.testing.assert_array_equal(
        F.interpolate(x, scale_factor=0.7, recompute_scale_factor=True)[0, 0], [0, 1, 3])
    np.testing.assert_array_equal(F.interpolate(x, size=10)[0, 0], np.repeat(np.arange(5), 2))
    np.testing.assert_array_equal(F.interpolate(x, size=7)[0, 0], [0, 0, 1, 2, 2, 3, 4])


def test_bilinear_is_linear_per_axis_and_preserves_constants():
    x = R.random((2, 3, 5, 7))
    y = F.interpolate(x, size=(9, 4), mode="bilinear")
    yh = F.interpolate(x.transpose(0, 1, 3, 2).reshape(2, 3 * 7, 5), size=9, mode="linear")
    yh = yh.reshape(2, 3, 7, 9).transpose(0, 1, 3, 2)
    yw = F.interpolate(yh.reshape(2, 3 * 9, 7), size=4, mode="linear").reshape(2, 3, 9, 4)
    np.testing.assert_allclose(y, yw, rtol=1e-14)
    np.testing.assert_allclose(F.interpolate(np.full((1, 1, 3, 3), 2.5), size=(8, 5),
                                             mode="bilinear"), 2.5, rtol=1e-15)


def test_pooling_forward_values():
    x = R.random((2, 3, 6, 6))
    y = F.avg_pool(x, 2)
    np.testing.assert_allclose(y, x.reshape(2, 3, 3, 2, 3, 2).mean(axis=(3, 5)), rtol=1e-14)
    y = F.max_pool(x, 2)
    np.testing.assert_array_equal(y, x.reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5)))
    # count_include_pad=False at a corner: mean of the 4 in-image values
    y = F.avg_pool(x, 3, stride=1, padding=1, count_include_pad=False)
    np.testing.assert_allclose(y[:, :, 0, 0], x[:, :, :2, :2].mean(axis=(2, 3)), rtol=1e-14)
    y = F.avg_pool(x, 3, stride=1, padding=1)
    np.testing.assert_allclose(y[:, :, 0, 0], x[:, :, :2, :2].sum(axis=(2, 3)) / 9, rtol=1e-14)
    # ties: the first maximum gets the gradient
    t = Tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    F.max_pool(t, 2).sum().backward()
    np.testing.assert_array_equal(t.grad[0, 0], [[1, 0], [0, 0]])


def test_cross_entropy_value_and_ignore():
    x = R.standard_normal((2, 3, 4))
    t = np.array([[0, 1, 2, -100], [2, 2, 0, 1]])
    loss = F.cross_entropy(x, t)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    picked = [-logp[b, t[b, i], i] for b in range(2) for i in range(4) if t[b, i] != -100]
    np.testing.assert_allclose(loss, np.mean(picked), rtol=1e-14)
    assert np.isnan(F.cross_entropy(x, np.full((2, 4), -100)))
    with pytest.raises(ValueError, match="label 3, outside"):
        F.cross_entropy(x, np.full((2, 4), 3))
    with pytest.raises(ValueError, match=r"target has shape \(2, 3\), expected \(2, 4\)"):
        F.cross_entropy(x, np.zeros((2, 3), dtype=int))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(x, np.zeros((2, 4)))


def test_softmax_is_stable_for_large_inputs():
    x = np.array([[1000.0, 1001.0, -1000.0]])
    np.testing.assert_allclose(F.softmax(x, axis=1).sum(), 1.0)
    assert np.isfinite(F.log_softmax(x, axis=1)).all()
    np.testing.assert_allclose(F.sigmoid(np.array([-800.0, 0.0, 800.0])), [0.0, 0.5, 1.0])


# ----------------------------------------------------------- bad input
@pytest.mark.parametrize("call, err, match", [
    (lambda: F.add(np.ones((2, 3)), np.ones((4,))), ValueError, "broadcast"),
    (lambda: F.mse_loss(np.ones((2, 3)), np.ones((3, 2))), ValueError,
     r"input has shape \(2, 3\) but target has shape \(3, 2\)"),
    (lambda: F.mse_loss(np.ones(2), np.ones(2), reduction="avg"), ValueError, "reduction"),
    (lambda: F.reshape(np.ones(6), (4, -1)), ValueError, r"cannot reshape .* \(6,\)"),
    (lambda: F.concat([np.ones((2, 3)), np.ones((3, 3))], axis=1), ValueError,
     r"input 1 has shape \(3, 3\)"),
    (lambda: F.transpose(np.ones((2, 3)), (0, 0)), ValueError, "permutation"),
    (lambda: F.interpolate(np.ones((1, 1, 4, 4)), size=(2, 2), mode="linear"), ValueError,
     "mode='bilinear'"),
    (lambda: F.interpolate(np.ones((1, 1, 4, 4)), size=2, scale_factor=2), ValueError,
     "exactly one"),
    (lambda: F.interpolate(np.ones((4, 4)), size=2), ValueError, "spatial"),
    (lambda: F.max_pool(np.ones((1, 1, 2, 2)), 3), ValueError, "does not fit"),
    (lambda: F.avg_pool(np.ones((1, 1, 6, 6)), 2, padding=2), ValueError, "half the kernel"),
    (lambda: F.matmul(np.ones(3), np.ones((3, 2))), ValueError, "at least 2 dims"),
    (lambda: F.pad(np.ones((2, 2)), ((1, 1), (1, 1), (1, 1))), ValueError, "does not fit"),
    (lambda: F.pac_conv(Tensor(np.ones((1, 2, 5, 5)), requires_grad=True), np.ones((1, 1, 4, 4)),
                        np.ones((3, 2, 3, 3))), ValueError, "guide has shape"),
    (lambda: F.pac_conv(np.ones((1, 2, 5, 5)), np.ones((1, 1, 5, 5)), np.ones((3, 4, 3, 3))),
     ValueError, r"weight \(3, 4, 3, 3\) must be"),
    (lambda: F.relu("x"), TypeError, "Tensor or an array"),
])
def test_bad_input_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()
