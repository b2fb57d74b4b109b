"""Adam, SGD and MultiStepLR against their textbook (PyTorch) definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pacnd import nn, optim
from pacnd.autograd import Tensor


def quadratic_grads(params, targets):
    for p, t in zip(params, targets):
        p.grad = 2 * (p.data - t) + 0.1 * np.sin(p.data)  # something non-linear


def reference_adam(p, grads_fn, steps, lr, b1, b2, eps, wd, decoupled):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    p = p.copy()
    for t in range(1, steps + 1):
        g = grads_fn(p)
        if wd and not decoupled:
            g = g + wd * p
        if wd and decoupled:
            p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1 ** t)
        vhat = v / (1 - b2 ** t)
        p = p - lr * mhat / (np.sqrt(vhat) + eps)
    return p


@pytest.mark.parametrize("wd, decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam_matches_definition(wd, decoupled):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((3, 4))
    target = rng.standard_normal((3, 4))
    p = Tensor(p0.copy(), requires_grad=True)
    opt = optim.Adam([p], lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd,
                     decoupled=decoupled)
    for _ in range(25):
        quadratic_grads([p], [target])
        opt.step()
    expect = reference_adam(p0, lambda q: 2 * (q - target) + 0.1 * np.sin(q), 25, 0.05, 0.8,
                            0.95, 1e-6, wd, decoupled)
    np.testing.assert_allclose(p.data, expect, rtol=1e-12, atol=1e-12)
    assert opt.state[id(p)]["step"] == 25


def test_adam_first_step_moves_by_lr_and_keeps_dtype_and_identity():
    p = Tensor(np.zeros(4, dtype=np.float32), requires_grad=True)
    data = p.data
    opt = optim.Adam([p], lr=0.01)
    p.grad = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
    opt.step()
    assert p.data is data and p.dtype == np.float32
    np.testing.assert_allclose(p.data, -0.01 * np.sign(p.grad), rtol=1e-5)


def test_sgd_momentum_nesterov_match_definition():
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(5)
    target = rng.standard_normal(5)
    for nesterov, damp in ((False, 0.0), (False, 0.3), (True, 0.0)):
        p = Tensor(p0.copy(), requires_grad=True)
        opt = optim.SGD([p], lr=0.1, momentum=0.9, dampening=damp, weight_decay=0.01,
                        nesterov=nesterov)
        q, buf = p0.copy(), None
        for _ in range(10):
            quadratic_grads([p], [target])
            opt.step()
            g = 2 * (q - target) + 0.1 * np.sin(q) + 0.01 * q
            buf = g if buf is None else 0.9 * buf + (1 - damp) * g
            q = q - 0.1 * (g + 0.9 * buf if nesterov else buf)
        np.testing.assert_allclose(p.data, q, rtol=1e-12)
    p = Tensor(p0.copy(), requires_grad=True)
    opt = optim.SGD([p], lr=0.5)
    p.grad = np.ones(5)
    opt.step()
    np.testing.assert_allclose(p.data, p0 - 0.5)


def test_parameters_without_grad_are_skipped_and_zero_grad():
    a = Tensor(np.ones(2), requires_grad=True)
    b = Tensor(np.ones(2), requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(b.data, np.ones(2))
    assert id(b) not in opt.state
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_param_groups():
    a = Tensor(np.zeros(1), requires_grad=True)
    b = Tensor(np.zeros(1), requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad = np.ones(1)
    b.grad = np.ones(1)
    opt.step()
    np.testing.assert_allclose([a.data[0], b.data[0]], [-0.1, -1.0])


def test_multistep_lr():
    p = Tensor(np.zeros(1), requires_grad=True)
    opt = optim.Adam([p], lr=1e-4)
    sched = optim.MultiStepLR(opt, milestones=[3, 5], gamma=0.1)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    np.testing.assert_allclose(lrs, [1e-4] * 3 + [1e-5] * 2 + [1e-6] * 2)
    assert sched.get_last_lr() == [pytest.approx(1e-6)]


def test_state_dicts_resume_exactly():
    rng = np.random.default_rng(2)
    target = rng.standard_normal((2, 3))

    def run(n, state=None):
        p = Tensor(np.zeros((2, 3)), requires_grad=True)
        opt = optim.Adam([p], lr=0.1, weight_decay=0.01)
        sched = optim.MultiStepLR(opt, [4], gamma=0.5)
        if state:
            p.data[...] = state["p"]
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
        for _ in range(n):
            quadratic_grads([p], [target])
            opt.step()
            sched.step()
        return p, {"p": p.data.copy(), "opt": opt.state_dict(), "sched": sched.state_dict()}

    full, _ = run(8)
    _, mid = run(3)
    resumed, _ = run(5, mid)
    np.testing.assert_array_equal(full.data, resumed.data)
    sd = mid["opt"]
    assert sd["param_groups"][0]["params"] == [0]
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


def test_optimizer_errors():
    p = Tensor(np.zeros(2), requires_grad=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="lr=-1.0 must be >= 0"):
        optim.Adam([p], lr=-1)
    with pytest.raises(ValueError, match=r"betas\[0\]=1.0 must be < 1"):
        optim.Adam([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="does not require grad"):
        optim.SGD([Tensor(np.zeros(2))])
    with pytest.raises(ValueError, match="appears twice"):
        optim.SGD([p, p])
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(p)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="unknown option"):
        optim.SGD([{"params": [p], "betas": (0.9, 0.9)}])
    with pytest.raises(ValueError, match="increasing"):
        optim.MultiStepLR(optim.SGD([p]), [5, 3])
    opt = optim.Adam([p])
    other = optim.Adam([p, Tensor(np.zeros(3), requires_grad=True)])
    with pytest.raises(ValueError, match="2 parameters, this optimizer has 1"):
        opt.load_state_dict(other.state_dict())
    q = Tensor(np.zeros(3), requires_grad=True)
    other = optim.Adam([q])
    q.grad = np.ones(3)
    other.step()
    with pytest.raises(ValueError, match=r"has shape \(3,\), the parameter has \(2,\)"):
        opt.load_state_dict(other.state_dict())


def test_adam_trains_a_layer():
    """Adam on a PAC layer recovers a known linear filter (noise-free data)."""
    rng = np.random.default_rng(3)
    true = nn.Conv2d(2, 1, 3, padding=1, dtype=np.float64, rng=5)
    model = nn.Conv2d(2, 1, 3, padding=1, dtype=np.float64, rng=6)
    opt = optim.Adam(model.parameters(), lr=0.05)
    x = rng.standard_normal((4, 2, 8, 8))
    y = true(x).data
    for _ in range(300):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-8
    np.testing.assert_allclose(model.weight.data, true.weight.data, atol=1e-4)
    assert math.isfinite(loss.item())
