"""Regularisers, generative term, temperatures (incl. iSogCLR), SwAV codes, redundancy
reduction checks, and the registry / combine helper."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import losses


def _call(fn, *args, **kwargs):
  """fn(*args, **kwargs) compiled once (eager dispatch compiles every op separately)."""
  return jax.jit(functools.partial(fn, **kwargs))(*args)


def _normal(seed, *shape):
  return jax.random.normal(jax.random.key(seed), shape)


def _unit64(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("alpha", [2.0, 1.0])
def test_alignment_matches_paper_equation(alpha):
  x, y = _normal(0, 16, 8), _normal(1, 16, 8)
  want = np.mean(np.linalg.norm(_unit64(x) - _unit64(y), axis=1) ** alpha)
  np.testing.assert_allclose(_call(losses.alignment, x, y, alpha=alpha), want, rtol=1e-5)


@pytest.mark.parametrize("t", [2.0, 0.5])
def test_uniformity_matches_paper_equation(t):
  x = _normal(0, 16, 8)
  u = _unit64(x)
  i, j = np.triu_indices(16, k=1)
  want = np.log(np.mean(np.exp(-t * np.sum((u[i] - u[j]) ** 2, axis=1))))
  np.testing.assert_allclose(_call(losses.uniformity, x, t=t), want, rtol=1e-5)


def test_regularisers_add_to_any_loss_through_combine():
  x, y = _normal(0, 16, 8), _normal(1, 16, 8)
  terms = [
    dict(name="nt_xent", inputs=("a", "b")),
    dict(name="alignment", weight=0.5, inputs=("a", "b")),
    dict(name="uniformity", key="uniformity_a", weight=0.25, inputs=("a",)),
  ]
  total, metrics = jax.jit(lambda a, b: losses.combine(terms, {"a": a, "b": b}))(x, y)
  want = losses.nt_xent(x, y) + 0.5 * losses.alignment(x, y) + 0.25 * losses.uniformity(x)
  np.testing.assert_allclose(total, want, rtol=1e-5)
  assert set(metrics) == {"nt_xent", "alignment", "uniformity_a", "total"}


def test_token_cross_entropy_averages_over_real_tokens_only():
  logits, targets = _normal(0, 3, 5, 7), jax.random.randint(jax.random.key(1), (3, 5), 0, 7)
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
  lg = np.asarray(logits, np.float64)
  logp = lg - np.log(np.sum(np.exp(lg), axis=-1, keepdims=True))
  nll = -np.take_along_axis(logp, np.asarray(targets)[..., None], axis=-1)[..., 0]
  want = np.sum(nll * np.asarray(mask)) / np.sum(mask)
  np.testing.assert_allclose(_call(losses.token_cross_entropy, logits, targets, mask), want, rtol=1e-5)
  garbage = logits.at[0, 3:].set(100.0)  # padding positions do not count
  np.testing.assert_allclose(_call(losses.token_cross_entropy, garbage, targets, mask), want, rtol=1e-5)


def test_token_cross_entropy_label_smoothing():
  logits, targets = _normal(0, 2, 4, 6), jax.random.randint(jax.random.key(1), (2, 4), 0, 6)
  lg = np.asarray(logits, np.float64)
  logp = lg - np.log(np.sum(np.exp(lg), axis=-1, keepdims=True))
  smooth = 0.9 * np.eye(6)[np.asarray(targets)] + 0.1 / 6
  want = np.mean(-np.sum(smooth * logp, axis=-1))
  np.testing.assert_allclose(_call(losses.token_cross_entropy, logits, targets, label_smoothing=0.1), want, rtol=1e-5)


def test_learnable_temperature_is_clipped_and_has_no_gradient_outside():
  assert np.isclose(losses.learnable_temperature(jnp.log(0.07)), 0.07)
  assert np.isclose(losses.learnable_temperature(jnp.log(1e-4)), 0.01)
  assert jax.grad(losses.learnable_temperature)(jnp.log(1e-4)) == 0.0
  assert np.isclose(jax.grad(losses.learnable_temperature)(jnp.log(0.07)), 0.07)
  with pytest.raises(ValueError, match="max_temperature"):
    losses.learnable_temperature(0.0, min_temperature=0.5, max_temperature=0.1)


def _numpy_isogclr(x, y, tau_x, tau_y, state, gamma, rho, eps=1e-14):
  """The authors' iSogCLR_TempNet_Loss.forward (one device), transcribed to NumPy float64."""
  x, y = _unit64(x), _unit64(y)
  sim = x @ y.T
  n = len(x)
  mask = 1.0 - np.eye(n)
  out, new = 0.0, {}
  for side, d, tau in (("x", sim - np.diag(sim)[:, None], tau_x), ("y", (sim - np.diag(sim)[None, :]).T, tau_y)):
    a = d / tau[:, None]
    b_old, s_old = state[f"b_{side}"], state[f"s_{side}"]
    b = np.maximum(b_old, a.max(1))
    e = np.exp(a - b[:, None]) * mask
    g = e.sum(1)
    s = np.where(s_old > 0, (1 - gamma) * s_old * np.exp(b_old - b) + gamma * g, g)
    w = e / np.maximum(s, eps)[:, None]
    temp_weight = np.log(s / (n - 1)) + b + rho - np.sum(w * a, 1)
    out += np.mean(np.sum(w * d, 1)) + np.mean(temp_weight * tau)
    new[f"s_{side}"], new[f"b_{side}"] = s, b
  return out, new, None


