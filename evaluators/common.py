"""What every evaluator shares: its data config, the predict function it calls, and embedding a split in batches.

Evaluators see only predict functions (`batch dict -> [b, ...]`, bound to the evaluated parameters by the trainer),
their own config entry (configs/default.py `eval_config`) and the run's config for the data and tokenizer settings;
never the trainer or the model. Data is streamed (input_pipeline.eval_batches); only features stay in memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tqdm

import input_pipeline
import tokenization
from parallel import mesh as mesh_lib

PredictFn = Callable[[dict], jax.Array]
# Input kinds and the predict function that embeds each, in the order they are looked for.
INPUT_KINDS = (
  ("image", "embed_image"),
  ("embedding", "embed_embedding"),
  ("series", "embed_series"),
  ("graph", "embed_graph"),
  ("text", "embed_text"),
)
TEXT_COLUMNS = ("text", "caption")
# The columns of a kind fed to its predict function, where they are not just the kind's own column: padded dense
# graphs (input_pipeline.sequence_sources "tu").
KIND_COLUMNS = {"graph": ("x", "adj", "node_mask")}


def _has_kind(columns, kind: str) -> bool:
  if kind == "text":
    return any(c in columns for c in TEXT_COLUMNS)
  return all(c in columns for c in KIND_COLUMNS.get(kind, (kind,)))


@dataclasses.dataclass(frozen=True)
class Context:
  """The run an evaluator belongs to: its config (data, tokenizer, augment settings), mesh and seed."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh

  @property
  def seed(self) -> int:
    return self.config.seed


def eval_data(context: Context, eval_config) -> ml_collections.ConfigDict:
  """The run's data config with this evaluation's `data` overrides."""
  data = ml_collections.ConfigDict(context.config.data.to_dict())
  data.update(eval_config.data.to_dict())
  return data


def tokenizer(data_config):
  """The tokenizer of a data config (the one the model was trained with); ValueError when it has none."""
  if not data_config.tokenizer:
    raise ValueError("This evaluation embeds text but config.data.tokenizer is empty.")
  return tokenization.get(data_config.tokenizer, data_config.tokenizer_path)


def predict_name(eval_config, columns, predict_fns: dict) -> str:
  """The predict function an evaluation calls: its `predict` option, else embed_<kind> for the first input column
  kind (INPUT_KINDS: image, embedding, series, graph, text) that the data has and the method embeds."""
  if eval_config.predict:
    return eval_config.predict
  for kind, name in INPUT_KINDS:
    if _has_kind(columns, kind) and name in predict_fns:
      return name
  raise ValueError(f"No input column among {sorted(columns)} that the method's {sorted(predict_fns)} embed.")


def get_predict(predict_fns: dict[str, PredictFn], name: str, eval_name: str) -> PredictFn:
  if name not in predict_fns:
    raise ValueError(
      f"Evaluation {eval_name!r} needs the predict function {name!r}; this method has {sorted(predict_fns)}."
    )
  return predict_fns[name]


