"""Packs token id lists into fixed-length int32 rows: optional BOS, the text truncated so that EOS fits, EOS, padding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pack(ids: Sequence[Sequence[int]], max_len: int, bos: int | None, eos: int, pad: int) -> np.ndarray:
  """[[int]] -> int32 [B, max_len]: `[bos,] text[: max_len - specials], eos, pad...`; no BOS when `bos` is None."""
  specials = 1 if bos is None else 2
  if max_len < specials:
    raise ValueError(f"max_len must leave room for the special tokens, got {max_len}")
  out = np.full((len(ids), max_len), pad, np.int32)
  for row, seq in enumerate(ids):
    seq = [*([] if bos is None else [bos]), *list(seq)[: max_len - specials], eos]
    out[row, : len(seq)] = seq
  return out
