"""Contrastive and self-supervised losses: pure functions of local embeddings.

Every loss takes the local shard of its inputs and an optional `axis_name`; inside
`jax.shard_map` over that axis it uses negatives from all devices and returns the
global value (identical on every device), with gradients equal to the single-device ones.

Losses are looked up by name (`losses.get("nt_xent")`), and `combine` sums weighted
terms described by a config, for multi-task and hybrid objectives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax

from losses.dense import crop_pixel_distance, nearest_feature_match, pixel_contrast, pixpro
from losses.generative import token_cross_entropy
from losses.image_text import clip_softmax_loss, siglip_loss
from losses.infonce import dcl, dclw, l2_normalize, mochi, mv_info_nce, nt_xent, supcon
from losses.redundancy import barlow_twins, vicreg
from losses.regularizers import alignment, uniformity
from losses.swav import sinkhorn, swav
from losses.temperature import isogclr, isogclr_init_state, learnable_temperature

_REGISTRY: dict[str, Callable[..., jax.Array]] = {
  "nt_xent": nt_xent,
  "dcl": dcl,
  "dclw": dclw,
  "mv_info_nce": mv_info_nce,
  "supcon": supcon,
  "soft_supcon": supcon,  # multi-label targets: pass [n, C] labels
  "mochi": mochi,
  "clip_softmax_loss": clip_softmax_loss,
  "siglip_loss": siglip_loss,
  "barlow_twins": barlow_twins,
  "vicreg": vicreg,
  "swav": swav,
  "alignment": alignment,
  "uniformity": uniformity,
  "token_cross_entropy": token_cross_entropy,
  "isogclr": isogclr,
  "pixpro": pixpro,
  "pixel_contrast": pixel_contrast,
}


def names() -> list[str]:
  """Registered loss names."""
  return sorted(_REGISTRY)


def get(name: str) -> Callable[..., jax.Array]:
  """The loss function registered as `name`."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown loss {name!r}; known: {', '.join(names())}") from None


def combine(
  terms: Sequence[Mapping], outputs: Mapping[str, object], *, axis_name: str | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted sum of losses described by config entries, for multi-task / hybrid training.

  Args:
    terms: entries like `dict(name="clip_softmax_loss", weight=1.0,
      inputs=("image_emb", "text_emb", "logit_scale"), kwargs=dict(mode="chunked"))`;
      optional `key` names the term in the metrics (default: `name`; must be unique).
      A loss returning (value, aux), such as isogclr, contributes its value.
    outputs: the model outputs the `inputs` names refer to.
    axis_name: passed to every term.

  Returns (sum_k weight_k * loss_k, {key_k: loss_k, ..., "total": sum}).
  """
  if not terms:
    raise ValueError("combine needs at least one term")
  total = 0.0
  metrics: dict[str, jax.Array] = {}
  for term in terms:
    unknown = set(term) - {"name", "weight", "inputs", "kwargs", "key"}
    if unknown:
      raise ValueError(f"unknown fields {sorted(unknown)} in loss term {dict(term)}")
    key = term.get("key", term["name"])
    if key in metrics:
      raise ValueError(f"two loss terms are named {key!r}; give one a distinct `key`")
    missing = [k for k in term["inputs"] if k not in outputs]
    if missing:
      raise ValueError(f"loss term {key!r} needs outputs {missing}; have {sorted(outputs)}")
    value = get(term["name"])(
      *(outputs[k] for k in term["inputs"]), **dict(term.get("kwargs", {})), axis_name=axis_name
    )
    if isinstance(value, tuple):
      value = value[0]
    metrics[key] = value
    total = total + term.get("weight", 1.0) * value
  metrics["total"] = total
  return total, metrics


__all__ = [
  "alignment",
  "barlow_twins",
  "clip_softmax_loss",
  "combine",
  "crop_pixel_distance",
  "dcl",
  "dclw",
  "get",
  "isogclr",
  "isogclr_init_state",
  "l2_normalize",
  "learnable_temperature",
  "mochi",
  "mv_info_nce",
  "names",
  "nearest_feature_match",
  "nt_xent",
  "pixel_contrast",
  "pixpro",
  "siglip_loss",
  "sinkhorn",
  "supcon",
  "swav",
  "token_cross_entropy",
  "uniformity",
  "vicreg",
]
