"""Layers and networks on the :mod:`pacnd.autograd` graph.

- :class:`Module`, :class:`Parameter`, :class:`Sequential`, :class:`ModuleList`
- convolutions: :class:`Conv2d` (1d/3d), :class:`ConvTranspose2d` (PyTorch
  convention), PAC layers :class:`PacConv2d`, :class:`PacConvTranspose2d`,
  :class:`PacPool2d` (1d/3d) mirroring the reference implementation
- :class:`ReLU`, :class:`LeakyReLU`, :class:`Sigmoid`, :class:`Tanh`,
  :class:`Identity`, :class:`Upsample`, pooling
- :mod:`pacnd.nn.init` initialisers, :func:`hot_swap` / :class:`GuideFrom`
"""

from . import init
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .hotswap import GuideFrom, hot_swap
from .layers import (AvgPool1d, AvgPool2d, AvgPool3d, Identity, LeakyReLU, MaxPool1d, MaxPool2d,
                     MaxPool3d, ReLU, Sigmoid, Softmax, Tanh, Upsample)
from .module import Module, ModuleList, Parameter, RemovableHandle, Sequential, StateDictError
from .pac import (PacConv1d, PacConv2d, PacConv3d, PacConvTranspose1d, PacConvTranspose2d,
                  PacConvTranspose3d, PacPool1d, PacPool2d, PacPool3d, parse_kernel_type)

__all__ = [
    "init", "Module", "Parameter", "Sequential", "ModuleList", "RemovableHandle",
    "StateDictError",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "PacConv1d", "PacConv2d", "PacConv3d", "PacConvTranspose1d", "PacConvTranspose2d",
    "PacConvTranspose3d", "PacPool1d", "PacPool2d", "PacPool3d", "parse_kernel_type",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Identity", "Upsample",
    "AvgPool1d", "AvgPool2d", "AvgPool3d", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "GuideFrom", "hot_swap",
]
