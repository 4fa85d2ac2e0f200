"""Positive views of a sentence for unsupervised sentence contrastive learning, on host.

- copy: the sentence itself; the two views differ only by the encoder's dropout (SimCSE, Gao et al. 2021).
- word_deletion: each word dropped with probability p, at least one kept (as in CLEAR / ConSERT ablations).
- word_repetition: ESimCSE (Wu et al. 2022): dup_len ~ U{0, ..., max(1, floor(dup_rate * L))} words, chosen
  without replacement, are repeated in place, so the view's length differs from the anchor's while its meaning
  does not.

Each view function is (text, np.random.Generator) -> str; `get(name)` returns one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TextView = Callable[[str, np.random.Generator], str]


def copy(text: str, rng: np.random.Generator) -> str:
  del rng
  return text


def word_deletion(text: str, rng: np.random.Generator, p: float = 0.1) -> str:
  words = text.split()
  if len(words) <= 1:
    return text
  keep = rng.random(len(words)) >= p
  if not keep.any():
    keep[rng.integers(len(words))] = True
  return " ".join(w for w, k in zip(words, keep) if k)


def word_repetition(text: str, rng: np.random.Generator, dup_rate: float = 0.32) -> str:
  words = text.split()
  if not words:
    return text
  dup_len = int(rng.integers(0, max(1, int(dup_rate * len(words))) + 1))
  repeated = set(rng.choice(len(words), size=dup_len, replace=False).tolist())
  return " ".join(w for i, word in enumerate(words) for w in ([word, word] if i in repeated else [word]))


VIEWS: dict[str, TextView] = {"copy": copy, "word_deletion": word_deletion, "word_repetition": word_repetition}


def get(name: str) -> TextView:
  if name not in VIEWS:
    raise ValueError(f"Unknown text view {name!r}; known: {', '.join(VIEWS)}.")
  return VIEWS[name]
