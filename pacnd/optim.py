"""Optimizers (:class:`Adam`, :class:`SGD`) and the :class:`MultiStepLR` schedule.

Semantics follow PyTorch's (``torch.optim.Adam`` with L2 ``weight_decay`` or
decoupled AdamW-style decay, ``torch.optim.SGD`` with momentum/dampening/
Nesterov, ``MultiStepLR``), including state-dict layouts: parameters are
referred to by their index in the optimizer's parameter order, so a state dict
loads into an optimizer built over the same model.

Updates are in place on ``param.data`` (Parameters keep their identity) and
skip parameters whose ``.grad`` is None. Each update is one elementwise
expression of the parameter, its gradient and its state arrays with scalar
coefficients (:func:`adam_update`, :func:`sgd_update`); on CuPy arrays it is
compiled into a single fused kernel with ``cupy.fuse``.
"""

from __future__ import annotations

import bisect
import math
import numbers

import numpy as np

from ._validate import array_module, to_module
from .autograd import Tensor

__all__ = ["Optimizer", "Adam", "SGD", "LRScheduler", "MultiStepLR", "CosineLR", "adam_update",
           "sgd_update"]


def _number(v, name, lo=None, hi=None, lo_open=False, hi_open=False):
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
        raise ValueError(f"{name}={v!r} must be a finite number")
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name}={v!r} must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValueError(f"{name}={v!r} must be {'<' if hi_open else '<='} {hi}")
    return v


# ------------------------------------------------------------ fused updates
def _adam_expr(p, g, m, v, lr, beta1, beta2, eps, wd, decoupled, bc1, sqrt_bc2):
    """New (p, m, v) of one Adam step; every argument after ``v`` is a scalar."""
    g = g + wd * p * (1 - decoupled)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    p = p * (1 - lr * wd * decoupled) - (lr / bc1) * m / (v ** 0.5 / sqrt_bc2 + eps)
    return p, m, v


def _sgd_expr(p, g, buf, lr, momentum, dampening, wd, nesterov, first):
    """New (p, buf) of one SGD step (``first`` = 1 on the first momentum step)."""
    g = g + wd * p
    buf = first * g + (1 - first) * (momentum * buf + (1 - dampening) * g)
    d = nesterov * (g + momentum * buf) + (1 - nesterov) * buf
    p = p - lr * d
    return p, buf


_fused_cache = {}


def _run(expr, xp, arrays, scalars, dtype):
    """Evaluate ``expr`` on arrays (with the scalars cast to the arrays' dtype);
    one fused kernel on CuPy, plain NumPy otherwise."""
    sc = tuple(dtype.type(s) for s in scalars)
    if xp is not np and hasattr(xp, "fuse"):
        key = (expr, xp)
        fused = _fused_cache.get(key)
        if fused is None:
            fused = _fused_cache[key] = xp.fuse(expr)
        return fused(*arrays, *sc)
    return expr(*arrays, *sc)


