"""Host memory and throughput of the sharded input pipeline against dataset size; one JSON line per size.

    .venv/bin/python benchmarks/input_scale.py [--sizes 10000,100000,1000000] [--formats array_record,tar]
        [--workers 0,1,2] [--batches 200] [--batch_size 256] [--dir /tmp/input_scale]

For each size N: N synthetic records (32x32 JPEGs, a caption and a label each; 1000 distinct low-frequency images,
every caption different) are written as an npz and converted with `input_pipeline.convert` into shards of 10k rows
(kept in --dir for later runs). Then, for each format and worker count, a fresh process builds
`input_pipeline.build(..., shuffle=True)` on one CPU device (global shuffle over all N rows, batches of 256 uint8
[32, 32, 3] images + tokenized captions, put on the device) and iterates `--batches` batches: its peak RSS
(VmHWM; the largest worker process's, separately) and images/s after the first batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARD_SIZE = 10_000


def write_synthetic_npz(path: str, rows: int) -> None:
  """rows JPEG records cycling through 1000 distinct images, with a distinct caption and a label each."""
  import numpy as np

  from records import images

  rng = np.random.default_rng(0)
  pool = []
  for _ in range(1000):
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    pool.append(np.frombuffer(images.encode_jpeg(np.kron(coarse, np.ones((8, 8, 1), np.uint8)), 90), np.uint8))
  lengths = np.asarray([len(pool[i % 1000]) for i in range(rows)])
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  jpeg = np.concatenate([pool[i % 1000] for i in range(rows)])
  labels = np.arange(rows) % 10
  captions = np.asarray([f"synthetic image {i} of class {i % 10} in a scaling test" for i in range(rows)])
  np.savez(path, train_jpeg=jpeg, train_offsets=offsets, train_labels=labels, train_captions=captions)


def prepare(directory: str, rows: int, fmt: str) -> tuple[str, float]:
  """Shards of `rows` synthetic records in `fmt` under directory (made once); (data.path pattern, seconds)."""
  from input_pipeline import convert

  base = os.path.join(directory, str(rows))
  npz = os.path.join(base, "synthetic.npz")
  out = os.path.join(base, fmt)
  if not os.path.exists(npz):
    os.makedirs(base, exist_ok=True)
    write_synthetic_npz(npz, rows)
  start = time.perf_counter()
  if not os.path.exists(os.path.join(out, "info.json")):
    convert.convert(npz, out, fmt, SHARD_SIZE, "train")
  return os.path.join(out, "{split}-*." + fmt), time.perf_counter() - start


def peak_rss_mb(pid: str = "self") -> float:
  """Peak RSS of a process since its exec (VmHWM; ru_maxrss would also count the parent's pages at fork)."""
  with open(f"/proc/{pid}/status") as status:
    return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))


def children_peak_rss_mb() -> float:
  """Largest peak RSS among this process's live children: the data workers."""
  import glob

  peaks = [0.0]
  for tasks in glob.glob("/proc/self/task/*/children"):
    with open(tasks) as f:
      for pid in f.read().split():
        try:
          peaks.append(peak_rss_mb(pid))
        except OSError:
          continue
  return max(peaks)


def measure(path: str, fmt: str, workers: int, batches: int, batch_size: int) -> dict:
  """In this process: build the iterator, read `batches` batches; peak RSS and images/s."""
  import jax
  import numpy as np

  import input_pipeline
  from configs import default

  config = default.data()

  config.tokenizer = "bytes"
  config.update(dict(name=fmt, path=path, workers=workers, max_text_len=32))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  start = time.perf_counter()
  it = input_pipeline.build(config, split="train", global_batch_size=batch_size, sharding=sharding, seed=0)
  jax.block_until_ready(next(it))
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(batches - 1):
    batch = next(it)
  jax.block_until_ready(batch)
  seconds = time.perf_counter() - start
  assert batch["image"].shape == (batch_size, 32, 32, 3) and np.asarray(batch["label"]).max() < 10
  worker_rss = children_peak_rss_mb()
  it.close()
  return {
    "images_per_s": round((batches - 1) * batch_size / seconds, 1),
    "first_batch_s": round(first_s, 2),
    "peak_rss_mb": round(peak_rss_mb(), 1),
    "worker_peak_rss_mb": round(worker_rss, 1),
  }


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--sizes", default="10000,100000,1000000")
  parser.add_argument("--formats", default="array_record,tar")
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "input_scale"))
  parser.add_argument("--measure", default="", help=argparse.SUPPRESS)  # "path,format,workers": one child run
  args = parser.parse_args()
  sys.path.insert(0, ROOT)
  if args.measure:
    path, fmt, workers = args.measure.split(",")
    print(json.dumps(measure(path, fmt, int(workers), args.batches, args.batch_size)))
    return
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  for rows in (int(s) for s in args.sizes.split(",")):
    record = {"benchmark": "input_scale", "rows": rows, "batch_size": args.batch_size, "batches": args.batches}
    for fmt in args.formats.split(","):
      path, convert_s = prepare(args.dir, rows, fmt)
      record[f"{fmt}/convert_s"] = round(convert_s, 1)
      for workers in (int(w) for w in args.workers.split(",")):
        command = [sys.executable, __file__, f"--measure={path},{fmt},{workers}", f"--batches={args.batches}"]
        command.append(f"--batch_size={args.batch_size}")
        load = os.getloadavg()[0]
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        if run.returncode:
          result = {"error": run.stderr.strip().splitlines()[-1][:300] if run.stderr.strip() else str(run.returncode)}
          print(run.stderr[-3000:], file=sys.stderr)
        else:
          result = json.loads(run.stdout.strip().splitlines()[-1])
        record.update({f"{fmt}/workers_{workers}/{k}": v for k, v in result.items()})
        record[f"{fmt}/workers_{workers}/load_avg_1m_before"] = round(load, 2)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":  # worker processes re-import this file: nothing heavy at the top
  main()
