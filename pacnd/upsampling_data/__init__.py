"""Data for deep joint upsampling: low-res generation, (guide, target) pairs
with random crops and flips, and a synthetic RGB-D / RGB-flow generator.

Readers and writers for images, depth maps and optical flow live in
:mod:`pacnd.data_io`.
"""

from .lowres import (LOWRES_MODES, crop_to_multiple, denormalize_target, fill_unknown,
                     make_low_res, minmax_range, normalize_target)
from .pairs import JointUpsamplingPairs, collate, prepare_example, random_crop
from .synthetic import SyntheticScenes, synthetic_scene

__all__ = ["make_low_res", "fill_unknown", "crop_to_multiple", "minmax_range",
           "normalize_target", "denormalize_target", "LOWRES_MODES", "prepare_example",
           "collate", "random_crop", "JointUpsamplingPairs", "SyntheticScenes",
           "synthetic_scene", "load_pair"]


def load_pair(guide_path, target_path, *, kind=None, target_scale=1.0):
    """Read one (guide, target) pair from files: the guide with
    :func:`pacnd.data_io.read_image`, the target with
    :func:`pacnd.data_io.read_target` (``.flo`` -> flow; PNG values divided
    by ``target_scale``, 0 = unknown)."""
    from ..data_io import read_image, read_target  # noqa: PLC0415

    g = read_image(guide_path)
    t = read_target(target_path, kind=kind, scale=target_scale)
    if g.shape[:2] != t.shape[:2]:
        raise ValueError(f"the guide {guide_path!r} is {g.shape[1]}x{g.shape[0]} but the target "
                         f"{target_path!r} is {t.shape[1]}x{t.shape[0]}")
    return g, t
