"""The exported encoder gives the same embeddings as the in-training encoder, and embeds from the CLI."""
import os
import subprocess
import sys

import jax
import numpy as np

import input_pipeline
from configs import simclr_shapes
from export import jax_export
from train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_exported_encoder_matches_training_encoder_for_two_batch_sizes(tmp_path):
  config = simclr_shapes.get_config("tiny")
  config.total_steps = 2
  config.eval.linear_probe = False
  trainer.train_and_evaluate(config, str(tmp_path), progress=False)
  mesh, method, state = trainer.restore_trained(config, str(tmp_path))
  out = jax_export.export_image_encoder(method, state.params, state.model_state, image_shape=(32, 32, 3),
                                        out_dir=str(tmp_path / "export"), config=config)
  images = input_pipeline.load_split(config.data, "test")["image"]
  exported = jax_export.load(out)
  for n in (3, 16):
    expected = np.asarray(jax.jit(method.embed_fn)(state.params, state.model_state, {"image": images[:n]}))
    got = np.asarray(exported.call(images[:n]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

  np.save(tmp_path / "imgs.npy", images[:5])
  r = subprocess.run([sys.executable, "main.py", "--mode=embed", f"--workdir={tmp_path}",
                      f"--input={tmp_path / 'imgs.npy'}", f"--output={tmp_path / 'emb.npy'}"],
                     cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  emb = np.load(tmp_path / "emb.npy")
  np.testing.assert_allclose(emb, np.asarray(exported.call(images[:5])), rtol=1e-5, atol=1e-5)
