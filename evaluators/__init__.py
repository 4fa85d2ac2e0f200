"""Evaluations as configuration (big_vision style): `config.evals` names entries, each with a `type` that is a module
here (knn, linear_probe, zero_shot, retrieval, sts, health, classifier, captioning, dense_probe) holding an
`Evaluator`.

    evals = evaluators.build(config, mesh)                   # {name: Evaluator}
    results = evaluators.run(evals, predict_fns, names=...)  # {"<name>/<metric>": float}

An Evaluator reads its own data (streamed, in batches) and calls only the method's predict functions (`embed_image`,
`embed_text`, `embed_embedding`, `classify`, `decode_<strategy>`, ...), bound to the evaluated parameters.
"""

from __future__ import annotations

import importlib

import jax

from evaluators.common import Context, PredictFn, shared_features
from evaluators.health import alignment, effective_rank, l2_normalize, uniformity
from evaluators.knn import knn_accuracy
from evaluators.linear_probe import linear_probe
from evaluators.retrieval import retrieval_recall
from evaluators.sts import load_sts_tsv, sts_spearman
from evaluators.zero_shot import class_embeddings, prompt_embeddings, zero_shot_accuracy

TYPES = ("knn", "linear_probe", "zero_shot", "retrieval", "sts", "health", "classifier", "captioning", "dense_probe")

__all__ = [
  "TYPES",
  "Context",
  "PredictFn",
  "alignment",
  "build",
  "class_embeddings",
  "effective_rank",
  "knn_accuracy",
  "l2_normalize",
  "linear_probe",
  "load_sts_tsv",
  "prompt_embeddings",
  "retrieval_recall",
  "run",
  "sts_spearman",
  "uniformity",
  "zero_shot_accuracy",
]


def build(config, mesh: jax.sharding.Mesh) -> dict:
  """{name: Evaluator} of config.evals; ValueError for an unknown type."""
  context = Context(config, mesh)
  evals = {}
  for name, cfg in config.evals.items():
    if cfg.type not in TYPES:
      raise ValueError(f"config.evals.{name}.type={cfg.type!r} is not an evaluator; known: {', '.join(TYPES)}.")
    module = importlib.import_module(f"evaluators.{cfg.type}")
    evals[name] = module.Evaluator(name, cfg, context)
  return evals


def due(evals: dict, step: int, *, start: bool = False) -> list[str]:
  """Names of the evaluations to run at `step` of training: `at_start` ones at the start, else those whose
  `every_steps` divides the step."""
  if start:
    return [name for name, e in evals.items() if e.cfg.at_start]
  return [name for name, e in evals.items() if e.cfg.every_steps and step % e.cfg.every_steps == 0]


def run(
  evals: dict, predict_fns: dict[str, PredictFn], *, names: list[str] | None = None, plot_dir: str | None = None
) -> dict[str, float]:
  """Runs the named evaluations (all by default): {"<name>/<metric>": value}."""
  results = {}
  with shared_features():
    for name in evals if names is None else names:
      for metric, value in evals[name].run(predict_fns, plot_dir=plot_dir).items():
        results[f"{name}/{metric}"] = value
  return results
