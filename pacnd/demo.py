"""Depth upsampling demo on the bundled sample data (``pacnd demo``).

Takes the Middlebury "Cones" view and its ground-truth disparity
(:func:`pacnd.datasets.load_cones`), subsamples the disparity by ``factor``
(nearest, "center" convention), upsamples it back with bicubic interpolation
and with joint bilateral upsampling guided by the RGB image
(:func:`pacnd.filters.joint_bilateral_upsample`, one normalised transposed
PAC) and with the pretrained PAC joint-upsampling network
(:func:`pacnd.models.pretrained`), prints the RMSE of each against the ground
truth and writes a figure.
"""

from __future__ import annotations

import numbers
import time

import numpy as np

from .datasets import load_cones
from .data.lowres import fill_unknown
from .filters import jbu_sample_offset, joint_bilateral_upsample

__all__ = ["run_depth_upsampling_demo", "make_low_res", "bicubic_upsample", "rmse"]

#: JBU parameters tuned on the bundled pair at 8x (sigma_spatial in low-res pixels,
#: sigma_color in RGB/255 units)
DEFAULT_SIGMA_SPATIAL = 0.75
DEFAULT_SIGMA_COLOR = 0.1


def make_low_res(high, factor):
    """Nearest ("center") subsampling: ``high[o::factor, o::factor]``, ``o = (factor-1)//2``.

    This is the sampling convention of :func:`pacnd.filters.joint_bilateral_upsample`
    (and of the reference implementation's depth experiments).
    """
    o = jbu_sample_offset(factor)
    return np.ascontiguousarray(high[o::factor, o::factor])


def bicubic_upsample(low, factor):
    """Cubic-spline interpolation onto the high-res grid, sample ``i`` at ``i*factor + o``.

    Uses :func:`scipy.ndimage.map_coordinates` (order 3, edge values repeated
    outside), with exactly the sample positions JBU assumes.
    """
    from scipy import ndimage  # noqa: PLC0415

    o = jbu_sample_offset(factor)
    h, w = low.shape
    yy = (np.arange(h * factor) - o) / factor
    xx = (np.arange(w * factor) - o) / factor
    coords = np.meshgrid(yy, xx, indexing="ij")
    return ndimage.map_coordinates(low.astype(np.float64), coords, order=3,
                                   mode="nearest").astype(low.dtype)


def rmse(pred, truth):
    """Root-mean-square error over the pixels where ``truth`` is known (finite)."""
    known = np.isfinite(truth)
    return float(np.sqrt(np.mean((pred[known].astype(np.float64) - truth[known]) ** 2)))


def _check_factor(factor):
    if not isinstance(factor, numbers.Integral) or isinstance(factor, bool):
        raise TypeError(f"factor must be an int, got {factor!r}")
    if factor < 2:
        raise ValueError(f"factor={factor} is invalid: the demo upsamples by an integer factor "
                         f">= 2 (e.g. 4, 8 or 16)")
    return int(factor)


