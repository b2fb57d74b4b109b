"""`PacCRF`: the learnable PAC-CRF mean-field module (graph path).

Mean-field inference with PAC messages (``DESIGN.md`` section 2), following
the reference implementation (NVlabs/pacnet ``PacCRF``) operation for
operation:

1. for each pairwise kernel i, K_i = exp(-||f_n - f_0||^2 / 2) from the edge
   features f (average-pooled by ``blur`` first, ceil mode, the reference's
   padding), computed **once** per inference, unnormalised, padding (k//2)d;
2. ``logQ = U``; repeat ``num_steps`` times::

       Q     = softmax(logQ)                                  (over labels)
       logQ  = w_u * U - sum_i w_i * msg_i(Q)
       msg_i = up_i(compat_i(PAC(pool_i(Q); W_i, K_i)))

   where ``pool_i``/``up_i`` are the blur's average pooling and bilinear
   upsampling (+ crop) and ``w_i`` the effective pairwise weight
   (``-pairwise_weight`` for 'potts').
3. return logQ (or its softmax / log-softmax / argmax).

Everything is built from :mod:`pacnd.functional`, so it is differentiable
with respect to the unaries, the edge features and every parameter (unary
weight, spatial filters, compatibility matrices, learnable pairwise weights
and the pacnd extension ``feat_scale``). :meth:`PacCRF.infer` runs the same
model without a graph on the fast array path (:mod:`pacnd.crf.fast`).

State-dict names are the reference's (``unary_weight``,
``messengers.{i}.weight``, ``compat.{i}.weight``, ``pairwise_weights.{i}``)
plus ``feat_scales.{i}`` for kernels with a ``feat_scale``.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import functional as F
from .._validate import array_module
from ..autograd import Tensor, no_grad
from ..autograd.tensor import as_array, is_array
from ..nn.module import Module, ModuleList, Parameter
from .spec import (PairwiseKernel, blur_tuple, ceil_pad, check_groups, norm_groups,
                   parse_kernels)

__all__ = ["PacCRF", "crf_filter_init", "FINAL_OUTPUTS"]

FINAL_OUTPUTS = ("log_Q", "softmax", "log_softmax", "labels")
_LINEAR = {2: "bilinear", 3: "trilinear"}
_NORM_EPS = 1e-12


def crf_filter_init(kernel_size, n_labels=None, compat="potts", ndim=2):
    """The reference's message-filter init, bit for bit.

    A truncated Gaussian (sigma = k/4) normalised to sum 1, times k^2, with
    the centre tap zeroed — computed in float32 exactly as the reference does,
    then returned as float64. ``compat='4d'``/``'none'``: a full
    ``(L, L, k, k)`` weight with a zero label diagonal (Potts ``1 - I``);
    ``'2d'``/``'potts'``: one shared ``(1, 1, k, k)`` filter. ``ndim=3``
    (volumes; a pacnd extension): the same separable Gaussian on a
    ``(k, k, k)`` window, times k^3.
    """
    k = int(kernel_size)
    sigma = np.float32(k / 4.0)
    r = np.arange(-(k // 2), k // 2 + 1, dtype=np.float32)
    g1 = np.exp(np.float32(-0.5) * r * r / sigma / sigma)
    g = g1.reshape(-1, 1) * g1
    if ndim == 3:
        g = g[..., None] * g1
    g /= g.sum()
    g = g * np.float32(k) * np.float32(k)  # two products, as the reference
    if ndim == 3:
        g = g * np.float32(k)
    g[(k // 2,) * ndim] = 0
    g = g.astype(np.float64)
    if compat in ("4d", "none"):
        if n_labels is None:
            raise ValueError(f"compat={compat!r} needs n_labels")
        compat_m = 1.0 - np.eye(n_labels, dtype=np.float32)
        return (compat_m.reshape((n_labels, n_labels) + (1,) * ndim).astype(np.float64) * g)
    return g.reshape((1, 1) + (k,) * ndim)


def _box_filter(k, ndim=2):
    w = np.ones((1, 1) + (k,) * ndim)
    w[(0, 0) + (k // 2,) * ndim] = 0
    return w


class _Messenger(Module):
    """Holds one kernel's message filter as ``weight`` (a Parameter, or a buffer when the
    spatial filter is fixed), like the reference's ``PacConv2d`` messengers."""

    def __init__(self, weight, learnable):
        super().__init__()
        if learnable:
            self.weight = Parameter(weight)
        else:
            self.register_buffer("weight", weight)


