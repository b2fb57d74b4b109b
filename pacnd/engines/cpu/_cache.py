"""Numba's disk cache for pacnd's kernels, invalidated when any kernel source changes.

Numba stamps a cached function with its own source file's mtime and size only.
A kernel that calls (and inlines) a helper from another module -- every kernel
here calls :mod:`.indexing` -- keeps running the old helper from the cache after
that module changed: after an upgrade of pacnd, or in a development checkout.
That is how a bounds fix can be installed and not take effect.

:func:`install` puts a locator in front of Numba's own ones for files of this
package: the same cache directory as Numba would pick, but the stamp also holds
a hash of every source that compiled code depends on (:data:`DEPENDENCIES`), so
any change to any of them recompiles everything once.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

_PKG = Path(__file__).resolve().parents[2]          # .../pacnd

#: Sources whose code ends up in compiled kernels (folders: every .py in them).
DEPENDENCIES = ("engines/cpu", "crf/fast.py", "crf/fast3d.py", "crf/plan.py", "_kernelspec.py")


def source_files():
    """The files of :data:`DEPENDENCIES` (folders expanded, in sorted order)."""
    files = []
    for dep in DEPENDENCIES:
        p = _PKG / dep
        files.extend(sorted(p.glob("*.py")) if p.is_dir() else [p])
    return files


@functools.lru_cache(maxsize=None)
def source_hash():
    """SHA-1 over the kernel sources (name and bytes of each file, in sorted order)."""
    h = hashlib.sha1()
    for f in source_files():
        h.update(str(f.relative_to(_PKG)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _in_package(py_file):
    try:
        return Path(py_file).resolve().is_relative_to(_PKG)
    except (OSError, ValueError):
        return False


def install():
    """Register the locator (idempotent)."""
    from numba.core import caching  # noqa: PLC0415

    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
    if any(getattr(c, "_pacnd", False) for c in impl._locator_classes):
        return
    inner_classes = [c for c in impl._locator_classes
                     if c.__name__ in ("UserProvidedCacheLocator", "InTreeCacheLocator",
                                       "UserWideCacheLocator")]

    class PacndCacheLocator(caching._CacheLocator):
        """Numba's locator for the file, with :func:`source_hash` added to the stamp."""

        _pacnd = True

        def __init__(self, inner, py_file):
            self._inner = inner
            self._py_file = py_file   # Numba's warning for an uncachable overload reads it

        def ensure_cache_path(self):
            self._inner.ensure_cache_path()

        def get_cache_path(self):
            return self._inner.get_cache_path()

        def get_source_stamp(self):
            return (self._inner.get_source_stamp(), source_hash())

        def get_disambiguator(self):
            return self._inner.get_disambiguator()

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _in_package(py_file):
                return None
            for c in inner_classes:
                inner = c.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner, py_file)
            return None

    impl._locator_classes.insert(0, PacndCacheLocator)
