"""Layer hot-swapping (paper Sec. 6) and guide routing inside networks.

How a PAC layer gets its guide inside a ``Sequential``-like network
-------------------------------------------------------------------
A PAC layer called with one argument (as ``Sequential`` does) asks its
``guide_source`` for the guide: any callable ``source(input) -> guide``
receiving the layer's own input. :class:`GuideFrom` is the source for "the
output of another layer of the same network, in this forward pass":

- it registers a **forward hook** on the named layer that keeps that layer's
  latest output, and a **forward pre-hook** on the network that forgets it at
  the start of every forward pass (so a stale guide from the previous pass is
  never used: if the guide layer has not run yet, the PAC layer raises);
- ``GuideFrom(model, GuideFrom.INPUT)`` gives the network's (first) input
  instead, e.g. the RGB image;
- when the captured features have a different spatial size than the PAC
  layer's input (the guide layer sits before a pooling), they are resized
  (``resize='bilinear'`` by default, PyTorch semantics; ``None`` raises).

The guide is a Tensor of the same graph, so gradients flow into the layers
that produced it. ``layer.guide_scale`` multiplies it.

Hot-swapping
------------
:func:`hot_swap` replaces named ``Conv{1,2,3}d`` layers by
``PacConv{1,2,3}d`` of the same shape that **reuse the same Parameter
objects** (an existing optimizer stays attached, state-dict keys do not
change), with guide features from an earlier layer (by name), the network's
input, or a given callable, scaled by ``scale`` (1e-4). A Gaussian adapting
kernel of features scaled that much is 1 up to ``~scale^2 * |f|^2``, so right
after the swap the network computes what it computed before (to ~1e-6
relative for features of moderate size); fine-tuning then learns to use the
guide.
"""

from __future__ import annotations

from .. import functional as F
from .conv import Conv1d, Conv2d, Conv3d
from .module import Module
from .pac import PacConv1d, PacConv2d, PacConv3d

__all__ = ["GuideFrom", "hot_swap"]

_PAC_FOR = {Conv1d: PacConv1d, Conv2d: PacConv2d, Conv3d: PacConv3d}


class GuideFrom:
    """Guide source: the output of layer ``name`` of ``model`` (or the
    model's input with ``name=GuideFrom.INPUT``) in the current forward pass.

    Parameters
    ----------
    model : Module
        The network whose forward pass runs both layers.
    name : str
        Dotted name of the guide layer (as in ``model.named_modules()``), or
        ``GuideFrom.INPUT``.
    resize : {'bilinear', 'nearest', None}
        How to match the PAC layer's spatial size when it differs
        ('bilinear' means linear interpolation in every spatial dim).
    """

    INPUT = "<input>"

    def __init__(self, model, name, *, resize="bilinear"):
        if not isinstance(model, Module):
            raise TypeError(f"model must be a pacnd.nn.Module, got {type(model).__name__}")
        if resize not in ("bilinear", "nearest", None):
            raise ValueError(f"resize={resize!r}; choose 'bilinear', 'nearest' or None")
        self.model, self.name, self.resize = model, name, resize
        self.value = None
        self._handles = [model.register_forward_pre_hook(self._reset)]
        if name == self.INPUT:
            self._handles.append(model.register_forward_pre_hook(self._capture_input))
        else:
            layer = model.get_submodule(name)
            if layer is model:
                raise ValueError("the guide layer cannot be the whole model; name a layer, or "
                                 "use GuideFrom.INPUT for the model's input")
            self._handles.append(layer.register_forward_hook(self._capture))

    def _reset(self, module, args):
        self.value = None

    def _capture_input(self, module, args):
        self.value = args[0] if args else None

    def _capture(self, module, args, output):
        self.value = output

    def __call__(self, input):
        g = self.value
        if g is None:
            raise RuntimeError(
                f"the guide layer {self.name!r} has not run yet in this forward pass: the guide "
                f"must come from a layer that runs before the PAC layer (or from the model's "
                f"input, GuideFrom.INPUT), and the model must be called as a whole")
        size = tuple(input.shape[2:])
        if tuple(g.shape[2:]) != size:
            if self.resize is None:
                raise ValueError(f"guide from {self.name!r} has spatial size "
                                 f"{tuple(g.shape[2:])} but the PAC layer's input has {size}; "
                                 f"pass resize='bilinear' or pick a layer of that size")
            if g.shape[0] != input.shape[0]:
                raise ValueError(f"guide batch {g.shape[0]} != input batch {input.shape[0]}")
            g = F.resize(g, size, mode="linear" if self.resize == "bilinear" else "nearest")
        return g

    def remove(self):
        """Unregister the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __repr__(self):
        return f"GuideFrom({self.name!r})"


def hot_swap(model, names, guide, *, scale=1e-4, kernel_type="gaussian",
             normalize_kernel=False, resize="bilinear"):
    """Replace the named convolution layers of ``model`` by PAC layers.

    Parameters
    ----------
    model : Module
    names : str or sequence of str
        Dotted names of ``Conv1d/2d/3d`` layers to replace.
    guide : str or callable
        Where the guide features come from: the dotted name of an earlier
        layer (its output in the same forward pass), ``GuideFrom.INPUT`` (the
        model's input), or a callable ``guide(layer_input) -> features``.
    scale : float
        The guide is multiplied by this (small, so the swapped network starts
        out equal to the original).
    kernel_type, normalize_kernel
        Of the new PAC layers (the default Gaussian, unnormalised, is what
        keeps the output unchanged at swap time).
    resize : {'bilinear', 'nearest', None}
        For a named guide layer of a different spatial size.

    Returns
    -------
    dict
        name -> the new PAC layer. The new layers share the old layers'
        ``weight``/``bias`` Parameter objects.
    """
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ValueError("names is empty: name at least one Conv layer to replace")
    if isinstance(guide, str):
        if guide in names:
            raise ValueError(f"layer {guide!r} cannot guide itself")
        source = GuideFrom(model, guide, resize=resize)
    elif callable(guide):
        source = guide
    else:
        raise TypeError(f"guide must be a layer name or a callable, got {type(guide).__name__}")
    new_layers = {}
    for name in names:
        old = model.get_submodule(name)
        pac_cls = _PAC_FOR.get(type(old))
        if pac_cls is None:
            raise TypeError(f"layer {name!r} is a {type(old).__name__}; hot_swap replaces "
                            f"Conv1d/Conv2d/Conv3d layers only")
        new = pac_cls(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                      padding=old.padding, dilation=old.dilation, bias=old.bias is not None,
                      kernel_type=kernel_type, normalize_kernel=normalize_kernel,
                      groups=old.groups, dtype=old.weight.dtype, rng=0)
        new.weight = old.weight
        if old.bias is not None:
            new.bias = old.bias
        new.guide_source = source
        new.guide_scale = float(scale)
        new.train(old.training)
        model.set_submodule(name, new)
        new_layers[name] = new
    return new_layers