class _Compat(Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = Parameter(weight)


class _ParamList(Module):
    """Parameters named ``0``, ``1``, ... (None allowed), like ``nn.ParameterList``."""

    def append(self, param):
        self.register_parameter(str(len(self._parameters)), param)

    def __getitem__(self, i):
        return self._parameters[str(i)]

    def __len__(self):
        return len(self._parameters)


def _check_labels(n):
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n_labels={n!r} must be an int >= 2 (the number of classes)")
    return int(n)


class PacCRF(Module):
    """PAC-CRF: mean-field inference with pixel-adaptive messages.

    Parameters
    ----------
    n_labels : int
        Number of labels L (the reference's ``channels``).
    num_steps : int
        Mean-field iterations (default 5).
    pairwise_kernels : list of dict or PairwiseKernel, or JSON string
        The pairwise terms (see :class:`~pacnd.crf.spec.PairwiseKernel`);
        more can be added with :meth:`add_pairwise_kernel`.
    final_output : {'log_Q', 'softmax', 'log_softmax', 'labels'}
        What :meth:`forward` returns ('labels' = argmax, not differentiable).
    unary_weight : float
        Initial unary weight w_u.
    fixed_weighting : bool
        Keep the unary (and pairwise) weights fixed instead of learnable.
    learn_pairwise_weights : bool
        pacnd extension: make every pairwise weight learnable (the reference
        learns only those of 'potts' kernels without a spatial filter; with
        symmetric normalisation the filter's scale cancels, so learning the
        balance between terms needs this).
    perturbed_init : bool
        Add uniform noise of width 1e-3 to the filter/compatibility init (the
        reference's default; pacnd's default is False so results are
        deterministic). Uses ``rng``.
    dtype : dtype
        Parameter dtype (float32 or float64).
    rng : numpy Generator or int, optional
        For ``perturbed_init``.
    ndim : {2, 3}
        Spatial dimensions (pacnd extension): 2 for images, 3 for volumes
        (unary ``(B, L, D, H, W)``, ``(k, k, k)`` message filters, trilinear
        upsampling of blurred messages).

    Call ``crf(unary, edge_feat)`` with unary logits ``(B, L, H, W)`` and
    edge features ``(B, Cf, H, W)`` (arrays or Tensors); ``edge_kernel=`` may
    give precomputed K (one array for every kernel or a list), ``logQ=`` a
    starting logQ.
    """

    def __init__(self, n_labels, num_steps=5, pairwise_kernels=None, *, final_output="log_Q",
                 unary_weight=1.0, fixed_weighting=False, learn_pairwise_weights=False,
                 perturbed_init=False, dtype=np.float32, rng=None, ndim=2):
        super().__init__()
        if ndim not in (2, 3) or isinstance(ndim, bool):
            raise ValueError(f"ndim={ndim!r}: PacCRF runs on images (2) or volumes (3)")
        self.ndim = int(ndim)
        self.n_labels = _check_labels(n_labels)
        if not isinstance(num_steps, numbers.Integral) or isinstance(num_steps, bool) \
                or num_steps < 0:
            raise ValueError(f"num_steps={num_steps!r} must be a non-negative int (mean-field "
                             f"iterations, typically 5)")
        self.num_steps = int(num_steps)
        self.final_output = final_output
        if not isinstance(unary_weight, numbers.Real) or isinstance(unary_weight, bool):
            raise ValueError(f"unary_weight={unary_weight!r} must be a number")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype={dtype!r} must be float32 or float64")
        self.fixed_weighting = bool(fixed_weighting)
        self.learn_pairwise_weights = bool(learn_pairwise_weights)
        self.perturbed_init = bool(perturbed_init)
        self._rng = rng
        self.init_unary_weight = float(unary_weight)
        if self.fixed_weighting:
            self._fixed_unary_weight = float(unary_weight)
        else:
            self.unary_weight = Parameter(np.asarray(float(unary_weight), dtype=self.dtype))
        self.kernels = []
        self.messengers = ModuleList()
        self.compat = ModuleList()
        self.pairwise_weights = _ParamList()
        self.feat_scales = _ParamList()
        for spec in parse_kernels(pairwise_kernels):
            self.add_pairwise_kernel(spec)

    # ------------------------------------------------------------------ setup
    @property
    def final_output(self):
        return self._final_output

    @final_output.setter
    def final_output(self, value):
        if value not in FINAL_OUTPUTS:
            raise ValueError(f"final_output={value!r} is not supported; choose one of "
                             f"{FINAL_OUTPUTS}")
        object.__setattr__(self, "_final_output", value)

    def add_pairwise_kernel(self, spec=None, **kwargs):
        """Add a pairwise term: a :class:`PairwiseKernel`, a dict, or keyword fields
        (``kernel_size=3, dilation=1, blur=1, compat='4d', spatial_filter=True,
        pairwise_weight=1.0, feat_scale=None, normalize='none'``). Returns its index."""
        if spec is None:
            spec = PairwiseKernel.from_any(kwargs)
        elif kwargs:
            raise ValueError("give a kernel spec or keyword fields, not both")
        else:
            spec = PairwiseKernel.from_any(spec)
        L, dt = self.n_labels, self.dtype
        check_groups(tuple(self.kernels) + (spec,))
        i = len(self.kernels)
        self.kernels.append(spec)
        nd = self.ndim
        if spec.compat in ("4d", "none"):
            w = crf_filter_init(spec.kernel_size, L, spec.compat, ndim=nd)
            learnable = True
        elif spec.spatial_filter:
            w = crf_filter_init(spec.kernel_size, compat=spec.compat, ndim=nd)
            learnable = True
        else:
            w = _box_filter(spec.kernel_size, nd)
            learnable = False
        if self.perturbed_init and learnable:
            w = w + (self._gen().random(w.shape) - 0.5) * 1e-3
        self.messengers.append(_Messenger(w.astype(dt), learnable))
        if spec.compat == "2d":
            c = (1.0 - np.eye(L)).reshape((L, L) + (1,) * nd)
            if self.perturbed_init:
                c = c + (self._gen().random(c.shape) - 0.5) * 1e-3
            self.compat.append(_Compat(c.astype(dt)))
        else:
            self.compat.append(None)
        learn_pw = (not self.fixed_weighting and spec.compat != "none" and (
            self.learn_pairwise_weights or (spec.compat == "potts" and not spec.spatial_filter)))
        self.pairwise_weights.append(
            Parameter(np.asarray(spec.effective_weight, dtype=dt), requires_grad=learn_pw))
        if spec.feat_scale is None:
            self.feat_scales.append(None)
        else:
            self.feat_scales.append(Parameter(np.asarray(spec.feat_scale, dtype=dt),
                                              requires_grad=not self.fixed_weighting))
        return i

    def _gen(self):
        from ..nn import init  # noqa: PLC0415

        if not isinstance(self._rng, np.random.Generator):
            self._rng = init.resolve_rng(self._rng)
        return self._rng

    def reset_parameters(self):
        """Back to the reference initialisation (and the given weights)."""
        specs = list(self.kernels)
        uw = self.init_unary_weight
        fresh = PacCRF(self.n_labels, self.num_steps, specs, final_output=self.final_output,
                       unary_weight=uw, fixed_weighting=self.fixed_weighting,
                       learn_pairwise_weights=self.learn_pairwise_weights,
                       perturbed_init=self.perturbed_init, dtype=self.dtype, rng=self._rng,
                       ndim=self.ndim)
        self.load_state_dict(fresh.state_dict())
        return self

    @property
    def num_pairwise_kernels(self):
        return len(self.kernels)

    def extra_repr(self):
        ks = ", ".join(f"{k.compat}{'s' if k.spatial_filter else ''}_{k.kernel_size}_"
                       f"{k.dilation}_{k.blur}" + (f"_{k.normalize}" if k.normalize != "none"
                                                   else "") for k in self.kernels)
        return (f"n_labels={self.n_labels}, num_steps={self.num_steps}, "
                + (f"ndim={self.ndim}, " if self.ndim != 2 else "") +
                f"final_output={self.final_output}, pairwise_kernels=({ks})")

    # ------------------------------------------------------------- parameters
    def effective_unary_weight(self):
        """w_u as a Tensor (Parameter) or a float (``fixed_weighting``)."""
        return self._fixed_unary_weight if self.fixed_weighting else self.unary_weight

    def effective_pairwise_weight(self, i):
        """w_i (sign included) as used in ``logQ = w_u U - sum_i w_i msg_i``: the Parameter
        when it is learnable, else its initial value."""
        p = self.pairwise_weights[i]
        return p if p.requires_grad else self.kernels[i].effective_weight

    def config(self):
        """The constructor arguments as a JSON-serialisable dict."""
        cfg = {"n_labels": self.n_labels, "num_steps": self.num_steps,
               "pairwise_kernels": [k.to_dict() for k in self.kernels],
               "final_output": self.final_output, "unary_weight": self.init_unary_weight,
               "fixed_weighting": self.fixed_weighting,
               "learn_pairwise_weights": self.learn_pairwise_weights, "dtype": self.dtype.name}
        if self.ndim != 2:
            cfg["ndim"] = self.ndim
        return cfg

    # ---------------------------------------------------------------- checks
    def _check_inputs(self, unary, edge_feat, edge_kernel):
        u = as_array(unary)
        if not (isinstance(unary, Tensor) or is_array(unary)):
            raise TypeError(f"unary must be an array or a Tensor (B, L, H, W), got "
                            f"{type(unary).__name__}")
        want = "(B, L, H, W)" if self.ndim == 2 else "(B, L, D, H, W)"
        if u.ndim != 2 + self.ndim:
            raise ValueError(f"unary has shape {tuple(u.shape)}; this PacCRF (ndim="
                             f"{self.ndim}) needs {want} logits (add a batch axis with "
                             f"unary[None])")
        if u.shape[1] != self.n_labels:
            raise ValueError(f"unary has {u.shape[1]} labels (axis 1) but the CRF was built for "
                             f"n_labels={self.n_labels}")
        if u.dtype.kind != "f":
            raise TypeError(f"unary must be float, got dtype {u.dtype}")
        needs_feat = any(k.adaptive for k in self.kernels) and edge_kernel is None
        if edge_feat is None:
            if needs_feat:
                raise ValueError("edge_feat is required (B, Cf, H, W) unless edge_kernel gives "
                                 "the precomputed K of every kernel")
            return
        f = as_array(edge_feat)
        if not (isinstance(edge_feat, Tensor) or is_array(edge_feat)):
            raise TypeError(f"edge_feat must be an array or a Tensor, got "
                            f"{type(edge_feat).__name__}")
        if f.ndim != u.ndim or f.shape[0] != u.shape[0] or f.shape[2:] != u.shape[2:]:
            raise ValueError(f"edge_feat has shape {tuple(f.shape)}; expected (B={u.shape[0]}, "
                             f"Cf, {', '.join(map(str, u.shape[2:]))}): same batch and size "
                             f"as unary")
        for i, k in enumerate(self.kernels):
            if k.feat_scale is not None and np.ndim(k.feat_scale) == 1 \
                    and len(k.feat_scale) != f.shape[1]:
                raise ValueError(f"pairwise kernel {i} has feat_scale with {len(k.feat_scale)} "
                                 f"entries but edge_feat has {f.shape[1]} channels")

    # ------------------------------------------------------------ graph path
    def edge_kernels(self, edge_feat):
        """The adapting kernels K_i (Tensors/arrays, None for non-adaptive kernels)."""
        pooled = {}
        out = []
        for i, spec in enumerate(self.kernels):
            if not spec.adaptive:
                out.append(None)
                continue
            b = blur_tuple(spec.blur, self.ndim)
            if b not in pooled:
                pooled[b] = edge_feat if max(b) == 1 else F.avg_pool(
                    edge_feat, b, b, ceil_pad(as_array(edge_feat).shape[2:], b),
                    count_include_pad=False)
            f = pooled[b]
            scale = self.feat_scales[i]
            if scale is not None:
                f = f * (scale.reshape((1, -1) + (1,) * self.ndim) if scale.ndim == 1
                         else scale)
            out.append(F.adapting_kernel(f, spec.kernel_size, padding=spec.padding,
                                         dilation=spec.dilation))
        return out

    def normalizers(self, kernels, size, like):
        """Per kernel: None, or ``(n_in, n_out)`` (each None or an array) from
        ``S = sum_t |W_t| K_t`` over the in-image taps of every kernel of its normalisation
        group (|W| keeps it defined for learned filters with negative taps): 'symmetric'
        ``(S^-1/2, S^-1/2)``, 'before' ``(1/S, None)``, 'after' ``(None, 1/S)``."""
        norms = [None] * len(self.kernels)
        dtype = as_array(like).dtype
        B = as_array(like).shape[0]
        xp = array_module(as_array(like))
        for idx in norm_groups(self.kernels).values():
            total = None
            for i in idx:
                spec = self.kernels[i]
                psize = (tuple(size) if blur_tuple(spec.blur, self.ndim) == (1,) * self.ndim
                         else tuple(as_array(kernels[i]).shape[-self.ndim:]))
                ones = xp.ones((B, 1) + psize, dtype=dtype)
                s = F.pac_conv(ones, None, F.abs(self.messengers[i].weight),
                               adapting=kernels[i], padding=spec.padding,
                               dilation=spec.dilation, shared=True)
                total = s if total is None else total + s
            kind = self.kernels[idx[0]].normalize
            if kind == "symmetric":
                n = F.maximum(total, _NORM_EPS) ** -0.5
                pair = (n, n)
            else:
                n = F.maximum(total, _NORM_EPS) ** -1.0
                pair = (n, None) if kind == "before" else (None, n)
            for i in idx:
                norms[i] = pair
        return norms

    def _message(self, i, Qb, K, norm):
        spec = self.kernels[i]
        w = self.messengers[i].weight
        n_in, n_out = norm if norm is not None else (None, None)
        if n_in is not None:
            Qb = Qb * n_in
        if spec.compat == "none":
            m = F.conv(Qb, w, padding=spec.padding, dilation=spec.dilation)
        else:
            m = F.pac_conv(Qb, None, w, adapting=K, padding=spec.padding,
                           dilation=spec.dilation, shared=spec.shared)
        if n_out is not None:
            m = m * n_out
        if spec.compat == "2d":
            m = F.conv(m, self.compat[i].weight)
        return m

    def forward(self, unary, edge_feat=None, edge_kernel=None, logQ=None):
        """Mean-field inference on the graph (differentiable).

        Parameters
        ----------
        unary : array or Tensor (B, L, H, W)
            Unary logits (higher = more likely).
        edge_feat : array or Tensor (B, Cf, H, W)
            Edge features (e.g. RGB/srgb, positions).
        edge_kernel : array/Tensor or list of them, optional
            Precomputed K per kernel (at the kernel's pooled resolution).
        logQ : array or Tensor, optional
            Starting logQ (default: the unary).

        Returns
        -------
        Tensor (or array when nothing is a Tensor) of shape (B, L, H, W);
        integer labels (B, H, W) for ``final_output='labels'``.
        """
        self._check_inputs(unary, edge_feat, edge_kernel)
        return self._graph(unary, edge_feat, edge_kernel, logQ, self.final_output)

    def _graph(self, unary, edge_feat, edge_kernel, logQ, output):
        """The mean-field steps on the graph, ending in ``output`` (see :meth:`_final`)."""
        n = len(self.kernels)
        if edge_kernel is None:
            kernels = self.edge_kernels(edge_feat)
        elif isinstance(edge_kernel, (list, tuple)):
            if len(edge_kernel) != n:
                raise ValueError(f"edge_kernel has {len(edge_kernel)} entries for {n} kernels")
            kernels = list(edge_kernel)
        else:
            kernels = [edge_kernel if k.adaptive else None for k in self.kernels]
        size = tuple(as_array(unary).shape[2:])
        norms = self.normalizers(kernels, size, unary)
        w_u = self.effective_unary_weight()
        if logQ is None:
            logQ = unary
        for _ in range(self.num_steps):
            Q = F.softmax(logQ, axis=1)
            pooled = {(1,) * self.ndim: Q}
            logQ = unary * w_u
            for i, spec in enumerate(self.kernels):
                b = blur_tuple(spec.blur, self.ndim)
                pad = ceil_pad(size, b)
                if b not in pooled:
                    pooled[b] = F.avg_pool(Q, b, b, pad, count_include_pad=False)
                m = self._message(i, pooled[b], kernels[i], norms[i])
                if max(b) > 1:
                    m = F.interpolate(m, scale_factor=b, mode=_LINEAR[self.ndim],
                                      align_corners=False)
                    m = m[(slice(None), slice(None))
                          + tuple(slice(p, p + n) for p, n in zip(pad, size))]
                logQ = logQ - m * self.effective_pairwise_weight(i)
        return self._final(logQ, output)

    def _final(self, logQ, output):
        fo = output
        if fo == "softmax":
            return F.softmax(logQ, axis=1)
        if fo == "log_softmax":
            return F.log_softmax(logQ, axis=1)
        if fo == "labels":
            return as_array(logQ).argmax(axis=1)
        return logQ

    # -------------------------------------------------------------- fast path
    def infer(self, unary, edge_feat=None, *, output=None, edge_kernel=None, engine=None):
        """The same inference on the fast array path (no graph; K computed once and reused).

        Parameters
        ----------
        unary, edge_feat, edge_kernel
            As in :meth:`forward` (arrays; Tensors are unwrapped).
        output : {'log_Q', 'softmax', 'log_softmax', 'labels'}, optional
            Default: the module's ``final_output``.
        engine : str, optional
            PAC engine for the messages ('numba', 'numpy', ...).

        Returns
        -------
        ndarray (B, L, H, W), or int labels (B, H, W).
        """
        from .fast import mean_field  # noqa: PLC0415

        self._check_inputs(unary, edge_feat, edge_kernel)
        for name, a in (("unary", unary), ("edge_feat", edge_feat)):
            if a is not None and not isinstance(as_array(a), np.ndarray):
                raise TypeError(f"{name} is a {type(as_array(a)).__module__} array: the fast "
                                f"path runs on the CPU (NumPy); move it with .get(), or run "
                                f"the graph path crf(unary, edge_feat) under pacnd.no_grad()")
        with no_grad():
            return mean_field(self, as_array(unary), as_array(edge_feat),
                              output=output or self.final_output,
                              edge_kernel=edge_kernel, engine=engine)