def adam_update(p, g, m, v, *, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """One Adam step on arrays, in place: ``p``, ``m`` (first moment) and
    ``v`` (second moment) are overwritten."""
    bc1 = 1.0 - beta1 ** step
    sqrt_bc2 = math.sqrt(1.0 - beta2 ** step)
    xp = array_module(p)
    new_p, new_m, new_v = _run(_adam_expr, xp, (p, g, m, v),
                               (lr, beta1, beta2, eps, weight_decay, float(decoupled), bc1,
                                sqrt_bc2), p.dtype)
    p[...] = new_p
    m[...] = new_m
    v[...] = new_v


def sgd_update(p, g, buf, *, lr, momentum, dampening, weight_decay, nesterov, first):
    """One SGD step on arrays, in place (``buf`` is the momentum buffer)."""
    xp = array_module(p)
    new_p, new_buf = _run(_sgd_expr, xp, (p, g, buf),
                          (lr, momentum, dampening, weight_decay, float(nesterov), float(first)),
                          p.dtype)
    p[...] = new_p
    buf[...] = new_buf


# ----------------------------------------------------------------- optimizer
class Optimizer:
    """Base class: parameter groups, per-parameter state, state dicts.

    ``params`` is an iterable of Parameters (or Tensors requiring grad), or
    of dicts ``{'params': [...], <hyperparameter overrides>}`` (groups).
    """

    defaults: dict = {}
    _array_state: tuple = ()

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors (e.g. model.parameters()), "
                            "not a single Tensor")
        params = list(params)
        if not params:
            raise ValueError("the optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        seen = set()
        for grp in groups:
            if not isinstance(grp, dict) or "params" not in grp:
                raise TypeError("parameter groups must be dicts with a 'params' entry")
            unknown = set(grp) - set(self.defaults) - {"params"}
            if unknown:
                raise ValueError(f"unknown option(s) {sorted(unknown)} in a parameter group; "
                                 f"{type(self).__name__} takes {sorted(self.defaults)}")
            g = dict(self.defaults)
            g.update(grp)
            g["params"] = list(grp["params"])
            for p in g["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"the optimizer can only update Tensors, got "
                                    f"{type(p).__name__}")
                if not p.requires_grad:
                    raise ValueError("a parameter given to the optimizer does not require grad")
                if id(p) in seen:
                    raise ValueError("a parameter appears twice in the optimizer's parameters")
                seen.add(id(p))
            self._check_group(g)
            self.param_groups.append(g)
        self.state = {}  # id(param) -> dict

    def _check_group(self, group):
        pass

    def _params(self):
        for g in self.param_groups:
            yield from g["params"]

    def zero_grad(self):
        """Reset the gradients of all parameters (to None)."""
        for p in self._params():
            p.grad = None

    def step(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self):
        """``{'state': {index: {name: value}}, 'param_groups': [...]}`` with
        parameters referred to by index (copies of the state arrays)."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {}
        for p in self._params():
            st = self.state.get(id(p))
            if st:
                state[index[id(p)]] = {k: (v.copy() if k in self._array_state else v)
                                       for k, v in st.items()}
        groups = []
        for g in self.param_groups:
            d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()
                 if k != "params"}
            d["params"] = [index[id(p)] for p in g["params"]]
            groups.append(d)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and state saved by :meth:`state_dict`."""
        groups = state_dict.get("param_groups") if hasattr(state_dict, "get") else None
        if groups is None or "state" not in state_dict:
            raise ValueError("not an optimizer state dict: expected keys 'state' and "
                             "'param_groups'")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"the state dict has {len(groups)} parameter group(s), this "
                             f"optimizer has {len(self.param_groups)}")
        params = list(self._params())
        for i, (gs, g) in enumerate(zip(groups, self.param_groups)):
            if len(gs["params"]) != len(g["params"]):
                raise ValueError(f"parameter group {i}: the state dict has {len(gs['params'])} "
                                 f"parameters, this optimizer has {len(g['params'])}")
        new_state = {}
        for key, st in state_dict["state"].items():
            idx = int(key)
            if not 0 <= idx < len(params):
                raise ValueError(f"the state dict has state for parameter {idx}, this optimizer "
                                 f"has {len(params)} parameters")
            p = params[idx]
            xp = array_module(p.data)
            conv = {}
            for k, v in st.items():
                if k in self._array_state:
                    if tuple(np.shape(v)) != p.shape:
                        raise ValueError(f"state {k!r} of parameter {idx} has shape "
                                         f"{tuple(np.shape(v))}, the parameter has {p.shape}")
                    conv[k] = to_module(v, xp, p.dtype).copy()
                else:
                    conv[k] = v.item() if hasattr(v, "item") else v
            new_state[id(p)] = conv
        for gs, g in zip(groups, self.param_groups):
            for k, v in gs.items():
                if k != "params":
                    g[k] = tuple(v) if isinstance(self.defaults.get(k), tuple) else v
        self.state = new_state


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's update.

    Parameters
    ----------
    params : iterable of Parameters or of group dicts
    lr : float
    betas : (float, float)
    eps : float
    weight_decay : float
        L2 penalty added to the gradient (``torch.optim.Adam``), or with
        ``decoupled=True`` decoupled decay ``p *= 1 - lr*wd`` (AdamW).
    decoupled : bool
    """

    _array_state = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, decoupled=bool(decoupled)))

    def _check_group(self, g):
        g["lr"] = _number(g["lr"], "lr", 0)
        betas = tuple(g["betas"])
        if len(betas) != 2:
            raise ValueError(f"betas={betas!r} must be a pair")
        g["betas"] = (_number(betas[0], "betas[0]", 0, 1, hi_open=True),
                      _number(betas[1], "betas[1]", 0, 1, hi_open=True))
        g["eps"] = _number(g["eps"], "eps", 0)
        g["weight_decay"] = _number(g["weight_decay"], "weight_decay", 0)

    def step(self):
        """Update every parameter that has a gradient."""
        for g in self.param_groups:
            b1, b2 = g["betas"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state.get(id(p))
                if not st:
                    xp = array_module(p.data)
                    st = self.state[id(p)] = {"step": 0,
                                              "exp_avg": xp.zeros_like(p.data),
                                              "exp_avg_sq": xp.zeros_like(p.data)}
                st["step"] += 1
                adam_update(p.data, p.grad, st["exp_avg"], st["exp_avg_sq"], lr=g["lr"],
                            beta1=b1, beta2=b2, eps=g["eps"], weight_decay=g["weight_decay"],
                            decoupled=g["decoupled"], step=st["step"])


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's form:
    ``buf = momentum*buf + (1-dampening)*g``, ``buf = g`` on the first step),
    Nesterov momentum and L2 weight decay."""

    _array_state = ("momentum_buffer",)

    def __init__(self, params, lr=1e-2, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=bool(nesterov)))

    def _check_group(self, g):
        g["lr"] = _number(g["lr"], "lr", 0)
        g["momentum"] = _number(g["momentum"], "momentum", 0)
        g["dampening"] = _number(g["dampening"], "dampening", 0)
        g["weight_decay"] = _number(g["weight_decay"], "weight_decay", 0)
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")

    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if g["momentum"] == 0:
                    grad = p.grad + g["weight_decay"] * p.data if g["weight_decay"] else p.grad
                    p.data -= p.data.dtype.type(g["lr"]) * grad
                    continue
                st = self.state.get(id(p))
                first = not st
                if first:
                    st = self.state[id(p)] = {
                        "momentum_buffer": array_module(p.data).zeros_like(p.data)}
                sgd_update(p.data, p.grad, st["momentum_buffer"], lr=g["lr"],
                           momentum=g["momentum"], dampening=g["dampening"],
                           weight_decay=g["weight_decay"], nesterov=g["nesterov"], first=first)


