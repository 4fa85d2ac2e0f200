"""The options of a SimCLR view, shared by the device (`augment_jax`) and host (`augment_tf`) augmentations.

Chen et al. 2020, Appendix A: random resized crop + horizontal flip, colour jitter with probability 0.8 at strength
0.5, grayscale with probability 0.2; Gaussian blur and solarisation (BYOL) off by default. A leaf: it imports
neither JAX nor TensorFlow, so both augmentations read one set of defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from configs import overrides


@dataclasses.dataclass(frozen=True)
class ViewOptions:
  """Keyword arguments of `simclr_augment` / `simclr_augment_tf` (config.augment); build it with `of(options)`."""

  out_size: int | Sequence[int] | None = None  # output (h, w) or side; None keeps the input's (H, W)
  crop_scale: Sequence[float] = (0.08, 1.0)  # random resized crop: area fraction range
  crop_ratio: Sequence[float] = (3 / 4, 4 / 3)  # random resized crop: aspect ratio range
  flip_prob: float = 0.5
  jitter_strength: float = 0.5  # s: brightness / contrast / saturation ~ U[1 - 0.8 s, 1 + 0.8 s], hue ~ 0.2 s turn
  jitter_prob: float = 0.8
  grayscale_prob: float = 0.2
  blur_prob: float = 0.0
  blur_sigma: Sequence[float] = (0.1, 2.0)  # Gaussian blur sigma range
  solarize_prob: float = 0.0

  def __post_init__(self):
    for name in ("crop_scale", "crop_ratio", "blur_sigma"):  # lists from a config become hashable tuples
      object.__setattr__(self, name, tuple(getattr(self, name)))


def of(options: dict) -> ViewOptions:
  """ViewOptions from config.augment's keys; an unknown key is a ValueError naming the nearest option."""
  names = [f.name for f in dataclasses.fields(ViewOptions)]
  overrides.check_keywords(options, names, "config.augment", "the view options (input_pipeline/view_options.py)")
  return ViewOptions(**options)
