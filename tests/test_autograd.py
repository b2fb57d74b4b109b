"""The graph machinery: Tensor, backward, accumulation, no_grad, release."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import pacnd.functional as F
from pacnd.autograd import Function, Tensor, enable_grad, is_grad_enabled, no_grad


def test_tensor_basics():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = Tensor(a, requires_grad=True)
    assert t.data is a  # no copy
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == np.float32 and t.size == 6
    assert t.is_leaf and t.grad_fn is None
    assert t.numpy() is a
    assert "requires_grad=True" in repr(t)
    d = t.detach()
    assert d.data is a and not d.requires_grad
    assert Tensor(np.float32(3.5)).item() == 3.5
    assert np.asarray(t).shape == (2, 3)
    with pytest.raises(ValueError, match="one-element"):
        t.item()
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match="requires_grad"):
        Tensor(a, requires_grad="yes")


def test_arrays_in_arrays_out_tensors_in_tensors_out():
    a = np.ones((2, 2), dtype=np.float32)
    out = F.relu(a)
    assert isinstance(out, np.ndarray)
    out = F.relu(Tensor(a))
    assert isinstance(out, Tensor) and not out.requires_grad and out.grad_fn is None
    out = F.relu(Tensor(a, requires_grad=True))
    assert out.requires_grad and out.grad_fn is not None
    assert repr(out.grad_fn) == "<Relu>"


def test_python_scalars_keep_float32():
    t = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    for y in (t * 2.5, 2.5 * t, t + 1, 1 - t, t / 3, 3 / t, t ** 2, -t, abs(t)):
        assert y.dtype == np.float32, y


def test_backward_scalar_and_errors():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)
    z = x * 2
    with pytest.raises(RuntimeError, match="one-element"):
        z.backward()
    with pytest.raises(ValueError, match=r"grad has shape \(2,\), expected \(3,\)"):
        (x * 2).backward(np.ones(2))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).backward()


def test_gradients_accumulate_until_reset():
    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * x.data)


def test_diamond_graph_sums_both_paths():
    x = Tensor(np.array([0.5, 1.5]), requires_grad=True)
    h = x.exp()
    y = (h * h + h).sum()  # d/dx = 2 e^{2x} + e^x
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp(2 * x.data) + np.exp(x.data))


def test_same_tensor_twice_and_leaf_grads_are_independent_arrays():
    a = Tensor(np.ones(3), requires_grad=True)
    b = Tensor(np.ones(3), requires_grad=True)
    (a + b).sum().backward()  # Add returns the same upstream array for both inputs
    a.grad += 10
    np.testing.assert_array_equal(b.grad, np.ones(3))
    c = Tensor(np.array([2.0]), requires_grad=True)
    (c * c).backward()
    np.testing.assert_array_equal(c.grad, [4.0])


def test_backward_with_explicit_grad_and_dtype_cast():
    x = Tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
    y = x * 3
    y.backward(np.full((2, 2), 2.0))  # float64 upstream: cast to y's dtype
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, 6 * np.ones((2, 2)))


def test_mixed_dtypes_give_leaf_dtype_gradients():
    w = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    target = np.zeros(3, dtype=np.float64)
    loss = F.mse_loss(w * 2, target)  # float64 graph after the loss
    assert loss.dtype == np.float64
    loss.backward()
    assert w.grad.dtype == np.float32
    np.testing.assert_allclose(w.grad, np.full(3, 8 / 3), rtol=1e-6)


def test_no_grad_context_and_decorator():
    x = Tensor(np.ones(2), requires_grad=True)
    with no_grad():
        assert not is_grad_enabled()
        y = x * 2
        with enable_grad():
            z = x * 2
    assert is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad

    @no_grad()
    def f(t):
        return t * 3

    assert not f(x).requires_grad
    assert is_grad_enabled()


def test_deep_graph_has_no_recursion_limit():
    x = Tensor(np.ones(4), requires_grad=True)
    y = x
    n = 30000  # far beyond Python's recursion limit
    for _ in range(n):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(4, 1.0001 ** n), rtol=1e-10)


def test_second_backward_needs_retain_graph():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 4 * np.exp(x.data))
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_backward_frees_intermediates():
    x = Tensor(np.random.default_rng(0).random(1000), requires_grad=True)
    h = x.exp()
    ref = weakref.ref(h)
    loss = (h * 2).sum()
    del h
    gc.collect()
    assert ref() is not None  # alive while the graph may still need it
    loss.backward()
    gc.collect()
    assert ref() is None  # released by backward


def test_retain_grad_of_intermediate():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = (x * 3).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)
    np.testing.assert_allclose(x.grad, 18 * x.data)


def test_only_requested_gradients_are_computed():
    calls = []

    class Probe(Function):
        def forward(self, a, b):
            return a * b

        def backward(self, g):
            calls.append(self.needs_input_grad)
            return (g * 1.0 if self.needs_input_grad[0] else None,
                    g * 1.0 if self.needs_input_grad[1] else None)

    a = Tensor(np.ones(2), requires_grad=True)
    b = Tensor(np.ones(2))
    Probe().apply(a, b).sum().backward()
    assert calls == [(True, False)]
    assert b.grad is None


def test_bad_gradient_shape_is_reported():
    class Bad(Function):
        def forward(self, a):
            return a * 2

        def backward(self, g):
            return (g[:1],)

    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Bad.backward returned a gradient of shape \(1,\)"):
        Bad().apply(x).sum().backward()


def test_tensor_methods_and_operators():
    rng = np.random.default_rng(1)
    a = rng.random((2, 3)) + 0.5
    t = Tensor(a, requires_grad=True)
    np.testing.assert_allclose((t @ Tensor(a.T)).data, a @ a.T)
    np.testing.assert_allclose(t.T.data, a.T)
    np.testing.assert_allclose(t.reshape(3, 2).data, a.reshape(3, 2))
    np.testing.assert_allclose(t.transpose(1, 0).data, a.T)
    np.testing.assert_allclose(t.flatten().data, a.ravel())
    np.testing.assert_allclose(t.mean(axis=1).data, a.mean(axis=1))
    np.testing.assert_allclose(t.softmax(axis=1).data.sum(axis=1), 1.0)
    np.testing.assert_allclose(t[0, 1:].data, a[0, 1:])
    np.testing.assert_allclose((2 ** t).data, 2 ** a)
    np.testing.assert_array_equal(t > 1.0, a > 1.0)
    assert isinstance(np.ones((2, 3)) * t, Tensor)  # ndarray defers to Tensor
    assert t.astype(np.float32).dtype == np.float32
