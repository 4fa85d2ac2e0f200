"""Tokenizers of Hugging Face CLIP and SigLIP checkpoints, giving the ids `transformers`' own tokenizers give with
`padding="max_length", truncation=True`.

- `ClipBpeTokenizer`: byte-level BPE from `tokenizer.json` (the `tokenizers` library): <|startoftext|> text
  <|endoftext|>, text truncated so that EOS fits, padded with the checkpoint's pad token (OpenAI's: <|endoftext|>).
  CLIP's context length is 77.
- `SiglipTokenizer`: SentencePiece from `spiece.model`, with `SiglipTokenizer`'s canonicalisation (lower case,
  ASCII punctuation removed, whitespace collapsed): text </s>, no BOS, padded with </s>. SigLIP's length is 64 and
  its text tower was trained on fixed-length rows, so always pad to it.

Special tokens come from `tokenizer_config.json` next to the vocabulary file when it is there, else the defaults of
`transformers`. Texts that spell out a special token (e.g. "</s>") are tokenised as plain text.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Sequence

import numpy as np

from tokenization.packing import pack

SPIECE_UNDERLINE = "\u2581"
# The vocabulary file of each tokenizer inside a Hugging Face checkpoint directory.
FILES = {"clip_bpe": "tokenizer.json", "siglip": "spiece.model"}


def _special_tokens(path: str, defaults: dict[str, str | bool]) -> dict:
  """`defaults` updated with the same keys of tokenizer_config.json beside `path` (strings or AddedToken dicts)."""
  config_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
  config = {}
  if os.path.exists(config_path):
    with open(config_path) as f:
      config = json.load(f)
  out = dict(defaults)
  for key in defaults:
    value = config.get(key)
    if value is not None:
      out[key] = value["content"] if isinstance(value, dict) else value
  return out


class ClipBpeTokenizer:
  """CLIP's byte-level BPE from a Hugging Face `tokenizer.json`."""

  def __init__(self, path: str):
    import tokenizers

    self.tok = tokenizers.Tokenizer.from_file(path)
    self.tok.no_padding()
    self.tok.no_truncation()
    special = _special_tokens(
      path, {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    )
    ids = {k: self.tok.token_to_id(v) for k, v in special.items()}
    missing = [special[k] for k, v in ids.items() if v is None]
    if missing:
      raise ValueError(f"{path} has no token {missing}: not a CLIP tokenizer.json")
    self.bos_id, self.eos_id, self.pad_id = ids["bos_token"], ids["eos_token"], ids["pad_token"]
    self.vocab_size = self.tok.get_vocab_size()

  def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    """list[str] -> int32 [B, max_len]: BOS, text (truncated), EOS, then the pad id."""
    encodings = self.tok.encode_batch(list(texts), add_special_tokens=False)
    return pack([e.ids for e in encodings], max_len, self.bos_id, self.eos_id, self.pad_id)

  def decode(self, tokens: np.ndarray) -> list[str]:
    """int [B, L] -> list[str], stopping at the first EOS; "</w>" word ends become spaces."""
    rows = []
    for row in np.asarray(tokens).tolist():
      row = row[: row.index(self.eos_id)] if self.eos_id in row else row
      rows.append([t for t in row if t not in (self.bos_id, self.pad_id)])
    return [text.replace("</w>", " ").strip() for text in self.tok.decode_batch(rows, skip_special_tokens=True)]


class SiglipTokenizer:
  """SigLIP's SentencePiece tokenizer, as `transformers.SiglipTokenizer` (whose `legacy` flag changes nothing here: the
  text is always encoded after the unknown token, so SentencePiece's dummy prefix never reaches it)."""

  bos_id = None  # SigLIP's rows start with the text itself

  def __init__(self, path: str):
    import sentencepiece

    special = _special_tokens(
      path,
      {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>", "do_lower_case": True},
    )
    self.sp = sentencepiece.SentencePieceProcessor(model_file=path)
    self.eos_id, self.pad_id = self.sp.piece_to_id(special["eos_token"]), self.sp.piece_to_id(special["pad_token"])
    self.unk = special["unk_token"]
    self.unk_length = len(self.sp.encode(self.unk))
    self.lower = bool(special["do_lower_case"])
    self.vocab_size = self.sp.get_piece_size()
    self._punctuation = str.maketrans("", "", string.punctuation)

  def canonicalize(self, text: str) -> str:
    """big_vision's prompt canonicalisation: lower case, no ASCII punctuation, single spaces, stripped."""
    text = text.lower() if self.lower else text
    return re.sub(r"\s+", " ", text.translate(self._punctuation)).strip()

  def _ids(self, text: str) -> list[int]:
    # SiglipTokenizer.tokenize: a leading "▁", canonicalised; encoded after the unknown token, which is then cut off
    # so that SentencePiece treats the text as a continuation.
    text = self.canonicalize(SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " "))
    ids = self.sp.encode(self.unk + text)
    return ids[self.unk_length :] if len(ids) >= self.unk_length else ids

  def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    """list[str] -> int32 [B, max_len]: text (truncated), EOS, then the pad id (no BOS)."""
    return pack([self._ids(t) for t in texts], max_len, None, self.eos_id, self.pad_id)

  def decode(self, tokens: np.ndarray) -> list[str]:
    """int [B, L] -> list[str], stopping at the first EOS."""
    rows = np.asarray(tokens).tolist()
    return [self.sp.decode(row[: row.index(self.eos_id)] if self.eos_id in row else row) for row in rows]


def resolve(path: str, filename: str) -> str:
  """`path` itself, or `path/filename` when `path` is a Hugging Face model directory."""
  return os.path.join(path, filename) if os.path.isdir(path) else path
