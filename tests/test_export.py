"""The exported encoder gives the same embeddings as the in-training encoder, and embeds from the CLI."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import input_pipeline
from export import jax_export
from train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_exported_encoder_matches_training_encoder_for_two_batch_sizes(tmp_path, tiny_simclr_run):
  config, workdir, _ = tiny_simclr_run
  mesh, method, state = trainer.restore_trained(config, workdir)
  out = jax_export.export_image_encoder(
    method, state.params, state.model_state, image_shape=(32, 32, 3), out_dir=str(tmp_path / "export"), config=config
  )
  images = input_pipeline.load_split(config.data, "test")["image"]
  exported = jax_export.load(out)
  for n in (3, 16):
    expected = np.asarray(jax.jit(method.embed_fn)(state.params, state.model_state, {"image": images[:n]}))
    got = np.asarray(exported.call(images[:n]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

  np.save(tmp_path / "imgs.npy", images[:5])
  r = subprocess.run(
    [
      sys.executable,
      "main.py",
      "--mode=embed",
      f"--workdir={tmp_path}",
      f"--input={tmp_path / 'imgs.npy'}",
      f"--output={tmp_path / 'emb.npy'}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr
  emb = np.load(tmp_path / "emb.npy")
  np.testing.assert_allclose(emb, np.asarray(exported.call(images[:5])), rtol=1e-5, atol=1e-5)


def test_saved_model_matches_training_encoder_for_two_batch_sizes(tmp_path, tiny_simclr_run):
  tf = pytest.importorskip("tensorflow")
  from export import saved_model

  config, workdir, _ = tiny_simclr_run
  mesh, method, state = trainer.restore_trained(config, workdir)
  path = saved_model.export_image_encoder_saved_model(
    method, state.params, state.model_state, image_shape=(32, 32, 3), out_dir=str(tmp_path / "export")
  )
  serve = tf.saved_model.load(path).signatures["serving_default"]
  images = input_pipeline.load_split(config.data, "test")["image"]
  for n in (3, 16):
    expected = np.asarray(jax.jit(method.embed_fn)(state.params, state.model_state, {"image": images[:n]}))
    got = serve(images=tf.constant(images[:n]))["embeddings"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
