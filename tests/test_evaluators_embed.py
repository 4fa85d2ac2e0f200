"""embed_arrays: padding, one compilation, sharded batches equal to single-device ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from evaluators import embed_arrays, knn_accuracy

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
  out = embed_arrays(_make_embed_fn(traces), arrays, batch_size=16)
  assert out.shape == (37, 16) and isinstance(out, np.ndarray)
  assert len(traces) == 1
  np.testing.assert_allclose(out, np.tanh(arrays["x"] @ _W) * arrays["scale"][:, None], rtol=1e-5, atol=1e-6)


def test_eight_device_sharding_equals_single_device_and_knn_agrees():
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("data",))
  arrays = _arrays(203)
  embed_fn = _make_embed_fn()
  single = embed_arrays(embed_fn, arrays, batch_size=64)
  sharded = embed_arrays(embed_fn, arrays, batch_size=64, sharding=NamedSharding(mesh, P("data")), progress=True)
  np.testing.assert_allclose(sharded, single, rtol=1e-6, atol=1e-6)
  labels = (arrays["x"][:, 0] > 0).astype(np.int32)
  assert knn_accuracy(sharded[:150], labels[:150], sharded[150:], labels[150:], num_classes=2, k=10) == knn_accuracy(
    single[:150], labels[:150], single[150:], labels[150:], num_classes=2, k=10
  )


def test_batch_not_divisible_by_devices_names_both_numbers():
  mesh = jax.make_mesh((8,), ("data",))
  with pytest.raises(ValueError, match="batch_size 12 .* 8 devices"):
    embed_arrays(_make_embed_fn(), _arrays(20), batch_size=12, sharding=NamedSharding(mesh, P("data")))


def test_arrays_of_different_lengths_are_rejected():
  arrays = _arrays(20)
  arrays["scale"] = arrays["scale"][:10]
  with pytest.raises(ValueError, match="leading size"):
    embed_arrays(_make_embed_fn(), arrays, batch_size=8)
