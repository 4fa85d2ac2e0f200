"""Shard file patterns: shell-style braces and globs -> the files they name, sorted."""

from __future__ import annotations

import glob
import os
import re


def expand_braces(pattern: str) -> list[str]:
  """Shell-style braces: "a{1..3}b" -> a1b a2b a3b (zero padding kept: {000..002}), "{x,y}" -> x y; nested too."""
  match = re.search(r"\{(\d+\.\.\d+|[^{}]*,[^{}]*)\}", pattern)  # a literal "{x}" is not a brace expression
  if match is None:
    return [pattern]
  body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
  if re.fullmatch(r"\d+\.\.\d+", body):
    lo, hi = body.split("..")
    width = len(lo) if lo.startswith("0") else 0
    options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
  else:
    options = body.split(",")
  return [p for option in options for p in expand_braces(head + option + tail)]


def shard_files(pattern: str) -> tuple[list[str], list[str]]:
  """(existing files, missing names) of a pattern: braces expanded, then globs; files sorted, without repeats."""
  paths, missing = [], []
  for p in expand_braces(os.path.expanduser(pattern)):
    if glob.has_magic(p):
      paths += sorted(glob.glob(p))
    elif os.path.exists(p):
      paths.append(p)
    else:
      missing.append(p)
  return sorted(dict.fromkeys(paths)), missing
