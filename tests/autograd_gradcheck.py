"""Gradient checks for Tensor code: the graph's ``backward`` against float64
central differences along random directions.

One helper, :func:`check_graph`, for every differentiable operation, layer
and composite: it builds the forward (run on plain arrays under ``no_grad``)
and the vjp (Tensors with ``requires_grad`` on the asked inputs, then
``y.backward(u)``) of a Tensor function and hands them to the array-level
checker of :mod:`gradcheck` (chainer-style ``check_backward``: one random
upstream gradient, one random direction per input, each input checked
alone, and the gradients of single-input backward passes compared with the
joint pass — which exercises every ``needs_input_grad`` branch).
"""

from __future__ import annotations

import numpy as np
from gradcheck import GradientCheckError, check_backward

from pacnd.autograd import Tensor, no_grad

__all__ = ["check_graph", "GradientCheckError"]


def check_graph(fn, inputs, *, wrt=None, consts=None, eps=1e-6, rtol=1e-6, atol=1e-12, seed=0,
                allow_zero=()):
    """Check the graph gradients of ``fn(**tensors, **consts) -> Tensor``.

    Parameters
    ----------
    fn : callable
        Takes the inputs as keyword Tensors (plus ``consts`` as given) and
        returns a Tensor.
    inputs : dict name -> float64 array
        Where to check; ``wrt`` (default: all) are differentiated, the others
        are passed as Tensors that do not require grad.
    consts : dict, optional
        Extra keyword arguments passed unchanged (labels, options, ...).
    """
    consts = dict(consts or {})
    inputs = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}

    def func(**arrays):
        with no_grad():
            out = fn(**{k: Tensor(v) for k, v in arrays.items()}, **consts)
        assert isinstance(out, Tensor), f"fn returned {type(out).__name__}, expected a Tensor"
        assert not out.requires_grad, "no_grad() did not stop recording"
        return out.data

    def vjp(u, names, **arrays):
        ts = {k: Tensor(v, requires_grad=k in names) for k, v in arrays.items()}
        out = fn(**ts, **consts)
        out.backward(u)
        grads = {}
        for k in names:
            g = ts[k].grad
            grads[k] = np.zeros_like(arrays[k]) if g is None else g
        return grads

    return check_backward(func, vjp, inputs, wrt=wrt, eps=eps, rtol=rtol, atol=atol, seed=seed,
                          allow_zero=allow_zero)
