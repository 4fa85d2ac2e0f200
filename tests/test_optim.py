"""train/optim.py: each optimizer against its paper's update rule (NumPy, float64) for a few steps; the learning-rate
schedules at their boundaries; the weight-decay mask on the parameters of every registered model."""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import models
from configs import default
from train import optim

LR, WD, STEPS = 0.1, 0.05, 3


def _optimizer_config(name: str, **extra) -> ml_collections.ConfigDict:
  """A constant learning rate LR (no warm-up), weight decay WD, the recipes' default betas and momentum."""
  config = default.optimizer()
  config.update(dict(name=name, base_lr=LR, weight_decay=WD, warmup_steps=0, schedule="constant", **extra))
  return config


# A layer's kernel and bias, a norm's scale, a positional embedding and a logit scale: decayed are the kernel only.
_PARAMS = {
  "dense": {"kernel": (3, 4), "bias": (4,)},
  "ln": {"scale": (4,)},
  "pos_embed": (5, 4),
  "logit_scale": (),
}
_DECAYED = {"dense": {"kernel": True, "bias": False}, "ln": {"scale": False}, "pos_embed": False, "logit_scale": False}


def _problem(seed: int = 0):
  """Parameters (shapes _PARAMS) and STEPS gradients of the same shapes, float64 values of order 1."""
  rng = np.random.default_rng(seed)
  draw = lambda shape: rng.normal(size=shape)
  is_shape = lambda x: isinstance(x, tuple)
  params = jax.tree.map(draw, _PARAMS, is_leaf=is_shape)
  grads = [jax.tree.map(draw, _PARAMS, is_leaf=is_shape) for _ in range(STEPS)]
  return params, grads


def _sgd(p, g, state, wd, t, momentum=0.9):
  """SGD with momentum and L2 decay added to the gradient: v <- mu v + g + wd p; p <- p - lr v."""
  v = momentum * state.get("v", 0.0) + g + wd * p
  return p - LR * v, {"v": v}


def _lars(p, g, state, wd, t, momentum=0.9, eta=0.001):
  """LARS (You et al. 2017) as SimCLR / optax: u = g + wd p; on weights u <- eta ||p|| / ||u|| u (1 if a norm is 0);
  v <- mu v + lr u; p <- p - v. Non-weights get neither decay nor the trust ratio."""
  u = g + wd * p
  if wd:  # the weights: also scaled by the trust ratio
    p_norm, u_norm = np.linalg.norm(p), np.linalg.norm(u)
    u = u * (eta * p_norm / u_norm if p_norm > 0 and u_norm > 0 else 1.0)
  v = momentum * state.get("v", 0.0) + LR * u
  return p - v, {"v": v}


def _adamw(p, g, state, wd, t, b1=0.9, b2=0.999, eps=1e-8):
  """AdamW (Loshchilov & Hutter 2019): Adam's bias-corrected step plus decoupled decay, both times lr."""
  m = b1 * state.get("m", 0.0) + (1 - b1) * g
  v = b2 * state.get("v", 0.0) + (1 - b2) * g**2
  m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
  return p - LR * (m_hat / (np.sqrt(v_hat) + eps) + wd * p), {"m": m, "v": v}


def _lion(p, g, state, wd, t, b1=0.9, b2=0.99):
  """Lion (Chen et al. 2023): p <- p - lr (sign(b1 m + (1 - b1) g) + wd p); m <- b2 m + (1 - b2) g."""
  m = state.get("m", 0.0)
  update = np.sign(b1 * m + (1 - b1) * g) + wd * p
  return p - LR * update, {"m": b2 * m + (1 - b2) * g}


def _reference(rule, params, grads, clip_norm: float = 0.0, decayed=_DECAYED):
  """STEPS updates of every leaf by `rule` in float64; clip_norm > 0 first scales each step's gradients to at most
  that global norm (Pascanu et al. 2013). `decayed`: which leaves of `params` get weight decay."""
  params = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  leaves, treedef = jax.tree.flatten(params)
  decayed = jax.tree.leaves(decayed)
  states = [{} for _ in leaves]
  for t, step_grads in enumerate(grads, start=1):
    g_leaves = [np.asarray(g, np.float64) for g in jax.tree.leaves(step_grads)]
    if clip_norm:
      norm = math.sqrt(sum(float(np.sum(g**2)) for g in g_leaves))
      g_leaves = [g * min(1.0, clip_norm / norm) for g in g_leaves]
    for i, (p, g) in enumerate(zip(leaves, g_leaves)):
      leaves[i], states[i] = rule(p, g, states[i], WD if decayed[i] else 0.0, t)
  return jax.tree.unflatten(treedef, leaves)


