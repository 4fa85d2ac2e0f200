"""NT-Xent: single device vs a float64 NumPy reference, and on 8 devices vs single device."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

import losses

N_DEV = 8


def _call(fn, *args, **kwargs):
  """fn(*args, **kwargs) compiled once (eager dispatch compiles every op separately)."""
  return jax.jit(functools.partial(fn, **kwargs))(*args)


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
  got = _call(losses.nt_xent, z1, z2, temperature=temperature)
  np.testing.assert_allclose(got, _numpy_nt_xent(np.asarray(z1), np.asarray(z2), temperature), rtol=1e-5)


def test_nt_xent_with_queue_matches_moco_equation():
  z1, z2 = _views()
  queue = jax.random.normal(jax.random.key(3), (64, 16))
  got = _call(losses.nt_xent, z1, z2, temperature=0.2, queue=queue)
  want = _numpy_moco(*(np.asarray(a) for a in (z1, z2, queue)), 0.2)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_nt_xent_queue_gets_no_gradient():
  z1, z2 = _views()
  queue = jax.random.normal(jax.random.key(3), (64, 16))
  g = jax.jit(jax.grad(lambda q: losses.nt_xent(z1, z2, queue=q)))(queue)
  assert not np.any(np.asarray(g))


@pytest.mark.parametrize("use_queue", [False, True])
def test_nt_xent_on_8_devices_equals_single_device(use_queue):
  z1, z2 = _views(n=64)
  queue = jax.random.normal(jax.random.key(3), (48, 16)) if use_queue else None
  loss = lambda a, b: losses.nt_xent(a, b, temperature=0.3, queue=queue)
  sharded = jax.shard_map(
    lambda a, b: losses.nt_xent(a, b, temperature=0.3, queue=queue, axis_name="data"),
    mesh=_mesh(),
    in_specs=(P("data"), P("data")),
    out_specs=P(),
    check_vma=True,
  )
  want, want_g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(z1, z2)
  got, got_g = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(z1, z2)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(got_g, want_g):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_nt_xent_gradient_taken_inside_shard_map_is_the_global_gradient():
  """A trainer that differentiates per device (grad inside shard_map) gets the same grads."""
  z1, z2 = _views(n=64)
  want_g = jax.jit(jax.grad(lambda a, b: losses.nt_xent(a, b), argnums=(0, 1)))(z1, z2)
  local_grad = jax.grad(lambda a, b: losses.nt_xent(a, b, axis_name="data"), argnums=(0, 1))
  got_g = jax.jit(
    jax.shard_map(local_grad, mesh=_mesh(), in_specs=(P("data"), P("data")), out_specs=(P("data"), P("data")))
  )(z1, z2)
  for g, w in zip(got_g, want_g):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_nt_xent_learnable_temperature_is_differentiable():
  z1, z2 = _views()
  g = jax.jit(jax.grad(lambda t: losses.nt_xent(z1, z2, temperature=t)))(0.5)
  eps = 1e-3
  fd = (_call(losses.nt_xent, z1, z2, temperature=0.5 + eps) - _call(losses.nt_xent, z1, z2, temperature=0.5 - eps)) / (
    2 * eps
  )
  np.testing.assert_allclose(g, fd, rtol=1e-2)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(z2=jnp.ones((8, 5))), "same shape"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(queue=jnp.ones((8, 5))), "queue"),
  ],
)
def test_nt_xent_rejects_bad_input(kwargs, match):
  args = dict(z1=jnp.ones((8, 4)), z2=jnp.ones((8, 4)))
  args.update(kwargs)
  z1, z2 = args.pop("z1"), args.pop("z2")
  with pytest.raises(ValueError, match=match):
    jax.jit(lambda a, b: losses.nt_xent(a, b, **args))(z1, z2)


def _numpy_scores(views, temperature):
  """Cosine logits of all V*N embeddings (view-major) in float64, self excluded."""
  z = np.concatenate(list(np.asarray(views, np.float64)))
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  s = z @ z.T / temperature
  np.fill_diagonal(s, -np.inf)
  return s


def _log_softmax_rows(s):
  m = np.max(s, axis=1, keepdims=True)
  return s - (m + np.log(np.sum(np.exp(s - m), axis=1, keepdims=True)))


def _numpy_supcon(views, labels, temperature):
  """Khosla et al. eq. 2 (L_out), mean over anchors."""
  v = len(views)
  y = np.tile(np.asarray(labels), v)
  logp = _log_softmax_rows(_numpy_scores(views, temperature))
  pos = (y[:, None] == y[None, :]) & ~np.eye(len(y), dtype=bool)
  return np.mean([-np.mean(logp[i, pos[i]]) for i in range(len(y))])


def _numpy_mv_info_nce(views, temperature):
  """Koromilas et al. 2025: one term per sample over all view pairs."""
  v, n = len(views), views[0].shape[0]
  e = np.exp(_numpy_scores(views, temperature))
  sample = np.tile(np.arange(n), v)
  same = (sample[:, None] == sample[None, :]) & ~np.eye(v * n, dtype=bool)
  num = np.array([e[sample == i][:, :][same[sample == i]].sum() for i in range(n)])
  den = np.array([e[sample == i].sum() for i in range(n)])
  return np.mean(np.log(den) - np.log(num))


def test_dcl_excludes_the_positive_from_the_denominator():
  z1, z2 = _views(n=16)
  u1, u2 = (np.asarray(losses.l2_normalize(z), np.float64) for z in (z1, z2))
  s = np.concatenate([u1, u2]) @ np.concatenate([u1, u2]).T / 0.1
  n = 16
  pos = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
  neg = ~np.eye(2 * n, dtype=bool)
  neg[np.arange(2 * n), pos] = False
  want = np.mean([-s[i, pos[i]] + np.log(np.sum(np.exp(s[i, neg[i]]))) for i in range(2 * n)])
  np.testing.assert_allclose(_call(losses.dcl, z1, z2, temperature=0.1), want, rtol=1e-5)


@pytest.mark.parametrize("num_views", [2, 4])
def test_mv_info_nce_matches_paper_equation(num_views):
  views = jax.random.normal(jax.random.key(0), (num_views, 12, 8))
  got = _call(losses.mv_info_nce, views, temperature=0.3)
  np.testing.assert_allclose(got, _numpy_mv_info_nce(np.asarray(views), 0.3), rtol=1e-5)


@pytest.mark.parametrize("num_views", [1, 2, 3])
def test_supcon_matches_paper_equation(num_views):
  views = jax.random.normal(jax.random.key(0), (num_views, 20, 8))
  labels = jnp.arange(20) % 4  # every class has 5 members, so every anchor has positives
  got = _call(losses.supcon, views, labels, temperature=0.1)
  np.testing.assert_allclose(got, _numpy_supcon(np.asarray(views), np.asarray(labels), 0.1), rtol=1e-5)


def test_supcon_with_unique_labels_and_two_views_is_nt_xent():
  z1, z2 = _views(n=16)
  got = _call(losses.supcon, jnp.stack([z1, z2]), jnp.arange(16), temperature=0.5)
  np.testing.assert_allclose(got, _call(losses.nt_xent, z1, z2, temperature=0.5), rtol=1e-5)


def test_soft_supcon_with_one_hot_labels_equals_hard_supcon():
  views = jax.random.normal(jax.random.key(0), (2, 20, 8))
  labels = jax.random.randint(jax.random.key(1), (20,), 0, 3)
  hard = _call(losses.supcon, views, labels)
  soft = _call(losses.supcon, views, jax.nn.one_hot(labels, 3))
  np.testing.assert_allclose(soft, hard, rtol=1e-5)


def test_soft_supcon_targets_follow_label_overlap():
  """Anchor 0's only other sample shares half its labels: target mass splits 1 : cos = 1/sqrt(2)."""
  views = jax.random.normal(jax.random.key(0), (2, 2, 4))
  labels = jnp.array([[1.0, 1.0], [1.0, 0.0]])
  s = _numpy_scores(np.asarray(views), 0.1)
  logp = _log_softmax_rows(s)
  w = 1 / np.sqrt(2)
  targets = np.array([[0, w, 1, w], [w, 0, w, 1], [1, w, 0, w], [w, 1, w, 0]])
  targets /= targets.sum(1, keepdims=True)
  want = np.mean(-np.sum(targets * np.where(targets > 0, logp, 0), axis=1))
  np.testing.assert_allclose(_call(losses.supcon, views, labels, temperature=0.1), want, rtol=1e-5)


