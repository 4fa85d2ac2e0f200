"""The embedded procedural dataset "shapes": small RGB images of geometric shapes, no download, no TensorFlow.

Each image shows one shape of random colour, size, position and rotation on a random background colour, with
mild pixel noise. The shape is the class; colours and background are nuisance factors that a contrastive method
must learn to ignore (colour jitter / grayscale in SimCLR), so the task is learnable but not trivial.

Example `i` of a split is a pure function of `(seed, split, i)`: `render_example(seed, split, i)` draws its
parameters from `np.random.default_rng([seed, SPLIT_IDS[split], i])`, so any shard or position can be regenerated
and train / test never share an image. Rendering is Pillow polygons at 4x resolution, box-downsampled (~10k
images/s on one core).

    images, labels, captions = render(seed=0, split="train", indices=np.arange(8), image_size=32)
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("circle", "square", "triangle", "star", "cross", "hexagon", "ring", "diamond", "arrow", "heart")
# Named colours and their RGB values: a shape's colour and its background are two different ones.
_COLORS = {
  "red": (220, 40, 40),
  "green": (40, 170, 60),
  "blue": (40, 70, 220),
  "yellow": (235, 220, 50),
  "cyan": (60, 210, 220),
  "magenta": (210, 60, 200),
  "orange": (245, 140, 30),
  "purple": (120, 50, 170),
  "white": (240, 240, 240),
  "black": (20, 20, 20),
  "gray": (128, 128, 128),
  "brown": (130, 85, 40),
}
COLOR_NAMES = tuple(_COLORS)
COLOR_RGB = np.array(list(_COLORS.values()), np.float32)
SIZE_NAMES = ("small", "medium", "large")
SPLIT_IDS = {"train": 0, "test": 1, "validation": 2}

_SUPERSAMPLE = 4
_COLOR_JITTER = 18.0  # per-channel RGB offset of a named colour, so colours are not 12 exact values
_PIXEL_NOISE = 6.0  # std of per-pixel Gaussian noise


def _regular_polygon(n: int, phase: float = 0.0) -> np.ndarray:
  t = phase + 2 * np.pi * np.arange(n) / n
  return np.stack([np.cos(t), np.sin(t)], -1)


@functools.cache
def _outlines() -> dict[str, np.ndarray]:
  """Unit outlines, radius ~1 around the origin; rotation and scale are applied per example."""
  star = _regular_polygon(10, np.pi / 2) * np.where(np.arange(10) % 2 == 0, 1.0, 0.42)[:, None]
  a = 0.34
  cross = np.array(
    [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]
  )
  arrow = np.array([(-1, -0.3), (0.15, -0.3), (0.15, -0.75), (1, 0), (0.15, 0.75), (0.15, 0.3), (-1, 0.3)])
  t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
  heart = (
    np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))], -1)
    / 16.0
  )
  heart[:, 1] -= heart[:, 1].mean()
  return {
    "square": _regular_polygon(4, np.pi / 4),
    "triangle": _regular_polygon(3, -np.pi / 2) * 1.1,
    "star": star * 1.1,
    "cross": cross,
    "hexagon": _regular_polygon(6),
    # A rhombus, clearly longer than wide, so that a rotated square is never a diamond.
    "diamond": np.array([(0.0, -1.15), (0.62, 0.0), (0.0, 1.15), (-0.62, 0.0)]),
    "arrow": arrow,
    "heart": heart,
  }


def _draw_mask(name: str, cx: float, cy: float, radius: float, angle: float, size: int) -> np.ndarray:
  """Anti-aliased coverage in [0, 1], float32 [size, size]."""
  s = _SUPERSAMPLE
  mask = Image.new("L", (size * s, size * s), 0)
  draw = ImageDraw.Draw(mask)
  cx, cy, r = cx * s, cy * s, radius * s
  if name in ("circle", "ring"):
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    if name == "ring":
      ri = 0.55 * r
      draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=0)
  else:
    c, sn = np.cos(angle), np.sin(angle)
    pts = _outlines()[name] @ np.array([[c, sn], [-sn, c]]) * r + (cx, cy)
    draw.polygon([tuple(p) for p in pts], fill=255)
  return np.asarray(mask.resize((size, size), Image.BOX), np.float32) / 255.0


def caption_template(size: str, color: str, background: str) -> str:
  """The caption of a shape with "{}" for its class name, e.g. "a small red {} on an orange background"."""
  return f"a {size} {color} {{}} on {'an' if background[0] in 'aeiou' else 'a'} {background} background"


def prompt_templates() -> tuple[str, ...]:
  """Zero-shot prompts in the captions' own form, one per (size, colour, background): CLIP's prompt ensembling,
  where averaging a class's prompts marginalises the attributes that are not the class."""
  return tuple(
    caption_template(size, color, background)
    for size in SIZE_NAMES
    for color in COLOR_NAMES
    for background in COLOR_NAMES
    if background != color
  )


