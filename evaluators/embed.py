"""Embed a whole data set with a jitted encoder, batch by batch, on one device or sharded over a mesh."""

from collections.abc import Callable

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils


def _leading_axis_shards(sharding: jax.sharding.NamedSharding) -> int:
  """How many pieces `sharding` cuts the leading axis into (product of the mesh axes named in spec[0])."""
  if not sharding.spec or sharding.spec[0] is None:
    return 1
  names = sharding.spec[0] if isinstance(sharding.spec[0], tuple) else (sharding.spec[0],)
  return int(np.prod([sharding.mesh.shape[name] for name in names]))


def embed_arrays(
  embed_fn: Callable[[dict], jax.Array],
  arrays: dict[str, np.ndarray],
  *,
  batch_size: int,
  sharding: jax.sharding.NamedSharding | None = None,
  progress: bool = False,
) -> np.ndarray:
  """Runs `embed_fn` over `arrays` in fixed-size batches and returns all embeddings on the host.

  Args:
    embed_fn: batch dict -> [b, D]; jit it once and pass the same object every time, so it compiles once.
    arrays: name -> [N, ...] host arrays, all with the same N; every process holds all of them.
    batch_size: global batch; the last batch is padded to it (repeating its last row), so there is one compilation.
    sharding: where each batch goes, e.g. NamedSharding(mesh, P("data")); None puts it on the default device.
    progress: show a tqdm bar.

  Returns:
    [N, D] numpy array without the padding. Results stay on device until one gather to the host at the end.
  """
  sizes = {name: len(a) for name, a in arrays.items()}
  if not sizes or len(set(sizes.values())) != 1:
    raise ValueError(f"arrays must be a non-empty dict of arrays with one leading size, got sizes {sizes}")
  n = next(iter(sizes.values()))
  if sharding is not None and batch_size % _leading_axis_shards(sharding):
    raise ValueError(
      f"batch_size {batch_size} must be divisible by the {_leading_axis_shards(sharding)} devices "
      "the sharding splits the batch over"
    )
  outputs = []
  for start in tqdm.trange(0, n, batch_size, desc="embed", disable=not progress):
    batch = {}
    for name, a in arrays.items():
      piece = np.asarray(a[start : start + batch_size])
      if len(piece) < batch_size:
        piece = np.concatenate([piece, np.repeat(piece[-1:], batch_size - len(piece), axis=0)])
      batch[name] = jax.device_put(piece, sharding)
    outputs.append(embed_fn(batch))
  if outputs and not outputs[0].is_fully_addressable:
    outputs = [multihost_utils.process_allgather(o, tiled=True) for o in outputs]
  return np.concatenate(jax.device_get(outputs))[:n]
