"""The CLIP BPE and SigLIP SentencePiece tokenizers give the ids of transformers' own tokenizers (padding to the
context length, truncation), from the fixtures made by tests/fixtures/make_hf_fixtures.py."""

import os

import numpy as np
import pytest

import tokenization as tokenizers
from tokenization.packing import pack

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.mark.parametrize("name, kind", [("clip_bpe", "clip"), ("siglip", "siglip")])
def test_ids_equal_transformers_tokenizer(name, kind):
  ref = np.load(os.path.join(FIXTURES, f"hf_{kind}_reference.npz"))
  tok = tokenizers.get(name, os.path.join(FIXTURES, f"hf_{kind}_tiny"))
  ids = tok.encode(list(ref["texts"]), ref["input_ids"].shape[1])
  np.testing.assert_array_equal(ids, ref["input_ids"])
  assert ids.dtype == np.int32 and ids[-1, -1] == tok.eos_id  # the long text is truncated, its EOS kept


def test_clip_bpe_adds_bos_eos_and_pads_with_the_checkpoints_pad_token():
  tok = tokenizers.get("clip_bpe", os.path.join(FIXTURES, "hf_clip_tiny", "tokenizer.json"))
  ids = tok.encode(["a photo of a cat."], 77)[0]
  assert ids[0] == tok.bos_id and tok.pad_id == tok.eos_id == tok.vocab_size - 1  # OpenAI's: pad with EOS
  assert tok.decode(ids[None]) == ["a photo of a cat ."]


def test_siglip_canonicalises_like_big_vision_and_has_no_bos():
  tok = tokenizers.get("siglip", os.path.join(FIXTURES, "hf_siglip_tiny", "spiece.model"))
  assert tok.canonicalize("  A Photo,  of a CAT!! ") == "a photo of a cat"
  ids = tok.encode(["A photo of a CAT!"], 64)
  np.testing.assert_array_equal(ids, tok.encode(["a photo of a cat"], 64))
  assert tok.decode(ids) == ["a photo of a cat"] and tok.pad_id == tok.eos_id == 1 and tok.bos_id is None


def test_pack_without_bos_truncates_to_keep_eos():
  np.testing.assert_array_equal(pack([[5, 6, 7, 8]], 3, None, 1, 0), [[5, 6, 1]])
  np.testing.assert_array_equal(pack([[5]], 4, 2, 1, 0), [[2, 5, 1, 0]])


def test_missing_hf_tokenizer_file_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="needs a local model file"):
    tokenizers.get("clip_bpe", str(tmp_path))