def _crop(rgb, disp, crop, factor):
    H, W = disp.shape
    if crop is None:
        ch, cw = H, W
    else:
        if (not isinstance(crop, (tuple, list)) or len(crop) != 2
                or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool)
                           for c in crop)):
            raise TypeError(f"crop must be None or (height, width) ints, got {crop!r}")
        ch, cw = min(int(crop[0]), H), min(int(crop[1]), W)
    ch, cw = (ch // factor) * factor, (cw // factor) * factor
    if ch < 2 * factor or cw < 2 * factor:
        raise ValueError(f"the image (crop {crop}, image {H}x{W}) is too small for factor="
                         f"{factor}: it needs at least {2 * factor} pixels per side")
    y0, x0 = (H - ch) // 2, (W - cw) // 2
    return rgb[y0:y0 + ch, x0:x0 + cw], disp[y0:y0 + ch, x0:x0 + cw]


def run_depth_upsampling_demo(output="pacnd_demo.png", factor=8, *,
                              sigma_spatial=DEFAULT_SIGMA_SPATIAL,
                              sigma_color=DEFAULT_SIGMA_COLOR, win_size=None, crop=None,
                              engine=None, learned=True, verbose=True):
    """Upsample the bundled Cones disparity by ``factor``: bicubic vs JBU vs
    the pretrained PAC network.

    Steps: load :func:`pacnd.datasets.load_cones`; crop the centre to a
    multiple of ``factor`` (and to ``crop`` if given); make the low-res input
    with :func:`make_low_res`; fill unknown low-res samples with the nearest
    known one (both methods get the same input); upsample with
    :func:`bicubic_upsample` and with
    :func:`pacnd.filters.joint_bilateral_upsample` guided by ``RGB / 255``;
    and, when pacnd ships depth weights for ``factor`` (4, 8, 16) and
    ``learned`` is true, with the pretrained PAC joint-upsampling network
    (:func:`pacnd.models.pretrained`; the x8 one never saw Cones, either view);
    report the RMSE (disparity pixels, over pixels with known ground truth) and,
    when the weights carry it, their held-out evaluation; write a PNG with guide, low-res input
    (nearest-upscaled), bicubic, JBU, PAC network and ground truth side by
    side.

    Parameters
    ----------
    output : str or path-like or None, optional
        Where to write the PNG; ``None`` writes nothing.
    factor : int, optional
        Upsampling factor (>= 2).
    sigma_spatial, sigma_color : float, optional
        JBU parameters (low-res pixels; RGB/255 units), tuned on this image at 8x.
    win_size : int, optional
        JBU window in high-res pixels (default: see ``joint_bilateral_upsample``).
    crop : (int, int), optional
        Use only a centred crop of this size (for quick runs).
    engine : str, optional
        PAC engine.
    learned : bool, optional
        Also run the pretrained PAC network (skipped, with a note, for a
        factor without shipped weights).
    verbose : bool, optional
        Print the results.

    Returns
    -------
    dict
        ``rmse_bicubic``, ``rmse_jbu``, ``seconds_jbu``, ``factor``, ``shape``
        (high-res), ``output`` (the path written or None) and the arrays
        ``low_res``, ``bicubic``, ``jbu``, ``ground_truth``; with the network
        also ``rmse_pac``, ``seconds_pac`` and ``pac`` (else ``pac`` is None).

    Examples
    --------
    >>> from pacnd.demo import run_depth_upsampling_demo
    >>> res = run_depth_upsampling_demo(None, factor=4, crop=(64, 64), verbose=False)
    >>> res["jbu"].shape
    (64, 64)
    """
    factor = _check_factor(factor)
    rgb, disp = load_cones()
    rgb, gt = _crop(rgb, disp, crop, factor)
    low = fill_unknown(make_low_res(gt, factor))
    guide = rgb.astype(np.float32) / np.float32(255.0)

    bic = bicubic_upsample(low, factor)
    t0 = time.perf_counter()
    jbu = joint_bilateral_upsample(low, guide, factor=factor, sigma_spatial=sigma_spatial,
                                   sigma_color=sigma_color, win_size=win_size, engine=engine)
    seconds = time.perf_counter() - t0
    res = {"rmse_bicubic": rmse(bic, gt), "rmse_jbu": rmse(jbu, gt), "seconds_jbu": seconds,
           "factor": factor, "shape": gt.shape, "low_res": low, "bicubic": bic, "jbu": jbu,
           "ground_truth": gt, "output": None, "pac": None}
    note = None
    if learned:
        from .models import available_pretrained, pretrained  # noqa: PLC0415

        if ("depth", factor, "standard") in available_pretrained():
            model = pretrained("depth", factor=factor)
            t0 = time.perf_counter()
            pac = model.upsample(low, rgb, engine=engine)
            res.update(pac=pac, rmse_pac=rmse(pac, gt), seconds_pac=time.perf_counter() - t0,
                       held_out=dict(model.meta.get("training", {}).get("held_out_eval") or {}))
        else:
            note = (f"  (no pretrained PAC network for x{factor}: pacnd ships depth x4, x8 "
                    f"and x16)")
    if verbose:
        h, w = gt.shape
        print(f"pacnd demo: Middlebury 'Cones' disparity, {h // factor}x{w // factor} -> {h}x{w} "
              f"(x{factor}), RMSE in disparity pixels over known pixels")
        print(f"  bicubic                 RMSE {res['rmse_bicubic']:.3f}")
        print(f"  joint bilateral (PAC^T) RMSE {res['rmse_jbu']:.3f}   ({seconds:.2f} s)")
        if res["pac"] is not None:
            print(f"  PAC network (pretrained) RMSE {res['rmse_pac']:.3f}   "
                  f"({res['seconds_pac']:.2f} s)")
            ho = res.get("held_out") or {}
            if "vs_jbu" in ho:
                print(f"  held out, {ho['scenes']} scenes in {ho['groups']} groups from several "
                      f"datasets: the network's RMSE is {ho['vs_bicubic']:.3f}x bicubic's and "
                      f"{ho['vs_jbu']:.3f}x JBU's on average ({ho['where']})")
        elif note:
            print(note)
    if output is not None:
        res["output"] = _write_figure(output, rgb, low, bic, jbu, gt, factor, res)
        if verbose:
            print(f"  figure written to {res['output']}")
    return res


def _write_figure(output, rgb, low, bic, jbu, gt, factor, res):
    import os  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.5")
    vmin, vmax = float(np.nanmin(gt)), float(np.nanmax(gt))
    low_disp = np.repeat(np.repeat(low, factor, axis=0), factor, axis=1)
    panels = [
        ("guide (RGB)", rgb, None),
        (f"low-res input ({low.shape[0]}x{low.shape[1]}, nearest x{factor})", low_disp, None),
        (f"bicubic  RMSE {res['rmse_bicubic']:.3f}", bic, None),
        (f"JBU (PAC$^T$)  RMSE {res['rmse_jbu']:.3f}", jbu, None),
    ]
    if res.get("pac") is not None:
        panels.append((f"PAC network  RMSE {res['rmse_pac']:.3f}", res["pac"], None))
    panels.append(("ground truth (grey: unknown)", gt, None))
    h, w = gt.shape
    fig = Figure(figsize=(3.0 * len(panels) + 0.8, 3.0 * h / w + 0.7), dpi=110,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels))
    for ax, (title, img, _) in zip(axes, panels):
        if img.ndim == 3:
            ax.imshow(img)
        else:
            im = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=vmin, vmax=vmax,
                           interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.colorbar(im, ax=list(axes), shrink=0.9, pad=0.01, label="disparity (px)")
    fig.suptitle(f"pacnd: guided upsampling x{factor} of Middlebury 'Cones' disparity (view 2)",
                 fontsize=10)
    path = os.fspath(output)
    fig.savefig(path, format="png")
    return path


