"""CLIP / SigLIP: chunked and ring modes equal dense (value and all gradients), on one
device and on 8, for chunk sizes that do and do not divide the batch; memory stays bounded."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import losses

B = P("data")


@functools.cache
def _mesh():
  return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


def _pairs(n, d=16, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return losses.l2_normalize(jax.random.normal(k1, (n, d))), losses.l2_normalize(jax.random.normal(k2, (n, d)))


def _clip(mode, chunk_size=None, axis_name=None):
  return lambda x, y, t: losses.clip_softmax_loss(x, y, t, mode=mode, chunk_size=chunk_size, axis_name=axis_name)


def _siglip(mode, chunk_size=None, axis_name=None):
  return lambda x, y, t, b: losses.siglip_loss(x, y, t, b, mode=mode, chunk_size=chunk_size, axis_name=axis_name)


def _assert_same(got, want):
  (v, g), (wv, wg) = got, want
  np.testing.assert_allclose(v, wv, rtol=1e-5)
  for i, (a, b) in enumerate(zip(g, wg)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))), err_msg=f"grad {i}")


@pytest.mark.parametrize("loss", ["clip", "siglip"])
@pytest.mark.parametrize("mode", ["chunked", "ring"])
@pytest.mark.parametrize("chunk_size", [7, 50])  # 7 does not divide 48; 50 exceeds it
def test_streamed_mode_equals_dense_on_one_device(loss, mode, chunk_size):
  x, y = _pairs(48)
  args = (x, y, 10.0) if loss == "clip" else (x, y, 10.0, -4.0)
  make = _clip if loss == "clip" else _siglip
  argnums = tuple(range(len(args)))
  want = jax.jit(jax.value_and_grad(make("dense"), argnums=argnums))(*args)
  got = jax.jit(jax.value_and_grad(make(mode, chunk_size), argnums=argnums))(*args)
  _assert_same(got, want)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
@pytest.mark.parametrize(
  "mode, chunk_size", [("dense", None), ("chunked", 8), ("chunked", 20), ("ring", 3), ("ring", None)]
)
def test_mode_on_8_devices_equals_dense_on_one_device(loss, mode, chunk_size):
  x, y = _pairs(8 * 6)  # 6 local rows: chunked 20 -> 2 rows per device; ring 3 -> 2 chunks
  args = (x, y, jnp.float32(10.0)) if loss == "clip" else (x, y, jnp.float32(10.0), jnp.float32(-4.0))
  make = _clip if loss == "clip" else _siglip
  argnums = tuple(range(len(args)))
  want = jax.jit(jax.value_and_grad(make("dense"), argnums=argnums))(*args)
  sharded = jax.shard_map(
    make(mode, chunk_size, "data"), mesh=_mesh(), in_specs=(B, B) + (P(),) * (len(args) - 2), out_specs=P()
  )
  got = jax.jit(jax.value_and_grad(sharded, argnums=argnums))(*args)
  _assert_same(got, want)


def test_streamed_modes_accept_bfloat16_embeddings():
  x, y = _pairs(32)
  want = losses.clip_softmax_loss(x, y, 10.0)
  loss = lambda a, b: losses.clip_softmax_loss(a, b, 10.0, mode="chunked", chunk_size=8)
  got, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x.astype(jnp.bfloat16), y.astype(jnp.bfloat16))
  assert got.dtype == jnp.float32 and grads[0].dtype == jnp.bfloat16
  np.testing.assert_allclose(got, want, rtol=2e-2)


def _temp_bytes(mode, global_n, chunk_size):
  sharded = jax.shard_map(_clip(mode, chunk_size, "data"), mesh=_mesh(), in_specs=(B, B, P()), out_specs=P())
  spec = jax.ShapeDtypeStruct((global_n, 64), jnp.float32, sharding=NamedSharding(_mesh(), B))
  compiled = (
    jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2)))
    .lower(spec, spec, jax.ShapeDtypeStruct((), jnp.float32))
    .compile()
  )
  return compiled.memory_analysis().temp_size_in_bytes


def test_streamed_modes_never_hold_the_dense_logits():
  global_n = 8 * 1024  # dense holds two [1024, 8192] float32 logit blocks per device: 64 MiB
  dense = _temp_bytes("dense", global_n, None)
  assert dense >= 2 * 1024 * global_n * 4
  for mode in ("chunked", "ring"):
    assert _temp_bytes(mode, global_n, 128) < dense / 20, mode


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda: losses.clip_softmax_loss(jnp.ones((4, 3)), jnp.ones((5, 3)), 1.0), "same shape"),
    (lambda: losses.clip_softmax_loss(jnp.ones((4, 3)), jnp.ones((4, 3)), 0.0), "logit_scale"),
    (lambda: losses.siglip_loss(jnp.ones((4, 3)), jnp.ones((4, 3)), 1.0, 0.0, mode="blocks"), "mode"),
    (lambda: losses.siglip_loss(jnp.ones((4, 3)), jnp.ones((4, 3)), 1.0, 0.0, mode="ring", chunk_size=0), "chunk_size"),
  ],
)
def test_image_text_losses_reject_bad_input(call, match):
  with pytest.raises(ValueError, match=match):
    call()
