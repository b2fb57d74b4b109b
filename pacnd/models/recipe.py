"""The training recipe of the shipped upsamplers: real pool data, held-out scenes, a run folder.

:class:`Recipe` holds every choice of a training run (model, protocol, residual
base, initialisation, learning-rate schedule, crop, batch, augmentation, source
weights, synthetic scenes, seed, loss: :data:`LOSSES`). :func:`train_from_pool`
trains it on a pool folder (:mod:`pacnd.data.pool`) into a *run folder* that a later
session resumes bit for bit: ``recipe.json``, ``checkpoint.npz`` (every
``checkpoint_seconds``), ``metrics.csv``/``eval.csv``, ``curve.png`` and ``model.npz``
(the weights at the last checkpoint, loadable with :func:`pacnd.models.load_upsampler`).

During training the model is evaluated on one scene per held-out group
(:data:`pacnd.data.pool.HELD_OUT`, plus Middlebury 2003 Cones view 2 bundled
with pacnd for depth) and logged as its error relative to bicubic and JBU,
averaged over groups (``vs_bicubic``, ``vs_jbu``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["Recipe", "default_recipe", "train_from_pool", "pool_sources", "heldout_scenes",
           "DEPTH_WEIGHTS", "FLOW_WEIGHTS", "PROTOCOLS", "LOSSES", "DEFAULT_LR", "default_weights"]

#: low-res protocols: name -> make_low_res mode (depth: the paper's nearest
#: "center" subsampling, or bicubic downsampling; flow: antialiased bilinear)
PROTOCOLS = {"center": "center", "bicubic": "bicubic", "bilinear": "bilinear"}

#: sampling weight of each training source (real captures first; a little synthetic)
DEPTH_WEIGHTS = {"rgbdd": 0.30, "middlebury2006": 0.20, "middlebury2005": 0.10,
                 "middlebury2001": 0.03, "lu2014": 0.07, "redwood": 0.04, "sunrgbd": 0.04,
                 "diml": 0.04, "esanet": 0.04, "scared": 0.03, "hypersim": 0.05,
                 "sceneflow": 0.03, "sintel_depth": 0.03}
FLOW_WEIGHTS = {"sintel": 0.40, "flyingchairs": 0.30, "middleburyflow": 0.25, "yosemite": 0.05}
#: training losses (:attr:`Recipe.loss`): ``'mse'`` over all known pixels of a batch, or
#: ``'relative'``: each sample's MSE over the interpolation baseline's of the held-out
#: score (bicubic for depth, bilinear for flow) on the same pixels, plus ``loss_floor``
LOSSES = ("mse", "relative")
#: the interpolation baseline of each task's held-out score and relative loss
INTERPOLATION = {"depth": "bicubic", "flow": "bilinear"}


def default_weights(task):
    """The training sources' sampling weights of a task (a new dict)."""
    if task not in ("depth", "flow"):
        raise ValueError(f"task={task!r}; choose 'depth' or 'flow'")
    return dict(DEPTH_WEIGHTS if task == "depth" else FLOW_WEIGHTS)

#: peak Adam learning rate of each network when a recipe names none. DJF gets less: at
#: 1e-3 its joint branch's ReLUs died within ~500 steps (99.9 % zero, every gradient but
#: the output bias < 1e-8; runs/superseded/depth_x8_djf_lr1e-3/NOTE.md)
DEFAULT_LR = {"pac": 1e-3, "pac_lite": 1e-3, "djf": 2e-4}


