"""Reading ArrayRecord records without losing more than the damaged ones."""

from __future__ import annotations

from collections.abc import Sequence


def read_records(data, indices: Sequence[int]) -> list[bytes | Exception]:
  """The records of an ArrayRecord data source at `indices`, read in one call; when a damaged chunk fails that call,
  read one by one, each failure returned in its record's place."""
  try:
    return list(data.__getitems__(list(indices)))
  except Exception:
    out: list[bytes | Exception] = []
    for i in indices:
      try:
        out.append(data[i])
      except Exception as e:  # any reader error loses this record only
        out.append(e)
    return out
