"""A small reverse-mode autodiff for pacnd.

- :class:`Tensor` wraps a NumPy/CuPy array, records the operations applied to
  it and back-propagates (:meth:`Tensor.backward`, iterative, no recursion);
- :class:`Function` is the graph node base class (one output; ``forward`` on
  arrays, ``backward`` returning one gradient per input);
- :func:`no_grad` / :func:`enable_grad` switch recording off/on.

The differentiable operations live in the submodules (``arith``, ``reduce``,
``shape``, ``resize``, ``pool``, ``loss``, ``pac``) and are exposed together
in :mod:`pacnd.functional`.
"""

from .function import Function
from .mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tensor import Tensor, as_array, is_array

__all__ = ["Tensor", "Function", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled", "as_array", "is_array"]
