"""Building, saving and loading joint upsamplers; the shipped pretrained weights.

- :func:`build_model` — a model by name (``'pac'``, ``'pac_lite'``,
  ``'djf'``, ``'jbu'``, ``'bicubic'``, ``'bilinear'``).
- :func:`save_upsampler` / :func:`load_upsampler` — one ``.npz`` holding the
  weights, the configuration needed to rebuild the model, and free-form
  metadata (how it was trained). No pickle.
- :func:`pretrained` — the weights shipped in ``pacnd/data/weights/``
  (see ``scripts/train_pretrained.py`` for how they were made).
"""

from __future__ import annotations

import os
from importlib import resources

import numpy as np

from .networks import (DJF, Bicubic, Bilinear, JointBilateralUpsample, PacJointUpsample,
                       PacJointUpsampleLite)

__all__ = ["MODELS", "JBU_PARAMS", "PROTOCOL_SAMPLING", "default_protocol", "baseline",
           "build_model", "save_upsampler", "load_upsampler", "pretrained",
           "pretrained_path", "available_pretrained", "model_config"]

#: name -> class
MODELS = {
    "pac": PacJointUpsample,
    "pac_lite": PacJointUpsampleLite,
    "djf": DJF,
    "jbu": JointBilateralUpsample,
    "bicubic": Bicubic,
    "bilinear": Bilinear,
}

FORMAT = "pacnd-upsampler"

#: JBU parameters ``(sigma_spatial [low-res px], sigma_color [RGB/255])`` per task
#: and factor, chosen by a grid search on training data only (Cones view 6 for
#: depth, four synthetic flow scenes for flow; grid sigma_spatial in {0.5, 0.75, 1, 1.5},
#: sigma_color in {0.03, 0.05, 0.1, 0.2}): ``benchmarks/bench_upsampling.py --tune-jbu``,
#: results in ``benchmarks/results/upsampling_jbu_tuning.json``
JBU_PARAMS = {
    "depth": {4: (0.75, 0.1), 8: (0.75, 0.1), 16: (0.75, 0.1)},
    "flow": {4: (0.5, 0.05), 8: (0.5, 0.05), 16: (0.5, 0.05)},
}


#: low-res protocols -> sample-position convention of the interpolation baselines
PROTOCOL_SAMPLING = {"center": "center", "bicubic": "area", "bilinear": "area"}


def default_protocol(task):
    """The paper's low-res protocol of a task: 'center' (depth), 'bilinear' (flow)."""
    return "center" if task == "depth" else "bilinear"


def baseline(name, task, factor, protocol=None):
    """A training-free baseline set up for a task: ``'bicubic'`` /
    ``'bilinear'`` with the sampling convention of the low-res ``protocol``
    (default the task's: ``'center'`` for depth, ``'area'`` for flow) or
    ``'jbu'`` with :data:`JBU_PARAMS`."""
    if task not in ("depth", "flow"):
        raise ValueError(f"task={task!r}; choose 'depth' or 'flow'")
    protocol = protocol or default_protocol(task)
    if protocol not in PROTOCOL_SAMPLING:
        raise ValueError(f"protocol={protocol!r}; choose one of {sorted(PROTOCOL_SAMPLING)}")
    channels = 2 if task == "flow" else 1
    if name in ("bicubic", "bilinear"):
        return build_model(name, factor, channels, sampling=PROTOCOL_SAMPLING[protocol])
    if name == "jbu":
        ss, sc = JBU_PARAMS[task].get(factor, (0.75, 0.1))
        return JointBilateralUpsample(factor, channels, sigma_spatial=ss, sigma_color=sc)
    raise ValueError(f"unknown baseline {name!r}; choose 'bicubic', 'bilinear' or 'jbu'")