@pytest.mark.parametrize("warm", [False, True])
def test_isogclr_matches_reference_algorithm(warm):
  # float64 on both sides, so the comparison checks the algorithm, not float32 summation order (which differs by CPU).
  with jax.enable_x64(True):
    x, y = (jnp.asarray(_normal(i, 12, 8), jnp.float64) for i in (0, 1))
    tau_x, tau_y = jnp.linspace(0.02, 0.05, 12, dtype=jnp.float64), jnp.linspace(0.05, 0.01, 12, dtype=jnp.float64)
    state = {k: jnp.asarray(v, jnp.float64) for k, v in losses.isogclr_init_state(12).items()}
    if warm:
      state = {k: jnp.abs(jnp.asarray(_normal(i, 12), jnp.float64)) + 0.1 for i, k in enumerate(state)}
    loss, new_state = _call(losses.isogclr, x, y, tau_x, tau_y, state, gamma=0.8, rho=8.0)
    assert loss.dtype == jnp.float64
    want, want_state, _ = _numpy_isogclr(
      np.asarray(x),
      np.asarray(y),
      np.asarray(tau_x),
      np.asarray(tau_y),
      {k: np.asarray(v) for k, v in state.items()},
      0.8,
      8.0,
    )
  np.testing.assert_allclose(loss, want, rtol=1e-10)
  for k in want_state:
    np.testing.assert_allclose(new_state[k], want_state[k], rtol=1e-10, err_msg=k)


def test_isogclr_temperature_gradient_is_the_dro_weight():
  x, y = _normal(0, 12, 8), _normal(1, 12, 8)
  tau = jnp.full((12,), 0.05)
  state = losses.isogclr_init_state(12)
  grad = jax.jit(jax.grad(lambda t: losses.isogclr(x, y, t, tau, state)[0]))(tau)
  sim = _unit64(x) @ _unit64(y).T
  a = (sim - np.diag(sim)[:, None]) / 0.05
  off = ~np.eye(12, dtype=bool)
  # d/dtau [tau (log mean_j exp(a_ij) + rho)] with the estimates at their first-step values.
  lme = np.array([np.log(np.mean(np.exp(a[i, off[i]]))) for i in range(12)])
  w = np.where(off, np.exp(a - a.max(1, keepdims=True)), 0)
  w /= w.sum(1, keepdims=True)
  want = (lme + 8.0 - np.sum(w * a, 1)) / 12
  np.testing.assert_allclose(grad, want, rtol=1e-4)


