"""Framework-free training: :func:`fit` (loop, progress bar, CSV/JSON metrics,
periodic evaluation, training-curve PNG, atomic checkpoints with bit-exact
resume), :class:`MetricsLog`, :func:`plot_curves`, and the checkpoint
functions of :mod:`pacnd.io`."""

from ..io.checkpoint import load_checkpoint, save_checkpoint
from .loop import TrainResult, fit
from .metrics import MetricsLog
from .plot import plot_curves

__all__ = ["fit", "TrainResult", "MetricsLog", "plot_curves", "save_checkpoint",
           "load_checkpoint"]