# ----------------------------------------------------------------- schedules
class LRScheduler:
    """Base class: sets each group's ``lr`` from ``base_lrs`` and the number of
    :meth:`step` calls so far (``last_epoch``; PyTorch's name, though the
    training loop steps it once per iteration)."""

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a pacnd.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for g in optimizer.param_groups:
                g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {k: (list(v) if isinstance(v, (list, tuple)) else v)
                for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        for k in state_dict:
            if k not in self.__dict__ or k == "optimizer":
                raise ValueError(f"unexpected key {k!r} in a {type(self).__name__} state dict")
        self.__dict__.update(state_dict)


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` at each milestone:
    ``lr = base_lr * gamma ** (number of milestones <= step count)``."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        ms = list(milestones)
        if any(not isinstance(m, numbers.Integral) or m < 0 for m in ms):
            raise ValueError(f"milestones must be non-negative ints, got {milestones!r}")
        if ms != sorted(ms):
            raise ValueError(f"milestones must be increasing, got {milestones!r}")
        self.milestones = [int(m) for m in ms]
        self.gamma = _number(gamma, "gamma", 0, lo_open=True)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        k = bisect.bisect_right(self.milestones, self.last_epoch)
        return [base * self.gamma ** k for base in self.base_lrs]


class CosineLR(LRScheduler):
    """Linear warm-up over ``warmup`` steps, then a cosine decay from the base
    learning rate to ``base * final`` at step ``total`` (constant after it)."""

    def __init__(self, optimizer, total, *, warmup=0, final=0.01, last_epoch=-1):
        for name, v in (("total", total), ("warmup", warmup)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name}={v!r} must be a non-negative int")
        if total < 1 or warmup >= total:
            raise ValueError(f"need 0 <= warmup < total, got warmup={warmup}, total={total}")
        self.total, self.warmup = int(total), int(warmup)
        self.final = _number(final, "final", 0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t = self.last_epoch
        if t < self.warmup:
            f = (t + 1) / self.warmup
        else:
            u = min(1.0, (t - self.warmup) / max(1, self.total - self.warmup))
            f = self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * u))
        return [base * f for base in self.base_lrs]
