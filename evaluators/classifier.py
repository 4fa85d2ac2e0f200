"""Accuracy of a method's own classifier head (e.g. the multi-task model's class logits)."""

from __future__ import annotations

import numpy as np

from evaluators import common


class Evaluator(common.Base):
  """`classifier_top1`: argmax of the method's `classify` predict function vs the labels of `split`."""

  def run(self, predict_fns, plot_dir=None) -> dict[str, float]:
    predict = self.cfg.predict or "classify"
    logits, kept = common.embed_split(self, predict_fns, self.cfg.split, examples=self.cfg.examples, predict=predict)
    if "label" not in kept:
      raise ValueError(f"Evaluation {self.name!r} needs labels; split {self.cfg.split!r} has none.")
    return {"classifier_top1": float(np.mean(np.argmax(logits, axis=-1) == kept["label"]))}