def build_model(name, factor, channels=1, *, rng=None, **kwargs):
    """A joint upsampler by name.

    Parameters
    ----------
    name : {'pac', 'pac_lite', 'djf', 'jbu', 'bicubic', 'bilinear'}
    factor : int
    channels : int, optional
        Target channels (1 depth, 2 flow); metadata, channels are folded
        into the batch.
    rng : numpy Generator or int, optional
        Random init of the learned models.
    **kwargs
        Passed to the class (e.g. ``sampling='area'`` for the interpolation
        baselines, ``sigma_spatial``/``sigma_color`` for JBU).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    cls = MODELS[name]
    if name in ("pac", "pac_lite", "djf"):
        return cls(factor, channels, rng=rng, **kwargs)
    return cls(factor, channels, **kwargs)


def model_config(model):
    """What :func:`build_model` needs to rebuild ``model`` (a JSON-able dict)."""
    cfg = {"name": model.kind, "factor": model.factor, "channels": model.channels}
    if isinstance(model, PacJointUpsample) and not isinstance(model, PacJointUpsampleLite):
        c = dict(model.config)
        cfg["kwargs"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()}
        cfg["kwargs"]["guide_channels"] = model.guide_channels
    elif isinstance(model, (PacJointUpsampleLite, DJF)):
        cfg["kwargs"] = {"guide_channels": model.guide_channels}
    elif isinstance(model, JointBilateralUpsample):
        cfg["kwargs"] = {"kernel_size": model.kernel_size, "scale_space": model.scale_space,
                         "scale_color": model.scale_color}
    elif isinstance(model, (Bicubic, Bilinear)):
        cfg["kwargs"] = {"sampling": model.sampling}
    else:
        cfg["kwargs"] = {}
    if isinstance(model, (PacJointUpsample, DJF)) and model.residual is not None:
        cfg["kwargs"].update(model.residual_config())
    return cfg


def _kwargs_from_json(kw):
    out = {}
    for k, v in kw.items():
        out[k] = tuple(v) if isinstance(v, list) else v
    return out


def save_upsampler(path, model, *, meta=None):
    """Save a model's weights, configuration and ``meta`` (JSON-able dict)
    to one ``.npz`` (atomically)."""
    from ..io import save_tree  # noqa: PLC0415

    sd = {k: (v.get() if type(v).__module__.split(".")[0] == "cupy" else np.asarray(v))
          for k, v in model.state_dict().items()}
    tree = {"format": FORMAT, "version": 1, "config": model_config(model),
            "meta": dict(meta or getattr(model, "meta", {}) or {}), "weights": sd}
    return save_tree(path, tree)


def load_upsampler(path):
    """Rebuild a model saved by :func:`save_upsampler` (in eval mode); its
    ``meta`` dict is on ``model.meta``. (Training checkpoints hold no model
    configuration: ``pacnd upsample train`` also writes ``model.npz`` in
    this format.)"""
    from ..io import load_tree  # noqa: PLC0415

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"no such weights file: {p!r}")
    try:
        tree = load_tree(p)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{p!r} is not a pacnd upsampler file ({exc})") from None
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise ValueError(f"{p!r} is not a pacnd upsampler file (written by "
                         f"pacnd.models.save_upsampler / 'pacnd upsample train')")
    cfg = tree["config"]
    model = build_model(cfg["name"], cfg["factor"], cfg.get("channels", 1),
                        **_kwargs_from_json(cfg.get("kwargs", {})))
    if tree.get("weights"):
        model.load_state_dict({k: np.asarray(v) for k, v in tree["weights"].items()})
    model.meta = dict(tree.get("meta") or {})
    model.eval()
    return model


# ------------------------------------------------------------------------ pretrained
_TASKS = ("depth", "flow")


def _weights_dir():
    return resources.files("pacnd") / "data" / "weights"


def _file_name(task, factor, variant):
    return f"{task}_x{factor}{'' if variant == 'standard' else '_' + variant}.npz"


def available_pretrained():
    """``(task, factor, variant)`` of every shipped weight file."""
    d = _weights_dir()
    out = []
    if not d.is_dir():
        return out
    for p in sorted(d.iterdir()):
        n = p.name
        if not n.endswith(".npz") or "_x" not in n:
            continue
        stem = n[:-4]
        task, rest = stem.split("_x", 1)
        parts = rest.split("_", 1)
        try:
            factor = int(parts[0])
        except ValueError:
            continue
        out.append((task, factor, parts[1] if len(parts) > 1 else "standard"))
    return out


def pretrained_path(task, factor=8, *, variant="standard"):
    """Path of a shipped weight file (see :func:`pretrained`)."""
    if task not in _TASKS:
        raise ValueError(f"task={task!r}; choose 'depth' or 'flow'")
    p = _weights_dir() / _file_name(task, factor, variant)
    if not p.is_file():
        have = ", ".join(f"{t} x{f}" + ("" if v == "standard" else f" ({v})")
                         for t, f, v in available_pretrained()) or "none"
        raise FileNotFoundError(f"pacnd ships no pretrained {variant} {task} model for "
                                f"factor {factor}; available: {have}")
    return p


def pretrained(task="depth", factor=8, *, variant="standard", protocol=None):
    """A joint-upsampling network with the weights shipped in pacnd.

    Parameters
    ----------
    task : {'depth', 'flow'}
    factor : int
        4, 8 or 16.
    variant : str, optional
        ``'standard'`` (the paper's PAC network), ``'pac_lite'`` or ``'djf'``
        (the paper's comparison networks, trained the same way; 8x depth).
        :func:`available_pretrained` lists what is shipped.
    protocol : {'center', 'bicubic', 'bilinear'}, optional
        How the low-res input was made: depth ``'center'`` (nearest
        subsampling, the paper's; default) or ``'bicubic'`` (antialiased
        bicubic downsampling, later depth super-resolution papers'); flow
        ``'bilinear'``. Weights are trained per protocol.

    Returns
    -------
    PacJointUpsample, PacJointUpsampleLite or DJF
        In eval mode; ``model.meta`` says what it was trained on and how
        (``model.meta['training']``).

    Examples
    --------
    >>> from pacnd.models import pretrained
    >>> model = pretrained("depth", factor=8)
    >>> model.factor, model.num_parameters()
    (8, 221937)
    """
    protocol = protocol or default_protocol(task)
    if protocol != default_protocol(task):
        variant = protocol if variant == "standard" else f"{variant}_{protocol}"
    p = pretrained_path(task, factor, variant=variant)
    with resources.as_file(p) as f:
        return load_upsampler(f)
