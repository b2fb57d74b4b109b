"""Side-by-side comparison figures of joint-upsampling results."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["comparison_figure"]


def _nearest_up(low, factor):
    return np.repeat(np.repeat(low, factor, axis=0), factor, axis=1)


def comparison_figure(path, guide, low_res, results, *, factor, ground_truth=None,
                      kind="depth", metrics=None, title=None, cmap="magma"):
    """Write a PNG: guide, low-res input (nearest-upscaled), each result,
    and the ground truth when given.

    Parameters
    ----------
    path : str or path-like
    guide : (H, W, 3) uint8 or float in [0, 1]
    low_res : (h, w) depth or (h, w, 2) flow
    results : dict name -> (H, W) or (H, W, 2) array (in order)
    factor : int
    ground_truth : array, optional
    kind : {'depth', 'flow'}
        Depth is colour-mapped (common range, grey = unknown); flow uses
        the Middlebury colour wheel (common maximum magnitude).
    metrics : dict name -> float, optional
        Shown in the panel titles (RMSE / EPE).
    """
    import matplotlib  # noqa: PLC0415
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    from ..data.io import colorize, flow_to_color  # noqa: PLC0415

    metrics = metrics or {}
    low = np.asarray(low_res, np.float32)
    ref = ground_truth if ground_truth is not None else low
    if kind == "depth":
        known = np.asarray(ref)[np.isfinite(ref)]
        vmin, vmax = (float(known.min()), float(known.max())) if known.size else (0.0, 1.0)

        def show(a):
            return colorize(np.asarray(a, np.float64).reshape(a.shape[:2]), vmin=vmin,
                            vmax=vmax, cmap=cmap)
    else:
        r = np.asarray(ref, np.float64)
        mag = np.sqrt((r ** 2).sum(-1))
        max_flow = float(np.nanmax(mag)) if np.isfinite(mag).any() else 1.0

        def show(a):
            return flow_to_color(a, max_flow=max_flow)

    unit = "RMSE" if kind == "depth" else "EPE"
    g = np.asarray(guide)
    if g.dtype != np.uint8:
        g = np.clip(np.round(g * 255), 0, 255).astype(np.uint8)
    panels = [("guide (RGB)", g),
              (f"low-res {low.shape[0]}x{low.shape[1]} (x{factor})",
               show(_nearest_up(low, factor)))]
    for name, res in results.items():
        t = name if name not in metrics else f"{name}  {unit} {metrics[name]:.3f}"
        panels.append((t, show(res)))
    if ground_truth is not None:
        panels.append(("ground truth" + (" (grey: unknown)" if kind == "depth" else ""),
                       show(ground_truth)))
    H, W = g.shape[:2]
    ncols = min(len(panels), 4)
    nrows = (len(panels) + ncols - 1) // ncols
    pw = 3.4
    fig = Figure(figsize=(pw * ncols, (pw * H / W + 0.35) * nrows + 0.4), dpi=110,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, (t, img) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(t, fontsize=9)
    if kind == "depth":
        sm = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(vmin, vmax),
                                          cmap=cmap)
        fig.colorbar(sm, ax=list(axes), shrink=0.8, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=10)
    p = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    fig.savefig(p, format="png")
    return p
