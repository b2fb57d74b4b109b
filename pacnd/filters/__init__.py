"""Image-level adaptive filters built on the PAC operations.

Every filter here is one call (or a few) of :func:`pacnd.pac_conv`,
:func:`pacnd.pac_conv_transpose` or :func:`pacnd.pac_pool` on channels-first
arrays; this module only turns images in the scikit-image layout (spatial axes
plus an optional ``channel_axis``) into those arrays and back, picks the
weights and guides, and checks the arguments.

* :func:`bilateral` and :func:`joint_bilateral` — the (joint / cross)
  bilateral filter, normalised over in-image pixels.
* :func:`joint_bilateral_upsample` — joint bilateral upsampling (JBU, Kopf et
  al. 2007) as a normalised transposed PAC.
* :func:`detail_preserving_pool` — detail-preserving pooling (DPP, Saeedan et
  al. 2018) as a normalised PAC pooling with the ``'inverse'`` kernel.

Conventions shared by all of them:

* **dtype** — float32 and float64 images keep their dtype; float16 becomes
  float32; integer and boolean images are converted to float64 like
  :func:`skimage.util.img_as_float` (unsigned integers to ``[0, 1]`` by dividing
  by the dtype's maximum, signed integers to ``[-1, 1]``). A guide is converted
  the same way and then cast to the image's float dtype, so *the output dtype is
  the image's float dtype*.
* **channel_axis** — ``None``: the image has no channel axis and every axis is
  spatial (1, 2 or 3 of them). An int: that axis holds channels; the result
  keeps the input's layout.
* **engine** — passed through to the PAC ops (``None``: the configured default).
"""

from __future__ import annotations

from ._bilateral import bilateral, joint_bilateral
from ._pooling import detail_preserving_pool
from ._upsample import jbu_sample_offset, joint_bilateral_upsample

__all__ = ["bilateral", "joint_bilateral", "joint_bilateral_upsample", "jbu_sample_offset",
           "detail_preserving_pool"]
