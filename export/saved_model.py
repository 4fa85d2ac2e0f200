"""Exports an image encoder as a TF SavedModel (via `jax2tf`, native serialization) that TF Serving can load.

TensorFlow is imported here only, lazily: the rest of the project runs without it.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

SAVED_MODEL_DIR = "saved_model"


def export_image_encoder_saved_model(method, params: Any, model_state: Any, *, image_shape: tuple[int, int, int],
                                     out_dir: str) -> str:
  """Writes `<out_dir>/saved_model` with signature `serving_default(images: uint8 [b, H, W, 3]) -> embeddings [b, D]`.

  Parameters are tf.Variables (not constants), so large encoders stay under the 2 GB proto limit; preprocessing is
  inside the function, as in the jax.export artifact.
  """
  import tensorflow as tf
  from jax.experimental import jax2tf

  variables = jax.device_get({"params": params, "model_state": model_state})

  def encode(v, images):
    return method.embed_fn(v["params"], v["model_state"], {"image": images}).astype(np.float32)

  h, w, c = image_shape
  tf_encode = jax2tf.convert(encode, polymorphic_shapes=[None, f"(b, {h}, {w}, {c})"], with_gradient=False)
  module = tf.Module()
  module.variables_tree = tf.nest.map_structure(tf.Variable, variables)

  @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, h, w, c], tf.uint8, name="images")])
  def serve(images):
    return {"embeddings": tf_encode(module.variables_tree, images)}

  module.serve = serve
  path = os.path.join(out_dir, SAVED_MODEL_DIR)
  tmp = path + ".tmp"
  tf.saved_model.save(module, tmp, signatures={"serving_default": serve})
  if os.path.exists(path):
    import shutil
    shutil.rmtree(path)
  os.replace(tmp, path)  # the final name only ever holds a complete SavedModel
  return path
