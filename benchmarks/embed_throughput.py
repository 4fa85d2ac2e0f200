"""Embedding throughput: the embed CLI (`python -m export.embed` on a folder of JPEGs) vs the training process's own
evaluation embedding of the same files, and the CLI's peak RSS for SMALL vs N inputs; prints one JSON line.

    .venv/bin/python benchmarks/embed_throughput.py

Workload: the first N CIFAR-10 test images (32x32 JPEGs, ../shared/data/cifar10.npz) as files of one folder; the
`make run` encoder (configs/simclr_shapes.py: ResNet (1,1,1,1) width 16, CIFAR stem) at its initial parameters (the
speed does not depend on training), exported with jax.export. Both paths decode with records.images.decode_image and
embed in batches of BATCH over DEVICES host devices. The training path is the evaluators' `embed_split` on the folder as an
image_folder data set (input_pipeline's streamed decode of the split, then the method's jitted embed_image), in
its own process like the CLI. Times: the CLI from process start to exit (imports, loading the artifact, compilation
and file reading included) and its loop alone (summary.json); the training path's `embed_split` call (reading the
split and embedding it, compilation included; a training process holds its model already) and its whole process.
Peak RSS is each process's maximum resident set (wait4).

Environment: N (10000), SMALL (2000), BATCH (256), DEVICES (1), DATA (the npz, default ../shared/data/cifar10.npz;
absent -> prints a JSON line saying it skipped, exit 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data", "cifar10.npz")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def _env_int(name: str, default: int) -> int:
  return int(os.environ.get(name, default))


def build(folder: str, batch: int):
  """(config, run) of the `make run` SimCLR encoder at its initial parameters, with the folder as its data and as its
  one evaluation's data (`folder`, evaluated in batches of `batch`)."""
  from configs import default, simclr_shapes
  from train import setup

  config = simclr_shapes.get_config()
  config.data.update(dict(name="image_folder", path=folder, image_size=32, mean=CIFAR_MEAN, std=CIFAR_STD))
  config.evals = {"folder": default.eval_config("knn", batch_size=batch)}
  run = setup.build(config)
  run.data.close()
  return config, run


def write_folder(data_path: str, root: str, n: int) -> str:
  """The first n CIFAR-10 test JPEGs as root/c/NNNNN.jpg (an image_folder data set with one class); returns root."""
  import numpy as np

  os.makedirs(os.path.join(root, "c"), exist_ok=True)
  with np.load(data_path) as d:
    jpeg, offsets = d["test_jpeg"], d["test_offsets"]
  for i in range(n):
    with open(os.path.join(root, "c", f"{i:05d}.jpg"), "wb") as f:
      f.write(jpeg[offsets[i] : offsets[i + 1]].tobytes())
  return root


def _measured(cmd: list[str], env: dict) -> dict:
  """Wall seconds and peak RSS (MB) of a child process; its stdout's last line parsed as JSON when it is one."""
  start = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  out = proc.stdout.read()
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {out[-2000:]}")
  last = out.strip().splitlines()[-1] if out.strip() else ""
  record = json.loads(last) if last.startswith("{") else {}
  return {"wall_s": time.perf_counter() - start, "peak_rss_mb": usage.ru_maxrss / 1024, **record}


def _train_eval(folder: str, out_npy: str, batch: int) -> None:
  """Child: the training process's evaluation embedding of the folder, saved to out_npy."""
  import numpy as np

  from evaluators import common

  _, run = build(folder, batch)
  predict_fns = run.predict_fns(run.state)
  start = time.perf_counter()  # a training process holds its model already: time reading + embedding the split
  emb, _ = common.embed_split(run.evals["folder"], predict_fns, "test")
  np.save(out_npy, emb)
  print(json.dumps({"embed_s": time.perf_counter() - start}))


def _export(folder: str, out_dir: str, batch: int) -> None:
  """Child: exports the same encoder (same seed, same initial parameters) as the CLI's artifact."""
  from export import jax_export

  config, run = build(folder, batch)
  embed_image = run.method.predict_fns["embed_image"]
  state = run.state
  jax_export.export_image_encoder(
    embed_image, state.params, state.model_state, image_shape=(32, 32, 3), out_dir=out_dir, config=config
  )


def main() -> None:
  n, small, batch, devices = (
    _env_int("N", 10_000),
    _env_int("SMALL", 2_000),
    _env_int("BATCH", 256),
    _env_int("DEVICES", 1),
  )
  data = os.environ.get("DATA", DEFAULT_DATA)
  if not os.path.exists(data):
    print(json.dumps({"benchmark": "embed_throughput", "skipped": f"no CIFAR-10 npz at {data}"}))
    return
  import numpy as np

  env = dict(os.environ)
  if devices > 1:
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  me = [sys.executable, os.path.abspath(__file__)]
  with tempfile.TemporaryDirectory() as tmp:
    folders = {k: write_folder(data, os.path.join(tmp, f"images_{k}"), k) for k in (small, n)}
    artifact = os.path.join(tmp, "export")
    _measured([*me, "export", folders[n], artifact, str(batch)], env)
    cli = {}
    for k, folder in folders.items():
      out = os.path.join(tmp, f"emb_{k}")
      cmd = [sys.executable, "-m", "export.embed", f"--artifact={artifact}", f"--input={folder}", f"--output={out}"]
      cli[k] = _measured([*cmd, f"--batch_size={batch}"], env)
      with open(os.path.join(out, "summary.json")) as f:
        cli[k]["loop_s"] = json.load(f)["seconds_last_invocation"]
    train_npy = os.path.join(tmp, "train.npy")
    train = _measured([*me, "train_eval", folders[n], train_npy, str(batch)], env)
    from export import embed

    diff = float(np.abs(embed.load_embeddings(os.path.join(tmp, f"emb_{n}")) - np.load(train_npy)).max())
  record = {
    "benchmark": "embed_throughput",
    "images": n,
    "batch": batch,
    "host_devices": devices,
    "cli_images_per_s": round(n / cli[n]["wall_s"], 1),
    "cli_loop_images_per_s": round(n / cli[n]["loop_s"], 1),
    "train_eval_split_images_per_s": round(n / train["embed_s"], 1),
    "cli_s": round(cli[n]["wall_s"], 2),
    "train_eval_split_s": round(train["embed_s"], 2),
    "train_eval_process_s": round(train["wall_s"], 2),
    f"cli_peak_rss_mb_{small}": round(cli[small]["peak_rss_mb"], 1),
    f"cli_peak_rss_mb_{n}": round(cli[n]["peak_rss_mb"], 1),
    f"train_eval_peak_rss_mb_{n}": round(train["peak_rss_mb"], 1),
    "max_abs_diff_cli_vs_train_eval": diff,
    "load_avg_1m": round(os.getloadavg()[0], 2),
  }
  print(json.dumps(record))


if __name__ == "__main__":
  if len(sys.argv) > 1:
    {"train_eval": _train_eval, "export": _export}[sys.argv[1]](sys.argv[2], sys.argv[3], int(sys.argv[4]))
  else:
    main()
