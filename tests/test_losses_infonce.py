"""NT-Xent: single device vs a float64 NumPy reference, and on 8 devices vs single device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

import losses

N_DEV = 8


def _mesh():
  return jax.make_mesh((N_DEV,), ("data",), axis_types=(AxisType.Auto,))


def _numpy_nt_xent(z1, z2, temperature):
  """SimCLR eq. 1 over 2N anchors, float64."""
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n2 = z.shape[0]
  s = z @ z.T / temperature
  np.fill_diagonal(s, -np.inf)
  pos = np.concatenate([np.arange(n2 // 2, n2), np.arange(n2 // 2)])
  lse = np.log(np.exp(s - s.max(1, keepdims=True)).sum(1)) + s.max(1)
  return np.mean(lse - s[np.arange(n2), pos])


def _numpy_moco(z1, z2, queue, temperature):
  def norm(x):
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
  z1, z2, queue = norm(z1), norm(z2), norm(queue)
  logits = np.concatenate([np.sum(z1 * z2, 1, keepdims=True), z1 @ queue.T], 1) / temperature
  m = logits.max(1)
  return np.mean(np.log(np.exp(logits - m[:, None]).sum(1)) + m - logits[:, 0])


def _views(n=32, d=16, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return jax.random.normal(k1, (n, d)), jax.random.normal(k2, (n, d))


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_paper_equation(temperature):
  z1, z2 = _views()
  got = losses.nt_xent(z1, z2, temperature=temperature)
  np.testing.assert_allclose(got, _numpy_nt_xent(np.asarray(z1), np.asarray(z2), temperature), rtol=1e-5)


def test_nt_xent_with_queue_matches_moco_equation():
  z1, z2 = _views()
  queue = jax.random.normal(jax.random.key(3), (64, 16))
  got = losses.nt_xent(z1, z2, temperature=0.2, queue=queue)
  want = _numpy_moco(*(np.asarray(a) for a in (z1, z2, queue)), 0.2)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_nt_xent_queue_gets_no_gradient():
  z1, z2 = _views()
  queue = jax.random.normal(jax.random.key(3), (64, 16))
  g = jax.grad(lambda q: losses.nt_xent(z1, z2, queue=q))(queue)
  assert not np.any(np.asarray(g))


@pytest.mark.parametrize("use_queue", [False, True])
def test_nt_xent_on_8_devices_equals_single_device(use_queue):
  z1, z2 = _views(n=64)
  queue = jax.random.normal(jax.random.key(3), (48, 16)) if use_queue else None
  loss = lambda a, b: losses.nt_xent(a, b, temperature=0.3, queue=queue)
  sharded = jax.shard_map(lambda a, b: losses.nt_xent(a, b, temperature=0.3, queue=queue, axis_name="data"),
                          mesh=_mesh(), in_specs=(P("data"), P("data")), out_specs=P(), check_vma=True)
  want, want_g = jax.value_and_grad(loss, argnums=(0, 1))(z1, z2)
  got, got_g = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(z1, z2)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(got_g, want_g):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_nt_xent_gradient_taken_inside_shard_map_is_the_global_gradient():
  """A trainer that differentiates per device (grad inside shard_map) gets the same grads."""
  z1, z2 = _views(n=64)
  want_g = jax.grad(lambda a, b: losses.nt_xent(a, b), argnums=(0, 1))(z1, z2)
  local_grad = jax.grad(lambda a, b: losses.nt_xent(a, b, axis_name="data"), argnums=(0, 1))
  got_g = jax.jit(jax.shard_map(local_grad, mesh=_mesh(), in_specs=(P("data"), P("data")),
                                out_specs=(P("data"), P("data"))))(z1, z2)
  for g, w in zip(got_g, want_g):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_nt_xent_learnable_temperature_is_differentiable():
  z1, z2 = _views()
  g = jax.grad(lambda t: losses.nt_xent(z1, z2, temperature=t))(0.5)
  eps = 1e-3
  fd = (losses.nt_xent(z1, z2, temperature=0.5 + eps) - losses.nt_xent(z1, z2, temperature=0.5 - eps)) / (2 * eps)
  np.testing.assert_allclose(g, fd, rtol=1e-2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(z2=jnp.ones((8, 5))), "same shape"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(queue=jnp.ones((8, 5))), "queue"),
])
def test_nt_xent_rejects_bad_input(kwargs, match):
  args = dict(z1=jnp.ones((8, 4)), z2=jnp.ones((8, 4)))
  args.update(kwargs)
  z1, z2 = args.pop("z1"), args.pop("z2")
  with pytest.raises(ValueError, match=match):
    jax.jit(lambda a, b: losses.nt_xent(a, b, **args))(z1, z2)
