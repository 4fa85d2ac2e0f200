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
from losses.sentence import debiased_info_nce, reference_pair_weights, shuffled_group_whitening, weighted_info_nce
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
  "weighted_info_nce": weighted_info_nce,
  "debiased_info_nce": debiased_info_nce,
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


# Losses that keep per-example state across steps: (*inputs, state, **kwargs) -> (value, new_state).
_STATE_INIT: dict[str, Callable[[int], dict]] = {"isogclr": isogclr_init_state}


def is_stateful(name: str) -> bool:
  """Whether loss `name` takes per-example state and returns (value, new_state)."""
  get(name)
  return name in _STATE_INIT


def initial_state(terms: Sequence[Mapping], num_examples: int) -> dict[str, dict]:
  """{term key: state table for `num_examples` rows} of the stateful terms of a `combine` config (may be empty).

  The table is per dataset example: a step gathers the rows of its batch's example ids, passes them to `combine`
  as `state`, and scatters the new rows back (iSogCLR's s, b moving averages).
  """
  return {
    term.get("key", term["name"]): _STATE_INIT[term["name"]](num_examples)
    for term in terms
    if is_stateful(term["name"])
  }


def with_learnable_temperature(
  loss: Callable[..., jax.Array], *, min_temperature: float = 0.01, max_temperature: float = 1.0
) -> Callable[..., jax.Array]:
  """`loss` with its `temperature` learned: fn(*args, log_temperature, **kw) = loss(*args, temperature=tau, **kw).

  tau = learnable_temperature(log_temperature, min_temperature, max_temperature): keep log_temperature as a scalar
  parameter (init log tau0, no weight decay) and pass it replicated; the gradient flows into it.
  """

  def fn(*args, log_temperature, **kwargs):
    tau = learnable_temperature(log_temperature, min_temperature=min_temperature, max_temperature=max_temperature)
    return loss(*args, temperature=tau, **kwargs)

  return fn


_TERM_FIELDS = {"name", "weight", "inputs", "kwargs", "key", "log_temperature", "temperature_range"}


def _term_loss(term: Mapping, outputs: Mapping[str, object]) -> Callable[..., object]:
  """The term's loss function, with its temperature taken from `outputs[term["log_temperature"]]` if it names one."""
  loss = get(term["name"])
  if term.get("log_temperature") is None:
    return loss
  lo, hi = term.get("temperature_range", (0.01, 1.0))
  log_tau = outputs[term["log_temperature"]]
  learned = with_learnable_temperature(loss, min_temperature=lo, max_temperature=hi)
  return lambda *args, **kwargs: learned(*args, log_temperature=log_tau, **kwargs)


def combine(
  terms: Sequence[Mapping],
  outputs: Mapping[str, object],
  *,
  axis_name: str | None = None,
  state: Mapping[str, object] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]] | tuple[jax.Array, dict[str, jax.Array], dict[str, object]]:
  """Weighted sum of losses described by config entries, for multi-task / hybrid training.

  Args:
    terms: entries like `dict(name="clip_softmax_loss", weight=1.0,
      inputs=("image_emb", "text_emb", "logit_scale"), kwargs=dict(mode="chunked"))`;
      optional `key` names the term in the metrics (default: `name`; must be unique);
      optional `log_temperature` names an output holding a learnable log-temperature, which becomes the loss's
      `temperature` through `learnable_temperature`, clipped to `temperature_range` (default (0.01, 1.0)).
    outputs: the model outputs the `inputs` names refer to.
    axis_name: passed to every term.
    state: {term key: the batch's rows of that term's state} for stateful terms (`is_stateful`: isogclr), passed
      to the loss after its inputs; `initial_state(terms, n)` makes the tables.

  Returns (sum_k weight_k * loss_k, {key_k: loss_k, ..., "total": sum}), and with `state` also
  {term key: new state rows} of the stateful terms. A stateful term without `state` is an error, not a silent drop.
  """
  if not terms:
    raise ValueError("combine needs at least one term")
  total = 0.0
  metrics: dict[str, jax.Array] = {}
  new_state: dict[str, object] = {}
  for term in terms:
    unknown = set(term) - _TERM_FIELDS
    if unknown:
      raise ValueError(f"unknown fields {sorted(unknown)} in loss term {dict(term)}")
    key = term.get("key", term["name"])
    if key in metrics:
      raise ValueError(f"two loss terms are named {key!r}; give one a distinct `key`")
    missing = [k for k in (*term["inputs"], term.get("log_temperature")) if k is not None and k not in outputs]
    if missing:
      raise ValueError(f"loss term {key!r} needs outputs {missing}; have {sorted(outputs)}")
    args = [outputs[k] for k in term["inputs"]]
    if is_stateful(term["name"]):
      if state is None or key not in state:
        raise ValueError(
          f"loss term {key!r} ({term['name']}) keeps per-example state: pass combine(..., state={{{key!r}: rows}}) "
          "with rows of losses.initial_state(terms, num_examples), and keep the new rows it returns"
        )
      args.append(state[key])
    value = _term_loss(term, outputs)(*args, **dict(term.get("kwargs", {})), axis_name=axis_name)
    if is_stateful(term["name"]):
      value, new_state[key] = value
    metrics[key] = value
    total = total + term.get("weight", 1.0) * value
  metrics["total"] = total
  return (total, metrics) if state is None else (total, metrics, new_state)


__all__ = [
  "alignment",
  "barlow_twins",
  "clip_softmax_loss",
  "combine",
  "crop_pixel_distance",
  "dcl",
  "dclw",
  "debiased_info_nce",
  "get",
  "initial_state",
  "is_stateful",
  "isogclr",
  "isogclr_init_state",
  "l2_normalize",
  "learnable_temperature",
  "mochi",
  "mv_info_nce",
  "names",
  "reference_pair_weights",
  "nearest_feature_match",
  "nt_xent",
  "pixel_contrast",
  "pixpro",
  "shuffled_group_whitening",
  "siglip_loss",
  "sinkhorn",
  "supcon",
  "swav",
  "token_cross_entropy",
  "uniformity",
  "vicreg",
  "weighted_info_nce",
  "with_learnable_temperature",
]