def batches(data_config, split: str, *, batch_size: int, examples: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Host batches of a split in order, at most `examples` rows (0 = all)."""
  return input_pipeline.eval_batches(data_config, split, batch_size=batch_size, limit=examples)


class Embedder:
  """Runs predict functions on host batches: padded to one fixed batch size (one compilation), sharded over the mesh's
  batch axes, gathered back to host numpy without the padding."""

  def __init__(self, mesh: jax.sharding.Mesh, batch_size: int):
    self.sharding = mesh_lib.batch_sharding(mesh)
    shards = mesh_lib.num_batch_shards(mesh)
    self.batch_size = -(-batch_size // shards) * shards

  def __call__(self, fn: PredictFn, inputs: dict[str, np.ndarray]) -> np.ndarray:
    n = len(next(iter(inputs.values())))
    batch = {}
    for key, value in inputs.items():
      value = np.asarray(value)
      pad = self.batch_size - n
      if pad:
        value = np.concatenate([value, np.repeat(value[-1:], pad, axis=0)])
      batch[key] = jax.device_put(value, self.sharding)
    out = fn(batch)
    if not out.is_fully_addressable:
      from jax.experimental import multihost_utils

      out = multihost_utils.process_allgather(out, tiled=True)
    return np.asarray(jax.device_get(out))[:n]

  def chunks(self, fn: PredictFn, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """`fn` over in-memory inputs (e.g. prompts) of any length, in batches."""
    n = len(next(iter(inputs.values())))
    outs = [
      self(fn, {k: v[start : start + self.batch_size] for k, v in inputs.items()})
      for start in range(0, n, self.batch_size)
    ]
    return np.concatenate(outs)


def model_inputs(predict: str, batch: dict[str, np.ndarray], data_config, column: str = "") -> dict[str, np.ndarray]:
  """The batch a predict function takes: {"image"}, {"embedding"}, {"series"}, {"x", "adj", "node_mask"} (graphs)
  or {"text": token ids} (text tokenized)."""
  if predict.endswith("_text") or column in TEXT_COLUMNS + ("text_b",):
    column = column or next(c for c in TEXT_COLUMNS if c in batch)
    return {"text": tokenizer(data_config).encode(list(batch[column]), data_config.max_text_len)}
  for kind, _ in INPUT_KINDS:
    if kind != "text" and (predict.endswith("_" + kind) or _has_kind(batch, kind)):
      return {c: batch[c] for c in KIND_COLUMNS.get(kind, (kind,))}
  raise ValueError(f"Cannot feed {predict!r} from the columns {sorted(batch)}.")


def embed_split(
  evaluator,
  predict_fns: dict[str, PredictFn],
  split: str,
  *,
  examples: int = 0,
  keep: tuple[str, ...] = ("label",),
  column: str = "",
  predict: str = "",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Features [N, D] (float32) of a split of `evaluator.data` and its `keep` columns, batch by batch: images are
  never all held. The predict function is `predict`, else the evaluation's (`predict_name`); `column` picks the text
  column of sentence pairs."""
  cfg, data = evaluator.cfg, evaluator.data
  embedder = Embedder(evaluator.context.mesh, cfg.batch_size)
  features, kept, fn = [], {k: [] for k in keep}, None
  stream = batches(data, split, batch_size=embedder.batch_size, examples=examples)
  for batch in tqdm.tqdm(stream, desc=f"{evaluator.name} {split}", unit="batch", leave=False, disable=None):
    if fn is None:
      predict = predict or predict_name(cfg, batch, predict_fns)
      fn = get_predict(predict_fns, predict, evaluator.name)
    features.append(embedder(fn, model_inputs(predict, batch, data, column)).astype(np.float32))
    for k in keep:
      if k in batch:
        kept[k].append(batch[k])
  if not features:
    raise ValueError(f"Split {split!r} of data {data.name!r} has no readable rows to evaluate.")
  return np.concatenate(features), {k: np.concatenate(v) for k, v in kept.items() if v}


# Inside `shared_features()` (one evaluation pass, one set of parameters): labelled features by what they depend on.
_SHARED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("shared_features", default=None)


@contextlib.contextmanager
def shared_features():
  """Within it, evaluations that embed the same data, splits and row limits with the same predict function (kNN and
  the linear probe by default) embed them once; the features are dropped on exit."""
  token = _SHARED.set({})
  try:
    yield
  finally:
    _SHARED.reset(token)


def labelled_features(evaluator, predict_fns) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """((train features, labels), (test features, labels)) of a kNN / linear-probe evaluation: `train_split` (at most
  train_examples rows) and `split` (at most `examples`) of its data; shared within `shared_features()`."""
  cfg, shared = evaluator.cfg, _SHARED.get()
  key = (
    evaluator.data.to_json_best_effort(sort_keys=True),
    cfg.train_split,
    cfg.train_examples,
    cfg.split,
    cfg.examples,
    cfg.predict,
  )
  if shared is not None and key in shared:
    return shared[key]
  out = []
  for split, examples in ((cfg.train_split, cfg.train_examples), (cfg.split, cfg.examples)):
    x, kept = embed_split(evaluator, predict_fns, split, examples=examples)
    if "label" not in kept:
      raise ValueError(
        f"Evaluation {evaluator.name!r} needs labels; split {split!r} of {evaluator.data.name!r} has none."
      )
    out.append((x, kept["label"]))
  if shared is not None:
    for x, labels in out:  # read by several evaluations: none may change them in place
      x.setflags(write=False)
      labels.setflags(write=False)
    shared[key] = (out[0], out[1])
  return out[0], out[1]


class Base:
  """An evaluator's constructor: its name, its config entry, the run context and its data config."""

  def __init__(self, name: str, cfg, context: Context):
    self.name, self.cfg, self.context = name, cfg, context
    self.data = eval_data(context, cfg)


def text_embedder(evaluator, predict_fns, predict: str = "embed_text") -> Callable[[list[str]], np.ndarray]:
  """list of T strings -> [T, D] embeddings by the method's `predict` function, tokenized as in training."""
  tok, data = tokenizer(evaluator.data), evaluator.data
  fn = get_predict(predict_fns, predict, evaluator.name)
  embedder = Embedder(evaluator.context.mesh, evaluator.cfg.batch_size)
  return lambda texts: embedder.chunks(fn, {"text": tok.encode(list(texts), data.max_text_len)})
