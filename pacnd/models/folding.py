"""Channel folding: multi-channel targets (optical flow u, v) run through the
single-channel networks as extra batch items, with the guide (or its features)
repeated for each channel."""

from __future__ import annotations

from .. import functional as F

__all__ = ["fold_channels", "unfold_channels", "repeat_for_channels"]


def fold_channels(x):
    """(B, C, h, w) -> (B*C, 1, h, w) and C."""
    B, C, h, w = x.shape
    if C == 1:
        return x, 1
    return F.reshape(x, (B * C, 1, h, w)), C


def unfold_channels(x, C):
    """(B*C, 1, H, W) -> (B, C, H, W)."""
    if C == 1:
        return x
    BC, _, H, W = x.shape
    return F.reshape(x, (BC // C, C, H, W))


def repeat_for_channels(g, C):
    """(B, Cg, H, W) -> (B*C, Cg, H, W), each batch item repeated C times in a row."""
    if C == 1:
        return g
    B, Cg, H, W = g.shape
    g = F.broadcast_to(F.reshape(g, (B, 1, Cg, H, W)), (B, C, Cg, H, W))
    return F.reshape(g, (B * C, Cg, H, W))