@dataclass
class Recipe:
    """Every choice of a training run (JSON-able; stored as ``recipe.json``)."""

    task: str = "depth"
    factor: int = 8
    model: str = "pac"
    protocol: str = "center"
    residual: str | None = "jbu"
    residual_sigmas: tuple | None = None
    residual_input: bool = False
    init: str = "he"
    init_from: str | None = None
    pre_upsample: int = 1
    steps: int = 6000
    lr: float | None = None
    warmup: int = 100
    final_lr: float = 0.01
    crop: int = 256
    batch_size: int = 2
    scale: tuple = (0.5, 1.0)
    color_jitter: float = 0.1
    normalize: str = "image"
    weights: dict = field(default_factory=dict)
    synthetic: int = 0
    seed: int = 0
    eval_every: int = 250
    checkpoint_seconds: float = 1200.0
    loss: str = "mse"
    loss_floor: float = 1e-4

    def __post_init__(self):
        from .networks import RESIDUAL_BASES, check_pre_upsample  # noqa: PLC0415

        if self.task not in ("depth", "flow"):
            raise ValueError(f"task={self.task!r}; choose 'depth' or 'flow'")
        if self.model not in ("pac", "pac_lite", "djf"):
            raise ValueError(f"model={self.model!r}; choose 'pac', 'pac_lite' or 'djf'")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r}; choose one of {sorted(PROTOCOLS)}")
        if self.residual not in RESIDUAL_BASES:
            raise ValueError(f"residual={self.residual!r}; choose one of {RESIDUAL_BASES}")
        if self.residual_input and (self.residual is None or self.model != "pac"):
            raise ValueError(f"residual_input=True needs a residual base and model 'pac' "
                             f"(got residual={self.residual!r}, model={self.model!r})")
        if self.init_from is not None and not (isinstance(self.init_from, str)
                                               and self.init_from):
            raise TypeError(f"init_from must be the path of an upsampler file (a non-empty "
                            f"str) or None, got {self.init_from!r}")
        self.pre_upsample = check_pre_upsample(self.pre_upsample, self.factor)
        if self.pre_upsample != 1 and self.model != "pac":
            raise ValueError(f"pre_upsample={self.pre_upsample} needs model 'pac' (got "
                             f"{self.model!r}); use pre_upsample=1")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.model]
        if not isinstance(self.lr, numbers.Real) or isinstance(self.lr, bool):
            raise TypeError(f"lr must be a number, got {self.lr!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r}; the learning rate must be a finite number > 0 "
                             f"(None: {DEFAULT_LR[self.model]:g} for model {self.model!r})")
        self.lr = float(self.lr)
        if self.crop % self.factor:
            raise ValueError(f"crop={self.crop} must be a multiple of factor={self.factor}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}; choose one of {LOSSES}")
        if not isinstance(self.loss_floor, numbers.Real) or isinstance(self.loss_floor, bool) \
                or not (math.isfinite(self.loss_floor) and self.loss_floor > 0):
            raise ValueError(f"loss_floor={self.loss_floor!r}; give a finite number > 0 "
                             f"(normalised units squared)")
        self.loss_floor = float(self.loss_floor)
        self.scale = tuple(float(v) for v in self.scale)
        if self.residual == "jbu" and self.residual_sigmas is None:
            from .registry import JBU_PARAMS  # noqa: PLC0415
            self.residual_sigmas = JBU_PARAMS[self.task].get(self.factor, (0.75, 0.1))
        if self.residual_sigmas is not None:
            self.residual_sigmas = tuple(float(v) for v in self.residual_sigmas)
        if not self.weights:
            self.weights = default_weights(self.task)
        if not isinstance(self.synthetic, numbers.Integral) or isinstance(self.synthetic, bool) \
                or self.synthetic < 0:
            raise ValueError(f"synthetic={self.synthetic!r}; give the number of synthetic "
                             f"scenes (an int >= 0) to add as the source 'synthetic'")
        self.synthetic = int(self.synthetic)
        if (self.synthetic > 0) != ("synthetic" in self.weights):
            raise ValueError(f"synthetic={self.synthetic} but weights "
                             f"{'lack' if self.synthetic else 'name'} the source 'synthetic'; "
                             f"give both (synthetic=N and weights['synthetic']) or neither")

    @property
    def sampling(self):
        """Sample-position convention of the protocol ('center' or 'area')."""
        return "center" if self.protocol == "center" else "area"

    def to_json(self):
        d = asdict(self)
        d["scale"] = list(self.scale)
        if self.residual_sigmas is not None:
            d["residual_sigmas"] = list(self.residual_sigmas)
        if d["pre_upsample"] == 1:               # recipes from before it compare equal
            del d["pre_upsample"]
        for k in ("residual_input", "init_from", "synthetic"):  # recipes from before these
            if not d[k]:                          # compare equal
                del d[k]
        if d["loss"] == "mse":
            del d["loss"]
            if d["loss_floor"] == 1e-4:
                del d["loss_floor"]
        return d


