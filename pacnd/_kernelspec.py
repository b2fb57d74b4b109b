"""What adapting kernel to compute: its family, parameters and options.

``K = phi(d2)`` where ``d2 = sum_c (f_n - f_0)^2`` (no sum with
``channel_wise``; ``asym`` uses ``relu(f_n - f_0)``):

========== ====================================== ==============================
kind       phi(d2)                                d phi / d d2
========== ====================================== ==============================
gaussian   exp(-d2 / 2)                           -phi / 2
laplacian  exp(-sqrt(d2 + eps))                   -phi / (2 sqrt(d2 + eps))
inverse    alpha + (d2 + eps)^(lam/2)             lam/2 (d2 + eps)^(lam/2 - 1)
========== ====================================== ==============================

``eps = 1e-4`` for both (the reference implementation's constant for the
inverse kernel). ``inverse`` is an inverse-distance kernel for ``lam < 0``;
detail-preserving pooling is ``inverse`` with ``normalize``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KernelSpec", "KERNEL_KINDS", "EPS"]

EPS = 1e-4
KERNEL_KINDS = ("gaussian", "laplacian", "inverse")
KIND_CODE = {"gaussian": 0, "laplacian": 1, "inverse": 2}


@dataclass(frozen=True, eq=False)
class KernelSpec:
    """A resolved adapting-kernel definition.

    ``alpha`` and ``lam`` are float arrays of shape ``(1,)`` or ``(Ck,)`` (one
    value per K channel) for ``inverse``, ``None`` otherwise.
    """

    kind: str = "gaussian"
    alpha: np.ndarray | None = None
    lam: np.ndarray | None = None
    asym: bool = False
    normalize: bool = False
    channel_wise: bool = False

    @property
    def code(self):
        return KIND_CODE[self.kind]

    def params_for(self, ck, xp=np):
        """alpha and lam broadcast to ``(ck,)`` (zeros for kernels without them)."""
        if self.kind != "inverse":
            z = xp.zeros(ck, dtype=np.float64)
            return z, z
        a = xp.broadcast_to(xp.asarray(self.alpha, dtype=np.float64), (ck,))
        l_ = xp.broadcast_to(xp.asarray(self.lam, dtype=np.float64), (ck,))
        return xp.ascontiguousarray(a), xp.ascontiguousarray(l_)

    # -- NumPy formulas (the reference engine uses these; the fast engines
    #    re-implement them in their own kernels) -----------------------------
    def phi(self, d2, alpha=None, lam=None):
        """K from squared distance ``d2``; alpha/lam broadcastable to d2."""
        if self.kind == "gaussian":
            return np.exp(-0.5 * d2)
        if self.kind == "laplacian":
            return np.exp(-np.sqrt(d2 + EPS))
        return alpha + (d2 + EPS) ** (0.5 * lam)

    def dphi(self, d2, phi, alpha=None, lam=None):
        """``d phi / d d2``."""
        if self.kind == "gaussian":
            return -0.5 * phi
        if self.kind == "laplacian":
            return -phi / (2.0 * np.sqrt(d2 + EPS))
        return 0.5 * lam * (d2 + EPS) ** (0.5 * lam - 1.0)

    def dphi_dlam(self, d2, lam):
        """``d phi / d lam`` (inverse kernel only)."""
        base = d2 + EPS
        return 0.5 * np.log(base) * base ** (0.5 * lam)
