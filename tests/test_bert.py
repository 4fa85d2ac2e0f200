"""models.bert + models.convert on a tiny random checkpoint in Hugging Face layout, against a NumPy BERT forward pass."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from safetensors.numpy import save_file

from models.convert import bert_kwargs, load_bert

CONFIG = dict(
  model_type="bert",
  hidden_act="gelu",
  position_embedding_type="absolute",
  vocab_size=20,
  max_position_embeddings=8,
  type_vocab_size=2,
  hidden_size=8,
  num_hidden_layers=2,
  num_attention_heads=2,
  intermediate_size=16,
  layer_norm_eps=1e-12,
  hidden_dropout_prob=0.1,
)
TOKENS = np.array([[101, 5, 7, 9, 102, 0], [101, 3, 102, 0, 0, 0]], np.int32) % 20


def hf_checkpoint(seed: int = 0) -> dict[str, np.ndarray]:
  """Random tensors named and shaped as transformers' BertModel saves them (Linear weights are [out, in])."""
  rng = np.random.default_rng(seed)
  d, m = CONFIG["hidden_size"], CONFIG["intermediate_size"]
  shapes = {
    "embeddings.word_embeddings.weight": (20, d),
    "embeddings.position_embeddings.weight": (8, d),
    "embeddings.token_type_embeddings.weight": (2, d),
    "embeddings.LayerNorm.weight": (d,),
    "embeddings.LayerNorm.bias": (d,),
    "pooler.dense.weight": (d, d),
    "pooler.dense.bias": (d,),
  }
  for i in range(CONFIG["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
      shapes |= {p + name + ".weight": (d, d), p + name + ".bias": (d,)}
    shapes |= {
      p + "intermediate.dense.weight": (m, d),
      p + "intermediate.dense.bias": (m,),
      p + "output.dense.weight": (d, m),
      p + "output.dense.bias": (d,),
    }
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      shapes |= {p + name + ".weight": (d,), p + name + ".bias": (d,)}
  tensors = {k: rng.normal(0, 0.5, v).astype(np.float32) for k, v in shapes.items()}
  tensors["embeddings.position_ids"] = np.arange(8, dtype=np.int64)[None]
  return tensors


def numpy_bert(t: dict[str, np.ndarray], tokens: np.ndarray) -> np.ndarray:
  """Mean-pooled last hidden states of BertModel (post-LN, erf GELU, pads masked) in float64 NumPy."""

  def ln(x, name):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + CONFIG["layer_norm_eps"]) * t[name + ".weight"] + t[name + ".bias"]

  def linear(x, name):
    return x @ t[name + ".weight"].T + t[name + ".bias"]

  b, length = tokens.shape
  h, mask = CONFIG["num_attention_heads"], tokens != 0
  x = (
    t["embeddings.word_embeddings.weight"][tokens]
    + t["embeddings.position_embeddings.weight"][:length]
    + t["embeddings.token_type_embeddings.weight"][0]
  ).astype(np.float64)
  x = ln(x, "embeddings.LayerNorm")
  for i in range(CONFIG["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    q, k, v = (linear(x, p + f"attention.self.{n}").reshape(b, length, h, -1) for n in ("query", "key", "value"))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    attn = scipy.special.softmax(np.where(mask[:, None, None, :], logits, -np.inf), axis=-1)
    x = ln(
      x + linear(np.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, length, -1), p + "attention.output.dense"),
      p + "attention.output.LayerNorm",
    )
    y = linear(x, p + "intermediate.dense")
    y = 0.5 * y * (1 + scipy.special.erf(y / np.sqrt(2)))
    x = ln(x + linear(y, p + "output.dense"), p + "output.LayerNorm")
  return (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)


def write_checkpoint(path, tensors, config=CONFIG):
  (path / "config.json").write_text(json.dumps(config))
  save_file(tensors, str(path / "model.safetensors"))
  return path


def test_loaded_bert_computes_the_huggingface_forward_pass(tmp_path):
  tensors = hf_checkpoint()
  model, params = load_bert(write_checkpoint(tmp_path, tensors))
  out = jax.jit(lambda p: model.apply({"params": p}, jnp.asarray(TOKENS), train=False))(params)
  np.testing.assert_allclose(out, numpy_bert(tensors, TOKENS), rtol=1e-4, atol=1e-5)


def test_load_bert_accepts_the_bert_prefix_of_pretraining_checkpoints(tmp_path):
  tensors = hf_checkpoint()
  _, params = load_bert(write_checkpoint(tmp_path, {"bert." + k: v for k, v in tensors.items()}))
  np.testing.assert_array_equal(
    params["encoder"]["block1"]["mlp"]["fc1"]["kernel"], tensors["encoder.layer.1.intermediate.dense.weight"].T
  )


@pytest.mark.parametrize(
  "edit,message",
  [
    (
      lambda t: t.pop("encoder.layer.1.attention.self.key.weight"),
      r"missing tensor encoder\.layer\.1\.attention\.self\.key\.weight \(for encoder/block1/attn/key/kernel",
    ),
    (
      lambda t: t.update({"encoder.layer.0.output.dense.weight": np.zeros((8, 12), np.float32)}),
      r"encoder\.layer\.0\.output\.dense\.weight .* has shape \(8, 12\), expected \(8, 16\)",
    ),
    (
      lambda t: t.update({"encoder.layer.2.output.dense.bias": np.zeros(8, np.float32)}),
      r"unexpected tensor encoder\.layer\.2\.output\.dense\.bias",
    ),
  ],
  ids=["missing", "wrong_shape", "unexpected"],
)
def test_load_bert_names_the_tensor_that_does_not_fit(tmp_path, edit, message):
  tensors = hf_checkpoint()
  edit(tensors)
  with pytest.raises(ValueError, match=message):
    load_bert(write_checkpoint(tmp_path, tensors))


def test_bert_kwargs_refuses_other_architectures():
  with pytest.raises(ValueError, match="relative_key"):
    bert_kwargs({**CONFIG, "position_embedding_type": "relative_key"})
