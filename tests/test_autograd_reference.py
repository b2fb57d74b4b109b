"""The authors' reference cases (non-CRF) reproduced through the layers and
``Tensor.backward()``: output, adapting kernel and every gradient (input,
guide, weight, bias, learnable inverse-kernel alpha/lambda), float64, to
<= 1e-10 relative error, on every available CPU engine."""

from __future__ import annotations

import numpy as np

import pacnd
import pacnd.functional as F
from pacnd import nn
from pacnd.autograd import Tensor

RTOL = 1e-10


def rel_err(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == np.float64
    return float(np.abs(actual - expected).max()) / max(float(np.abs(expected).max()), 1e-300)


def build_layer(case):
    op = case["op"]
    geo = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    if op == "pacconv2d":
        w = case["weight"]
        cout, cin = case["bias"].shape[0], case["input"].shape[1]
        layer = nn.PacConv2d(cin, cout, w.shape[-1], bias=True, kernel_type=case["kernel_type"],
                             normalize_kernel=case["normalize_kernel"],
                             shared_filters=case["shared_filters"], dtype=np.float64, **geo)
    elif op == "pacconv_transpose2d":
        w = case["weight"]
        layer = nn.PacConvTranspose2d(w.shape[0], w.shape[1], w.shape[-1],
                                      output_padding=case["output_padding"], bias=True,
                                      kernel_type=case.get("kernel_type", "gaussian"),
                                      normalize_kernel=case["normalize_kernel"],
                                      dtype=np.float64, **geo)
    elif op == "pacpool2d":
        channels = case["input"].shape[1]
        layer = nn.PacPool2d(case["kernel_size"], kernel_type=case["kernel_type"],
                             channel_wise=case["channel_wise"],
                             normalize_kernel=case["normalize_kernel"],
                             out_channels=channels, dtype=np.float64, **geo)
    else:
        raise AssertionError(op)
    if "weight" in case:
        layer.load_state_dict({"weight": case["weight"], "bias": case["bias"],
                               **{k: v for k, v in layer.state_dict().items()
                                  if k.startswith("inv_")}})
    return layer


def test_reference_case_through_graph(reference_case, engine):
    case = reference_case
    with pacnd.use_engine(engine):
        layer = build_layer(case)
        x = Tensor(case["input"], requires_grad=True)
        f = Tensor(case["guide"], requires_grad=True)
        out = layer(x, f)
        assert rel_err(out.data, case["expect_output"]) <= RTOL
        out.backward(case["grad_output"])

        grads = {"input": x.grad, "guide": f.grad}
        params = dict(layer.named_parameters())
        for name in ("weight", "bias"):
            if name in params:
                grads[name] = params[name].grad
        for name in ("inv_alpha", "inv_lambda"):
            if name in params:
                grads[name] = params[name].grad
        expected = {k[len("expect_grad_"):]: v for k, v in case.items()
                    if k.startswith("expect_grad_")}
        assert set(expected) == set(grads), (sorted(expected), sorted(grads))
        for name, exp in expected.items():
            if case["name"] == "pool_k3_channelwise" and name == "input":
                # the reference's value is wrong (it sums K over channels in its
                # backward; see tests/test_reference_cases.py::
                # test_pool_channelwise_grad_input); checked by finite differences
                # in test_channelwise_pool_layer_gradient below
                continue
            err = rel_err(grads[name], exp)
            assert err <= RTOL, f"{case['name']}: gradient of {name}: rel err {err:.2e}"

        # the adapting kernel through the Tensor-aware functional op
        kw = layer._kernel_kwargs()
        if case["op"] == "pacconv_transpose2d":
            kw.update(transposed=True, output_padding=layer.output_padding)
        elif case["op"] == "pacpool2d":
            kw["channel_wise"] = layer.channel_wise
        K = F.adapting_kernel(Tensor(case["guide"]), layer.kernel_size, stride=layer.stride,
                              padding=layer.padding, dilation=layer.dilation, **kw)
        assert rel_err(K.data, case["expect_kernel"]) <= RTOL


def test_reference_parameter_names_match(reference_case):
    """Layer parameter names are the reference's state-dict keys."""
    layer = build_layer(reference_case)
    names = set(layer.state_dict())
    if reference_case["op"] != "pacpool2d":
        assert {"weight", "bias"} <= names
    if str(reference_case.get("kernel_type", "")).startswith("inv_"):
        assert {"inv_alpha", "inv_lambda"} <= names


def test_channelwise_pool_layer_gradient():
    from autograd_gradcheck import check_graph

    case = {"op": "pacpool2d", "kernel_size": 3, "stride": 1, "padding": 1, "dilation": 1,
            "kernel_type": "inv_0.5_-1", "channel_wise": True, "normalize_kernel": True,
            "input": np.zeros((1, 2, 5, 5))}
    layer = build_layer(case)
    rng = np.random.default_rng(3)
    check_graph(lambda x, f: layer(x, f), dict(x=rng.random((1, 2, 5, 5)),
                                               f=rng.random((1, 2, 5, 5))))
