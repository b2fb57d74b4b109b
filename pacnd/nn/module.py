"""`Module`, `Parameter` and the containers `Sequential` and `ModuleList`.

A :class:`Module` owns named :class:`Parameter` objects (Tensors that require
grad), named buffers (plain arrays saved with the weights but not trained)
and named sub-modules; assigning one of those to an attribute registers it.
Parameter names are dotted paths (``"branch_t.conv1.weight"``), the same as
the reference PyTorch implementation's state-dict keys for the same network,
so its checkpoints load by name (:mod:`pacnd.io`).

Hooks: ``register_forward_pre_hook(fn)`` calls ``fn(module, args)`` before
``forward``; ``register_forward_hook(fn)`` calls ``fn(module, args, output)``
after it (a non-None return value replaces the output). Both return a handle
with ``.remove()``. :mod:`pacnd.nn.hotswap` uses them to route guide features.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np

from .._validate import array_module, to_module
from ..autograd import Tensor
from ..autograd.tensor import is_array

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "RemovableHandle",
           "StateDictError"]


class StateDictError(KeyError, ValueError):
    """A state dict does not fit a module: missing, unexpected or misshaped
    keys (catchable as ``KeyError`` or ``ValueError``)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class Parameter(Tensor):
    """A Tensor that is a trainable parameter of a :class:`Module`
    (``requires_grad=True`` unless told otherwise)."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True, *, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return f"Parameter({self.data!r}{'' if self.requires_grad else ', requires_grad=False'})"


class RemovableHandle:
    """Returned by the hook registration methods; ``.remove()`` unregisters."""

    _ids = itertools.count()

    def __init__(self, registry):
        self.registry = registry
        self.id = next(self._ids)

    def remove(self):
        self.registry.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _shape_str(shape):
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class Module:
    """Base class of layers and networks (see the module docstring).

    Subclasses call ``super().__init__()`` first, assign parameters, buffers
    (:meth:`register_buffer`) and sub-modules as attributes, and implement
    ``forward``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    # ----------------------------------------------------------- registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning attributes")
        params, bufs, mods = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self._forget(name)
            params[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            mods[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to parameter "
                                f"{name!r}: assign a Parameter (or None)")
            params[name] = None
        elif name in mods:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to sub-module {name!r}: "
                                f"assign a Module (or None)")
            mods[name] = None
        elif name in bufs:
            if value is not None and not is_array(value):
                raise TypeError(f"buffer {name!r} must be an array (or None), got "
                                f"{type(value).__name__}")
            bufs[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name):
        for d in (self._parameters, self._buffers, self._modules):
            d.pop(name, None)
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Add a parameter (a :class:`Parameter` or None) under ``name``."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"parameter {name!r} must be a Parameter or None, got "
                            f"{type(param).__name__}")
        self._check_name(name)
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name, array, persistent=True):
        """Add a buffer: an array that is part of the state (e.g. a fixed
        kernel parameter) but not trained. Non-persistent buffers are left
        out of :meth:`state_dict`."""
        if array is not None and not is_array(array):
            array = np.asarray(array)
        self._check_name(name)
        self._forget(name)
        self._buffers[name] = array
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name, module):
        """Add a sub-module (or None) under ``name``."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{name!r}: {type(module).__name__} is not a Module")
        self._check_name(name)
        self._forget(name)
        self._modules[name] = module

    @staticmethod
    def _check_name(name):
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"invalid name {name!r}: use a non-empty string without dots")

    # ---------------------------------------------------------------- forward
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def __call__(self, *args, **kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            res = hook(self, args)
            if res is not None:
                args = res if isinstance(res, tuple) else (res,)
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            res = hook(self, args, out)
            if res is not None:
                out = res
        return out

    def register_forward_hook(self, hook):
        """``hook(module, args, output)`` runs after ``forward``; a non-None
        return value replaces the output. Returns a removable handle."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    def register_forward_pre_hook(self, hook):
        """``hook(module, args)`` runs before ``forward``; a non-None return
        value (a tuple, or one value) replaces the positional arguments."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------- traversal
    def named_modules(self, prefix=""):
        """``(name, module)`` for this module and every descendant (each once)."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, mod = stack.pop()
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            yield name, mod
            children = [(f"{name}.{n}" if name else n, m) for n, m in mod._modules.items()
                        if m is not None]
            stack.extend(reversed(children))

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        for n, m in self._modules.items():
            if m is not None:
                yield n, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix="", recurse=True):
        """``(dotted name, Parameter)`` pairs; a shared parameter appears once."""
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, mod in mods:
            for pname, p in mod._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True, persistent_only=False):
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, mod in mods:
            for bname, b in mod._buffers.items():
                if b is None or (persistent_only and bname in mod._non_persistent):
                    continue
                yield (f"{mname}.{bname}" if mname else bname), b

    def get_submodule(self, target):
        """The sub-module at dotted path ``target`` (``""`` is this module)."""
        if target == "":
            return self
        mod = self
        for i, part in enumerate(target.split(".")):
            sub = mod._modules.get(part) if isinstance(mod, Module) else None
            if sub is None:
                have = sorted(n for n, _ in self.named_modules() if n)
                raise KeyError(f"{type(self).__name__} has no sub-module "
                               f"{'.'.join(target.split('.')[:i + 1])!r}; modules are: {have}")
            mod = sub
        return mod

    def set_submodule(self, target, module):
        """Replace the sub-module at dotted path ``target``."""
        parent_name, _, leaf = target.rpartition(".")
        parent = self.get_submodule(parent_name)
        if leaf not in parent._modules:
            raise KeyError(f"{target!r} is not a sub-module of {type(self).__name__}")
        parent._modules[leaf] = module

    def num_parameters(self, trainable_only=False):
        """Total number of parameter values."""
        return sum(int(p.data.size) for p in self.parameters()
                   if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ modes
    def train(self, mode=True):
        """Set training mode (affects e.g. nothing yet in pacnd, kept for API
        parity and for user modules); returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """An ordered ``{dotted name: array}`` of parameters and persistent
        buffers — copies, so later training does not change it."""
        out = OrderedDict()
        for name, p in self.named_parameters():
            out[name] = p.data.copy()
        for name, b in self.named_buffers(persistent_only=True):
            out[name] = b.copy()
        return out

    def _state_targets(self):
        """name -> (owner module, attribute, kind) for every state entry."""
        targets = OrderedDict()
        seen = set()  # a shared parameter has one entry, as in named_parameters
        for mname, mod in self.named_modules():
            for pname, p in mod._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    targets[f"{mname}.{pname}" if mname else pname] = (mod, pname, "parameter")
            for bname, b in mod._buffers.items():
                if b is not None and bname not in mod._non_persistent:
                    targets.setdefault(f"{mname}.{bname}" if mname else bname,
                                       (mod, bname, "buffer"))
        return targets

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from ``state_dict`` into the parameters and buffers.

        Values are cast to each parameter's dtype and array module and copied
        in place (Parameter objects keep their identity, so optimizers stay
        attached). With ``strict`` (default) any missing key, unexpected key
        or shape mismatch raises a :class:`StateDictError` that lists
        them all with their shapes, and nothing is loaded. Without
        ``strict``, mismatched shapes still raise; missing and unexpected
        keys are returned as ``(missing, unexpected)``.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"state_dict must be a mapping of name -> array, got "
                            f"{type(state_dict).__name__}")
        targets = self._state_targets()
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        mismatched = []
        for k, (mod, attr, kind) in targets.items():
            if k not in state_dict:
                continue
            cur = self._current(mod, attr, kind)
            val = state_dict[k]
            val = val.data if isinstance(val, Tensor) else val
            shape = tuple(getattr(val, "shape", np.shape(val)))
            if shape != tuple(cur.shape):
                mismatched.append((k, shape, tuple(cur.shape)))
        problems = []
        if mismatched:
            problems.append("shape mismatch for " + "; ".join(
                f"{k!r}: the state dict has {_shape_str(s)}, the model expects {_shape_str(m)}"
                for k, s, m in mismatched))
        if strict and missing:
            problems.append("missing keys " + ", ".join(
                f"{k!r} {_shape_str(self._current(*targets[k]).shape)}" for k in missing))
        if strict and unexpected:
            problems.append("unexpected keys " + ", ".join(
                f"{k!r} {_shape_str(np.shape(getattr(state_dict[k], 'data', state_dict[k])))}"
                for k in unexpected))
        if problems:
            raise StateDictError(f"cannot load the state dict into {type(self).__name__}: "
                      + " | ".join(problems))
        for k, (mod, attr, kind) in targets.items():
            if k not in state_dict:
                continue
            val = state_dict[k]
            val = val.data if isinstance(val, Tensor) else val
            cur = self._current(mod, attr, kind)
            cur[...] = to_module(val, array_module(cur), cur.dtype)
        return missing, unexpected

    @staticmethod
    def _current(mod, attr, kind):
        return mod._parameters[attr].data if kind == "parameter" else mod._buffers[attr]

    def map_arrays(self, fn):
        """Replace every parameter's and buffer's array by ``fn(array)`` (e.g.
        ``cupy.asarray`` to move to the GPU, or a dtype cast). Parameters keep
        their identity; gradients are dropped. Returns self."""
        for mod in self.modules():
            for p in mod._parameters.values():
                if p is not None:
                    p.data = fn(p.data)
                    p.grad = None
            for name, b in list(mod._buffers.items()):
                if b is not None:
                    mod._buffers[name] = fn(b)
        return self

    def astype(self, dtype):
        """Convert floating parameters and buffers to ``dtype``; returns self."""
        dtype = np.dtype(dtype)
        return self.map_arrays(lambda a: a.astype(dtype) if a.dtype.kind == "f" else a)

    # ------------------------------------------------------------------- repr
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        children = list(self.named_children())
        if not children:
            return lines[0] + ")"
        for name, mod in children:
            sub = repr(mod).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied one after the other: ``Sequential(a, b, c)`` or
    ``Sequential(OrderedDict([('conv1', a), ('relu1', b)]))`` (named)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        if isinstance(i, str):
            return self._modules[i]
        return list(self._modules.values())[i]

    def __setitem__(self, i, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module")
        self._modules[i if isinstance(i, str) else list(self._modules)[i]] = module

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self


class ModuleList(Module):
    """A list of sub-modules named ``0``, ``1``, ... (no forward of its own)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __setitem__(self, i, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module")
        self._modules[list(self._modules)[i]] = module