def test_sinkhorn_codes_are_equipartitioned():
  codes = _call(losses.sinkhorn, jnp.tanh(_normal(0, 64, 8)), iterations=50)
  np.testing.assert_allclose(jnp.sum(codes, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(jnp.sum(codes, axis=0), 64 / 8, rtol=1e-3)


def test_sinkhorn_is_stable_for_large_scores():
  codes = _call(losses.sinkhorn, 50.0 * _normal(0, 16, 4))
  assert np.all(np.isfinite(codes))


def test_swav_codes_carry_no_gradient_and_low_res_crops_make_none():
  hi, lo = jnp.tanh(_normal(0, 2, 16, 6)), jnp.tanh(_normal(1, 1, 16, 6))
  # Only the low-res crop's predictions depend on lo: its gradient is q - softmax, not zero,
  # while changing lo cannot change any code.
  g_lo = jax.jit(jax.grad(lambda l: losses.swav(hi, l)))(lo)
  assert np.any(np.asarray(g_lo) != 0)
  a = _call(losses.swav, hi, lo)
  b = _call(losses.swav, hi, lo + 1.0)  # shifting scores leaves log_softmax unchanged
  np.testing.assert_allclose(a, b, rtol=1e-5)


def test_swav_rejects_bad_input():
  with pytest.raises(ValueError, match="two crops"):
    losses.swav([jnp.ones((4, 3))])
  with pytest.raises(ValueError, match="one array per high-resolution crop"):
    losses.swav([jnp.ones((4, 3))] * 2, queue=[jnp.ones((4, 3))])
  with pytest.raises(ValueError, match="must match"):
    losses.swav([jnp.ones((4, 3))] * 2, [jnp.ones((4, 5))])


def test_barlow_twins_is_zero_for_identical_decorrelated_views():
  z = jnp.asarray(np.linalg.qr(np.random.default_rng(0).standard_normal((64, 8)))[0] * 8.0)
  z = z - jnp.mean(z, axis=0)
  np.testing.assert_allclose(_call(losses.barlow_twins, z, z), 0.0, atol=1e-3)


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda: losses.barlow_twins(jnp.ones((4, 3)), jnp.ones((4, 2))), "same shape"),
    (lambda: losses.vicreg(jnp.ones((1, 3)), jnp.ones((1, 3))), "at least 2"),
    (lambda: losses.alignment(jnp.ones((4, 3)), jnp.ones((3, 3))), "same shape"),
    (lambda: losses.uniformity(jnp.ones((1, 3))), "at least 2"),
    (lambda: losses.token_cross_entropy(jnp.ones((2, 3, 4)), jnp.ones((2, 4), jnp.int32)), "targets"),
    (lambda: losses.token_cross_entropy(jnp.ones((2, 3, 4)), jnp.ones((2, 3), jnp.int32), jnp.ones((2, 4))), "mask"),
    (
      lambda: losses.isogclr(
        jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.ones(3), jnp.ones(4), losses.isogclr_init_state(4)
      ),
      "tau_x",
    ),
  ],
)
def test_losses_reject_bad_input(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_registry_finds_every_loss_by_name():
  assert losses.get("nt_xent") is losses.nt_xent
  assert losses.get("siglip_loss") is losses.siglip_loss
  for name in losses.names():
    assert callable(losses.get(name))
  with pytest.raises(ValueError, match="unknown loss 'ntxent'"):
    losses.get("ntxent")


def test_combine_reads_an_ml_collections_config():
  config = ml_collections.ConfigDict()
  config.terms = [
    dict(
      name="clip_softmax_loss", weight=1.0, inputs=("img", "txt", "scale"), kwargs=dict(mode="chunked", chunk_size=4)
    ),
    dict(name="token_cross_entropy", weight=2.0, inputs=("logits", "tokens", "mask")),
  ]
  out = {
    "img": losses.l2_normalize(_normal(0, 8, 4)),
    "txt": losses.l2_normalize(_normal(1, 8, 4)),
    "scale": 10.0,
    "logits": _normal(2, 8, 3, 5),
    "tokens": jnp.zeros((8, 3), jnp.int32),
    "mask": jnp.ones((8, 3)),
  }
  total, metrics = jax.jit(lambda o: losses.combine(config.terms, o))(out)
  np.testing.assert_allclose(total, metrics["clip_softmax_loss"] + 2.0 * metrics["token_cross_entropy"], rtol=1e-6)


@pytest.mark.parametrize(
  "terms, match",
  [
    ([], "at least one"),
    ([dict(name="nt_xent", inputs=("a", "c"))], "needs outputs"),
    ([dict(name="nt_xent", inputs=("a", "b"), wieght=2.0)], "unknown fields"),
    ([dict(name="nt_xent", inputs=("a", "b"))] * 2, "distinct"),
  ],
)
def test_combine_rejects_bad_config(terms, match):
  with pytest.raises(ValueError, match=match):
    losses.combine(terms, {"a": jnp.ones((4, 3)), "b": jnp.ones((4, 3))})
