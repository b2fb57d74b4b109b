"""The graph node: :class:`Function`.

A ``Function`` is one differentiable operation with **one** output (a split
is several slicing nodes, not one multi-output node). Subclasses implement

``forward(self, *arrays) -> array``
    on plain arrays (NumPy or CuPy — use :func:`pacnd._validate.array_module`);
    it may keep on ``self`` whatever ``backward`` needs. ``self.needs_input_grad``
    is already set, so a forward can skip saving what no gradient needs.
``backward(self, grad_output) -> sequence``
    one entry per input: the gradient with the input's shape, or ``None``
    (no gradient, or not needed). It must not modify ``grad_output``.

Non-array parameters (axes, strides, ...) go to ``__init__``; arrays and
Tensors go to :meth:`Function.apply`. ``None`` and Python numbers may appear
among the inputs; they are constants.

After a backward pass without ``retain_graph`` the node drops what it saved
(:meth:`release`), so the activations of a step are freed as soon as the
gradients have flowed through them.
"""

from __future__ import annotations

import numpy as np

from .mode import is_grad_enabled

__all__ = ["Function"]


class Function:
    """Base class of graph nodes (see the module docstring)."""

    inputs = ()
    needs_input_grad = ()
    _released = False

    def forward(self, *arrays):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_output):  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, *inputs):
        """Run ``forward`` on the inputs' arrays and, when any input Tensor
        requires grad (and recording is on), link the output into the graph.

        Returns a plain array when no input is a Tensor, else a Tensor.
        """
        has_tensor = False
        record = False
        needs = []
        arrays = []
        grad_on = is_grad_enabled()
        for a in inputs:
            if isinstance(a, Tensor):
                has_tensor = True
                need = grad_on and a.requires_grad
                record = record or need
                needs.append(need)
                arrays.append(a.data)
            else:
                needs.append(False)
                arrays.append(a)
        self.needs_input_grad = tuple(needs)
        out = self.forward(*arrays)
        if isinstance(out, np.generic):  # NumPy reductions return scalars
            out = np.asarray(out)
        if not has_tensor:
            return out
        if not record:
            return Tensor._make(out, False, None)
        self.inputs = inputs
        return Tensor._make(out, True, self)

    def release(self):
        """Forget the inputs and everything saved by ``forward``."""
        name = self.name
        self.__dict__.clear()
        self._released = True
        self._name = name

    @property
    def name(self):
        return self.__dict__.get("_name", type(self).__name__.lstrip("_"))

    def __repr__(self):
        return f"<{self.name}{' (released)' if self._released else ''}>"


from .tensor import Tensor  # noqa: E402  (circular: Tensor uses Function-made ops)
