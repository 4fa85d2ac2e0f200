"""The train state: everything a run needs to continue exactly where it stopped."""

from __future__ import annotations

from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
  """Pytree of the whole training state.

  step: int32 []; params: model parameters; model_state: non-trained collections (e.g. BatchNorm `batch_stats`);
  opt_state: optax state; rng: uint32 [2] base key (folded with the step each step); extra: method state such as
  momentum-encoder params or a queue of negatives ({} when the method has none); ema_params: exponential moving
  average of params when `config.ema_decay` > 0, else None.
  """

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array
  extra: Any
  ema_params: Any = None
