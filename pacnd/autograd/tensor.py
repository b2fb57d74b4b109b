"""`Tensor`: an array plus the graph that produced it, and the backward pass.

A Tensor wraps a NumPy or CuPy array (``.data``). Operations on Tensors
(arithmetic, :mod:`pacnd.functional`, layers) record a graph of
:class:`~pacnd.autograd.function.Function` nodes when any input has
``requires_grad=True``; :meth:`Tensor.backward` walks that graph in reverse
topological order — iteratively, so graphs thousands of nodes deep (unrolled
mean-field CRFs, long recurrences) never touch Python's recursion limit — and
accumulates gradients into the ``.grad`` arrays of the leaves.

``.grad`` is a plain array of the leaf's shape and dtype (not a Tensor).
Gradients accumulate across backward calls until reset (``t.grad = None`` or
an optimizer's ``zero_grad``). Mutating ``.data`` of a Tensor that a graph
still uses, before that graph's backward, gives wrong gradients (nothing
checks versions).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validate import array_module

__all__ = ["Tensor", "is_array", "as_array"]


def is_array(a):
    """True for NumPy and CuPy arrays."""
    return isinstance(a, np.ndarray) or type(a).__module__.split(".")[0] == "cupy"


def as_array(a):
    """The array behind ``a`` (Tensors are unwrapped, arrays pass through)."""
    return a.data if isinstance(a, Tensor) else a


class Tensor:
    """An array that can record the operations applied to it.

    Parameters
    ----------
    data : array_like
        NumPy or CuPy array (kept as is, no copy) or anything ``np.asarray``
        accepts. A Tensor passed here is unwrapped (its graph is not kept).
    requires_grad : bool
        Record operations on this Tensor so that :meth:`backward` computes
        its gradient into :attr:`grad`. Only float arrays can require grad.
    dtype : dtype, optional
        Convert the data to this dtype.
    """

    __slots__ = ("data", "requires_grad", "grad", "_node", "_retains_grad", "name",
                 "__weakref__")
    # NumPy binary operators defer to ours (ndarray * Tensor -> Tensor.__rmul__).
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, *, dtype=None, name=None):
        if isinstance(data, Tensor):
            data = data.data
        if not is_array(data):
            data = np.asarray(data, dtype=dtype)
        elif dtype is not None and data.dtype != np.dtype(dtype):
            data = data.astype(dtype)
        if not isinstance(requires_grad, (bool, np.bool_)):
            raise TypeError(f"requires_grad must be True or False, got {requires_grad!r}")
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating-point Tensors can require grad, got dtype "
                            f"{data.dtype}; convert with .astype(np.float32)")
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._node = None
        self._retains_grad = False
        self.name = name

    @classmethod
    def _make(cls, data, requires_grad, node):
        t = Tensor.__new__(Tensor)
        t.data = data
        t.requires_grad = requires_grad
        t.grad = None
        t._node = node
        t._retains_grad = False
        t.name = None
        return t

    # ------------------------------------------------------------------ basics
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return int(self.data.size)

    @property
    def xp(self):
        """The array module of the data (NumPy or CuPy)."""
        return array_module(self.data)

    @property
    def is_leaf(self):
        """True for Tensors not produced by a recorded operation."""
        return self._node is None

    @property
    def grad_fn(self):
        """The :class:`Function` node that produced this Tensor, or None."""
        return self._node

    def __len__(self):
        return len(self.data)

    def __bool__(self):
        return bool(self.data)

    def __float__(self):
        return float(self.data)

    def __int__(self):
        return int(self.data)

    def __array__(self, dtype=None, copy=None):
        data = self.data
        if not isinstance(data, np.ndarray):
            data = data.get()
        return np.asarray(data, dtype=dtype)

    def __repr__(self):
        body = repr(self.data)
        extra = ""
        if self._node is not None:
            extra = f", grad_fn={self._node!r}"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        return f"{type(self).__name__}({body}{extra})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU for CuPy data)."""
        data = self.data
        return data if isinstance(data, np.ndarray) else data.get()

    def item(self):
        """The value of a one-element Tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a one-element Tensor, this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def detach(self):
        """A Tensor sharing this data, cut from the graph (requires_grad=False)."""
        return Tensor._make(self.data, False, None)

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place (leaves only); returns self."""
        if self._node is not None and not requires_grad:
            raise RuntimeError("cannot turn off requires_grad of a non-leaf Tensor; use .detach()")
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point Tensors can require grad, got {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep this non-leaf Tensor's gradient in ``.grad`` during backward."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a Tensor that does not require grad")
        self._retains_grad = True
        return self

    def zero_grad(self):
        self.grad = None

    # ---------------------------------------------------------------- backward
    def backward(self, grad=None, *, retain_graph=False):
        """Back-propagate from this Tensor.

        Parameters
        ----------
        grad : array or Tensor, optional
            The gradient of the final objective with respect to this Tensor
            (same shape). May be left out for one-element Tensors (it is 1).
        retain_graph : bool
            Keep the graph's saved arrays so backward can run through it
            again; by default they are freed as the pass goes.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a Tensor that does not require grad: none of the inputs it was "
                "computed from had requires_grad=True (or it was computed under no_grad())")
        xp = array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without grad needs a one-element Tensor, this one has shape "
                    f"{self.shape}; pass grad= with that shape (or reduce it, e.g. .sum())")
            grad = xp.ones_like(self.data)
        else:
            grad = as_array(grad)
            if not is_array(grad):
                grad = xp.asarray(grad, dtype=self.dtype)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"grad has shape {tuple(grad.shape)}, expected {self.shape} "
                                 f"(the shape of the Tensor backward() is called on)")
            if grad.dtype != self.dtype:
                grad = grad.astype(self.dtype)
        _run_backward(self, grad, retain_graph)

    def _accumulate(self, g):
        if g.dtype != self.data.dtype:
            g = g.astype(self.data.dtype)
        if self.grad is None:
            # always a fresh array: g may be a view or shared with another input
            self.grad = array_module(g).array(g, copy=True)
        else:
            self.grad += g

    # ------------------------------------------------------ operators/methods
    def __add__(self, other):
        return _arith.add(self, other)

    def __radd__(self, other):
        return _arith.add(other, self)

    def __sub__(self, other):
        return _arith.sub(self, other)

    def __rsub__(self, other):
        return _arith.sub(other, self)

    def __mul__(self, other):
        return _arith.mul(self, other)

    def __rmul__(self, other):
        return _arith.mul(other, self)

    def __truediv__(self, other):
        return _arith.div(self, other)

    def __rtruediv__(self, other):
        return _arith.div(other, self)

    def __pow__(self, other):
        return _arith.pow(self, other)

    def __rpow__(self, other):
        return _arith.pow(other, self)

    def __neg__(self):
        return _arith.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _arith.abs(self)

    def __matmul__(self, other):
        return _arith.matmul(self, other)

    def __rmatmul__(self, other):
        return _arith.matmul(other, self)

    # comparisons give plain boolean arrays (no gradient flows through them)
    def __lt__(self, other):
        return self.data < as_array(other)

    def __le__(self, other):
        return self.data <= as_array(other)

    def __gt__(self, other):
        return self.data > as_array(other)

    def __ge__(self, other):
        return self.data >= as_array(other)

    __hash__ = object.__hash__

    def __getitem__(self, index):
        return _shape.getitem(self, index)

    def sum(self, axis=None, keepdims=False):
        return _reduce.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _reduce.mean(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
            shape = shape[0]
        return _shape.reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and not isinstance(axes[0], numbers.Integral):
            axes = axes[0]
        return _shape.transpose(self, axes or None)

    @property
    def T(self):
        return _shape.transpose(self, None)

    def flatten(self, start_axis=0):
        return _shape.reshape(self, self.shape[:start_axis] + (-1,))

    def astype(self, dtype):
        return _arith.cast(self, dtype)

    def exp(self):
        return _arith.exp(self)

    def log(self):
        return _arith.log(self)

    def sqrt(self):
        return _arith.sqrt(self)

    def abs(self):
        return _arith.abs(self)

    def relu(self):
        return _arith.relu(self)

    def sigmoid(self):
        return _arith.sigmoid(self)

    def tanh(self):
        return _arith.tanh(self)

    def clip(self, min=None, max=None):
        return _arith.clip(self, min, max)

    def softmax(self, axis=-1):
        return _reduce.softmax(self, axis=axis)

    def log_softmax(self, axis=-1):
        return _reduce.log_softmax(self, axis=axis)


def _topological_order(root):
    """Tensors reachable from ``root`` through nodes, children before parents.

    Iterative depth-first search (no recursion), following only inputs that
    require grad.
    """
    order = []
    visited = set()
    stack = [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        node = t._node
        if node is not None:
            if node._released:
                raise RuntimeError(
                    f"backward through {node.name} a second time: its saved arrays were freed "
                    f"by the first backward; pass retain_graph=True to the first call if you "
                    f"need to back-propagate twice")
            for inp in node.inputs:
                if isinstance(inp, Tensor) and inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    return order


def _run_backward(root, grad, retain_graph):
    order = _topological_order(root)
    grads = {id(root): grad}
    for i in range(len(order) - 1, -1, -1):
        t = order[i]
        order[i] = None
        g = grads.pop(id(t), None)
        node = t._node
        if node is None:
            if g is not None:
                t._accumulate(g)
            continue
        if g is not None:
            if t._retains_grad:
                t._accumulate(g)
            in_grads = node.backward(g)
            for inp, need, gi in zip(node.inputs, node.needs_input_grad, in_grads):
                if not need or gi is None:
                    continue
                if tuple(gi.shape) != tuple(inp.data.shape):
                    raise RuntimeError(
                        f"{node.name}.backward returned a gradient of shape {tuple(gi.shape)} "
                        f"for an input of shape {tuple(inp.data.shape)}")
                if gi.dtype != inp.data.dtype:
                    gi = gi.astype(inp.data.dtype)
                key = id(inp)
                prev = grads.get(key)
                grads[key] = gi if prev is None else prev + gi
        if not retain_graph:
            node.release()


from . import arith as _arith  # noqa: E402
from . import reduce as _reduce  # noqa: E402
from . import shape as _shape  # noqa: E402
