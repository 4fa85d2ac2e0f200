"""CLIP, SigLIP and LiT: an image tower and a text tower aligned by a contrastive loss over the global batch of pairs.

- CLIP (Radford et al. 2021): config.loss.name = "clip_softmax_loss", learnable temperature (logit_scale).
- SigLIP (Zhai et al. 2023): config.loss.name = "siglip_loss", learnable temperature and bias (model.logit_bias_init).
- LiT (Zhai et al. 2022, "locked-image tuning"): config.model.lock_image = True; the image tower is loaded from the
  run in config.model.image_checkpoint (the params subtree config.model.image_checkpoint_key, e.g. "backbone" of a
  SimCLR run), or is the one of a whole pretrained model (below), and kept frozen. Locked towers live in
  model_state["locked"], not in params, so the optimizer never sees them (no update, no weight decay, no optimizer
  state, no gradient computed) and they are checkpointed with the state; the projections and the unlocked tower are
  trained.
- A pretrained text tower: config.pretrained = dict(kind="bert", path=<Hugging Face directory or "minilm">,
  subtree="text_tower") with config.model.text.name = "bert" loads its weights at init; config.model.lock_text = True
  also freezes it (run in inference mode, only the text projection trains), else it is fine-tuned.
- A whole pretrained model: config.pretrained.kind = "clip_hf" / "siglip_hf" with the path of a Hugging Face
  CLIPModel / SiglipModel directory (methods/pretrained.py fills config.model from its config.json); every param
  starts from the checkpoint; lock_image / lock_text lock its towers.
Part of a tower can be frozen instead by a regex on param names, config.optimizer.freeze (train/optim.py).
config.loss.mode picks how the N x N logits are covered: dense | chunked | ring (same value and gradients).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

import checkpointing
import models
from methods import pretrained
from methods.base import Method, loss_from_config, model_spec, normalize_images, on_mesh


def two_tower(model_config):
  """The TwoTower module of config.model (configs/default.py `two_tower_model`): image / text encoders by registry
  name with the run's dtype and remat, projections to embed_dim, logit scale (and bias for SigLIP)."""
  image = model_spec(model_config.image, model_config)
  text = model_spec(model_config.text, model_config)
  return models.build(
    dict(
      name="two_tower",
      image_encoder=image.pop("name"),
      image_kwargs=image,
      text_encoder=text.pop("name"),
      text_kwargs=text,
      embed_dim=model_config.embed_dim,
      image_projection=model_config.image_projection,
      text_projection=model_config.text_projection,
      logit_scale_init=model_config.logit_scale_init,
      logit_bias_init=model_config.logit_bias_init,
      dtype=model_config.dtype,
    )
  )


def model_variables(params, model_state) -> dict:
  """Flax variables: trained params plus any locked (frozen) subtrees kept in model_state["locked"]."""
  locked = model_state.get("locked", {})
  return {"params": {**params, **locked}, **{k: v for k, v in model_state.items() if k != "locked"}}


def _check_same_shapes(name: str, loaded, expected) -> None:
  shapes = lambda tree: jax.tree.map(lambda x: tuple(np.shape(x)), tree)
  if shapes(loaded) != shapes(expected):
    raise ValueError(
      f"LiT: the checkpointed {name} does not match config.model.image: got {shapes(loaded)}, "
      f"expected {shapes(expected)}."
    )


def with_hard_negatives(batch: dict) -> tuple[jax.Array, jax.Array]:
  """(images, captions) of a batch; rows that carry a hard negative ("image_b", "caption_b": e.g. the shapes scene with
  another shape) give two pairs each, adjacent, so both stay on the row's device: [B, ...] -> [2B, ...]."""
  if "image_b" not in batch:
    return batch["image"], batch["caption"]
  interleave = lambda a, b: jnp.stack([a, b], axis=1).reshape((-1,) + a.shape[1:])
  return interleave(batch["image"], batch["image_b"]), interleave(batch["caption"], batch["caption_b"])


