"""Exports an encoder tower as a TF SavedModel (via `jax2tf`, native serialization) that TF Serving can load.

TensorFlow is imported here only, lazily: the rest of the project runs without it.
"""

from __future__ import annotations

import functools
import os
import shutil
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from export.jax_export import SAVED_MODELS


# Coefficients of XLA's float32 erf (the decomposition of chlo.erf): x * P(x^2) / Q(x^2) on x clamped to [-4, 4].
_ERF_P = (
  -2.72614225801306e-10,
  2.77068142495902e-08,
  -2.10102402082508e-06,
  -5.69250639462346e-05,
  -7.34990630326855e-04,
  -2.95459980854025e-03,
  -1.60960333262415e-02,
)
_ERF_Q = (
  -1.45660718464996e-05,
  -2.13374055278905e-04,
  -1.68282697438203e-03,
  -7.37332916720468e-03,
  -1.42647390514189e-02,
)
# Primitives whose body is inlined when re-tracing (no control flow: an erf inside scan / cond stays as is).
_CALLS = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "checkpoint", "remat")


def _erf_f32(x: jax.Array) -> jax.Array:
  """erf from elementwise ops, as XLA computes it in float32; [..] -> same shape and dtype."""
  x32 = jnp.clip(x.astype(jnp.float32), -4.0, 4.0)
  x2 = x32 * x32
  p = functools.reduce(lambda acc, c: acc * x2 + c, _ERF_P[1:], jnp.full_like(x2, _ERF_P[0]))
  q = functools.reduce(lambda acc, c: acc * x2 + c, _ERF_Q[1:], jnp.full_like(x2, _ERF_Q[0]))
  return jnp.clip(x32 * p / q, -1.0, 1.0).astype(x.dtype)


def _eval_without_erf(jaxpr, consts, *args) -> list:
  """Evaluates a jaxpr with every float32 / 16-bit `erf` (also inside call-like primitives) replaced by `_erf_f32`."""
  env = {}
  read = lambda v: v.val if isinstance(v, jax_core.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    body = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if eqn.primitive.name == "erf" and jnp.dtype(ins[0].dtype).itemsize <= 4:
      outs = [_erf_f32(ins[0])]
    elif eqn.primitive.name in _CALLS and body is not None:
      closed = body if isinstance(body, jax_core.ClosedJaxpr) else jax_core.ClosedJaxpr(body, ())
      outs = _eval_without_erf(closed.jaxpr, closed.consts, *ins)
    else:
      outs = eqn.primitive.bind(*ins, **eqn.params)
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _without_erf(fn: Callable) -> Callable:
  """`fn` with `erf` (the exact GELU of every transformer) computed from elementwise ops.

  JAX 0.10 serialises `erf` as a `stablehlo.composite` that TensorFlow 2.21's XlaCallModule cannot read (and at an
  older StableHLO target as a decomposition whose shapes TF cannot refine); the same polynomial in plain ops it can.
  """

  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    outs = _eval_without_erf(closed.jaxpr, closed.consts, *jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

  return wrapped


def _save(
  encode: Callable, variables: Any, input_shape: tuple[int, ...], dtype: str, input_name: str, path: str
) -> str:
  """Saves `encode(variables, x [b, *input_shape]) -> [b, D]` as `serving_default(<input_name>) -> embeddings`.

  Parameters are tf.Variables (not constants), so large encoders stay under the 2 GB proto limit.
  """
  import tensorflow as tf
  from jax.experimental import jax2tf

  dims = ", ".join(map(str, input_shape))
  tf_encode = jax2tf.convert(_without_erf(encode), polymorphic_shapes=[None, f"(b, {dims})"], with_gradient=False)
  module = tf.Module()
  module.variables_tree = tf.nest.map_structure(tf.Variable, variables)

  @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, *input_shape], dtype, name=input_name)])
  def serve(x):
    return {"embeddings": tf_encode(module.variables_tree, x)}

  module.serve = serve
  tmp = path + ".tmp"
  tf.saved_model.save(module, tmp, signatures={"serving_default": serve})
  if os.path.exists(path):
    shutil.rmtree(path)
  os.replace(tmp, path)  # the final name only ever holds a complete SavedModel
  return path


def export_image_encoder_saved_model(
  embed_image, params: Any, model_state: Any, *, image_shape: tuple[int, int, int], out_dir: str
) -> str:
  """Writes `<out_dir>/saved_model` with signature `serving_default(images: uint8 [b, H, W, 3]) -> embeddings [b, D]`.

  Preprocessing is inside the function, as in the jax.export artifact.
  """

  def encode(v, images):
    return embed_image(v["params"], v["model_state"], {"image": images}).astype(np.float32)

  variables = jax.device_get({"params": params, "model_state": model_state})
  return _save(encode, variables, tuple(image_shape), "uint8", "images", os.path.join(out_dir, SAVED_MODELS["image"]))


def export_text_encoder_saved_model(embed_text, params: Any, model_state: Any, *, max_len: int, out_dir: str) -> str:
  """Writes `<out_dir>/text_saved_model` with signature `serving_default(tokens: int32 [b, max_len]) -> embeddings
  [b, D]`; tokenize as the model card says (the same input as the jax.export text artifact)."""

  def encode(v, tokens):
    return embed_text(v["params"], v["model_state"], {"text": tokens}).astype(np.float32)

  variables = jax.device_get({"params": params, "model_state": model_state})
  return _save(encode, variables, (max_len,), "int32", "tokens", os.path.join(out_dir, SAVED_MODELS["text"]))