# --------------------------------------------------------------------------- CLI hooks
def configure_parser(parser):
    """Arguments of ``pacnd demo`` (called by :mod:`pacnd.cli`)."""
    parser.add_argument("-o", "--output", default="pacnd_demo.png", metavar="OUT.png",
                        help="where to write the figure (default: %(default)s)")
    parser.add_argument("--factor", type=int, default=8, metavar="N",
                        help="upsampling factor, an int >= 2 (default: %(default)s)")
    parser.add_argument("--sigma-spatial", type=float, default=DEFAULT_SIGMA_SPATIAL,
                        metavar="S", help="JBU spatial sigma in low-res pixels "
                                          "(default: %(default)s)")
    parser.add_argument("--sigma-color", type=float, default=DEFAULT_SIGMA_COLOR, metavar="S",
                        help="JBU range sigma in RGB/255 units (default: %(default)s)")
    parser.add_argument("--crop", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="use only a centred H x W crop (quick runs)")
    parser.add_argument("--no-network", action="store_true",
                        help="skip the pretrained PAC network (bicubic and JBU only)")


def run_from_args(args):
    """Run ``pacnd demo`` from parsed arguments; returns the exit status."""
    run_depth_upsampling_demo(args.output, args.factor, sigma_spatial=args.sigma_spatial,
                              sigma_color=args.sigma_color,
                              crop=None if args.crop is None else tuple(args.crop),
                              engine=args.engine, learned=not args.no_network)
    return 0
