"""Saving and loading: atomic ``.npz`` weights and checkpoints
(:mod:`pacnd.io.checkpoint`) and torch-free reading of the reference
implementation's PyTorch ``.pth`` files (:mod:`pacnd.io.pth`)."""

from .checkpoint import (atomic_write, load_checkpoint, load_tree, load_weights,
                         save_checkpoint, save_tree, save_weights)
from .pth import load_pth, load_pth_into, load_pth_state_dict

__all__ = ["atomic_write", "save_tree", "load_tree", "save_weights", "load_weights",
           "save_checkpoint", "load_checkpoint", "load_pth", "load_pth_state_dict",
           "load_pth_into"]
