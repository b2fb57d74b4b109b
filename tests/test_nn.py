"""pacnd.nn: Module mechanics, state dicts, layers and initialisers."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
from autograd_gradcheck import check_graph

import pacnd.functional as F
from pacnd import nn
from pacnd.autograd import Tensor, no_grad
from pacnd.nn import init


def small_net(rng=0):
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 4, 3, padding=1, rng=rng)),
        ("relu1", nn.ReLU()),
        ("pac", nn.PacConv2d(4, 2, 3, padding=1, kernel_type="inv_0.5_-1", rng=rng)),
    ]))


# ------------------------------------------------------------------ Module
def test_registration_and_names():
    net = small_net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["conv1.weight", "conv1.bias", "pac.weight", "pac.bias", "pac.inv_alpha",
                     "pac.inv_lambda"]
    assert [n for n, _ in net.named_modules()] == ["", "conv1", "relu1", "pac"]
    assert [n for n, _ in net.named_children()] == ["conv1", "relu1", "pac"]
    assert net.num_parameters() == 4 * 9 + 4 + 2 * 4 * 9 + 2 + 2
    assert net[0] is net.conv1 and net["pac"] is net.pac and len(net) == 3
    assert net.get_submodule("pac") is net.pac
    with pytest.raises(KeyError, match="no sub-module 'nope'"):
        net.get_submodule("nope")
    assert "PacConv2d(4, 2, kernel_size=(3, 3), kernel_type=inv_0.5_-1" in repr(net)


def test_setattr_rules_and_shared_parameters():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3)
            self.b = self.a  # the same module twice: parameters listed once
            self.register_buffer("stats", np.zeros(2))

    m = M()
    assert len(list(m.parameters())) == 2
    assert set(m.state_dict()) == {"a.weight", "a.bias", "stats"}
    with pytest.raises(TypeError, match="assign a Parameter"):
        m.a.weight = np.zeros((1, 1, 3, 3))
    with pytest.raises(TypeError, match="must be an array"):
        m.stats = "x"

    class Broken(nn.Module):
        def __init__(self):
            self.x = 1

    with pytest.raises(AttributeError, match="super"):
        Broken()


def test_train_eval_zero_grad_astype():
    net = small_net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    for p in net.parameters():
        p.grad = np.ones_like(p.data)
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    w = net.conv1.weight
    net.astype(np.float64)
    assert net.conv1.weight is w and w.dtype == np.float64
    assert net.pac.inv_alpha.dtype == np.float64


def test_state_dict_copies_and_roundtrip():
    a, b = small_net(0), small_net(1)
    sd = a.state_dict()
    a.conv1.weight.data += 1  # the state dict is a copy
    assert not np.array_equal(sd["conv1.weight"], a.conv1.weight.data)
    w_obj = b.conv1.weight
    b.load_state_dict(sd)
    assert b.conv1.weight is w_obj  # loaded in place
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])


def test_load_state_dict_errors_name_keys_and_shapes():
    net = small_net()
    sd = net.state_dict()
    bad = dict(sd)
    del bad["pac.bias"]
    bad["extra.weight"] = np.zeros((3, 3))
    bad["conv1.weight"] = np.zeros((8, 1, 3, 3))
    with pytest.raises(nn.StateDictError) as exc:
        net.load_state_dict(bad)
    msg = str(exc.value)
    assert "'conv1.weight': the state dict has (8, 1, 3, 3), the model expects (4, 1, 3, 3)" in msg
    assert "missing keys 'pac.bias' (2,)" in msg
    assert "unexpected keys 'extra.weight' (3, 3)" in msg
    assert isinstance(exc.value, KeyError) and isinstance(exc.value, ValueError)
    # nothing was loaded
    np.testing.assert_array_equal(net.conv1.weight.data, sd["conv1.weight"])
    # non-strict: missing/unexpected reported, shape errors still raise
    partial = {k: v for k, v in sd.items() if k != "pac.bias"}
    partial["zzz"] = np.zeros(1)
    missing, unexpected = net.load_state_dict(partial, strict=False)
    assert missing == ["pac.bias"] and unexpected == ["zzz"]
    with pytest.raises(nn.StateDictError, match="shape mismatch"):
        net.load_state_dict({"conv1.bias": np.zeros(5)}, strict=False)
    with pytest.raises(TypeError, match="mapping"):
        net.load_state_dict([1, 2])


def test_hooks():
    net = small_net()
    net.pac.guide_source = lambda x: x  # self-guided inside the Sequential
    seen = []
    h = net.conv1.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    h2 = net.relu1.register_forward_hook(lambda m, args, out: out * 0)
    out = net(Tensor(np.ones((1, 1, 5, 5), dtype=np.float32)))
    assert seen == [(1, 4, 5, 5)]
    h.remove()
    h2.remove()
    net(np.ones((1, 1, 5, 5), dtype=np.float32))
    assert len(seen) == 1
    assert out.shape == (1, 2, 5, 5)


def test_module_list_and_sequential_append():
    ml = nn.ModuleList([nn.ReLU(), nn.Conv2d(2, 2, 1)])
    assert len(ml) == 2 and [n for n, _ in ml.named_parameters()] == ["1.weight", "1.bias"]
    seq = nn.Sequential().append(nn.Conv2d(1, 1, 3, padding=1)).append(nn.Tanh())
    out = seq(np.ones((1, 1, 4, 4), dtype=np.float32))  # parameters are Tensors
    assert isinstance(out, Tensor) and out.requires_grad
    with no_grad():
        out = seq(np.ones((1, 1, 4, 4), dtype=np.float32))
    assert isinstance(out, Tensor) and not out.requires_grad


# ---------------------------------------------------------------- layers
def naive_conv_transpose_torch(x, w, b, stride, padding, output_padding, dilation):
    """PyTorch's conv_transpose2d by definition: scatter x[c, i] * W[c, o, t]
    to output position i*s - p + t*d."""
    B, cin, H, W_ = x.shape
    cout, k = w.shape[1], w.shape[2]
    Ho = (H - 1) * stride - 2 * padding + dilation * (k - 1) + 1 + output_padding
    Wo = (W_ - 1) * stride - 2 * padding + dilation * (k - 1) + 1 + output_padding
    out = np.zeros((B, cout, Ho, Wo))
    for i in range(H):
        for j in range(W_):
            for ty in range(k):
                for tx in range(k):
                    y = i * stride - padding + ty * dilation
                    xx = j * stride - padding + tx * dilation
                    if 0 <= y < Ho and 0 <= xx < Wo:
                        out[:, :, y, xx] += np.einsum("bc,co->bo", x[:, :, i, j], w[:, :, ty, tx])
    return out + b[None, :, None, None]


def test_conv_transpose2d_follows_pytorch_convention():
    rng = np.random.default_rng(0)
    layer = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, dtype=np.float64,
                               rng=0)
    x = rng.random((2, 3, 4, 5))
    expect = naive_conv_transpose_torch(x, layer.weight.data, layer.bias.data, 2, 1, 1, 1)
    # sums of mixed signs: an output near 0 differs by rounding relative to the others' scale
    np.testing.assert_allclose(layer(x), expect, rtol=1e-12, atol=1e-13 * np.abs(expect).max())
    check_graph(lambda x: layer(x), dict(x=x[:1, :, :3, :3]))


def test_pac_layers_with_constant_guide_are_plain_convs():
    rng = np.random.default_rng(1)
    x = rng.random((2, 3, 6, 7))
    conv = nn.Conv2d(3, 4, 3, padding=1, dtype=np.float64, rng=0)
    pac = nn.PacConv2d(3, 4, 3, padding=1, dtype=np.float64)
    pac.load_state_dict(conv.state_dict())
    g = np.ones((2, 2, 6, 7))
    np.testing.assert_allclose(pac(x, g), conv(x), rtol=1e-12)

    convt = nn.ConvTranspose2d(3, 4, 5, stride=2, padding=2, output_padding=1, dtype=np.float64)
    pact = nn.PacConvTranspose2d(3, 4, 5, stride=2, padding=2, output_padding=1,
                                 dtype=np.float64)
    pact.load_state_dict({"weight": convt.weight.data[:, :, ::-1, ::-1],
                          "bias": convt.bias.data})
    assert pact.output_size((6, 7)) == (12, 14)
    np.testing.assert_allclose(pact(x, np.zeros((2, 1, 12, 14))), convt(x), rtol=1e-12)


def test_pac_layer_options_and_gradients():
    rng = np.random.default_rng(2)
    x, f = rng.random((1, 2, 5, 5)), rng.random((1, 3, 5, 5))
    layer = nn.PacConv2d(2, 2, 3, padding=1, kernel_type="inv_0.2_-1.5_asym", shared_filters=True,
                         normalize_kernel=True, dtype=np.float64)
    assert layer.weight.shape == (1, 1, 3, 3)
    assert layer.inv_alpha.shape == () and float(layer.inv_alpha.data) == pytest.approx(0.2)
    check_graph(lambda x, f: layer(x, f), dict(x=x, f=f))
    layer(Tensor(x), Tensor(f)).sum().backward()
    assert layer.inv_alpha.grad is not None and layer.inv_lambda.grad is not None

    fixed = nn.PacConv2d(2, 2, 3, kernel_type="inv_0.5_-1_fixed")
    assert "inv_alpha" in fixed.state_dict()
    assert "inv_alpha" not in dict(fixed.named_parameters())

    lap = nn.PacConv2d(2, 3, 3, padding=1, kernel_type="laplacian", groups=1, bias=False,
                       dtype=np.float64)
    check_graph(lambda x, f: lap(x, f), dict(x=x, f=f))

    K = F.adapting_kernel(f, 3, padding=1)
    np.testing.assert_allclose(nn.PacConv2d(2, 2, 3, padding=1, dtype=np.float64, rng=0)(
        x, adapting=K), nn.PacConv2d(2, 2, 3, padding=1, dtype=np.float64, rng=0)(x, f))

    pool = nn.PacPool2d(3, stride=2, padding=1, kernel_type="inv_0.5_-1", channel_wise=True,
                        out_channels=2, normalize_kernel=True)
    assert pool.inv_alpha.shape == (2,)
    assert pool(x.astype(np.float32), x.astype(np.float32)).shape == (1, 2, 3, 3)


def test_3d_and_1d_layers():
    rng = np.random.default_rng(3)
    x3 = rng.random((1, 2, 4, 5, 3))
    layer = nn.PacConv3d(2, 3, 3, padding=1, dtype=np.float64)
    assert layer(x3, x3).shape == (1, 3, 4, 5, 3)
    assert nn.PacConvTranspose3d(2, 1, 3, stride=2, padding=1, output_padding=1)(
        x3.astype(np.float32), np.ones((1, 1, 8, 10, 6), np.float32)).shape == (1, 1, 8, 10, 6)
    assert nn.PacPool3d(3, padding=1)(x3, x3).shape == x3.shape
    x1 = rng.random((2, 2, 9))
    assert nn.PacConv1d(2, 2, 5, padding=2, dtype=np.float64)(x1, x1).shape == (2, 2, 9)
    assert nn.Conv1d(2, 1, 3)(x1.astype(np.float32)).shape == (2, 1, 7)
    assert nn.ConvTranspose1d(2, 1, 3, stride=2)(x1.astype(np.float32)).shape == (2, 1, 19)


@pytest.mark.parametrize("make, err, match", [
    (lambda: nn.Conv2d(3, 4, 4), ValueError, "odd kernel sizes"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, "divisible by groups=2"),
    (lambda: nn.Conv2d(0, 4, 3), ValueError, "in_channels=0"),
    (lambda: nn.PacConv2d(3, 4, 3, shared_filters=True), ValueError, "must equal out_channels"),
    (lambda: nn.PacConv2d(3, 3, 3, kernel_type="cauchy"), ValueError, "kernel_type='cauchy'"),
    (lambda: nn.PacConv2d(3, 4, 3, filler="linear"), ValueError, "transposed"),
    (lambda: nn.PacPool2d(3, kernel_type="inv_1_-1", channel_wise=True), ValueError,
     "needs out_channels"),
    (lambda: nn.PacConv2d(3, 3, 3, stride=0), ValueError, "stride"),
])
def test_layer_construction_errors(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_layer_call_errors():
    layer = nn.PacConv2d(3, 4, 3, padding=1)
    x = np.ones((1, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match="needs guide features"):
        layer(x)
    with pytest.raises(ValueError, match="guide has shape"):
        layer(x, np.ones((1, 2, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"weight \(4, 3, 3, 3\) must be .* 2 channels"):
        layer(np.ones((1, 2, 5, 5), np.float32), np.ones((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="built for 3 channels"):
        nn.PacPool2d(3, out_channels=3)(np.ones((1, 2, 5, 5), np.float32),
                                        np.ones((1, 1, 5, 5), np.float32))
    with pytest.raises(ValueError, match="4 dims|spatial dim"):
        nn.Conv2d(3, 4, 3)(np.ones((3, 5, 5), np.float32))


# ------------------------------------------------------------------ init
def test_default_inits_follow_the_reference():
    conv = nn.Conv2d(4, 8, 3, rng=0)
    bound = 1 / math.sqrt(4 * 9)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.8 * bound
    assert init.kaiming_uniform_bound(36) == pytest.approx(bound)
    pac = nn.PacConv2d(4, 8, 5, rng=0)
    b = 1 / math.sqrt(4 * 25)
    assert np.abs(pac.weight.data).max() <= b and np.abs(pac.weight.data).max() > 0.8 * b
    shared = nn.PacConv2d(4, 4, 3, shared_filters=True, rng=0)
    assert np.abs(shared.weight.data).max() <= 4 / 6
    # seeded: the same rng gives the same weights
    np.testing.assert_array_equal(nn.PacConv2d(4, 8, 5, rng=7).weight.data,
                                  nn.PacConv2d(4, 8, 5, rng=7).weight.data)
    init.manual_seed(5)
    w1 = nn.Conv2d(1, 1, 3).weight.data
    init.manual_seed(5)
    np.testing.assert_array_equal(nn.Conv2d(1, 1, 3).weight.data, w1)


def test_bilinear_tent_init_upsamples_linearly():
    tent = init.bilinear_tent((5, 5), (2, 2))
    np.testing.assert_allclose(tent[2], [0, 0.5, 1, 0.5, 0])  # profile (0, 1, 2, 1, 0) / 2
    np.testing.assert_allclose(tent[1], [0, 0.25, 0.5, 0.25, 0])  # outer product
    np.testing.assert_allclose(init.bilinear_tent((3,), (2,)), [0.5, 1, 0.5])
    np.testing.assert_allclose(init.bilinear_tent((3,), (2,), normalize=True), [1, 1, 1])
    layer = nn.PacConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1,
                                  filler="linear", dtype=np.float64)
    assert np.all(layer.bias.data == 0) and np.all(layer.weight.data[0, 1] == 0)
    # with a constant guide the layer upsamples a linear ramp linearly (away from the border)
    ramp = np.arange(6, dtype=np.float64)[None, None, None, :].repeat(6, axis=2)
    out = layer(np.concatenate([ramp, 2 * ramp], axis=1), np.zeros((1, 1, 12, 12)))
    np.testing.assert_allclose(out[0, 0, 5, :11], np.arange(11) / 2, rtol=1e-12)
    np.testing.assert_allclose(out[0, 1, 5, :11], np.arange(11), rtol=1e-12)


def test_crf_init():
    w = init.crf_weight((5, 5), 3, "4d")
    assert w.shape == (3, 3, 5, 5)
    assert np.all(w[:, :, 2, 2] == 0)  # no self-message
    for c in range(3):
        assert np.all(w[c, c] == 0)  # zero label diagonal
    g = init.gaussian_kernel((5, 5))
    assert g.sum() == pytest.approx(1.0)
    r = np.arange(-2, 3)
    g1 = np.exp(-0.5 * r ** 2 / (5 / 4) ** 2)
    np.testing.assert_allclose(g, np.outer(g1, g1) / np.outer(g1, g1).sum())
    expect = g * 25
    expect[2, 2] = 0
    np.testing.assert_allclose(w[0, 1], expect)
    shared = nn.PacConv2d(4, 4, 5, padding=2, shared_filters=True, filler="crf",
                          dtype=np.float64)
    np.testing.assert_allclose(shared.weight.data[0, 0], expect)
    full = nn.PacConv2d(4, 4, 3, padding=1, filler="crf_perturbed", rng=0)
    assert np.abs(full.weight.data[0, 0]).max() <= 0.0005 + 1e-7
