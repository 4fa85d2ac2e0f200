"""Command line: train, evaluate, export or embed with a config file.

    python main.py --config=configs/simclr_shapes.py --workdir=workdirs/simclr [--config.batch_size=512 ...]
    python main.py --workdir=workdirs/simclr --mode=eval        # the run's saved config.json
    python main.py --workdir=workdirs/simclr --mode=export [--config.export.formats="('hf',)"]
    python main.py --mode=embed --workdir=workdirs/simclr --input=photos/ --output=emb/   # python -m export.embed --help
    python main.py --mode=embed --workdir=workdirs/clip --input=sentences.txt --output=text_emb/   # text tower
    python main.py --config=configs/clip_shapes.py:tiny --workdir=w \
        --config.evals.cifar10.type=zero_shot --config.evals.cifar10.data.name=cifar10_npz   # a new named evaluation
    python main.py ... --coordinator_address=host0:1234 --num_processes=2 --process_id=0   # one per host

`--config.<key>=<value>` overrides any key the config declares (configs/default.py; configs/overrides.py says where new
keys are accepted). Bad input stops with one line on stderr and exit code 2; `--verbose` (or CONTRASTIVE_VERBOSE=1)
shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Recipe file with get_config(arg); `file.py:arg` passes arg. Default: <workdir>/config.json.",
  lock_config=False,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results and exports.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "export", "embed"], "What to do.")
_INPUT = flags.DEFINE_string(
  "input",
  None,
  "--mode=embed: folder of images, file of image paths or sentences, .npy, .jsonl, .tsv, tar or ArrayRecord shards.",
)
_OUTPUT = flags.DEFINE_string("output", None, "--mode=embed: output directory (default <workdir>/embeddings); resumed.")
_ARTIFACT = flags.DEFINE_string("artifact", None, "--mode=embed: exported model directory (default <workdir>/export).")
_TOWER = flags.DEFINE_enum(
  "tower",
  None,
  ["image", "text"],
  "--mode=embed: run only this tower (default: every tower the input feeds and the export has).",
)
_INPUT_FORMAT = flags.DEFINE_string(
  "input_format", "auto", "--mode=embed: auto|folder|image|paths|npy|sentences|jsonl|tsv|tar|array_record."
)
_EMBED_BATCH = flags.DEFINE_integer("embed_batch_size", 256, "--mode=embed: batch over all local devices.")
_EMBED_DTYPE = flags.DEFINE_enum("embed_dtype", "float32", ["float32", "float16"], "--mode=embed: output dtype.")
_SHARD_ROWS = flags.DEFINE_integer("shard_rows", 100_000, "--mode=embed: rows per output part.")
_PROFILE = flags.DEFINE_bool(
  "profile", False, "--mode=train: trace config.profile_steps (default the 3rd to 5th step) into <workdir>/profile."
)
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of an error (also CONTRASTIVE_VERBOSE=1).")
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address",
  None,
  "Multi-process runs: host:port of process 0 (default $JAX_COORDINATOR_ADDRESS; SLURM / Cloud TPU are detected).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index.")
flags.mark_flag_as_required("workdir")

_OVERRIDES: list[tuple[str, str]] = []  # --config.<path>=<value> pairs, applied by configs.overrides


def load_config(workdir: str):
  """The --config recipe, else the run's saved <workdir>/config.json; then the --config.* overrides."""
  from configs import overrides, saved

  config = _CONFIG.value
  if config is None:
    config = saved.load(workdir)
  return overrides.apply(config, _OVERRIDES)


def main(argv):
  del argv
  # Orbax and jax log every checkpoint step at INFO; keep the console to the progress bar, warnings and results.
  absl_logging.set_verbosity(absl_logging.WARNING)
  workdir = _WORKDIR.value
  if _MODE.value == "embed":  # needs only the exported artifact, not the training code
    from export import embed

    output = _OUTPUT.value or os.path.join(workdir, "embeddings")
    try:
      summary = embed.embed_path(
        _ARTIFACT.value or os.path.join(workdir, "export"),
        _INPUT.value,
        output,
        tower=_TOWER.value,
        input_format=_INPUT_FORMAT.value,
        batch_size=_EMBED_BATCH.value,
        dtype=_EMBED_DTYPE.value,
        shard_rows=_SHARD_ROWS.value,
      )
    except KeyboardInterrupt:
      sys.exit(embed.INTERRUPTED.format(output=output))
    print(embed.summary_line(output, summary))
    return
  config = load_config(workdir)

  from train import distributed

  distributed.configure_cpu_devices(config.cpu_devices, config.batch_size // config.grad_accum_steps)
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from train import trainer

  if _MODE.value == "train":
    results = trainer.train_and_evaluate(config, workdir, profile=_PROFILE.value)
    if "stopped_at_step" not in results and config.export.enabled:
      results["export_dir"] = trainer.export(config, workdir)
  elif _MODE.value == "eval":
    results = trainer.evaluate_checkpoint(config, workdir)
  else:
    results = {"export_dir": trainer.export(config, workdir)}
  print(json.dumps(results, indent=2))


def _split_config_overrides(argv: list[str]) -> list[str]:
  """Takes the `--config.<path>=<value>` (or `--config.<path> <value>`) arguments out of argv into _OVERRIDES."""
  rest, i = [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      path, eq, value = arg[len("--config.") :].partition("=")
      if not eq:
        if i + 1 >= len(argv):
          sys.exit(f"error: --config.{path} needs a value (--config.{path}=<value>).")
        i, value = i + 1, argv[i + 1]
      _OVERRIDES.append((path, value))
    else:
      rest.append(arg)
    i += 1
  return rest


def _parse_flags(argv: list[str]) -> list[str]:
  argv = _split_config_overrides(argv)
  sys.argv[:] = argv  # config_flags reads sys.argv itself: it must not see the overrides it cannot apply
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}\nPass --helpshort or --helpfull to see help on flags.")


def run():
  verbose = os.environ.get("CONTRASTIVE_VERBOSE", "") not in ("", "0") or "--verbose" in sys.argv
  try:
    app.run(main, flags_parser=_parse_flags)
  except Exception as e:  # bad input or a clear stop: one line, no traceback wall
    from train import errors

    if verbose or not errors.is_clear_stop(e):
      raise
    print(f"error: {errors.one_line(e)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run()