def default_recipe(task="depth", factor=8, model="pac", protocol=None, **changes):
    """The shipped weights' recipe for a task, factor and model (see the weights README).

    16x gets 384-pixel crops (24x24 low-res samples of context instead of 16x16).
    """
    protocol = protocol or ("center" if task == "depth" else "bilinear")
    kw = dict(task=task, factor=factor, model=model, protocol=protocol)
    if factor >= 16:
        kw.update(crop=384, batch_size=1)
    kw.update(changes)
    return Recipe(**kw)


# --------------------------------------------------------------------------- data
#: size and first seed of a recipe's synthetic scenes (``Recipe.synthetic``; the
#: synthetic pool of the first shipped weights: seeds 12345, 12346, ...), and how many
#: :func:`synthetic_mix` asks for
SYNTHETIC_SHAPE, SYNTHETIC_SEED, SYNTHETIC_SCENES = (320, 320), 12345, 256


def synthetic_mix(weights, ratio, scenes=SYNTHETIC_SCENES):
    """Recipe changes that draw a fraction ``ratio`` of the crops from synthetic scenes:
    ``{"synthetic": scenes, "weights": ...}`` (the real sources' weights scaled by
    ``1 - ratio``); ``ratio=0`` gives ``{}``."""
    if not isinstance(ratio, numbers.Real) or isinstance(ratio, bool) \
            or not 0 <= float(ratio) <= 1:
        raise ValueError(f"synthetic ratio={ratio!r}; give the fraction of synthetic crops, "
                         f"a number in [0, 1]")
    if float(ratio) == 0:
        return {}
    total = float(sum(weights.values()))
    if not total > 0:
        raise ValueError(f"weights={weights!r}; the real sources' weights need a positive sum")
    w = {k: float(v) * (1 - float(ratio)) / total for k, v in weights.items()}
    w["synthetic"] = float(ratio)
    return {"synthetic": int(scenes), "weights": w}


def pool_sources(pool_root, task, items=None, synthetic=0):
    """Training pairs of the pool per source: ``{source: [(rgb, target), ...]}``;
    with ``synthetic=N`` also N scenes of :func:`pacnd.data.synthetic_scene` as the
    source ``'synthetic'`` (seeds ``SYNTHETIC_SEED + i``, ``SYNTHETIC_SHAPE``)."""
    from ..data.pool import scan_pool, split  # noqa: PLC0415
    from ..data.synthetic import synthetic_scene  # noqa: PLC0415

    items = items if items is not None else scan_pool(pool_root, task)
    train, _ = split(items, task)
    out = {}
    for it in train:
        out.setdefault(it.source, []).append(it.load())
    if synthetic:
        out["synthetic"] = [synthetic_scene(SYNTHETIC_SEED + i, SYNTHETIC_SHAPE, task)
                            for i in range(int(synthetic))]
    return out


def heldout_scenes(pool_root, task, *, per_group=None, extra=True):
    """Held-out scenes ``(name, group, rgb, target)``: the pool's :data:`HELD_OUT`
    groups (the first ``per_group`` images of each, default all) and, with
    ``extra``, Middlebury 2003 Cones view 2 (bundled; depth) or MPI-Sintel
    ``alley_1`` (flow; from ``$PACND_SHARED_DATA/sintel/alley_1`` or the pool's
    sibling folder ``sintel/alley_1`` when present)."""
    from ..data.pool import scan_pool, split  # noqa: PLC0415

    _, test = split(scan_pool(pool_root, task), task)
    seen, scenes = {}, []
    for it in test:
        k = seen.get(it.group, 0)
        if per_group is not None and k >= per_group:
            continue
        seen[it.group] = k + 1
        g, t = it.load()
        scenes.append((it.name, it.group, g, t))
    if extra and task == "depth":
        from ..datasets import load_cones  # noqa: PLC0415
        g, t = load_cones()
        scenes.append(("cones_view2", "middlebury2003/cones", g, t))
    elif extra:
        alley = _find_alley(pool_root)
        if alley is not None:
            scenes.append(alley)
    return scenes