def build(config, mesh: Mesh) -> Method:
  model = two_tower(config.model)
  mean, std = tuple(config.data.mean), tuple(config.data.std)
  lock_image, lock_text = config.model.lock_image, config.model.lock_text
  locked_towers = [name for name, lock in (("image_tower", lock_image), ("text_tower", lock_text)) if lock]
  if lock_text and not pretrained.has_pretrained(config):
    raise ValueError("model.lock_text=True freezes a pretrained text tower: set config.pretrained.path.")
  image_checkpoint = config.model.image_checkpoint
  if lock_image and not (image_checkpoint or pretrained.gives_whole_model(config)):
    raise ValueError(
      "model.lock_image=True freezes a pretrained image tower: set config.model.image_checkpoint (a run) or "
      "config.pretrained (kind clip_hf / siglip_hf and path)."
    )
  max_scale = config.model.max_logit_scale
  contrastive, hyper = loss_from_config(config.loss)
  sigmoid = config.loss.name == "siglip_loss"
  if sigmoid and config.model.logit_bias_init is None:
    raise ValueError("siglip_loss needs a learnable bias: set config.model.logit_bias_init (SigLIP uses -10).")
  image_tower = (
    checkpointing.load_tower(image_checkpoint, config.model.image_checkpoint_key)
    if lock_image and image_checkpoint
    else None
  )

  def init(rng, batch):
    variables = dict(
      model.init(rng, normalize_images(batch["image"][:2], mean, std), batch["caption"][:2], train=False)
    )
    params = pretrained.load_into(config.pretrained, dict(variables.pop("params")))
    if image_tower is not None:
      tower_params, tower_stats = image_tower
      _check_same_shapes("image tower params", tower_params, params["image_tower"])
      params["image_tower"] = jax.tree.map(jnp.asarray, tower_params)
      if "batch_stats" in variables:
        _check_same_shapes("image tower batch_stats", tower_stats, variables["batch_stats"]["image_tower"])
        variables["batch_stats"] = {**variables["batch_stats"], "image_tower": jax.tree.map(jnp.asarray, tower_stats)}
    if locked_towers:
      variables["locked"] = {name: params.pop(name) for name in locked_towers}
    return params, variables, {}

  def embeddings(params, model_state, batch, rng):
    """Normalised image and text embeddings [B, E] (train mode), updated model_state."""
    variables = model_variables(params, model_state)
    images, captions = with_hard_negatives(batch)
    images = normalize_images(images, mean, std)
    # A locked tower runs in inference mode; its params are in model_state, so only its projection gets gradients.
    if lock_image:
      image_emb = model.apply(variables, images, train=False, method="encode_image")
      new_state = model_state
    else:
      image_emb, updates = model.apply(
        variables,
        images,
        train=True,
        method="encode_image",
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.fold_in(rng, 0)},
      )
      new_state = {**model_state, **updates}
    text_emb = model.apply(
      variables, captions, train=not lock_text, method="encode_text", rngs={"dropout": jax.random.fold_in(rng, 1)}
    )
    return image_emb, text_emb, new_state

  def loss_fn(params, model_state, extra, batch, rng):
    image_emb, text_emb, new_state = embeddings(params, model_state, batch, rng)
    scale = jnp.minimum(jnp.exp(params["logit_scale"]), max_scale)
    scalars = {"logit_scale": scale, **({"logit_bias": params["logit_bias"]} if sigmoid else {})}
    # Scalars are closed over: replicated inputs of the sharded loss, their gradient summed over devices.
    value = on_mesh(functools.partial(contrastive, **scalars), mesh, num_inputs=2, **hyper)(image_emb, text_emb)
    return value, (new_state, extra, {"loss": value, **scalars})

  def embed_image(params, model_state, batch) -> jax.Array:
    images = normalize_images(batch["image"], mean, std)
    return model.apply(model_variables(params, model_state), images, train=False, method="encode_image")

  def embed_text(params, model_state, batch) -> jax.Array:
    return model.apply(model_variables(params, model_state), batch["text"], train=False, method="encode_text")

  return Method(init=init, loss_fn=loss_fn, predict_fns={"embed_image": embed_image, "embed_text": embed_text})
