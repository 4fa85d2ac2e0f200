"""Embeds a corpus with an exported encoder: streamed in batches over the local devices, bad inputs skipped and
listed, every row traceable, resumable. Needs only jax, numpy, Pillow and the project's tokenizers (no training
code, no TensorFlow).

    python -m export.embed --artifact=workdir/export --input=photos/ --output=emb/          # image tower
    python -m export.embed --artifact=workdir/export --input=sentences.txt --output=emb/    # text tower
    python -m export.embed --artifact=workdir/export --input=pairs.jsonl --output=emb/      # both towers, one pass

Inputs (`export/embed_inputs.py`): a folder of images (recursive), a text file of image paths, a .npy (uint8
images [N, H, W, 3] or token ids [N, L]), a text file of sentences, JSONL / TSV of sentences or image-text pairs.
Images are decoded as the evaluation path decodes them, with the preprocessing recorded in the model card.

Output directory (each file written under a .tmp name, then renamed; a part's index last, so a part is done only
when complete):
    run.json                 the run's settings; a rerun with other settings stops, with the same ones it resumes
    image/part-00000.npy     float32 / float16 [rows, D]; part k holds rows k * shard_rows ... (k + 1) * shard_rows - 1
    text/part-00000.npy      the same rows' text embeddings, when the input feeds both towers
    index/part-00000.jsonl   one line per input record of part k, in input order: {"row": 7, "path": ..., "status":
                             "ok"} or {"row": null, ..., "status": "skipped", "reason": "truncated: ..."}
    summary.json             written last: records, embedded rows, skipped by kind, parts, dims
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator

import numpy as np

from export import embed_inputs, jax_export
from records import shards

RUN, SUMMARY = "run.json", "summary.json"
INTERRUPTED = "interrupted: the completed parts in {output} are kept; run the same command again to resume."


def _part_name(k: int) -> str:
  return f"part-{k:05d}"


def _write_atomic(path: str, data: bytes | np.ndarray) -> None:
  """Writes bytes, or an array as .npy, under a temporary name, then renames it: a killed run never leaves a
  half-written file under the final name."""
  with open(path + ".tmp", "wb") as f:
    if isinstance(data, np.ndarray):
      np.save(f, data)
    else:
      f.write(data)
  os.replace(path + ".tmp", path)


def check_preprocessing(card_tower: dict) -> int:
  """The image size of a card's image tower, after checking that its preprocessing is the one `embed_inputs.decode`
  applies (ValueError naming the difference otherwise)."""
  pre = card_tower.get("preprocessing")
  if not isinstance(pre, dict) or "image_size" not in pre:
    raise ValueError("The model card records no image preprocessing (an older export): run --mode=export again.")
  expected = jax_export.IMAGE_PREPROCESSING
  differs = {k: pre.get(k) for k in expected if pre.get(k) != expected[k]}
  if differs:
    raise ValueError(f"The model card asks for image preprocessing {differs}; this version implements {expected}.")
  return int(pre["image_size"])


def _choose_towers(records: Iterator, card: dict, tower: str | None) -> tuple[tuple[str, ...], Iterator]:
  """The towers to run (those the first readable record feeds and the export has, or `tower`) and the records
  (nothing consumed)."""
  peeked = []
  for record in records:
    peeked.append(record)
    if not record.error:
      break
  if not peeked:
    raise ValueError("The input holds no records (no image files, no lines).")
  exported = tuple(t for t in ("image", "text") if t in card.get("towers", {}))
  fed = embed_inputs.towers_of(peeked[-1]) if not peeked[-1].error else exported
  towers = tuple(t for t in fed if t in exported and t == (tower or t))
  if not towers:
    raise ValueError(
      f"The input feeds the {' and '.join(fed) or 'no'} tower(s), the export has {', '.join(exported) or 'none'}"
      f"{f' and --tower={tower} was asked' if tower else ''}: pass --tower or an input of the other kind."
    )
  return towers, itertools.chain(peeked, records)


def text_tokenizer(artifact_dir: str, card: dict):
  """(tokenizer, max_len) of an export's text tower, from the card and the tokenizer file next to the artifact."""
  import tokenization

  spec = card["towers"]["text"]["tokenizer"]
  path = os.path.join(artifact_dir, spec["file"]) if spec.get("file") else ""
  return tokenization.get(spec["name"], path), spec["max_len"]


