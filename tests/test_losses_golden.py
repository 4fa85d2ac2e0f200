"""Golden tests: values and input gradients equal the public torch references (lightly 1.6.0,
open_clip 3.3.0) on the stored random inputs (tests/fixtures/make_loss_fixtures.py), in float64."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _load(name):
  with np.load(os.path.join(FIXTURES, f"losses_{name}.npz")) as f:
    return {k: f[k] for k in f.files}


def _cfg(data, key):
  return data[f"cfg_{key}"].item() if data[f"cfg_{key}"].ndim == 0 else data[f"cfg_{key}"]


CASES = {
  "nt_xent": lambda d: lambda z1, z2: losses.nt_xent(z1, z2, temperature=_cfg(d, "temperature")),
  "nt_xent_queue": lambda d: (
    lambda z1, z2: losses.nt_xent(z1, z2, temperature=_cfg(d, "temperature"), queue=jnp.asarray(d["cfg_queue"]))
  ),
  "dcl": lambda d: lambda z1, z2: losses.dcl(z1, z2, temperature=_cfg(d, "temperature")),
  "dclw": lambda d: lambda z1, z2: losses.dclw(z1, z2, temperature=_cfg(d, "temperature"), sigma=_cfg(d, "sigma")),
  "barlow_twins": lambda d: lambda z1, z2: losses.barlow_twins(z1, z2, lambda_param=_cfg(d, "lambda_param")),
  "vicreg": lambda d: lambda z1, z2: losses.vicreg(z1, z2),
  "swav": lambda d: lambda h0, h1, l0, l1, l2: losses.swav([h0, h1], [l0, l1, l2], temperature=_cfg(d, "temperature")),
  "swav_queue": lambda d: (
    lambda h0, h1, l0: losses.swav(
      [h0, h1],
      [l0],
      temperature=_cfg(d, "temperature"),
      queue=[jnp.asarray(d["cfg_queue0"]), jnp.asarray(d["cfg_queue1"])],
    )
  ),
  "clip": lambda d: lambda image, text, logit_scale: losses.clip_softmax_loss(image, text, logit_scale),
  "siglip": lambda d: losses.siglip_loss,
  "siglip_mild": lambda d: losses.siglip_loss,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_and_input_gradients_match_reference(name):
  data = _load(name)
  names = [k[3:] for k in data if k.startswith("in_")]
  with jax.enable_x64(True):
    args = [jnp.asarray(data[f"in_{k}"], jnp.float64) for k in names]
    value, grads = jax.jit(jax.value_and_grad(CASES[name](data), argnums=tuple(range(len(args)))))(*args)
    np.testing.assert_allclose(value, data["value"], rtol=1e-5)
    for k, g in zip(names, grads):
      want = data[f"grad_{k}"]
      np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5 * np.max(np.abs(want)), err_msg=k)


@pytest.mark.parametrize("mode", ["chunked", "ring"])
@pytest.mark.parametrize("name", ["clip", "siglip_mild"])
def test_streamed_image_text_modes_match_reference(name, mode):
  data = _load(name)
  names = [k[3:] for k in data if k.startswith("in_")]
  fn = losses.clip_softmax_loss if name == "clip" else losses.siglip_loss
  with jax.enable_x64(True):
    args = [jnp.asarray(data[f"in_{k}"], jnp.float64) for k in names]
    value, grads = jax.jit(
      jax.value_and_grad(lambda *a: fn(*a, mode=mode, chunk_size=5), argnums=tuple(range(len(args))))
    )(*args)
    np.testing.assert_allclose(value, data["value"], rtol=1e-5)
    for k, g in zip(names, grads):
      want = data[f"grad_{k}"]
      np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5 * np.max(np.abs(want)), err_msg=k)