def _find_alley(pool_root):
    from ..data.io import read_flow, read_image  # noqa: PLC0415

    cands = [os.environ.get("PACND_SHARED_DATA", ""),
             os.path.dirname(os.path.abspath(os.fspath(pool_root)))]
    for c in cands:
        d = os.path.join(c, "sintel", "alley_1")
        if c and os.path.isfile(os.path.join(d, "gt_frame_0002.flo")):
            f = read_flow(os.path.join(d, "gt_frame_0002.flo"))
            inv = os.path.join(d, "invalid_frame_0002.png")
            if os.path.isfile(inv):
                from ..data.encodings import read_mask  # noqa: PLC0415
                f[read_mask(inv, keep=(255,))] = np.nan
            return ("sintel_alley_1", "sintel/alley", read_image(
                os.path.join(d, "frame_0002.png")), f)
    return None


# --------------------------------------------------------------------------- model
def _learned_config(model):
    """What a model's parameters depend on and mean: its configuration with the
    residual base reduced to whether there is one (a base is parameter-free, so
    weights may move to another base or another low-res protocol's sample grid; but
    a network without a base predicts the target itself, with one a correction) and
    with the factor its network body upsamples by (``factor / pre_upsample``: 16x
    weights may start from 8x ones). ``residual_input`` stays: it adds guide
    channels."""
    from .registry import model_config  # noqa: PLC0415

    cfg = model_config(model)
    kw = cfg.get("kwargs", {})
    kw["residual"] = kw.get("residual") is not None     # which base: free; none vs one: not
    for k in ("residual_sampling", "residual_sigmas"):
        kw.pop(k, None)
    cfg["factor"] //= kw.pop("pre_upsample", 1)
    return cfg


def build_from_recipe(r, rng=None, root=None):
    """The model of a recipe before training: initialised by ``r.init`` or, with
    ``r.init_from``, holding the weights of that upsampler file (a path relative to
    ``root``, default the current directory, or absolute), which must be the same
    network, with or without a residual base as the recipe's (the base may be another
    one, or sample on another protocol's grid: a run for the ``'bicubic'`` protocol
    can start from ``'center'`` weights, a bicubic-based run from JBU-based ones) or, with
    ``r.pre_upsample``, the network of factor ``r.factor / r.pre_upsample``."""
    from .registry import build_model, load_upsampler, model_config  # noqa: PLC0415

    extra = {"residual_input": True} if r.residual_input else {}
    if r.pre_upsample != 1:
        extra["pre_upsample"] = r.pre_upsample
    model = build_model(r.model, r.factor, 2 if r.task == "flow" else 1,
                        rng=r.seed if rng is None else rng, init=r.init, residual=r.residual,
                        residual_sampling=r.sampling, residual_sigmas=r.residual_sigmas,
                        **extra)
    if r.init_from:
        path = os.path.join(root or os.getcwd(), r.init_from)
        start = load_upsampler(path)
        if _learned_config(start) != _learned_config(model):
            raise ValueError(f"init_from={r.init_from!r} holds another network "
                             f"({model_config(start)}) than this recipe builds "
                             f"({model_config(model)})")
        model.load_state_dict(start.state_dict())
    return model


def _eval_fn(r, scenes):
    """``model -> {"vs_bicubic" (flow: "vs_bilinear"), "vs_jbu"}`` on held-out
    scenes (the baselines' errors computed once)."""
    from .evaluation import evaluate_scenes, scene_examples, summarize  # noqa: PLC0415
    from .registry import baseline  # noqa: PLC0415

    exs = scene_examples(scenes, r.factor, lowres_mode=PROTOCOLS[r.protocol])
    ref = INTERPOLATION[r.task]
    interp = baseline(ref, r.task, r.factor, protocol=r.protocol)
    # unpadded, as every run's curve so far (a resumed run's curve stays comparable)
    base = evaluate_scenes({ref: interp, "jbu": baseline("jbu", r.task, r.factor)}, exs,
                           task=r.task, user_padding=False)

    def fn(model):
        rows = base + evaluate_scenes({"model": model}, exs, task=r.task, user_padding=False)
        s = summarize(rows, references=(ref, "jbu"))["summary"]["model"]
        return {f"vs_{ref}": s[f"vs_{ref}"], "vs_jbu": s["vs_jbu"]}
    return fn