class _Towers:
  """The exported towers, jitted over the local devices, and the batching of their inputs."""

  def __init__(self, artifact_dir: str, card: dict, towers: tuple[str, ...], batch_size: int):
    self.fns, devices = {}, 1
    for t in towers:
      self.fns[t], devices = jax_export.load_sharded(artifact_dir, t)
    self.batch_size = -(-batch_size // devices) * devices  # every device gets an equal slice
    if "text" in towers:
      self.tokenizer, self.max_len = text_tokenizer(artifact_dir, card)

  def _batch(self, tower: str, items: list) -> np.ndarray:
    if tower == "text" and isinstance(items[0], str):
      batch = self.tokenizer.encode(items, self.max_len)
    else:
      batch = np.stack(items)
      if tower == "text" and batch.shape[1] != self.max_len:
        raise ValueError(f"Token ids have length {batch.shape[1]}; the exported text tower takes {self.max_len}.")
    padding = np.zeros((self.batch_size - len(batch),) + batch.shape[1:], batch.dtype)  # one shape, one compilation
    return np.concatenate([batch, padding])

  def __call__(self, inputs: list[dict]) -> dict:
    """Dispatches one batch (asynchronously) -> {tower: device array [batch_size, D]}, padding rows at the end."""
    return {t: fn(self._batch(t, [x[t] for x in inputs])) for t, fn in self.fns.items()}


class _Parts:
  """One output part at a time: index lines of its records and embeddings of its rows, written when it is full."""

  def __init__(self, out_dir: str, towers: tuple[str, ...], dtype: str, shard_rows: int, part: int, row: int):
    self.out_dir, self.towers, self.dtype, self.shard_rows = out_dir, towers, dtype, shard_rows
    self.part, self.row = part, row  # next part number, first row of the current part
    self.lines, self.rows, self.embeddings = [], 0, {t: [] for t in towers}
    self.skipped = 0  # in this invocation, for the progress bar

  def add(self, source: dict, reason: str) -> None:
    if reason:
      line, self.skipped = {"row": None, **source, "status": "skipped", "reason": reason}, self.skipped + 1
    else:
      line, self.rows = {"row": self.row + self.rows, **source, "status": "ok"}, self.rows + 1
    self.lines.append(json.dumps(line, ensure_ascii=False))

  def full(self) -> bool:
    return self.rows == self.shard_rows

  def write(self, dims: dict[str, int]) -> None:
    name = _part_name(self.part)
    for t in self.towers:
      rows = self.embeddings[t]
      array = np.concatenate(rows) if rows else np.zeros((0, dims[t]), self.dtype)
      _write_atomic(os.path.join(self.out_dir, t, name + ".npy"), array)
    _write_atomic(os.path.join(self.out_dir, "index", name + ".jsonl"), "".join(f"{x}\n" for x in self.lines).encode())
    self.part, self.row = self.part + 1, self.row + self.rows
    self.lines, self.rows, self.embeddings = [], 0, {t: [] for t in self.towers}


def _prepared(records: Iterable, towers: tuple[str, ...], image_size: int, workers: int, lookahead: int):
  """(record, inputs, skip reason) in input order, decoded by `workers` threads at most `lookahead` records ahead."""
  pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="embed-decode")
  queue = collections.deque()
  try:
    for record in records:
      queue.append((record, pool.submit(embed_inputs.prepare, record, towers, image_size)))
      if len(queue) >= lookahead:
        record, future = queue.popleft()
        yield record, *future.result()
    while queue:
      record, future = queue.popleft()
      yield record, *future.result()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def _embed_stream(prepared: Iterable, towers: _Towers, parts: _Parts, dims: dict[str, int], bar) -> None:
  """Batches the good records, embeds them, and writes each part when full (and the last one at the end)."""
  pending, inflight = [], collections.deque()  # inputs not yet dispatched; (device outputs, rows) not yet on host

  def flush(keep: int) -> None:
    if pending:
      inflight.append((towers(pending), len(pending)))
      pending.clear()
    while len(inflight) > keep:  # one batch stays in flight while the host prepares the next
      out, n = inflight.popleft()
      for t, emb in out.items():
        parts.embeddings[t].append(np.asarray(emb)[:n].astype(parts.dtype))

  for record, inputs, reason in prepared:
    parts.add(record.source, reason)
    bar.update(1)
    if reason:
      bar.set_postfix(skipped=parts.skipped, refresh=False)
      continue
    pending.append(inputs)
    if parts.full():
      flush(0)
      parts.write(dims)
    elif len(pending) == towers.batch_size:
      flush(1)
  flush(0)
  if parts.lines:
    parts.write(dims)


