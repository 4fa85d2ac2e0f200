"""Greedy decoding vs contrastive search (Su et al. 2022) on a trained captioning run: the captioning evaluation's
metrics for greedy and for each ALPHAS value at TOP_K; prints one JSON line.

    WORKDIR=workdirs/coca .venv/bin/python benchmarks/decode_sweep.py

The run's saved config and newest checkpoint (train.trainer.restore); every setting decodes the same EXAMPLES images
of its captioning evaluation's split (`config.evals.captioning`), so the rows differ only in the decoding. alpha = 0
is greedy decoding by construction (tested in tests/test_models_decoder.py).

Environment: WORKDIR (required), ALPHAS (comma separated, default 0.2,0.4,0.6,0.8), TOP_K (4), EXAMPLES (256).
"""

from __future__ import annotations

import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
  from configs import default, saved
  from evaluators import captioning
  from evaluators.common import Context
  from train import trainer

  workdir = os.environ["WORKDIR"]
  alphas = [float(a) for a in os.environ.get("ALPHAS", "0.2,0.4,0.6,0.8").split(",")]
  top_k, examples = int(os.environ.get("TOP_K", 4)), int(os.environ.get("EXAMPLES", 256))
  config = saved.load(workdir)
  run, state = trainer.restore(config, workdir)
  predict_fns = run.predict_fns(state)
  base = config.evals.captioning
  settings = [("greedy", None)] + [("contrastive", alpha) for alpha in alphas]
  rows = []
  for decode, alpha in settings:
    cfg = default.eval_config("captioning", split=base.split, batch_size=base.batch_size, examples=examples)
    cfg.update(dict(decode=decode, top_k=top_k, alpha=alpha if alpha is not None else cfg.alpha))
    start = time.perf_counter()
    metrics = captioning.Evaluator("sweep", cfg, Context(config, run.mesh)).run(predict_fns)
    rows.append(dict(decode=decode, alpha=alpha, seconds=round(time.perf_counter() - start, 1), **metrics))
  print(json.dumps(dict(workdir=workdir, step=int(state.step), top_k=top_k, examples=examples, rows=rows)))


if __name__ == "__main__":
  main()