@pytest.mark.parametrize(
  "name, rule, clip_norm",
  [("sgd", _sgd, 0.0), ("lars", _lars, 0.0), ("adamw", _adamw, 0.0), ("adamw", _adamw, 1.0), ("lion", _lion, 0.0)],
)
def test_optimizer_follows_its_papers_update_rule(name, rule, clip_norm):
  params, grads = _problem()
  # float64 throughout: in float32, Adam's 1 - 0.999**t cancels catastrophically (~1e-5 relative off the formula).
  with jax.enable_x64(True):
    tx, _ = optim.make_optimizer(_optimizer_config(name, grad_clip_norm=clip_norm), STEPS, batch_size=256)
    state, ours = tx.init(params), params
    for g in grads:
      updates, state = tx.update(g, state, ours)
      ours = jax.tree.map(lambda p, u: p + u, ours, updates)
  expected = _reference(rule, params, grads, clip_norm)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-9), ours, expected)


def test_frozen_params_get_no_update_nor_state_and_the_others_train_as_if_alone():
  params, grads = _problem()
  frozen = ("pos_embed", "ln")
  with jax.enable_x64(True):
    config = _optimizer_config("adamw", grad_clip_norm=1.0, freeze="pos_embed|ln/.*")
    tx, _ = optim.make_optimizer(config, STEPS, batch_size=256)
    state, ours = tx.init(params), params
    for g in grads:
      updates, state = tx.update(g, state, ours)
      ours = jax.tree.map(lambda p, u: p + u, ours, updates)
    config.freeze = ""
    unfrozen_state = jax.eval_shape(optim.make_optimizer(config, STEPS, batch_size=256)[0].init, params)
  for name in frozen:
    jax.tree.map(np.testing.assert_array_equal, ours[name], params[name])
  # The others follow AdamW with the gradient norm clipped over them alone: as if the frozen leaves did not exist.
  alone = lambda tree: {k: v for k, v in tree.items() if k not in frozen}
  expected = _reference(_adamw, alone(params), [alone(g) for g in grads], 1.0, decayed=alone(_DECAYED))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-9), alone(ours), expected)
  size = lambda tree: sum(np.size(x) for x in jax.tree.leaves(tree))
  assert size(state) == size(unfrozen_state) - 2 * size([params[name] for name in frozen])  # no Adam moments


def test_a_freeze_regex_that_matches_no_param_is_an_error():
  tx, _ = optim.make_optimizer(_optimizer_config("adamw", freeze="image_tower/.*"), STEPS, batch_size=256)
  with pytest.raises(ValueError, match="freeze='image_tower/.\\*' matches no parameter"):
    tx.init(_problem()[0])


def _schedule(name: str, *, warmup: int = 10, total: int = 110, end_lr_ratio: float = 0.1, batch_size=256, **extra):
  config = default.optimizer()
  config.update(dict(base_lr=0.4, warmup_steps=warmup, schedule=name, end_lr_ratio=end_lr_ratio, **extra))
  schedule = optim.learning_rate_schedule(config, total, batch_size)
  return lambda step: float(schedule(step))


@pytest.mark.parametrize(
  "name, middle, end",
  [("cosine", 0.4 * (1 + 0.1) / 2, 0.04), ("linear", (0.4 + 0.04) / 2, 0.04), ("constant", 0.4, 0.4)],
)
def test_schedule_warms_up_linearly_then_decays_to_its_end_value(name, middle, end):
  lr = _schedule(name)
  # Warm-up 0 -> peak over 10 steps, then the decay over the remaining 100 (middle at step 60), flat after the end.
  for step, expected in [(0, 0.0), (5, 0.2), (10, 0.4), (60, middle), (110, end), (200, end)]:
    assert lr(step) == pytest.approx(expected, rel=1e-6, abs=1e-9), (name, step)


