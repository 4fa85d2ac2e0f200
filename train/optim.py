"""Optimizers and learning-rate schedules from config (optax)."""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

# Parameters that are not weight matrices get no weight decay and no LARS trust ratio (SimCLR, big_vision and timm
# conventions): every leaf of rank <= 1 (norm scales and offsets, temperatures, logit scales and biases, learnt
# per-feature scales) and, whatever their rank, biases (attention biases are [heads, head_dim]), positional
# embeddings and class tokens, named as
# models/ name them (tests/test_optim.py checks every registered model).
NO_DECAY_NAMES = ("bias", "pos_embed", "cls_token")


def learning_rate_schedule(config, total_steps: int, batch_size: int) -> optax.Schedule:
  """Linear warm-up to the peak then `cosine`, `linear` or `constant` decay.

  Peak = base_lr * batch_size / 256 when `scale_by_batch` (SimCLR's linear scaling rule), else base_lr.
  """
  peak = config.base_lr * (batch_size / 256.0 if config.scale_by_batch else 1.0)
  warmup = min(int(config.warmup_steps), max(total_steps - 1, 0))
  decay_steps = max(total_steps - warmup, 1)
  decays = {
    "cosine": lambda: optax.cosine_decay_schedule(peak, decay_steps, alpha=config.end_lr_ratio),
    "linear": lambda: optax.linear_schedule(peak, peak * config.end_lr_ratio, decay_steps),
    "constant": lambda: optax.constant_schedule(peak),
  }
  if config.schedule not in decays:
    raise ValueError(f"Unknown schedule {config.schedule!r}; choose one of {sorted(decays)}.")
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decays[config.schedule]()], [warmup])


def decay_mask(params):
  """True for the leaves weight decay (and LARS's trust ratio) applies to: weight matrices, kernels, embeddings."""

  def is_weight(path, leaf) -> bool:
    name = str(getattr(path[-1], "key", getattr(path[-1], "name", path[-1]))) if path else ""
    return jnp.ndim(leaf) > 1 and name not in NO_DECAY_NAMES

  return jax.tree_util.tree_map_with_path(is_weight, params)


def path_name(path) -> str:
  """A leaf's "/"-joined key path, e.g. "image_tower/encoder/block0/attn/query/kernel"."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def freeze_labels(pattern: str) -> Callable:
  """optax.multi_transform labels: "frozen" for the leaves whose path_name fully matches `pattern`, else "trained";
  ValueError when it matches no leaf (a misspelt regex would otherwise freeze nothing, silently)."""
  regex = re.compile(pattern)

  def labels(params):
    tree = jax.tree_util.tree_map_with_path(
      lambda path, _: "frozen" if regex.fullmatch(path_name(path)) else "trained", params
    )
    if "frozen" not in jax.tree.leaves(tree):
      names = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
      raise ValueError(
        f"config.optimizer.freeze={pattern!r} matches no parameter (regex, full match of names such as "
        f"{names[0]!r}, {names[-1]!r})."
      )
    return tree

  return labels


def make_optimizer(config, total_steps: int, batch_size: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optax chain named by `config.name`: sgd (momentum), lars, adamw or lion, with clipping and wd mask;
  the leaves matching the regex `config.freeze` get zero updates and no optimizer state."""
  lr = learning_rate_schedule(config, total_steps, batch_size)
  wd = config.weight_decay
  name = config.name
  if name == "sgd":
    tx = optax.chain(
      optax.add_decayed_weights(wd, mask=decay_mask),
      optax.sgd(lr, momentum=config.momentum, nesterov=config.nesterov),
    )
  elif name == "lars":
    tx = optax.lars(
      lr,
      weight_decay=wd,
      weight_decay_mask=decay_mask,
      trust_ratio_mask=decay_mask,
      momentum=config.momentum,
    )
  elif name == "adamw":
    tx = optax.adamw(lr, b1=config.b1, b2=0.999 if config.b2 is None else config.b2, weight_decay=wd, mask=decay_mask)
  elif name == "lion":
    tx = optax.lion(lr, b1=config.b1, b2=0.99 if config.b2 is None else config.b2, weight_decay=wd, mask=decay_mask)
  else:
    raise ValueError(f"Unknown optimizer {name!r}; choose one of ['adamw', 'lars', 'lion', 'sgd'].")
  clip = config.grad_clip_norm
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  if config.freeze:
    # Outermost, so frozen gradients count neither in clipping nor in the optimizer state: the inner chain sees
    # (and keeps moments for) the trained leaves only; frozen ones get exact zero updates.
    tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, freeze_labels(config.freeze))
  return tx, lr
