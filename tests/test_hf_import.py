"""Hugging Face CLIPModel / SiglipModel checkpoints imported with models.hf_clip reproduce transformers exactly (no
torch here). Fixtures and reference outputs: tests/fixtures/make_hf_fixtures.py (tiny random-initialised models)."""

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import hf_clip

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
KINDS = ("clip", "siglip")
# Both sides compute in float32 on O(1) values with reductions of <= 80 terms: differences are ~1e-7 (logits: times
# a logit scale <= 14.3); 1e-5 leaves room for other BLAS kernels, and a layout error shows as O(0.1).
ATOL = 1e-5


def model_dir(kind: str) -> str:
  return os.path.join(FIXTURES, f"hf_{kind}_tiny")


@pytest.fixture(scope="module", params=KINDS)
def imported(request):
  """(kind, kwargs, params, reference npz, outputs of our model on the reference inputs)."""
  kind = request.param
  kwargs, params = hf_clip.load(model_dir(kind))
  ref = np.load(os.path.join(FIXTURES, f"hf_{kind}_reference.npz"))
  model = models.get("two_tower")(**kwargs)

  def forward(params, pixels, ids):
    # One graph per tower; normalising and the logits as TwoTower.__call__ does (tested in test_models.py).
    image = model.apply({"params": params}, pixels, train=False, normalize=False, method="encode_image")
    text = model.apply({"params": params}, ids, train=False, normalize=False, method="encode_text")
    normalize = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    logits = jnp.exp(params["logit_scale"]) * normalize(image) @ normalize(text).T + params.get("logit_bias", 0.0)
    return dict(image_raw=image, text_raw=text, image=normalize(image), text=normalize(text), logits=logits)

  out = jax.jit(forward)(params, ref["pixels"], ref["input_ids"])
  return kind, kwargs, params, ref, jax.tree.map(np.asarray, out)


def test_imported_embeddings_and_logits_equal_transformers(imported):
  kind, _, _, ref, out = imported
  np.testing.assert_allclose(out["image"], ref["image_embeds"], atol=ATOL, err_msg=kind)
  np.testing.assert_allclose(out["text"], ref["text_embeds"], atol=ATOL, err_msg=kind)
  np.testing.assert_allclose(out["image_raw"], ref["image_features"], atol=ATOL, err_msg=kind)
  np.testing.assert_allclose(out["text_raw"], ref["text_features"], atol=ATOL, err_msg=kind)
  np.testing.assert_allclose(out["logits"], ref["logits_per_image"], atol=ATOL, err_msg=kind)


def test_config_decides_the_layout(imported):
  kind, kwargs, params, _, _ = imported
  image, text = kwargs["image_kwargs"], kwargs["text_kwargs"]
  if kind == "clip":
    assert (image["pool"], image["ln_pre"], image["patch_bias"], image["activation"]) == (
      "cls",
      True,
      False,
      "quick_gelu",
    )
    assert (text["causal"], text["pool"], text["eos_id"]) == (True, "first_eos", 573)
    assert kwargs["logit_bias_init"] is None and "logit_bias" not in params
  else:
    assert (image["pool"], image["patch_bias"], kwargs["image_projection"]) == ("map", True, "none")
    assert (text["causal"], text["pool"], text["mask_padding"], kwargs["text_projection"]) == (
      False,
      "last",
      False,
      "affine",
    )
    assert kwargs["logit_bias_init"] == -10.0 and kwargs["logit_scale_init"] == pytest.approx(np.log(10.0))


def test_legacy_clip_eos_id_pools_at_the_largest_token_id():
  _, params = hf_clip.load(model_dir("clip"))
  ref = np.load(os.path.join(FIXTURES, "hf_clip_reference.npz"))
  config = hf_clip.read_config(model_dir("clip"))
  config["text_config"]["eos_token_id"] = hf_clip.LEGACY_EOS_ID
  kwargs = hf_clip.two_tower_kwargs(config)
  assert kwargs["text_kwargs"]["pool"] == "argmax"
  model = models.get("two_tower")(**{**kwargs, "logit_scale_init": 0.0})
  encode = jax.jit(lambda p, ids: model.apply({"params": p}, ids, train=False, method="encode_text"))
  # The reference tokenizer pads with EOS, its largest id: the first maximum is the first EOS, as transformers finds.
  text = encode(params, ref["input_ids"])
  np.testing.assert_allclose(text, ref["text_embeds"], atol=ATOL)


def test_a_checkpoint_that_does_not_fit_names_every_offending_tensor():
  config = hf_clip.read_config(model_dir("siglip"))
  tensors = hf_clip.read_tensors(model_dir("siglip"))
  del tensors["text_model.final_layer_norm.bias"]
  tensors["vision_model.head.probe"] = np.zeros((1, 2, 32), np.float32)
  tensors["vision_model.extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError) as error:
    hf_clip.params_from_tensors(tensors, hf_clip.two_tower_kwargs(config), 32, source="edited")
  message = str(error.value)
  assert "missing tensor text_model.final_layer_norm.bias" in message
  assert "vision_model.head.probe (for image_tower/map_head/probe (1, 1, 32)) has shape (1, 2, 32)" in message
  assert "unexpected tensor vision_model.extra.weight (3,)" in message


def test_not_a_clip_directory_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    hf_clip.load(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
  with pytest.raises(ValueError, match="not a CLIPModel or SiglipModel"):
    hf_clip.load(tmp_path)


@pytest.mark.parametrize("name", sorted(json.load(open(os.path.join(FIXTURES, "hf_layouts.json")))))
def test_released_layouts_give_transformers_tensor_names_and_shapes(name):
  """ViT-B/32, B/16, L/14 (QuickGELU), LAION H/14 (GELU), SigLIP B/16 and So400m: our params map onto exactly the
  tensors transformers builds for their config.json (shapes only: nothing is allocated)."""
  layout = json.load(open(os.path.join(FIXTURES, "hf_layouts.json")))[name]
  config = layout["config"]
  hf = hf_clip.hf_shapes(hf_clip.two_tower_kwargs(config), hf_clip.sub_configs(config)[1]["image_size"])
  lines = "\n".join(sorted(f"{k} {list(v)}" for k, v in hf.items()))
  assert (len(hf), sum(int(np.prod(s)) for s in hf.values())) == (layout["num_tensors"], layout["num_params"])
  assert hashlib.sha256(lines.encode()).hexdigest() == layout["sha256"]
