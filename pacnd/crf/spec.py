"""Pairwise-kernel specifications of a PAC-CRF and the geometry they imply.

A PAC-CRF (``DESIGN.md`` section 2) has a list of pairwise kernels. Each one
is described by a :class:`PairwiseKernel`: the reference implementation's
fields (``kernel_size``, ``dilation``, ``blur``, ``compat``,
``spatial_filter``, ``pairwise_weight``) plus two pacnd extensions that the
training-free post-processor needs (``feat_scale`` and ``normalize``). With the
extensions at their defaults a kernel behaves exactly like the reference's.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np

from .._validate import check_int

__all__ = ["PairwiseKernel", "COMPATS", "NORMALIZATIONS", "ceil_pad", "pooled_size",
           "parse_kernels", "check_groups", "norm_groups", "blur_tuple"]

#: compatibility types: '4d' joint (L, L, k, k) PAC filter; '2d' shared spatial PAC filter +
#: learnable 1x1 label compatibility; 'potts' shared spatial PAC filter, Potts compatibility
#: (the reference's sign convention: effective pairwise weight = -pairwise_weight);
#: 'none' no pixel adaptivity: a plain (L, L, k, k) convolution (the reference's 'na').
COMPATS = ("4d", "2d", "potts", "none")
_COMPAT_ALIASES = {"4d": "4d", "2d": "2d", "potts": "potts", "0d": "potts", "none": "none",
                   "na": "none"}
#: message normalisation: 'none' (the reference's) or the fully-connected CRF's kinds, with
#: S_i = sum_j k_ij: 'symmetric' (NORMALIZE_SYMMETRIC: msg_i = S_i^-1/2 sum_j k_ij S_j^-1/2 Q_j),
#: 'before' (NORMALIZE_BEFORE: msg_i = sum_j k_ij Q_j / S_j) and 'after' (NORMALIZE_AFTER:
#: msg_i = sum_j k_ij Q_j / S_i).
NORMALIZATIONS = ("none", "symmetric", "before", "after")

_FIELDS = ("kernel_size", "dilation", "blur", "compat", "spatial_filter", "pairwise_weight",
           "feat_scale", "normalize", "group")


def blur_tuple(blur, nd):
    """A blur (one int, or one per axis) as a tuple of ``nd`` ints."""
    if isinstance(blur, (tuple, list)):
        if len(blur) != nd:
            raise ValueError(f"blur={tuple(blur)} has {len(blur)} entries for a {nd}-D grid")
        return tuple(int(b) for b in blur)
    return (int(blur),) * nd


def ceil_pad(size, factor):
    """The reference's padding for ``blur``: per dim ``((factor - n % factor) % factor + 1) // 2``
    on each side of an average pooling with kernel and stride ``factor`` (one per axis or
    one for all)."""
    fs = blur_tuple(factor, len(size))
    return tuple(((f - n % f) % f + 1) // 2 for n, f in zip(size, fs))


def pooled_size(size, factor):
    """Spatial size after the reference's blur pooling (``ceil(n / factor)``)."""
    pad = ceil_pad(size, factor)
    fs = blur_tuple(factor, len(size))
    return tuple((n + 2 * p - f) // f + 1 for n, p, f in zip(size, pad, fs))


@dataclass(frozen=True)
class PairwiseKernel:
    """One pairwise term of a PAC-CRF.

    Parameters
    ----------
    kernel_size : int
        Odd window size k of the message filter.
    dilation : int
        Spacing d of the taps; the padding is ``(k // 2) * d`` ("same").
    blur : int or tuple of int
        Average-pool the edge features and Q by ``blur`` (ceil mode, the
        reference's padding) and upsample the messages back bilinearly; a
        tuple gives one factor per axis (pacnd extension, anisotropic volumes).
    compat : {'4d', '2d', 'potts', 'none'}
        See :data:`COMPATS`. The reference's key ``compat_type`` and its name
        ``'na'`` are accepted too.
    spatial_filter : bool
        Learnable spatial filter (reference init). ``False``: a fixed box
        filter with a zero centre (``'crf_pool'``); for ``'potts'`` the
        pairwise weight then becomes learnable (as in the reference).
    pairwise_weight : float
        Weight of the term, as given (``'potts'`` flips its sign, see
        :attr:`effective_weight`).
    feat_scale : None, float or sequence of float
        pacnd extension: multiply the edge features by this (per channel)
        before computing this kernel's K; a learnable parameter of the CRF.
        A scale of 0 on every channel makes K = 1 (a purely spatial term).
    normalize : {'none', 'symmetric', 'before', 'after'}
        pacnd extension (shared-filter kernels only): message normalisation
        like the fully-connected CRF's, with ``S = sum_t |W_t| K_t`` over the
        in-image taps (|W|: learned filters may have negative taps; the
        fully-connected CRF's are >= 0): 'symmetric'
        ``msg_i = n_i sum_t W_t K_t(i) n_{i+t} Q_{i+t}`` with ``n = S^(-1/2)``;
        'before' ``n_in = 1/S`` on the sending pixel only; 'after'
        ``n_out = 1/S`` on the receiving pixel only.
    group : int, optional
        pacnd extension: normalised kernels with the same ``group`` share one
        normaliser (the sum over all their taps), as the dilated kernels that
        together approximate one fully-connected term do; they must have the
        same ``blur``. None: the kernel is its own group.
    """

    kernel_size: int = 3
    dilation: int = 1
    blur: int = 1
    compat: str = "4d"
    spatial_filter: bool = True
    pairwise_weight: float = 1.0
    feat_scale: object = None
    normalize: str = "none"
    group: object = None

    def __post_init__(self):
        k = check_int(self.kernel_size, "kernel_size", 1, "it must be a positive odd int")
        if k % 2 == 0:
            raise ValueError(f"kernel_size={k} must be odd (the window needs a centre tap); "
                             f"use {k + 1}")
        check_int(self.dilation, "dilation", 1, "it must be >= 1")
        if isinstance(self.blur, (tuple, list)):
            bs = tuple(check_int(b, "blur", 1, "every entry must be >= 1 (1 = no blur)")
                       for b in self.blur)
            if not bs:
                raise ValueError("blur=() is empty; give an int or one int per axis")
            object.__setattr__(self, "blur", bs[0] if len(set(bs)) == 1 else bs)
        else:
            check_int(self.blur, "blur", 1, "it must be >= 1 (1 = no blur)")
        if not isinstance(self.compat, str) or self.compat not in _COMPAT_ALIASES:
            raise ValueError(f"compat={self.compat!r} is not supported; choose one of {COMPATS}")
        object.__setattr__(self, "compat", _COMPAT_ALIASES[self.compat])
        if not isinstance(self.spatial_filter, (bool, np.bool_)):
            raise TypeError(f"spatial_filter must be True or False, got {self.spatial_filter!r}")
        object.__setattr__(self, "spatial_filter", bool(self.spatial_filter))
        w = self.pairwise_weight
        if not isinstance(w, numbers.Real) or isinstance(w, bool) or not math.isfinite(w):
            raise ValueError(f"pairwise_weight={w!r} must be a finite number")
        object.__setattr__(self, "pairwise_weight", float(w))
        fs = self.feat_scale
        if fs is not None:
            arr = np.asarray(fs, dtype=np.float64)
            if arr.ndim > 1 or arr.size == 0 or not np.isfinite(arr).all():
                raise ValueError(f"feat_scale={fs!r} must be None, a finite number or a 1-D "
                                 f"sequence of finite numbers (one per edge-feature channel)")
            object.__setattr__(self, "feat_scale",
                               float(arr) if arr.ndim == 0 else tuple(float(v) for v in arr))
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize={self.normalize!r} is not supported; choose one of "
                             f"{NORMALIZATIONS}")
        if self.normalize != "none" and self.compat not in ("2d", "potts"):
            raise ValueError(f"normalize={self.normalize!r} needs a shared spatial filter "
                             f"(compat '2d' or 'potts'), not compat={self.compat!r}")
        if self.group is not None:
            if not isinstance(self.group, numbers.Integral) or isinstance(self.group, bool):
                raise TypeError(f"group must be None or an int, got {self.group!r}")
            if self.normalize == "none":
                raise ValueError("group only applies to normalize='symmetric' kernels; drop it "
                                 "or set normalize='symmetric'")
            object.__setattr__(self, "group", int(self.group))
        if self.compat == "none" and self.feat_scale is not None:
            raise ValueError("compat='none' is a plain convolution that ignores the edge "
                             "features; drop feat_scale or use compat='potts'/'2d'/'4d'")

    # ------------------------------------------------------------ derived values
    @property
    def padding(self):
        """``(k // 2) * d``: the output keeps the (pooled) input size."""
        return (self.kernel_size // 2) * self.dilation

    @property
    def shared(self):
        """True when the spatial filter is one (1, 1, k, k) filter for every label."""
        return self.compat in ("2d", "potts")

    @property
    def adaptive(self):
        """True when messages are PAC (use edge features)."""
        return self.compat != "none"

    @property
    def effective_weight(self):
        """The weight w_i of ``logQ = w_u * U - sum_i w_i * msg_i``: ``-pairwise_weight``
        for 'potts' (a Potts message rewards agreeing labels), else ``pairwise_weight``."""
        return -self.pairwise_weight if self.compat == "potts" else self.pairwise_weight

    @property
    def reach(self):
        """How far (in input pixels) the kernel's outermost tap reaches: ``(k//2)*d*blur``
        (the largest over the axes)."""
        return self.padding * (max(self.blur) if isinstance(self.blur, tuple) else self.blur)

    def to_dict(self):
        """Plain dict (JSON-serialisable) of the fields."""
        return asdict(self)

    @classmethod
    def from_any(cls, spec):
        """A :class:`PairwiseKernel` from itself or a dict (reference keys accepted:
        ``compat_type``)."""
        if isinstance(spec, cls):
            return spec
        if not isinstance(spec, dict):
            raise TypeError(f"a pairwise kernel must be a PairwiseKernel or a dict, got "
                            f"{type(spec).__name__}")
        spec = dict(spec)
        if "compat_type" in spec:
            if "compat" in spec:
                raise ValueError("give compat or compat_type (the reference's name), not both")
            spec["compat"] = spec.pop("compat_type")
        bad = sorted(set(spec) - set(_FIELDS))
        if bad:
            raise ValueError(f"unknown pairwise-kernel key(s) {bad}; valid keys are "
                             f"{list(_FIELDS)} (and compat_type)")
        return cls(**spec)


def parse_kernels(pairwise_kernels):
    """A tuple of :class:`PairwiseKernel` from None, one spec, a sequence of specs, or the
    reference's JSON string."""
    if pairwise_kernels is None:
        return ()
    if isinstance(pairwise_kernels, str):
        try:
            pairwise_kernels = json.loads(pairwise_kernels)
        except json.JSONDecodeError as exc:
            raise ValueError(f"pairwise_kernels is a string but not valid JSON: {exc}") from None
    if isinstance(pairwise_kernels, (dict, PairwiseKernel)):
        pairwise_kernels = [pairwise_kernels]
    try:
        items = list(pairwise_kernels)
    except TypeError:
        raise TypeError(f"pairwise_kernels must be a list of PairwiseKernel/dicts, got "
                        f"{type(pairwise_kernels).__name__}") from None
    specs = tuple(PairwiseKernel.from_any(s) for s in items)
    check_groups(specs)
    return specs


def check_groups(specs):
    """Kernels sharing a normalisation group must share the blur and the normalisation."""
    blurs = {}
    for i, s in enumerate(specs):
        if s.group is None:
            continue
        b, norm, j = blurs.setdefault(s.group, (s.blur, s.normalize, i))
        if b != s.blur:
            raise ValueError(f"pairwise kernels {j} and {i} share normalisation group {s.group} "
                             f"but have different blur ({specs[j].blur} vs {s.blur}); a group's "
                             f"normaliser lives at one resolution — give them the same blur")
        if norm != s.normalize:
            raise ValueError(f"pairwise kernels {j} and {i} share normalisation group {s.group} "
                             f"but normalise differently ({norm!r} vs {s.normalize!r}); give "
                             f"them the same normalize or different groups")


def norm_groups(specs):
    """``{group key: [kernel indices]}`` for the normalised kernels (key: the group id, or
    ``('own', i)`` for an ungrouped kernel)."""
    groups = {}
    for i, s in enumerate(specs):
        if s.normalize != "none":
            groups.setdefault(s.group if s.group is not None else ("own", i), []).append(i)
    return groups