def test_schedule_peak_scales_with_the_batch_and_warmup_is_clamped_to_the_run():
  assert _schedule("constant", scale_by_batch=True, batch_size=1024)(10) == pytest.approx(1.6)  # 0.4 x 1024 / 256
  lr = _schedule("linear", warmup=500, total=100, end_lr_ratio=0.0)  # warm-up longer than the run: ends at step 99
  assert lr(99) == pytest.approx(0.4) and lr(100) == pytest.approx(0.0, abs=1e-9)
  with pytest.raises(ValueError, match="Unknown schedule 'step'"):
    _schedule("step")


def test_decay_mask_of_the_optimizers_problem():
  assert optim.decay_mask(_problem()[0]) == _DECAYED


# Every registered model, tiny; a new model must be added here (the test below checks the list is complete).
_VIT = dict(patch_size=4, width=8, depth=1, num_heads=2)
_TEXT = dict(vocab_size=50, context_length=8, width=8, depth=1, num_heads=2)
_IMAGE, _TOKENS = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8), jnp.int32)
_TINY_MODELS = {
  "bert": (dict(vocab_size=50, max_positions=8, width=8, depth=1, num_heads=2, mlp_dim=16), (_TOKENS,)),
  "caption_decoder": (_TEXT, (_TOKENS, jnp.zeros((1, 4, 8)))),
  "projection_head": (dict(hidden_dim=8, out_dim=4), (jnp.zeros((2, 6)),)),
  "prediction_head": (dict(hidden_dim=8, out_dim=4), (jnp.zeros((2, 6)),)),
  "prototypes": (dict(num_prototypes=5), (jnp.zeros((1, 4)),)),
  "mlp_encoder": (dict(hidden_dim=8, out_dim=4, use_bn=True), (jnp.zeros((2, 6)),)),
  "text_transformer": (_TEXT, (_TOKENS,)),
  "two_tower": (
    dict(image_kwargs=_VIT, text_kwargs=_TEXT, embed_dim=4, logit_bias_init=-10.0),
    (_IMAGE, _TOKENS),
  ),
  **{name: (dict(width=4), (_IMAGE,)) for name in ("resnet", "resnet18", "resnet50", "resnet18_cifar")},
  **{name: (dict(width=4), (_IMAGE,)) for name in ("resnet50_cifar", "resnet_tiny_cifar")},
  **{name: (dict(_VIT, pool="cls"), (_IMAGE,)) for name in ("vit", "vit_tiny", "vit_s16", "vit_b16")},
  "gin": (dict(width=4, depth=2), (jnp.zeros((1, 5, 3)), jnp.zeros((1, 5, 5)), jnp.ones((1, 5), bool))),
  "temporal_conv": (dict(width=4, out_dim=4, depth=2), (jnp.zeros((1, 16, 2)),)),
  "pixel_propagation": (dict(), (jnp.zeros((1, 4, 8)),)),
}
# Not weight matrices, by name: biases, positional embeddings and class tokens, temperatures, logit scales / biases.
_NOT_WEIGHTS = re.compile(r"^bias$|(^|_)(pos|position|positional|cls)(_|$)|temperature|^logit_(scale|bias)$")


def _params_and_norm_modules(name: str):
  """Shapes of the model's params (nothing computed) and the paths of its normalisation modules, by module type."""
  kwargs, inputs = _TINY_MODELS[name]
  model, norms = models.get(name)(**kwargs), set()

  def record_norms(next_fun, args, kwargs, context):
    if "Norm" in type(context.module).__name__:  # LayerNorm, BatchNorm, GroupNorm, RMSNorm, ...
      norms.add(context.module.path)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record_norms):
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs, train=False))
  return variables["params"], norms


def test_every_registered_model_has_a_tiny_configuration_here():
  assert sorted(_TINY_MODELS) == models.names()


@pytest.mark.parametrize("name", sorted(_TINY_MODELS))
def test_no_weight_decay_on_norms_biases_positional_embeddings_or_logit_scales(name):
  params, norms = _params_and_norm_modules(name)
  mask = optim.decay_mask(params)
  wrong = []
  for (path, leaf), decayed in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(mask)):
    keys = tuple(str(k.key) for k in path)
    weight = keys[:-1] not in norms and not _NOT_WEIGHTS.search(keys[-1]) and leaf.ndim >= 2
    if decayed != weight:
      wrong.append(f"{'/'.join(keys)} {leaf.shape}: {'decayed' if decayed else 'not decayed'}")
  assert not wrong, f"{name}: {wrong}"