def _digest(artifact_dir: str, towers: tuple[str, ...]) -> str:
  """sha256 of the towers' artifacts: a rerun must use the same model to extend an output."""
  h = hashlib.sha256()
  for t in towers:
    with open(os.path.join(artifact_dir, jax_export.ARTIFACTS[t]), "rb") as f:
      for block in iter(lambda: f.read(1 << 24), b""):
        h.update(block)
  return h.hexdigest()


def _resume_point(out_dir: str, settings: dict) -> tuple[int, int, int]:
  """(completed parts, records they consumed, rows they hold) of `out_dir`, made ready for this run: created,
  checked against the settings of the run that started it, and cleared of unfinished files."""
  run_path = os.path.join(out_dir, RUN)
  if os.path.exists(run_path):
    with open(run_path) as f:
      previous = json.load(f)
    differs = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
    if differs:
      raise ValueError(
        f"{out_dir} holds a run with other settings ({differs}, as (then, now)): use another --output, or delete it."
      )
  elif os.path.isdir(out_dir) and os.listdir(out_dir):
    raise ValueError(f"{out_dir} is not empty and holds no {RUN}: choose a new or empty --output directory.")
  for sub in ("index", *settings["towers"]):
    os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
  _write_atomic(run_path, json.dumps(settings, indent=2).encode())
  parts = records = rows = 0
  while all(os.path.exists(p) for p in _part_paths(out_dir, settings["towers"], parts)):
    with open(_part_paths(out_dir, settings["towers"], parts)[-1], "rb") as f:
      records += sum(1 for _ in f)
    rows += len(np.load(_part_paths(out_dir, settings["towers"], parts)[0], mmap_mode="r"))
    parts += 1
  for sub in ("index", *settings["towers"]):  # a part written in part (no index yet) and .tmp files: redone
    for name in os.listdir(os.path.join(out_dir, sub)):
      if name.endswith(".tmp") or name.split(".")[0] >= _part_name(parts):
        os.remove(os.path.join(out_dir, sub, name))
  return parts, records, rows


def _part_paths(out_dir: str, towers: tuple[str, ...], k: int) -> list[str]:
  """The files of part k, the index (written last) at the end."""
  name = _part_name(k)
  return [os.path.join(out_dir, t, name + ".npy") for t in towers] + [os.path.join(out_dir, "index", name + ".jsonl")]


def read_index(out_dir: str) -> Iterator[dict]:
  """The index lines of every completed part, in input order."""
  k = 0
  while os.path.exists(path := os.path.join(out_dir, "index", _part_name(k) + ".jsonl")):
    with open(path, encoding="utf-8") as f:
      yield from map(json.loads, f)
    k += 1


def load_embeddings(out_dir: str, tower: str = "image") -> np.ndarray:
  """All rows of a tower [N, D], parts concatenated (one part: memory-mapped)."""
  paths = sorted(os.listdir(os.path.join(out_dir, tower)))
  arrays = [np.load(os.path.join(out_dir, tower, p), mmap_mode="r") for p in paths if p.endswith(".npy")]
  return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _summarise(out_dir: str, settings: dict, dims: dict[str, int], seconds: float) -> dict:
  skipped, records = collections.Counter(), 0
  for line in read_index(out_dir):
    records += 1
    if line["status"] != "ok":
      skipped[line["reason"].split(":")[0]] += 1
  parts = len(os.listdir(os.path.join(out_dir, "index")))
  summary = {
    "input": settings["input"],
    "format": settings["format"],
    "records": records,
    "embedded": records - sum(skipped.values()),
    "skipped": dict(sorted(skipped.items())),
    "parts": parts,
    "towers": {t: {"dim": dims[t], "dtype": settings["dtype"], "dir": t} for t in settings["towers"]},
    "seconds_last_invocation": round(seconds, 3),
  }
  _write_atomic(os.path.join(out_dir, SUMMARY), json.dumps(summary, indent=2).encode())
  return summary


def summary_line(out_dir: str, summary: dict) -> str:
  """One line for the console: what was embedded where, and what was skipped for which reasons."""
  towers = ", ".join(f"{t} {summary['embedded']} x {s['dim']} {s['dtype']}" for t, s in summary["towers"].items())
  skipped = sum(summary["skipped"].values())
  reasons = f" ({', '.join(f'{k}: {n}' for k, n in summary['skipped'].items())})" if skipped else ""
  return (
    f"embedded {summary['embedded']} of {summary['records']} records -> {out_dir} ({towers}; {summary['parts']} "
    f"part(s)); skipped {skipped}{reasons}, listed in index/"
  )


