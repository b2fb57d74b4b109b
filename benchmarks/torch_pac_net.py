"""PyTorch baseline for the joint-upsampling benchmark: pacnd's standard PAC
network rebuilt in PyTorch the way the authors' reference implementation
computes it (``pac.py``, ``native_impl=False``): the transposed PAC
zero-inserts the input, ``F.unfold`` s it into full-size columns
``(B, C*k*k, H*W)``, multiplies them by the adapting kernel and contracts
with the filter in one matmul; autograd does the backward pass.

Used only by ``benchmarks/bench_upsampling.py --memory`` (needs ``torch``,
not a pacnd dependency). :func:`from_pacnd` copies a
:class:`pacnd.models.PacJointUpsample`'s weights, and :func:`check_against`
asserts that both give the same output, so the timings compare the same
computation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def gaussian_kernel(g, k, padding, dilation=1):
    """The reference's adapting kernel from a zero-padded guide: exp(-||g(y + t) - g(y)||^2 / 2),
    the centre feature at the window centre; (B, 1, k*k, L)."""
    B, C = g.shape[:2]
    gcols = F.unfold(g, k, dilation=dilation, padding=padding).view(B, C, k * k, -1)
    centre = gcols[:, :, (k * k) // 2:(k * k) // 2 + 1]
    return torch.exp(-0.5 * ((gcols - centre) ** 2).sum(1, keepdim=True))


def pac_conv2d(x, g, w, b, *, padding=2):
    """Reference-style PAC (the authors' ``pacconv2d`` with ``native_impl=False``): the
    input unfolded into full-size columns ``(B, C*k*k, H*W)``, multiplied by the adapting
    kernel and contracted with the filter in one matmul; autograd does the backward.

    x (B, C, H, W), g (B, Cg, H, W), w (Cout, C, k, k), stride 1."""
    B, C, H, W = x.shape
    k = w.shape[-1]
    cols = F.unfold(x, k, padding=padding).view(B, C, k * k, -1)
    K = gaussian_kernel(g, k, padding)
    cols = (cols * K).view(B, C * k * k, -1)
    out = w.view(w.shape[0], -1) @ cols + b.view(1, -1, 1)
    Ho = H + 2 * padding - k + 1
    return out.view(B, w.shape[0], Ho, -1)


def pac_conv_transpose2d(x, g, w, b, *, stride=2, padding=2, output_padding=1):
    """Reference-style PAC^T with a Gaussian adapting kernel.

    x (B, C, h, w), g (B, Cg, H, W) at output resolution, w (C, Cout, k, k)."""
    B, C, h, wd = x.shape
    k = w.shape[-1]
    H, W = g.shape[-2:]
    # zero-inserted input, padded so that a plain k x k correlation gives PAC^T
    ones = x.new_ones(C, 1, 1, 1)
    xu = F.conv_transpose2d(x, ones, stride=stride, groups=C)
    p = k - 1 - padding
    xu = F.pad(xu, (p, p + output_padding, p, p + output_padding))
    cols = F.unfold(xu, k)                                            # (B, C*k*k, H*W)
    # adapting kernel from the guide: exp(-||g(y + t) - g(y)||^2 / 2), zero-padded guide
    c = k // 2
    gcols = F.unfold(F.pad(g, (c, c, c, c)), k).view(B, g.shape[1], k * k, H * W)
    K = torch.exp(-0.5 * ((gcols - g.reshape(B, g.shape[1], 1, H * W)) ** 2).sum(1))
    cols = (cols.view(B, C, k * k, H * W) * K.unsqueeze(1)).view(B, C * k * k, H * W)
    # the reference (and pacnd) correlate the zero-inserted input with the unflipped weight
    wt = w.transpose(0, 1).reshape(w.shape[1], C * k * k)
    out = wt @ cols + b.view(1, -1, 1)
    return out.view(B, w.shape[1], H, W)


class TorchPacJointUpsample(torch.nn.Module):
    def __init__(self, params, num_ups, k_ch):
        super().__init__()
        self.p = torch.nn.ParameterDict({k.replace(".", "_"): torch.nn.Parameter(v)
                                         for k, v in params.items()})
        self.names = list(params)
        self.num_ups = num_ups
        self.k_ch = k_ch

    def _stack(self, prefix, x):
        convs = sorted({n.rsplit(".", 1)[0] for n in self.names if n.startswith(prefix + ".")},
                       key=lambda s: int(s.rsplit("conv", 1)[1]))
        for i, name in enumerate(convs):
            w = self.p[name.replace(".", "_") + "_weight"]
            x = F.conv2d(x, w, self.p[name.replace(".", "_") + "_bias"], padding=w.shape[-1] // 2)
            if i < len(convs) - 1:
                x = F.relu(x)
        return x

    def forward(self, low, guide):
        x = self._stack("branch_t", low)
        g = self._stack("branch_g", guide)
        for i in range(self.num_ups):
            gi = g[:, i * self.k_ch:(i + 1) * self.k_ch]
            s = 2 ** (self.num_ups - 1 - i)
            if s != 1:
                gi = F.interpolate(gi, scale_factor=1.0 / s, mode="bilinear",
                                   align_corners=False)
            w = self.p[f"up_convts_{i}_weight"]
            x = F.relu(pac_conv_transpose2d(x, gi, w, self.p[f"up_convts_{i}_bias"],
                                            padding=(w.shape[-1] - 1) // 2))
        return self._stack("branch_f", x)


def from_pacnd(model):
    """A :class:`TorchPacJointUpsample` with the weights of a pacnd
    ``PacJointUpsample`` (one target channel)."""
    params = {n: torch.from_numpy(np.array(p.data, copy=True))
              for n, p in model.named_parameters()}
    return TorchPacJointUpsample(params, model.num_ups, model.k_ch)


def check_against(model, low, guide, rtol=1e-4):
    """Assert that the PyTorch rebuild and pacnd agree on one input."""
    from pacnd.autograd import no_grad  # noqa: PLC0415

    with no_grad():
        ref = np.asarray(model(low, guide).data)
    with torch.no_grad():
        got = from_pacnd(model)(torch.from_numpy(low), torch.from_numpy(guide)).numpy()
    err = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-6))
    if not err <= rtol:
        raise AssertionError(f"the PyTorch rebuild differs from pacnd: relative error {err:.2e}")
    return err
