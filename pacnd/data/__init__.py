"""Data for deep joint upsampling.

- :mod:`pacnd.data.io` — readers and writers: RGB images, depth maps (8/16-bit
  PNG, ``.npy``, ``.pfm``, Middlebury disparity), optical flow (``.flo`` both
  ways, ``.npy``), and the visualisations (:func:`flow_to_color`,
  :func:`colorize`); re-exported here;
- :mod:`pacnd.data.lowres` — low-res generation (nearest "center" subsampling
  for depth, antialiased bilinear downsampling for flow), unknown-sample
  filling, min-max normalisation;
- :mod:`pacnd.data.pairs` — (guide, target) pairs from folders with random
  crops and flips (:class:`JointUpsamplingPairs`);
- :mod:`pacnd.data.synthetic` — synthetic RGB-D / RGB-flow scenes
  (piecewise-smooth surfaces whose edges follow colour edges) for
  pre-training.

The package folder also holds the bundled samples (``cones_im2.png``,
``cones_disp2.png``, see ``ATTRIBUTION.md``) and the pretrained weights
(``weights/``).
"""


from .io import (FLO_MAGIC, colorize, flow_to_color, read_depth, read_flow, read_image,
                 read_middlebury_disparity, read_target, write_depth, write_flow,
                 write_image, write_target)
from .lowres import (LOWRES_MODES, crop_to_multiple, denormalize_target, fill_unknown,
                     make_low_res, minmax_range, normalize_target)
from .pairs import JointUpsamplingPairs, collate, prepare_example, random_crop
from .synthetic import SyntheticScenes, synthetic_scene

__all__ = ["read_image", "write_image", "read_depth", "write_depth",
           "read_middlebury_disparity", "read_flow", "write_flow", "read_target",
           "write_target", "flow_to_color", "colorize", "FLO_MAGIC",
           "make_low_res", "fill_unknown", "crop_to_multiple", "minmax_range",
           "normalize_target", "denormalize_target", "LOWRES_MODES", "prepare_example",
           "collate", "random_crop", "JointUpsamplingPairs", "SyntheticScenes",
           "synthetic_scene", "load_pair"]


def load_pair(guide_path, target_path, *, kind=None, target_scale=1.0):
    """Read one (guide, target) pair from files: the guide with
    :func:`pacnd.data.io.read_image`, the target with
    :func:`pacnd.data.io.read_target` (``.flo`` -> flow; PNG values divided
    by ``target_scale``, 0 = unknown)."""
    from .io import read_image, read_target  # noqa: PLC0415

    g = read_image(guide_path)
    t = read_target(target_path, kind=kind, scale=target_scale)
    if g.shape[:2] != t.shape[:2]:
        raise ValueError(f"the guide {guide_path!r} is {g.shape[1]}x{g.shape[0]} but the target "
                         f"{target_path!r} is {t.shape[1]}x{t.shape[0]}")
    return g, t