# --------------------------------------------------------------------------- training
def train_from_pool(recipe, pool_root, run_dir, *, resume=False, progress=True,
                    eval_per_group=1, root=None):
    """Train ``recipe`` on the pool into ``run_dir`` (see the module docstring).

    With ``resume`` the run continues from ``run_dir/checkpoint.npz`` (the stored
    ``recipe.json`` must equal ``recipe``: a different recipe is a new run).
    ``eval_per_group`` held-out scenes per group are evaluated every
    ``recipe.eval_every`` steps (0: no evaluation). ``root``: where a relative
    ``recipe.init_from`` is (default the current directory).

    Returns
    -------
    pacnd.train.TrainResult
    """
    from ..data.mixture import MixedPairs  # noqa: PLC0415
    from ..optim import Adam, CosineLR  # noqa: PLC0415
    from ..train import fit  # noqa: PLC0415
    from .registry import save_upsampler  # noqa: PLC0415
    from .training import DEFAULT_BORDER, upsampling_loss  # noqa: PLC0415

    r = recipe
    os.makedirs(run_dir, exist_ok=True)
    rpath = os.path.join(run_dir, "recipe.json")
    if os.path.exists(rpath):
        with open(rpath, encoding="utf-8") as f:
            stored = json.load(f)
        if stored != r.to_json():
            if resume:
                diff = sorted(k for k in set(stored) | set(r.to_json())
                              if stored.get(k) != r.to_json().get(k))
                raise ValueError(f"{rpath} holds another recipe (differs in {diff}); resume "
                                 f"with the stored one (Recipe(**json.load(...))) or use a "
                                 f"new run folder")
    if not resume or not os.path.exists(rpath):
        with open(rpath, "w", encoding="utf-8") as f:
            json.dump(r.to_json(), f, indent=1)
    model = build_from_recipe(r, root=root)
    data = MixedPairs(pool_sources(pool_root, r.task, synthetic=r.synthetic), r.factor,
                      kind=r.task, weights=r.weights, lowres_mode=PROTOCOLS[r.protocol],
                      crop=r.crop, batch_size=r.batch_size, scale=r.scale,
                      color_jitter=r.color_jitter, normalize=r.normalize)
    eval_fn = (_eval_fn(r, heldout_scenes(pool_root, r.task, per_group=eval_per_group))
               if eval_per_group else None)
    opt = Adam(model.parameters(), lr=r.lr)
    sched = CosineLR(opt, r.steps, warmup=r.warmup, final=r.final_lr)
    border = DEFAULT_BORDER[r.task]

    def export(step):
        save_upsampler(os.path.join(run_dir, "model.npz"), model,
                       meta={"recipe": r.to_json(), "step": int(step),
                             "trained_on": f"pool {os.path.basename(os.fspath(pool_root))} "
                                           f"minus pacnd.data.pool.HELD_OUT"})

    reference = None
    if r.loss == "relative":
        from .registry import baseline  # noqa: PLC0415
        reference = baseline(INTERPOLATION[r.task], r.task, r.factor, protocol=r.protocol)

    def loss_fn(m, b):
        return upsampling_loss(m, b, border=border, reference=reference, floor=r.loss_floor)

    return fit(model, loss_fn, opt, data,
               steps=r.steps, scheduler=sched, rng=r.seed, eval_fn=eval_fn,
               eval_every=r.eval_every, log_dir=run_dir, checkpoint_seconds=r.checkpoint_seconds,
               resume=resume, progress=progress, on_checkpoint=export,
               desc=f"{r.model} {r.task} x{r.factor}")
