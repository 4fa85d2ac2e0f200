"""Errors that stop a run with one clear line (main.py prints them without a traceback unless --verbose)."""

from __future__ import annotations

from checkpointing import CheckpointError


class NonFiniteLossError(RuntimeError):
  """A step produced a NaN/Inf loss or gradient and `config.nonfinite == "stop"`."""


# Bad input (config, data, paths) and deliberate stops; anything else is a bug and keeps its traceback.
CLEAR_STOPS: tuple[type[BaseException], ...] = (
  ValueError,
  FileNotFoundError,
  NotADirectoryError,
  NonFiniteLossError,
  CheckpointError,
)


def is_clear_stop(error: BaseException) -> bool:
  return isinstance(error, CLEAR_STOPS)


def one_line(error: BaseException) -> str:
  """The message on one line (a KeyError's repr quotes are dropped)."""
  return " ".join(str(error).strip("'\"").split())