def test_mochi_without_synthetic_negatives_is_moco():
  z1, z2 = _views()
  queue = jax.random.normal(jax.random.key(3), (64, 16))
  got = _call(
    losses.mochi, z1, z2, queue, jax.random.key(0), temperature=0.2, num_hard=8, num_mixed=0, num_query_mixed=0
  )
  np.testing.assert_allclose(got, _call(losses.nt_xent, z1, z2, temperature=0.2, queue=queue), rtol=1e-5)


def test_mochi_mixes_the_hardest_negatives():
  """With num_hard=1 every mixed negative is the hardest queue entry itself."""
  z1, z2 = _views(n=4)
  queue = jax.random.normal(jax.random.key(3), (10, 16))
  got = _call(
    losses.mochi, z1, z2, queue, jax.random.key(0), temperature=0.2, num_hard=1, num_mixed=3, num_query_mixed=0
  )
  u1, u2, uq = (np.asarray(losses.l2_normalize(a), np.float64) for a in (z1, z2, queue))
  sims = u1 @ uq.T
  logits = (
    np.concatenate([np.sum(u1 * u2, 1, keepdims=True), sims, np.repeat(sims.max(1, keepdims=True), 3, 1)], 1) / 0.2
  )
  want = np.mean(-_log_softmax_rows(logits)[:, 0])
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_mochi_query_mixes_are_harder_than_the_queue():
  z1, z2 = _views(n=4)
  queue = jax.random.normal(jax.random.key(3), (10, 16))
  easy = _call(losses.mochi, z1, z2, queue, jax.random.key(0), num_hard=4, num_mixed=0, num_query_mixed=0)
  hard = _call(losses.mochi, z1, z2, queue, jax.random.key(0), num_hard=4, num_mixed=0, num_query_mixed=8)
  assert hard > easy


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda v: losses.supcon(v, jnp.zeros((5,), jnp.int32)), "labels"),
    (lambda v: losses.supcon(v[0], jnp.zeros((8,), jnp.int32)), "3 dims"),
    (lambda v: losses.mv_info_nce(v[:1]), "2 views"),
    (lambda v: losses.dclw(v[0], v[1], sigma=0.0), "weight_sigma"),
    (lambda v: losses.mochi(v[0], v[1], v[0], jax.random.key(0), num_hard=9), "num_hard"),
  ],
)
def test_infonce_family_rejects_bad_input(call, match):
  with pytest.raises(ValueError, match=match):
    call(jnp.ones((2, 8, 4)))