def embed_path(
  artifact_dir: str,
  input_path: str,
  output_dir: str,
  *,
  tower: str | None = None,
  input_format: str = "auto",
  batch_size: int = 256,
  dtype: str = "float32",
  shard_rows: int = 100_000,
  workers: int = 0,
  progress: bool = True,
) -> dict:
  """Embeds every record of `input_path` into `output_dir` (layout in the module docstring) and returns the summary.

  tower: "image" or "text" to run one tower only (default: every tower the input feeds and the export has).
  input_format: a reader of `embed_inputs.READERS`, or "auto" (by folder / suffix / first line).
  batch_size: rounded up to a multiple of the local device count; shard_rows: rows per output part.
  workers: image decoding threads (0: one per CPU, at most 8).
  """
  if not input_path or not (os.path.exists(input_path) or shards.shard_files(input_path)[0]):
    raise FileNotFoundError(f"Input not found: {input_path!r}.")
  if output_dir.endswith(".npy"):
    raise ValueError(f"--output is a directory (parts + index, see python -m export.embed --help), got {output_dir}.")
  if dtype not in ("float32", "float16") or shard_rows < 1 or batch_size < 1:
    raise ValueError(f"Need dtype float32 or float16 and positive sizes, got {dtype}, {shard_rows=}, {batch_size=}.")
  card = jax_export.read_card(artifact_dir)
  fmt = embed_inputs.detect_format(input_path) if input_format == "auto" else input_format
  if fmt not in embed_inputs.READERS:
    raise ValueError(f"Unknown input format {fmt!r}; known: auto, {', '.join(embed_inputs.READERS)}.")
  towers, records = _choose_towers(embed_inputs.READERS[fmt](input_path), card, tower)
  image_size = check_preprocessing(card["towers"]["image"]) if "image" in towers else 0
  dims = {t: int(card["towers"][t]["output"]["shape"][-1]) for t in towers}
  settings = {
    "input": os.path.abspath(input_path),
    "format": fmt,
    "towers": list(towers),
    "dtype": dtype,
    "shard_rows": shard_rows,
    "artifacts_sha256": _digest(artifact_dir, towers),
  }
  start = time.perf_counter()
  if os.path.exists(os.path.join(output_dir, SUMMARY)):
    _resume_point(output_dir, settings)  # checks the settings; a finished run is not redone
    print(f"{output_dir} is complete (delete it to embed again)", flush=True)
    with open(os.path.join(output_dir, SUMMARY)) as f:
      return json.load(f)
  parts_done, records_done, rows_done = _resume_point(output_dir, settings)
  if parts_done:
    print(f"resuming {output_dir} after {parts_done} part(s): {records_done} records, {rows_done} rows", flush=True)
  runner = _Towers(artifact_dir, card, towers, batch_size)
  parts = _Parts(output_dir, towers, dtype, shard_rows, parts_done, rows_done)
  workers = workers or max(1, min(8, os.cpu_count() or 1))
  from tqdm import tqdm

  with tqdm(desc=f"embed ({'+'.join(towers)})", unit="rec", initial=records_done, disable=not progress) as bar:
    stream = _prepared(itertools.islice(records, records_done, None), towers, image_size, workers, 2 * batch_size)
    with contextlib.closing(stream):  # an interrupt stops the decoding threads too
      _embed_stream(stream, runner, parts, dims, bar)
  return _summarise(output_dir, settings, dims, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0],
    epilog=__doc__.split("\n\n", 1)[1],
    formatter_class=argparse.RawTextHelpFormatter,
  )
  parser.add_argument("--artifact", required=True, help="export directory (model_card.json + artifacts)")
  parser.add_argument("--input", required=True, help="folder, path list, .npy, sentences, .jsonl or .tsv")
  parser.add_argument("--output", required=True, help="output directory (resumed when it holds a run)")
  parser.add_argument("--tower", choices=("image", "text"), default=None, help="default: every tower the input feeds")
  parser.add_argument("--input_format", choices=("auto", *embed_inputs.READERS), default="auto")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
  parser.add_argument("--shard_rows", type=int, default=100_000, help="rows per output part")
  parser.add_argument("--workers", type=int, default=0, help="decoding threads (0: one per CPU, at most 8)")
  args = parser.parse_args(argv)
  try:
    summary = embed_path(
      args.artifact,
      args.input,
      args.output,
      tower=args.tower,
      input_format=args.input_format,
      batch_size=args.batch_size,
      dtype=args.dtype,
      shard_rows=args.shard_rows,
      workers=args.workers,
    )
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  except KeyboardInterrupt:
    sys.exit(INTERRUPTED.format(output=args.output))
  print(summary_line(args.output, summary))


if __name__ == "__main__":
  main()
