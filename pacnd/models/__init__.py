"""Deep joint upsampling (Su et al., CVPR 2019, Sec. 4): models, baselines,
training and the shipped pretrained weights.

Models (all :class:`JointUpsampler` s with ``model(target_low, guide)`` on
normalised batches and ``model.upsample(low_res, guide)`` on one image in its
own units):

- :class:`PacJointUpsample` — the PAC network (standard: 183,489 / 221,937 /
  260,385 parameters at 4x / 8x / 16x), :class:`PacJointUpsampleLite`
  (55,509 / 56,273 / 55,777);
- :class:`DJF` — deep joint image filter baseline (56,323);
- :class:`JointBilateralUpsample` — JBU as one normalised PAC^T;
- :class:`Bicubic`, :class:`Bilinear` — interpolation baselines.

:func:`pretrained` loads shipped weights (``pretrained("depth", factor=8)``);
:func:`build_model`, :func:`save_upsampler`, :func:`load_upsampler`;
training with :func:`train_upsampler` (on :func:`pacnd.train.fit`) and
evaluation with :func:`evaluate_upsampler`. Data: :mod:`pacnd.data`
and :mod:`pacnd.data.io`.
"""

from ._interface import JointUpsampler
from .networks import (DJF, LITE_CONFIGS, Bicubic, Bilinear, JointBilateralUpsample,
                       PacJointUpsample, PacJointUpsampleLite)
from .registry import (JBU_PARAMS, MODELS, available_pretrained, baseline, build_model, load_upsampler, model_config,
                       pretrained, pretrained_path, save_upsampler)
from .training import (DEFAULT_BORDER, epe, evaluate_upsampler, predict_batch, rmse,
                       train_upsampler, upsampling_loss)

__all__ = ["JointUpsampler", "PacJointUpsample", "PacJointUpsampleLite", "DJF",
           "JointBilateralUpsample", "Bicubic", "Bilinear", "LITE_CONFIGS", "MODELS", "JBU_PARAMS", "baseline",
           "build_model", "save_upsampler", "load_upsampler", "model_config", "pretrained",
           "pretrained_path", "available_pretrained", "train_upsampler", "evaluate_upsampler",
           "upsampling_loss", "predict_batch", "rmse", "epe", "DEFAULT_BORDER"]
