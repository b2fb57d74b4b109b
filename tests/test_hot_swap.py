"""Layer hot-swapping (paper Sec. 6) and guide routing with GuideFrom."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import pacnd.functional as F
from pacnd import nn, optim
from pacnd.autograd import Tensor


def convnet(dtype=np.float32):
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1, dtype=dtype, rng=1)),
        ("relu1", nn.ReLU()),
        ("pool", nn.AvgPool2d(2)),
        ("conv2", nn.Conv2d(8, 8, 3, padding=1, dtype=dtype, rng=2)),
        ("relu2", nn.ReLU()),
        ("conv3", nn.Conv2d(8, 2, 3, padding=1, dtype=dtype, rng=3)),
    ]))


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_swap_keeps_output_and_parameters(dtype):
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 12, 10)).astype(dtype) * 2
    net = convnet(dtype)
    before = net(x).data.copy()
    keys_before = list(net.state_dict())
    params_before = [id(p) for p in net.parameters()]
    opt = optim.Adam(net.parameters(), lr=1e-3)

    new = nn.hot_swap(net, ["conv2", "conv3"], guide="relu1")
    assert isinstance(net.conv2, nn.PacConv2d) and isinstance(net.conv3, nn.PacConv2d)
    assert set(new) == {"conv2", "conv3"}
    assert list(net.state_dict()) == keys_before  # same names: old checkpoints still load
    assert [id(p) for p in net.parameters()] == params_before  # optimizer stays attached
    assert net.conv2.guide_scale == 1e-4

    after = net(x).data
    assert rel(after, before) < 1e-6

    # the guide (relu1's output at full resolution) is resized to conv2's input
    # size; gradients reach the guide layer through the PAC kernels too
    out = net(Tensor(x))
    F.mse_loss(out, np.zeros_like(out.data)).backward()
    assert all(p.grad is not None for p in net.parameters())
    opt.step()


def test_fine_tuning_after_swap_changes_the_function():
    rng = np.random.default_rng(1)
    x = rng.random((1, 3, 8, 8)).astype(np.float64)
    net = convnet(np.float64)
    nn.hot_swap(net, "conv3", guide=nn.GuideFrom.INPUT, scale=1.0)
    y = net(x)
    assert y.shape == (1, 2, 4, 4)
    # with scale 1 the guide matters: it differs from the plain network
    ref = convnet(np.float64)
    assert rel(y.data, ref(x).data) > 1e-3


def test_callable_guide_and_errors():
    x = np.random.default_rng(2).random((1, 3, 8, 8)).astype(np.float32)
    net = convnet()
    calls = []

    def guide(inp):
        calls.append(inp.shape)
        return inp

    nn.hot_swap(net, ["conv2"], guide=guide)
    net(x)
    assert calls == [(1, 8, 4, 4)]

    with pytest.raises(TypeError, match="ReLU; hot_swap replaces Conv"):
        nn.hot_swap(convnet(), "relu1", guide="conv1")
    with pytest.raises(ValueError, match="cannot guide itself"):
        nn.hot_swap(convnet(), "conv2", guide="conv2")
    with pytest.raises(KeyError, match="no sub-module 'nope'"):
        nn.hot_swap(convnet(), "conv2", guide="nope")
    with pytest.raises(ValueError, match="names is empty"):
        nn.hot_swap(convnet(), [], guide="conv1")


def test_guide_from_a_later_layer_is_rejected_at_run_time():
    net = convnet()
    nn.hot_swap(net, "conv2", guide="conv3")  # conv3 runs after conv2
    with pytest.raises(RuntimeError, match="has not run yet in this forward pass"):
        net(np.ones((1, 3, 8, 8), np.float32))
    # and a stale capture from the previous pass is never used
    with pytest.raises(RuntimeError, match="has not run yet"):
        net(np.ones((1, 3, 8, 8), np.float32))


def test_guide_from_without_resize_names_sizes():
    net = convnet()
    src = nn.GuideFrom(net, "conv1", resize=None)
    net.conv2 = nn.PacConv2d(8, 8, 3, padding=1)
    net.conv2.guide_source = src
    with pytest.raises(ValueError, match=r"spatial size \(8, 8\) but the PAC layer's input has "
                                         r"\(4, 4\)"):
        net(np.ones((1, 3, 8, 8), np.float32))
    src.remove()
