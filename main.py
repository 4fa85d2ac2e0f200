"""Command line: train, evaluate, export or embed with a config file.

python main.py --config=configs/simclr_shapes.py --workdir=workdirs/simclr [--config.batch_size=512 ...]
python main.py --config=configs/simclr_shapes.py --workdir=workdirs/simclr --mode=eval
python main.py --config=configs/simclr_shapes.py --workdir=workdirs/simclr --mode=export
python main.py --mode=embed --workdir=workdirs/simclr --input=photos/ --output=emb/   # python -m export.embed --help
python main.py --mode=embed --workdir=workdirs/clip --input=sentences.txt --output=text_emb/   # text tower
python main.py ... --coordinator_address=host0:1234 --num_processes=2 --process_id=0   # one per host
"""

import json
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file with get_config(arg); `file.py:arg` passes arg.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results and exports.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "export", "embed"], "What to do.")
_INPUT = flags.DEFINE_string(
  "input", None, "--mode=embed: folder of images, file of image paths or sentences, .npy, .jsonl or .tsv."
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
  "input_format", "auto", "--mode=embed: auto|folder|image|paths|npy|sentences|jsonl|tsv."
)
_EMBED_BATCH = flags.DEFINE_integer("embed_batch_size", 256, "--mode=embed: batch over all local devices.")
_EMBED_DTYPE = flags.DEFINE_enum("embed_dtype", "float32", ["float32", "float16"], "--mode=embed: output dtype.")
_SHARD_ROWS = flags.DEFINE_integer("shard_rows", 100_000, "--mode=embed: rows per output part.")
_PROFILE = flags.DEFINE_bool(
  "profile",
  False,
  "--mode=train: write a jax.profiler trace of config.profile_steps "
  "(default: the 3rd to 5th step) to <workdir>/profile.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address",
  None,
  "Multi-process runs: host:port of process 0 "
  "(default $JAX_COORDINATOR_ADDRESS; on SLURM/Open MPI/Cloud TPU detected).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes", None, "Multi-process runs: number of processes (default $JAX_NUM_PROCESSES)."
)
_PROCESS_ID = flags.DEFINE_integer(
  "process_id", None, "Multi-process runs: this process's index (default $JAX_PROCESS_ID)."
)
flags.mark_flag_as_required("workdir")


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
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required for --mode=train/eval/export (e.g. --config=configs/simclr_shapes.py).")

  from train import distributed

  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from train import trainer

  if _MODE.value == "train":
    results = trainer.train_and_evaluate(config, workdir, profile=_PROFILE.value)
    if "stopped_at_step" not in results and config.export.enabled:
      _export(config, workdir)
  else:
    mesh, method, state = trainer.restore_trained(config, workdir)
    if _MODE.value == "eval":
      results = trainer.evaluate(config, method, state, mesh, step=int(state.step))
    else:
      results = {"export_dir": _export(config, workdir, (method, state))}
  print(json.dumps(results, indent=2))


def _export(config, workdir: str, trained=None) -> str:
  """Exports every tower of the method (image and / or text) to <workdir>/export, with one model card."""
  from export import jax_export
  from train import trainer

  if trained is None:
    _, method, state = trainer.restore_trained(config, workdir)
  else:
    method, state = trained
  out = os.path.join(os.path.abspath(workdir), "export")
  if os.path.exists(os.path.join(out, jax_export.MODEL_CARD)):  # list only this export's towers
    os.remove(os.path.join(out, jax_export.MODEL_CARD))
  # A sentence encoder's embed_fn is its text tower: it has no image tower.
  towers = (["image"] if method.embed_text_fn is not method.embed_fn else []) + (
    ["text"] if method.embed_text_fn is not None else []
  )
  size, max_len = config.data.image_size, config.data.get("max_text_len", 64)
  args = (method, state.params, state.model_state)
  if "image" in towers:
    jax_export.export_image_encoder(*args, image_shape=(size, size, 3), out_dir=out, config=config)
  if "text" in towers:
    jax_export.export_text_encoder(
      *args,
      max_len=max_len,
      out_dir=out,
      tokenizer=config.data.get("tokenizer", "bytes"),
      tokenizer_path=config.data.get("tokenizer_path", ""),
      config=config,
    )
  print(f"exported the {' and '.join(towers)} tower(s) (jax.export) to {out}")
  if config.export.get("saved_model", True):
    try:
      import tensorflow  # noqa: F401  (optional: GPU machines may not have it)
    except ImportError:
      logging.warning("TensorFlow is not installed: skipping the SavedModel export.")
    else:
      from export import saved_model

      if "image" in towers:
        print(
          f"exported the image encoder (TF SavedModel) to "
          f"{saved_model.export_image_encoder_saved_model(*args, image_shape=(size, size, 3), out_dir=out)}"
        )
      if "text" in towers:
        print(
          f"exported the text encoder (TF SavedModel) to "
          f"{saved_model.export_text_encoder_saved_model(*args, max_len=max_len, out_dir=out)}"
        )
  return out


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but an unknown `--config.a.b` key is one clear line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help on flags.")
  except (AttributeError, KeyError) as e:
    overrides = [a.split("=")[0][len("--config.") :] for a in argv if a.startswith("--config.")]
    sys.exit(
      f"error: unknown config key ({e}) among the overrides {overrides}: every --config.<key> must name a field "
      "that the config file defines."
    )


def run():
  try:
    app.run(main, flags_parser=_parse_flags)
  except (ValueError, FileNotFoundError) as e:  # bad input: one clear message, no traceback wall
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run()
