"""Held-out evaluation of joint upsamplers on whole scenes: per scene, per group, ratios.

:func:`scene_examples` turns whole pairs into evaluation batches (centre-cropped
to a multiple of ``multiple`` so every factor sees the same pixels; low-res input
by the protocol). :func:`evaluate_scenes` runs several models on them and
returns one row per scene (RMSE for depth in the target's units, EPE for flow,
known pixels only, a 6-pixel border left out for depth). :func:`summarize`
averages per scene *group* (captures of one physical scene count once) and
reports every model's error relative to reference methods (e.g. bicubic and JBU),
averaged over groups: unit-free, so scenes in millimetres, metres and disparity
pixels can be averaged.
"""

from __future__ import annotations

import time

import numpy as np

from ..data.lowres import crop_to_multiple
from ..data.pairs import prepare_example
from .training import DEFAULT_BORDER, epe, predict_batch, rmse

__all__ = ["scene_examples", "evaluate_scenes", "summarize", "format_table"]


def scene_examples(scenes, factor, *, lowres_mode, multiple=16):
    """Evaluation batches from whole scenes.

    Parameters
    ----------
    scenes : iterable of (name, group, guide, target)
        ``guide`` (H, W, 3) uint8; ``target`` (H, W) or (H, W, 2), NaN unknown.
    factor : int
    lowres_mode : str
        Low-res protocol (:func:`pacnd.data.make_low_res`).
    multiple : int
        Centre crop to a multiple of this (>= every factor compared).

    Returns
    -------
    list of dict
        ``{"name", "group", "batch"}``.
    """
    out = []
    for name, group, g, t in scenes:
        g = crop_to_multiple(g, factor, multiple=max(multiple, factor))
        t = crop_to_multiple(t, factor, multiple=max(multiple, factor))
        out.append({"name": name, "group": group,
                    "batch": prepare_example(g, t, factor, lowres_mode=lowres_mode)})
    return out


def evaluate_scenes(models, examples, *, task="depth", border=None, progress=False,
                    user_padding=True):
    """One row per scene and model: ``{"scene", "group", "model", "error", "seconds"}``.

    ``models`` maps names to :class:`~pacnd.models.JointUpsampler` s; the error
    is RMSE (depth) or EPE (flow) in the target's units over known pixels.
    With ``user_padding`` each model runs as ``model.upsample`` does by default
    (learned networks on a mirror-padded input, ``border_pad()``); without,
    on the image as it is.
    """
    if task not in ("depth", "flow"):
        raise ValueError(f"task={task!r}; choose 'depth' or 'flow'")
    if border is None:
        border = DEFAULT_BORDER[task]
    rows = []
    it = examples
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415
        it = tqdm(examples, desc="evaluating", unit="scene")
    for ex in it:
        b = ex["batch"]
        for mname, model in models.items():
            t0 = time.perf_counter()
            pad = model.border_pad() if user_padding and hasattr(model, "border_pad") else 0
            pred = predict_batch(model, b, pad=pad)
            dt = time.perf_counter() - t0
            err = (rmse(pred, b["raw"], border=border) if task == "depth"
                   else epe(pred, b["raw"], border=border))
            rows.append({"scene": ex["name"], "group": ex["group"], "model": mname,
                         "error": float(err), "seconds": dt})
    return rows


def summarize(rows, references=("bicubic", "jbu")):
    """Per group mean errors and, per model, the mean over groups of its error
    relative to each reference model (``{model: {"vs_<ref>": ratio, ...}}``)."""
    groups = sorted({r["group"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    per_group = {}
    for g in groups:
        for m in models:
            v = [r["error"] for r in rows if r["group"] == g and r["model"] == m]
            if v:
                per_group[(g, m)] = float(np.mean(v))
    summary = {}
    for m in models:
        s = {"groups": len(groups)}
        for ref in references:
            ratios = [per_group[(g, m)] / per_group[(g, ref)] for g in groups
                      if (g, m) in per_group and (g, ref) in per_group
                      and per_group[(g, ref)] > 0]
            if ratios:
                s[f"vs_{ref}"] = float(np.mean(ratios))
        summary[m] = s
    return {"per_group": {f"{g}|{m}": v for (g, m), v in per_group.items()},
            "summary": summary}


def format_table(rows, models=None, references=("bicubic", "jbu")):
    """A markdown table: one line per group (mean error of each model), then the
    mean ratios to the references."""
    res = summarize(rows, references)
    models = models or list(dict.fromkeys(r["model"] for r in rows))
    groups = sorted({r["group"] for r in rows})
    n = {g: len({r["scene"] for r in rows if r["group"] == g}) for g in groups}
    lines = ["| scene group (images) | " + " | ".join(models) + " |",
             "|---|" + "---:|" * len(models)]
    for g in groups:
        vals = [res["per_group"].get(f"{g}|{m}") for m in models]
        lines.append(f"| {g} ({n[g]}) | " + " | ".join("" if v is None else f"{v:.4g}"
                                                       for v in vals) + " |")
    for ref in references:
        vals = [res["summary"][m].get(f"vs_{ref}") for m in models]
        lines.append(f"| **mean ratio to {ref}** | " + " | ".join(
            "" if v is None else f"**{v:.3f}**" for v in vals) + " |")
    return "\n".join(lines)
