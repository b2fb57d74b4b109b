"""Atomic files, ``.npz`` weights and training checkpoints.

Everything is written with :func:`atomic_write`: into a temporary file in the
target's directory, flushed and ``fsync``-ed, then moved over the target with
``os.replace`` (atomic on POSIX and Windows) and the directory entry synced.
A crash at any point leaves either the old file or the new one, never a torn
one.

Checkpoints are ``.npz`` archives (no pickle: they load with
``allow_pickle=False``): the arrays under path-like keys plus one
``__meta__.json`` entry holding the rest of the structure as JSON — model
parameters, optimizer state, schedule state, the NumPy ``Generator`` state and
the step.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict

import numpy as np

from ..autograd import Tensor

__all__ = ["atomic_write", "save_tree", "load_tree", "save_weights", "load_weights",
           "save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "pacnd-checkpoint"
_META = "__meta__.json"


def atomic_write(path, write, *, mode="wb"):
    """Write a file atomically: ``write(fileobj)`` fills a temporary file in
    the same directory, which replaces ``path`` only once it is complete and
    on disk. If anything fails the temporary file is removed and ``path`` is
    untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return path


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _to_numpy(a):
    if isinstance(a, Tensor):
        a = a.data
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return None


def _encode(obj, arrays, path):
    arr = _to_numpy(obj)
    if arr is not None:
        key = f"a{len(arrays)}"
        arrays[key] = arr
        return {"__array__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, arrays, f"{path}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and "__array__" not in obj and \
                "__tuple__" not in obj and "__items__" not in obj:
            return {k: _encode(v, arrays, f"{path}/{k}") for k, v in obj.items()}
        return {"__items__": [[_encode(k, arrays, f"{path}/key"),
                               _encode(v, arrays, f"{path}/{k}")] for k, v in obj.items()]}
    raise TypeError(f"cannot save a {type(obj).__name__} at {path or '/'}: checkpoints hold "
                    f"arrays, numbers, strings, None, lists, tuples and dicts")


def _decode(obj, arrays):
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, arrays) for v in obj["__tuple__"])
        if "__items__" in obj:
            out = OrderedDict()
            for k, v in obj["__items__"]:
                k = _decode(k, arrays)
                out[tuple(k) if isinstance(k, list) else k] = _decode(v, arrays)
            return out
        return OrderedDict((k, _decode(v, arrays)) for k, v in obj.items())
    return obj


def save_tree(path, tree):
    """Save a nested structure of dicts/lists/tuples/arrays/numbers/strings
    as an ``.npz`` archive, atomically."""
    arrays = OrderedDict()
    meta = _encode(tree, arrays, "")
    payload = json.dumps(meta).encode("utf-8")
    arrays[_META] = np.frombuffer(payload, dtype=np.uint8)

    def write(f):
        np.savez(f, **arrays)

    return atomic_write(path, write)


def load_tree(path):
    """Load a structure saved by :func:`save_tree` (no pickle involved)."""
    with np.load(os.fspath(path), allow_pickle=False) as z:
        if _META not in z.files:
            raise ValueError(f"{os.fspath(path)!r} is not a pacnd archive (no {_META} entry); "
                             f"plain weight files load with pacnd.io.load_weights")
        meta = json.loads(bytes(z[_META]).decode("utf-8"))
        arrays = {k: z[k] for k in z.files if k != _META}
    return _decode(meta, arrays)


def save_weights(path, weights):
    """Save a module's parameters (or any ``{name: array}``) as a plain
    ``.npz`` with one entry per name, atomically."""
    sd = weights.state_dict() if hasattr(weights, "state_dict") else weights
    if not hasattr(sd, "items"):
        raise TypeError(f"weights must be a Module or a mapping name -> array, got "
                        f"{type(weights).__name__}")
    arrays = OrderedDict()
    for k, v in sd.items():
        arr = _to_numpy(v)
        if arr is None:
            raise TypeError(f"weight {k!r} is a {type(v).__name__}, not an array")
        arrays[k] = arr

    def write(f):
        np.savez(f, **arrays)

    return atomic_write(path, write)


def load_weights(path):
    """``{name: array}`` from an ``.npz`` written by :func:`save_weights`
    (or :func:`save_checkpoint`: its model part)."""
    with np.load(os.fspath(path), allow_pickle=False) as z:
        if _META in z.files:
            tree = load_tree(path)
            if isinstance(tree, dict) and tree.get("format") == CHECKPOINT_FORMAT:
                return tree["model"]
            raise ValueError(f"{os.fspath(path)!r} is a pacnd archive but not a checkpoint")
        return OrderedDict((k, z[k]) for k in z.files)


def save_checkpoint(path, *, model=None, optimizer=None, scheduler=None, rng=None, step=0,
                    extra=None):
    """Write a training checkpoint atomically.

    Holds the model's state dict, the optimizer's and scheduler's state, the
    ``numpy.random.Generator`` state (``rng``), the step and ``extra`` (any
    JSON-like structure with arrays). Resuming from it reproduces the
    uninterrupted run bit for bit on CPU, provided all randomness of the run
    comes from ``rng``.
    """
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    tree = OrderedDict(
        format=CHECKPOINT_FORMAT, version=1, step=int(step),
        model=None if model is None else model.state_dict(),
        optimizer=None if optimizer is None else optimizer.state_dict(),
        scheduler=None if scheduler is None else scheduler.state_dict(),
        rng=None if rng is None else rng.bit_generator.state,
        extra=extra)
    return save_tree(path, tree)


def load_checkpoint(path, *, model=None, optimizer=None, scheduler=None, rng=None,
                    strict=True):
    """Read a checkpoint and restore whichever of ``model``, ``optimizer``,
    ``scheduler`` and ``rng`` (a Generator, restored in place) are given.

    Returns the checkpoint as a dict (``step``, ``model``, ``optimizer``,
    ``scheduler``, ``rng``, ``extra``).
    """
    tree = load_tree(path)
    if not isinstance(tree, dict) or tree.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a pacnd checkpoint")
    for obj, key in ((model, "model"), (optimizer, "optimizer"), (scheduler, "scheduler"),
                     (rng, "rng")):
        if obj is not None and tree.get(key) is None:
            raise ValueError(f"the checkpoint {os.fspath(path)!r} holds no {key} state")
    if model is not None:
        model.load_state_dict(tree["model"], strict=strict)
    if optimizer is not None:
        optimizer.load_state_dict(tree["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(tree["scheduler"])
    if rng is not None:
        state = tree["rng"]
        name = type(rng.bit_generator).__name__
        if state.get("bit_generator") != name:
            raise ValueError(f"the checkpoint's RNG is {state.get('bit_generator')}, the given "
                             f"Generator uses {name}")
        rng.bit_generator.state = _plain(state)
    return tree


def _plain(obj):
    """OrderedDicts -> dicts (NumPy's bit generators want plain dicts)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj
