"""Tokenizers (bytes, WordPiece, SentencePiece from local files) and host text views."""

import numpy as np
import pytest

import tokenization as tokenizers
from input_pipeline import text_views

SENTENCES = ["a small red circle on a blue background", "the cat sat on the mat", "héllo wörld", ""] * 8


def test_byte_tokenizer_round_trips_with_bos_eos_and_zero_padding():
  tok = tokenizers.ByteTokenizer()
  ids = tok.encode(SENTENCES[:4], max_len=48)
  assert ids.shape == (4, 48) and ids.dtype == np.int32
  assert ids[0, 0] == tok.bos_id and ids[3, :2].tolist() == [tok.bos_id, tok.eos_id] and ids[3, 2:].max() == 0
  assert tok.decode(ids) == SENTENCES[:4]


def test_byte_tokenizer_truncates_but_keeps_eos():
  ids = tokenizers.ByteTokenizer().encode(["x" * 100], max_len=10)
  assert ids[0, -1] == tokenizers.ByteTokenizer.eos_id


def test_wordpiece_trained_offline_loads_from_vocab_and_json(tmp_path):
  hf = pytest.importorskip("tokenizers")
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(SENTENCES))
  trainer = hf.BertWordPieceTokenizer(lowercase=True)
  trainer.train([str(corpus)], vocab_size=120, min_frequency=1)
  trainer.save_model(str(tmp_path))
  trainer.save(str(tmp_path / "tokenizer.json"))
  for path in (tmp_path / "vocab.txt", tmp_path / "tokenizer.json"):
    tok = tokenizers.get("wordpiece", str(path))
    ids = tok.encode(["the cat sat on the mat"], max_len=16)
    assert ids[0, 0] == tok.bos_id and tok.eos_id in ids[0]
    assert tok.decode(ids) == ["the cat sat on the mat"]


def test_sentencepiece_trained_offline_round_trips(tmp_path):
  spm = pytest.importorskip("sentencepiece")
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(s for s in SENTENCES if s) * 4)
  spm.SentencePieceTrainer.train(
    input=str(corpus),
    model_prefix=str(tmp_path / "sp"),
    vocab_size=30,
    hard_vocab_limit=False,
    pad_id=0,
    unk_id=1,
    bos_id=2,
    eos_id=3,
    minloglevel=2,
  )
  tok = tokenizers.get("sentencepiece", str(tmp_path / "sp.model"))
  ids = tok.encode(["the cat sat on the mat"], max_len=40)
  assert ids[0, 0] == 2 and 3 in ids[0] and ids[0, -1] == 0
  assert tok.decode(ids) == ["the cat sat on the mat"]


def test_missing_tokenizer_file_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="needs a local model file"):
    tokenizers.get("wordpiece", str(tmp_path / "vocab.txt"))


def test_word_repetition_repeats_words_and_keeps_their_order():
  text = "one two three four five six seven eight nine ten"
  views = [text_views.word_repetition(text, np.random.default_rng(i)) for i in range(20)]
  assert any(len(v.split()) > 10 for v in views)
  for v in views:
    assert list(dict.fromkeys(v.split())) == text.split()


def test_word_deletion_keeps_at_least_one_word():
  assert text_views.word_deletion("a b", np.random.default_rng(0), p=1.0) in ("a", "b")
  assert text_views.copy("same", np.random.default_rng(0)) == "same"
