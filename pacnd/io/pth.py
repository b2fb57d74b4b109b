"""Read PyTorch ``.pth`` checkpoints into NumPy arrays without importing torch.

A ``torch.save`` file (PyTorch >= 1.6) is a zip archive::

    <prefix>/data.pkl        the pickled object (e.g. a state dict)
    <prefix>/data/<key>      raw bytes of each storage
    <prefix>/byteorder       'little' or 'big' (newer versions; little if absent)
    <prefix>/version

Tensors are pickled as calls to ``torch._utils._rebuild_tensor_v2(storage,
storage_offset, size, stride, requires_grad, backward_hooks[, metadata])``
whose ``storage`` is a *persistent id* ``('storage', <torch.XStorage class>,
key, location, numel)``. :func:`load_pth` reads it with a restricted
unpickler: only those few torch names (mapped to NumPy stand-ins),
``collections.OrderedDict`` and a handful of harmless NumPy/builtin
constructors are allowed — anything else raises ``pickle.UnpicklingError``
instead of running code. The dtype comes from the storage class, and shape,
stride and offset are honoured (checked against the storage's bounds).
"""

from __future__ import annotations

import os
import pickle
import types
import zipfile
from collections import OrderedDict

import numpy as np

__all__ = ["load_pth", "load_pth_state_dict", "load_pth_into", "STORAGE_DTYPES"]

STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128, "UntypedStorage": np.uint8,
}


class _StorageType:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """A storage's elements as a 1-D NumPy array (bfloat16 widened to float32)."""

    def __init__(self, raw, type_name, byteorder):
        dt = STORAGE_DTYPES[type_name]
        if dt == "bfloat16":
            u16 = np.frombuffer(raw, dtype=np.dtype("<u2" if byteorder == "little" else ">u2"))
            self.array = (u16.astype(np.uint32) << 16).view(np.float32)
        else:
            dtype = np.dtype(dt).newbyteorder("<" if byteorder == "little" else ">")
            if len(raw) % dtype.itemsize:
                raise pickle.UnpicklingError(f"storage of {len(raw)} bytes is not a whole number "
                                             f"of {type_name} elements")
            self.array = np.frombuffer(raw, dtype=dtype).astype(np.dtype(dt), copy=False)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor's storage is not a storage reference")
    base = storage.array
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError(f"invalid tensor layout: size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, dtype=base.dtype)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if offset < 0 or last >= base.size:
        raise pickle.UnpicklingError(
            f"tensor (offset {offset}, size {size}, stride {stride}) reaches element {last} of a "
            f"storage with {base.size} elements")
    view = np.lib.stride_tricks.as_strided(base[offset:], shape=size,
                                           strides=tuple(st * base.itemsize for st in stride))
    return np.array(view, order="C")  # own, writable, C-contiguous copy


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, *state):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)


class _TypeMarker:
    """Stands for torch.Tensor / torch.nn.Parameter in _rebuild_from_type_v2."""

    def __init__(self, name):
        self.name = name


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TypeMarker("torch.Tensor"),
    ("torch.nn.parameter", "Parameter"): _TypeMarker("torch.nn.Parameter"),
    ("torch", "Size"): tuple,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("argparse", "Namespace"): types.SimpleNamespace,
    ("numpy", "dtype"): np.dtype,
}


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc":
        raise pickle.UnpicklingError(f"refusing a NumPy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


_ALLOWED[("numpy.core.multiarray", "scalar")] = _numpy_scalar
_ALLOWED[("numpy._core.multiarray", "scalar")] = _numpy_scalar


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, byteorder):
        super().__init__(file)
        self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
        self._storages = {}

    def find_class(self, module, name):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        fn = _ALLOWED.get((module, name))
        if fn is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: pacnd reads tensors, dicts and plain values "
                f"from .pth files, not arbitrary objects (a file made with torch.save(model) "
                f"rather than torch.save(model.state_dict()) cannot be read without torch)")
        return fn

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, stype, key, _location, _numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unknown storage type {stype!r}")
        key = str(key)
        cached = self._storages.get(key)
        if cached is None:
            name = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(name)
            except KeyError:
                raise pickle.UnpicklingError(f"the archive has no storage record {name!r}") \
                    from None
            cached = self._storages[key] = _Storage(raw, stype.name, self._byteorder)
        return cached


def load_pth(path):
    """Load a PyTorch ``.pth``/``.pt`` file (zip format) with tensors as
    NumPy arrays. Returns the saved object (typically an ``OrderedDict``)."""
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a zip-format PyTorch file; files from torch < 1.6 (or "
                         f"saved with _use_new_zipfile_serialization=False) are not supported — "
                         f"re-save them with a current torch")
    with zipfile.ZipFile(path) as zf:
        pkls = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise ValueError(f"{path!r} does not look like a torch.save archive (expected one "
                             f"'<name>/data.pkl' entry, found {pkls})")
        prefix = pkls[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in zf.namelist():
            byteorder = zf.read(prefix + "byteorder").decode("ascii").strip()
            if byteorder not in ("little", "big"):
                raise ValueError(f"unknown byteorder {byteorder!r} in {path!r}")
        with zf.open(pkls[0]) as f:
            return _Unpickler(f, zf, prefix, byteorder).load()


def _is_state_dict(obj):
    return isinstance(obj, dict) and obj and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())


def load_pth_state_dict(path, *, key=None, strip_prefix="module."):
    """The state dict (``{name: array}``) in a ``.pth`` file.

    ``key`` picks an entry of a checkpoint dict (e.g. ``'state_dict'``,
    ``'model'``); by default the file itself or the first of those common
    keys that holds a state dict is used. ``strip_prefix`` (``'module.'``,
    left by ``nn.DataParallel``) is removed from names that all start with it.
    """
    obj = load_pth(path)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            have = list(obj) if isinstance(obj, dict) else type(obj).__name__
            raise KeyError(f"{os.fspath(path)!r} has no entry {key!r}; it holds {have}")
        obj = obj[key]
    elif not _is_state_dict(obj) and isinstance(obj, dict):
        for k in ("state_dict", "model_state_dict", "model", "net", "network"):
            if _is_state_dict(obj.get(k)):
                obj = obj[k]
                break
    if not _is_state_dict(obj):
        raise ValueError(f"{os.fspath(path)!r} does not hold a state dict (name -> tensor); "
                         f"pass key= to pick an entry")
    out = OrderedDict(obj)
    if strip_prefix and all(k.startswith(strip_prefix) for k in out):
        out = OrderedDict((k[len(strip_prefix):], v) for k, v in out.items())
    return out


def load_pth_into(model, path, *, key=None, strict=True, rename=None,
                  strip_prefix="module."):
    """Load the reference implementation's weights from a ``.pth`` file into
    a pacnd module, by name.

    ``rename`` maps file names to module names: a dict (names not in it are
    kept), or a callable returning the new name (or None to drop the entry). Returns the
    ``(missing, unexpected)`` key lists (empty with ``strict``, which raises
    on any mismatch instead, naming the keys and shapes).
    """
    sd = load_pth_state_dict(path, key=key, strip_prefix=strip_prefix)
    if rename is not None:
        if isinstance(rename, dict):
            sd = OrderedDict((rename.get(k, k), v) for k, v in sd.items())
        elif callable(rename):
            sd = OrderedDict((rename(k), v) for k, v in sd.items() if rename(k) is not None)
        else:
            raise TypeError(f"rename must be a dict or a callable, got {type(rename).__name__}")
    return model.load_state_dict(sd, strict=strict)
