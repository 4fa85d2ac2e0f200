"""evaluators.common.Embedder: padding, one compilation, sharded batches equal to single-device ones."""

import jax
import jax.numpy as jnp
import numpy as np

from evaluators import knn_accuracy
from evaluators.common import Embedder
from parallel import mesh as mesh_lib

_W = np.random.default_rng(0).normal(size=(6, 16)).astype(np.float32)


def _make_embed_fn(trace_counter=None):
  @jax.jit
  def embed_fn(batch):
    if trace_counter is not None:
      trace_counter.append(1)
    return jnp.tanh(batch["x"] @ _W) * batch["scale"][:, None]

  return embed_fn


def _arrays(n):
  rng = np.random.default_rng(1)
  return {"x": rng.normal(size=(n, 6)).astype(np.float32), "scale": rng.uniform(0.5, 2, size=n).astype(np.float32)}


def test_ragged_last_batch_is_padded_compiled_once_and_dropped():
  traces = []
  arrays = _arrays(37)
  embedder = Embedder(mesh_lib.build_mesh(devices=jax.devices()[:1]), batch_size=16)
  out = embedder.chunks(_make_embed_fn(traces), arrays)
  assert out.shape == (37, 16) and isinstance(out, np.ndarray)
  assert len(traces) == 1
  np.testing.assert_allclose(out, np.tanh(arrays["x"] @ _W) * arrays["scale"][:, None], rtol=1e-5, atol=1e-6)


def test_eight_device_sharding_equals_single_device_and_knn_agrees():
  assert jax.device_count() == 8
  arrays = _arrays(203)
  embed_fn = _make_embed_fn()
  single = Embedder(mesh_lib.build_mesh(devices=jax.devices()[:1]), batch_size=64).chunks(embed_fn, arrays)
  sharded = Embedder(mesh_lib.build_mesh(), batch_size=64).chunks(embed_fn, arrays)
  np.testing.assert_allclose(sharded, single, rtol=1e-6, atol=1e-6)
  labels = (arrays["x"][:, 0] > 0).astype(np.int32)
  assert knn_accuracy(sharded[:150], labels[:150], sharded[150:], labels[150:], num_classes=2, k=10) == knn_accuracy(
    single[:150], labels[:150], single[150:], labels[150:], num_classes=2, k=10
  )


def test_batch_size_rounds_up_to_a_multiple_of_the_batch_shards():
  assert Embedder(mesh_lib.build_mesh(), batch_size=12).batch_size == 16