def render_example(
  seed: int, split: str, index: int, image_size: int = 32, num_classes: int = len(CLASS_NAMES), shape_shift: int = 0
) -> tuple[np.ndarray, int, str]:
  """One example: (uint8 [S, S, 3] image, class id, caption). `shape_shift` != 0 draws the same scene (sizes,
  colours, position, angle, noise) with the class shifted by that many: a hard negative of the example."""
  image, label, caption, _ = _render_scene(seed, split, index, image_size, num_classes, shape_shift)
  return image, label, caption


def _render_scene(
  seed: int, split: str, index: int, image_size: int, num_classes: int, shape_shift: int
) -> tuple[np.ndarray, int, str, np.ndarray]:
  """render_example's (image, class id, caption) and the shape's coverage of each pixel, float32 [S, S] in [0, 1]."""
  rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
  label = (int(rng.integers(num_classes)) + shape_shift) % num_classes
  fg, bg = rng.choice(len(COLOR_NAMES), size=2, replace=False)
  size_id = int(rng.integers(len(SIZE_NAMES)))
  radius = image_size * rng.uniform(*((0.16, 0.22), (0.22, 0.30), (0.30, 0.38))[size_id])
  margin = radius * 1.05
  cx, cy = rng.uniform(margin, image_size - margin, size=2)
  angle = rng.uniform(0, 2 * np.pi)
  fg_rgb = COLOR_RGB[fg] + rng.uniform(-_COLOR_JITTER, _COLOR_JITTER, 3)
  bg_rgb = COLOR_RGB[bg] + rng.uniform(-_COLOR_JITTER, _COLOR_JITTER, 3)
  noise = rng.normal(0.0, _PIXEL_NOISE, (image_size, image_size, 3))

  name = CLASS_NAMES[label]
  mask = _draw_mask(name, cx, cy, radius, angle, image_size)[..., None]
  image = mask * fg_rgb + (1.0 - mask) * bg_rgb + noise
  caption = caption_template(SIZE_NAMES[size_id], COLOR_NAMES[fg], COLOR_NAMES[bg]).format(name)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8), label, caption, mask[..., 0]


def hard_negative_shifts(seed: int, split: str, indices: np.ndarray, num_classes: int) -> np.ndarray:
  """int [N] in [1, num_classes): the class shift of each example's hard negative, a function of the example."""
  return np.array(
    [np.random.default_rng([seed, SPLIT_IDS[split], int(i), 1]).integers(1, num_classes) for i in indices], np.int64
  )


def _check(split: str, num_classes: int) -> None:
  if split not in SPLIT_IDS:
    raise ValueError(f"shapes has splits {sorted(SPLIT_IDS)}, not {split!r}")
  if not 2 <= num_classes <= len(CLASS_NAMES):
    raise ValueError(f"shapes num_classes must be in [2, {len(CLASS_NAMES)}], got {num_classes}")


def render(
  seed: int,
  split: str,
  indices: np.ndarray,
  image_size: int = 32,
  num_classes: int = len(CLASS_NAMES),
  shape_shifts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Examples `indices` of a split: uint8 [N, S, S, 3], int32 [N], str [N] (`shape_shifts` [N]: see
  `render_example`)."""
  _check(split, num_classes)
  images = np.empty((len(indices), image_size, image_size, 3), np.uint8)
  labels = np.empty((len(indices),), np.int32)
  captions = []
  for j, i in enumerate(indices):
    shift = 0 if shape_shifts is None else int(shape_shifts[j])
    images[j], labels[j], caption = render_example(seed, split, int(i), image_size, num_classes, shift)
    captions.append(caption)
  return images, labels, np.array(captions, dtype=object)


def render_masks(
  seed: int, split: str, indices: np.ndarray, image_size: int = 32, num_classes: int = len(CLASS_NAMES)
) -> np.ndarray:
  """Per-pixel segmentation of examples `indices`: uint8 [N, S, S], 0 for background and 1 + class id where the
  shape covers at least half of the pixel (the images of `render` with the same arguments)."""
  _check(split, num_classes)
  masks = np.empty((len(indices), image_size, image_size), np.uint8)
  for j, i in enumerate(indices):
    _, label, _, coverage = _render_scene(seed, split, int(i), image_size, num_classes, 0)
    masks[j] = np.where(coverage >= 0.5, 1 + label, 0)
  return masks
