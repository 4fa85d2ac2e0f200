"""The exported encoder gives the same embeddings as the in-training encoder, and the embed CLI gives the training
process's evaluation embeddings of a folder of images."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

import evaluators
import input_pipeline
from configs import default
from evaluators import common
from export import embed, jax_export
from conftest import embed_cli
from train import trainer


@pytest.fixture(scope="module")
def simclr_export(tmp_path_factory, tiny_simclr_run):
  """(config, run, embed_image, state, export dir) of the tiny SimCLR run, its image tower exported once."""
  config, workdir, _ = tiny_simclr_run
  run, state = trainer.restore(config, workdir)
  method = run.method.predict_fns["embed_image"]
  size = config.data.image_size
  out = jax_export.export_image_encoder(
    method,
    state.params,
    state.model_state,
    image_shape=(size, size, 3),
    out_dir=str(tmp_path_factory.mktemp("simclr_export")),
    config=config,
  )
  return config, run, method, state, out


def test_exported_encoder_matches_training_encoder_for_two_batch_sizes(simclr_export):
  config, _, method, state, out = simclr_export
  images = next(input_pipeline.eval_batches(config.data, "test", batch_size=16))["image"]
  exported = jax_export.load(out)
  for n in (3, 16):
    expected = np.asarray(jax.jit(method)(state.params, state.model_state, {"image": images[:n]}))
    got = np.asarray(exported.call(images[:n]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _with_eval(config, name, entry):
  """A copy of config whose only evaluation is `entry`, named `name`."""
  config = config.copy_and_resolve_references()
  config.evals = {name: entry}
  return config


def _image_folder(root) -> list[str]:
  """root/class/* (an image_folder data set): PNG / JPEG / grayscale images of other sizes, and two broken files."""
  rng = np.random.default_rng(0)
  files = {"a/wide.png": (24, 40, "RGB"), "a/small.jpg": (20, 20, "RGB"), "b/gray.png": (48, 36, "L")}
  for name, (h, w, mode) in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(root / name)
  (root / "a" / "empty.png").write_bytes(b"")
  (root / "b" / "text.jpg").write_bytes(b"not an image")
  return sorted(files)


def test_embed_cli_on_a_folder_gives_the_training_evaluation_embeddings_and_lists_the_broken_files(
  simclr_export, tmp_path
):
  config, run, method, state, out = simclr_export
  good = _image_folder(tmp_path / "photos")
  r = embed_cli(tmp_path, out, tmp_path / "photos", tmp_path / "emb", "--embed_batch_size=8")
  assert r.returncode == 0, r.stderr
  assert "embedded 3 of 5 records" in r.stdout and "skipped 2 (empty: 1, not an image: 1)" in r.stdout
  index = list(embed.read_index(str(tmp_path / "emb")))
  assert [os.path.relpath(x["path"], tmp_path / "photos") for x in index if x["status"] == "ok"] == good
  # The evaluation path of the training process: the same folder as an image_folder data set, embedded by the trainer.
  folder = dict(name="image_folder", path=str(tmp_path / "photos"))
  evaluator = evaluators.build(
    _with_eval(config, "folder", default.eval_config("knn", data=folder, batch_size=8)), run.mesh
  )
  expected, _ = common.embed_split(evaluator["folder"], run.predict_fns(state), "test")
  np.testing.assert_allclose(embed.load_embeddings(str(tmp_path / "emb")), expected, rtol=1e-5, atol=1e-5)


def test_saved_model_matches_training_encoder_for_two_batch_sizes(tmp_path, simclr_export):
  tf = pytest.importorskip("tensorflow")
  from export import saved_model

  config, _, method, state, _ = simclr_export
  path = saved_model.export_image_encoder_saved_model(
    method, state.params, state.model_state, image_shape=(32, 32, 3), out_dir=str(tmp_path / "export")
  )
  serve = tf.saved_model.load(path).signatures["serving_default"]
  images = next(input_pipeline.eval_batches(config.data, "test", batch_size=16))["image"]
  for n in (3, 16):
    expected = np.asarray(jax.jit(method)(state.params, state.model_state, {"image": images[:n]}))
    got = serve(images=tf.constant(images[:n]))["embeddings"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
