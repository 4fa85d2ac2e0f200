"""Every loss on 8 devices (inside shard_map, local shards + axis_name) equals the same loss
on one device over the whole batch: value and gradients w.r.t. all differentiable inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

import losses

N, D, K = 32, 8, 6  # global batch (4 rows per device), embedding dim, prototypes
B = P("data")  # sharded on the batch
R = P()  # replicated


def _normal(seed, *shape):
  return jax.random.normal(jax.random.key(seed), shape)


def _unit(seed, *shape):
  return losses.l2_normalize(_normal(seed, *shape))


def _two_views(loss, **hyper):
  """The case of a loss of two batch-sharded [N, D] embeddings, differentiated w.r.t. both."""
  return (
    lambda a, b, axis_name: loss(a, b, axis_name=axis_name, **hyper),
    (_normal(0, N, D), _normal(1, N, D)),
    (B, B),
    (0, 1),
  )


# name: (loss(*args, axis_name), args, in_specs of args, indices of args to differentiate)
CASES = {
  "nt_xent": _two_views(losses.nt_xent, temperature=0.2),
  "nt_xent_queue": (
    lambda a, b, q, axis_name: losses.nt_xent(a, b, queue=q, axis_name=axis_name),
    (_normal(0, N, D), _normal(1, N, D), _normal(2, 12, D)),
    (B, B, R),
    (0, 1),
  ),
  "dcl": _two_views(losses.dcl),
  "dclw": _two_views(losses.dclw),
  "mv_info_nce": (
    lambda v, axis_name: losses.mv_info_nce(v, axis_name=axis_name),
    (_normal(0, 3, N, D),),
    (P(None, "data"),),
    (0,),
  ),
  "supcon": (
    lambda v, y, axis_name: losses.supcon(v, y, axis_name=axis_name),
    (_normal(0, 2, N, D), jax.random.randint(jax.random.key(1), (N,), 0, 5)),
    (P(None, "data"), B),
    (0,),
  ),
  "supcon_multilabel": (
    lambda v, y, axis_name: losses.supcon(v, y, axis_name=axis_name),
    (_normal(0, 2, N, D), jax.random.bernoulli(jax.random.key(1), 0.3, (N, 4))),
    (P(None, "data"), B),
    (0,),
  ),
  "mochi": (
    lambda q, k, queue, axis_name: losses.mochi(
      q, k, queue, jax.random.key(7), num_hard=6, num_mixed=4, num_query_mixed=3, axis_name=axis_name
    ),
    (_normal(0, N, D), _normal(1, N, D), _normal(2, 12, D)),
    (B, B, R),
    (0, 1),
  ),
  "clip_dense": (
    lambda x, y, t, axis_name: losses.clip_softmax_loss(x, y, t, axis_name=axis_name),
    (_unit(0, N, D), _unit(1, N, D), jnp.float32(8.0)),
    (B, B, R),
    (0, 1, 2),
  ),
  "siglip_dense": (
    lambda x, y, t, b, axis_name: losses.siglip_loss(x, y, t, b, axis_name=axis_name),
    (_unit(0, N, D), _unit(1, N, D), jnp.float32(5.0), jnp.float32(-2.0)),
    (B, B, R, R),
    (0, 1, 2, 3),
  ),
  "barlow_twins": _two_views(losses.barlow_twins),
  "vicreg": _two_views(losses.vicreg),
  "swav": (
    lambda h, l, axis_name: losses.swav(h, l, axis_name=axis_name),
    (jnp.tanh(_normal(0, 2, N, K)), jnp.tanh(_normal(1, 2, N, K))),
    (P(None, "data"), P(None, "data")),
    (0, 1),
  ),
  "swav_queue": (
    lambda h, q, axis_name: losses.swav(h, queue=q, axis_name=axis_name),
    (jnp.tanh(_normal(0, 2, N, K)), jnp.tanh(_normal(1, 2, 16, K))),
    (P(None, "data"), P(None, "data")),
    (0,),
  ),
  "alignment": _two_views(losses.alignment),
  "uniformity": (lambda a, axis_name: losses.uniformity(a, axis_name=axis_name), (_normal(0, N, D),), (B,), (0,)),
  "token_cross_entropy": (
    lambda logits, y, m, axis_name: losses.token_cross_entropy(logits, y, m, label_smoothing=0.1, axis_name=axis_name),
    (
      _normal(0, N, 5, 11),
      jax.random.randint(jax.random.key(1), (N, 5), 0, 11),
      jax.random.bernoulli(jax.random.key(2), 0.7, (N, 5)),
    ),
    (B, B, B),
    (0,),
  ),
  "isogclr": (
    lambda x, y, tx, ty, axis_name: losses.isogclr(
      x, y, tx, ty, losses.isogclr_init_state(x.shape[0]), axis_name=axis_name
    )[0],
    (_normal(0, N, D), _normal(1, N, D), jnp.linspace(0.03, 0.1, N), jnp.linspace(0.1, 0.05, N)),
    (B, B, B, B),
    (0, 1, 2, 3),
  ),
}


@functools.cache
def _mesh():
  return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


def _as_f64(args):
  """Floating arrays in float64 (call under jax.enable_x64): the losses then run in float64."""
  return tuple(jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a for a in args)


def _value_and_grads_agree(loss, args, specs, wrt):
  """8 devices vs 1, in float64: the two differ only in the order of reductions (~1e-15 relative), so a tight
  tolerance holds on any CPU kind; in float32 it would depend on the summation order the CPU's kernels pick."""
  single = functools.partial(loss, axis_name=None)
  sharded = jax.shard_map(functools.partial(loss, axis_name="data"), mesh=_mesh(), in_specs=specs, out_specs=P())
  want, want_g = jax.jit(jax.value_and_grad(single, argnums=wrt))(*args)
  got, got_g = jax.jit(jax.value_and_grad(sharded, argnums=wrt))(*args)
  assert want.dtype == jnp.float64
  np.testing.assert_allclose(got, want, rtol=1e-10)
  for i, g, w in zip(wrt, got_g, want_g):
    np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12 * float(jnp.max(jnp.abs(w))), err_msg=f"grad of arg {i}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_on_8_devices_equals_single_device(name):
  loss, args, specs, wrt = CASES[name]
  with jax.enable_x64(True):
    _value_and_grads_agree(loss, _as_f64(args), specs, wrt)


def test_isogclr_state_update_on_8_devices_equals_single_device():
  loss, args, specs, _ = CASES["isogclr"]
  fn = lambda x, y, tx, ty, st, axis_name=None: losses.isogclr(x, y, tx, ty, st, axis_name=axis_name)[1]
  with jax.enable_x64(True):  # float64: see _value_and_grads_agree
    args = _as_f64(args)
    state = {k: jnp.abs(jnp.asarray(_normal(i, N), jnp.float64)) for i, k in enumerate(["s_x", "s_y", "b_x", "b_y"])}
    want = fn(*args, state)
    got = jax.jit(
      jax.shard_map(functools.partial(fn, axis_name="data"), mesh=_mesh(), in_specs=(*specs, B), out_specs=B)
    )(*args, state)
    for k in want:
      assert want[k].dtype == jnp.float64
      np.testing.assert_allclose(got[k], want[k], rtol=1e-10, err_msg=k)


def _f64(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape)


def _whitened_sum(x, c, axis_name):
  """A scalar of the whitened rows, so that value and gradient of the view are compared."""
  white = losses.shuffled_group_whitening(jax.random.key(3), x, num_groups=2, axis_name=axis_name)
  return losses.collectives.psum(jnp.sum(white * c), axis_name)


def _refined_info_nce(a, b, ra, rb, axis_name):
  weights, pairs = losses.reference_pair_weights(ra, rb, max_negative_similarity=0.3, axis_name=axis_name)
  return losses.weighted_info_nce(a, b, weights, pairs, temperature=0.1, axis_name=axis_name)


N64, P64 = 16, 4  # global batch (2 per device), pixels per feature map
MASK64 = np.random.default_rng(9).random((N64, P64, P64)) < 0.4
# name: (loss(*args, axis_name), make args (called under float64), in_specs, indices of args to differentiate)
X64_CASES = {
  "pixpro": (
    lambda p1, p2, t1, t2, m, axis_name: losses.pixpro(p1, p2, t1, t2, m, axis_name=axis_name),
    lambda: (*(_f64(i, N64, P64, D) for i in range(4)), MASK64),
    (B,) * 5,
    (0, 1),
  ),
  "pixel_contrast": (
    lambda a, b, m, axis_name: losses.pixel_contrast(a, b, m, axis_name=axis_name),
    lambda: (_f64(0, N64, P64, D), _f64(1, N64, P64, D), MASK64),
    (B, B, B),
    (0, 1),
  ),
  "pixel_contrast_image_negatives": (
    lambda a, b, m, axis_name: losses.pixel_contrast(a, b, m, image_negatives=True, axis_name=axis_name),
    lambda: (_f64(0, N64, P64, D), _f64(1, N64, P64, D), MASK64),
    (B, B, B),
    (0, 1),
  ),
  "weighted_info_nce_refined": (
    _refined_info_nce,
    lambda: tuple(_f64(i, N64, D) for i in range(4)),
    (B, B, B, B),
    (0, 1),
  ),
  "debiased_info_nce": (
    lambda a, b, axis_name: losses.debiased_info_nce(a, b, temperature=0.2, axis_name=axis_name),
    lambda: (_f64(0, N64, D), _f64(1, N64, D)),
    (B, B),
    (0, 1),
  ),
  "shuffled_group_whitening": (_whitened_sum, lambda: (_f64(0, N64, D), _f64(1, N64, D)), (B, B), (0,)),
}


@pytest.mark.parametrize("name", sorted(X64_CASES))
def test_new_loss_on_8_devices_equals_single_device_in_float64(name):
  loss, make_args, specs, wrt = X64_CASES[name]
  with jax.enable_x64(True):
    _value_and_grads_agree(loss, tuple(jnp.asarray(a) for a in make_args()), specs, wrt)
