"""models.conv: the blocked and Winograd convolutions equal nn.Conv (values, gradients, parameters), plug into the
ResNet and run with the batch sharded over several devices."""

import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import conv


def randn(seed: int, *shape):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def loss_and_grads(module, variables, x):
  loss = lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(variables, x)


@pytest.mark.parametrize(
  "kernel,strides,padding,use_bias",
  [
    (3, 1, ((1, 1), (1, 1)), False),  # ResNet 3x3
    (3, 2, ((1, 1), (1, 1)), True),  # strided 3x3
    (1, 2, ((0, 0), (0, 0)), False),  # projection shortcut
    (3, 2, "SAME", False),
    (2, 2, "VALID", True),
  ],
)
def test_blocked_conv_equals_nn_conv_in_value_and_gradients(kernel, strides, padding, use_bias):
  # block_rows=30 splits the 6 images of 5x5 (or 9x9) outputs into several blocks.
  kwargs = dict(
    features=5, kernel_size=(kernel, kernel), strides=(strides, strides), padding=padding, use_bias=use_bias
  )
  reference, blocked = conv.get("xla")(**kwargs), conv.get("blocked")(**kwargs, block_rows=30)
  x = randn(0, 6, 9, 9, 4)
  variables = reference.init(jax.random.key(0), x)
  variables = jax.tree.map(lambda v: v + 0.1, variables)  # nonzero bias
  (want, want_grads), (got, got_grads) = loss_and_grads(reference, variables, x), loss_and_grads(blocked, variables, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("height,width,use_bias", [(8, 8, False), (6, 10, True), (7, 8, False)])
def test_winograd_conv_equals_nn_conv_in_value_and_gradients(height, width, use_bias):
  # block_rows=48: the 6 images split into blocks of 1 (8x8, 6x10 outputs); 7x8 (odd height) takes the blocked path.
  kwargs = dict(features=5, kernel_size=(3, 3), use_bias=use_bias)
  reference = conv.get("xla")(**kwargs)
  winograd = conv.get("winograd")(**kwargs, block_rows=48, winograd_min_channels=4)
  x = randn(0, 6, height, width, 4)
  variables = jax.tree.map(lambda v: v + 0.1, reference.init(jax.random.key(0), x))
  (want, want_grads), (got, got_grads) = loss_and_grads(reference, variables, x), loss_and_grads(winograd, variables, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_winograd_kernel_transform_is_g_kernel_g_transposed_without_a_matrix_product():
  # G g G^T with Lavin & Gray's G; written as sums of [C_in, C_out] slices, since an einsum with G lowered on XLA:CPU
  # to transposes and [C_in * C_out * 3, 3] @ [3, 4] products running at ~1 GFLOP/s.
  g = jnp.asarray([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
  kernel = randn(0, 3, 3, 5, 7)
  want = jnp.einsum("ai,ijco,bj->abco", g, kernel, g).reshape(16, 5, 7)
  np.testing.assert_allclose(conv._winograd_kernel(kernel), want, rtol=1e-6, atol=1e-6)
  u = randn(1, 16, 5, 7)
  transpose = lambda u: jax.linear_transpose(conv._winograd_kernel, kernel)(u)[0]
  np.testing.assert_allclose(transpose(u), jnp.einsum("ai,abco,bj->ijco", g, u.reshape(4, 4, 5, 7), g), rtol=1e-5)
  for fn, arg in ((conv._winograd_kernel, kernel), (transpose, u)):
    hlo = jax.jit(fn).lower(arg).compile().as_text()
    assert not re.search(r"\b(dot|convolution)\(", hlo), hlo


def test_winograd_conv_is_used_only_where_it_applies():
  assert conv.winograd_applies((2, 8, 8, 64), (3, 3), (1, 1), ((1, 1), (1, 1)))
  assert not conv.winograd_applies((2, 8, 8, 64), (3, 3), (2, 2), ((1, 1), (1, 1)))  # strided
  assert not conv.winograd_applies((2, 8, 8, 64), (1, 1), (1, 1), ((0, 0), (0, 0)))  # 1x1
  assert not conv.winograd_applies((2, 7, 8, 64), (3, 3), (1, 1), ((1, 1), (1, 1)))  # odd height
  # Below winograd_min_channels (the RGB stem, narrow layers) the layer is the blocked one, bit for bit.
  x = randn(1, 2, 8, 8, 3)
  layer = lambda impl: conv.get(impl)(features=4, kernel_size=(3, 3))
  variables = layer("blocked").init(jax.random.key(0), x)
  np.testing.assert_array_equal(layer("winograd").apply(variables, x), layer("blocked").apply(variables, x))


def test_blocked_conv_has_the_parameters_of_nn_conv():
  x = jnp.zeros((2, 8, 8, 3))
  shapes = lambda impl: jax.eval_shape(lambda: conv.get(impl)(4, (3, 3)).init(jax.random.key(0), x))
  assert jax.tree.map(lambda s: s.shape, shapes("blocked")) == jax.tree.map(lambda s: s.shape, shapes("xla"))


def test_unknown_conv_impl_lists_the_known_ones():
  with pytest.raises(ValueError, match="blocked.*winograd"):
    conv.get("fft")


def test_auto_conv_impl_picks_the_winograd_lowering_on_cpu():
  assert jax.default_backend() == "cpu"
  assert conv.get("auto") is conv.WinogradConv


def test_resnet_with_blocked_convs_computes_what_the_xla_one_computes():
  x = randn(1, 4, 16, 16, 3)
  make = lambda impl: models.get("resnet")(stage_sizes=(1, 1), width=8, stem="cifar", conv_impl=impl)
  variables = jax.jit(lambda k: make("xla").init(k, x, train=False))(jax.random.key(0))
  run = lambda impl: jax.jit(lambda v, x: make(impl).apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
  (want, want_stats), (got, got_stats) = run("xla"), run("blocked")
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  for g, w in zip(jax.tree.leaves(got_stats), jax.tree.leaves(want_stats)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def collectives_inside_loops(hlo: str) -> list[str]:
  """The collective instructions (all-reduce, all-gather, ...) of compiled HLO text that run inside while loops."""
  computations, name = {}, None
  for line in hlo.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      name = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
      computations[name] = []
    elif name:
      computations[name].append(line)
  todo, seen, found = re.findall(r"body=%?([\w.\-]+)", hlo), set(), []
  while todo:
    name = todo.pop()
    if name in seen:
      continue
    seen.add(name)
    for line in computations.get(name, []):
      if re.search(r"\b(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(-start)?\(", line):
        found.append(line.strip())
      todo += re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", line)
  return found


@pytest.mark.parametrize("impl", ["blocked", "winograd"])
def test_sharded_conv_gradient_equals_one_device_and_has_no_collective_inside_its_loops(impl):
  # 128 images of 8x8 over 8 devices, blocks of 512 output pixels: 2 blocks of 8 images per device.
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  extra = dict(winograd_min_channels=4) if impl == "winograd" else {}
  layer = conv.get(impl)(features=8, kernel_size=(3, 3), use_bias=False, block_rows=512, **extra)
  x = randn(4, 128, 8, 8, 4)
  variables = layer.init(jax.random.key(0), x[:1])
  grad = jax.jit(jax.value_and_grad(lambda v, x: jnp.sum(jnp.sin(layer.apply(v, x))), argnums=(0, 1)))
  sharded_x = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.P("data")))
  hlo = grad.lower(variables, sharded_x).compile().as_text()
  assert "while" in hlo
  assert collectives_inside_loops(hlo) == []
  sharded, one_device = grad(variables, sharded_x), grad(*jax.device_put((variables, x), jax.devices()[0]))
  for got, want in zip(jax.tree.leaves(sharded), jax.tree.leaves(one_device)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def sgd_step_difference_sharded_vs_one_device() -> dict:
  """Runs one SGD step of a tiny blocked-conv ResNet (train-mode BatchNorm) with the batch of 16 sharded over 8
  devices and on one device; returns the largest absolute difference of the loss, parameters and statistics."""
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  model = models.get("resnet")(stage_sizes=(1, 1), width=8, stem="cifar", conv_impl="blocked")
  # 32x32 images: each device's 2 images make two blocks of the stem's 1024 output pixels, so the loops run.
  x, target = randn(2, 16, 32, 32, 3), randn(3, 16, 16)
  variables = jax.jit(lambda k: model.init(k, x[:1], train=False))(jax.random.key(0))

  def step(variables, x):
    def loss_fn(params):
      y, updates = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
      return jnp.mean((y - target) ** 2), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    params = jax.tree.map(lambda p, g: p - 0.1 * g, variables["params"], grads)
    return loss, {"params": params, **updates}

  sharding = lambda spec: jax.sharding.NamedSharding(mesh, spec)
  sharded = jax.jit(step)(jax.device_put(variables, sharding(jax.P())), jax.device_put(x, sharding(jax.P("data"))))
  one_device = jax.jit(step)(*jax.device_put((variables, x), jax.devices()[0]))
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), sharded, one_device)
  return {"max_abs_diff": max(jax.tree.leaves(diffs)), "loss": float(one_device[0])}


def test_sharded_train_step_with_blocked_convs_equals_the_one_device_step_and_finishes():
  # A subprocess with a timeout: collectives inside the block loops once hung XLA:CPU's rendezvous.
  env = {
    **os.environ,
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
    "JAX_PLATFORMS": "cpu",
    "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or "",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
  }
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = "import test_benchmarks_conv as t, json; print(json.dumps(t.sgd_step_difference_sharded_vs_one_device()))"
  run = subprocess.run(
    [sys.executable, "-c", code],
    cwd=os.path.dirname(os.path.abspath(__file__)),
    env={**env, "PYTHONPATH": root},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result["loss"] > 0
  assert result["max_abs_diff"] < 1e-5


def test_blocked_conv_exports_with_a_symbolic_batch():
  # jax.export's symbolic batch cannot be cut into blocks: the module falls back to XLA's convolution there.
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 8, 8, 3)), jnp.float32)
  module = conv.BlockedConv(features=4, kernel_size=(3, 3), strides=(2, 2))
  params = module.init(jax.random.PRNGKey(0), x)
  (batch,) = jax.export.symbolic_shape("b")
  exported = jax.export.export(jax.jit(lambda v: module.apply(params, v)))(
    jax.ShapeDtypeStruct((batch, 8, 8, 3), jnp.float32)
  )
  for n in (2, 5):
    np.testing.assert_allclose(exported.call(x[:n]), nn.Conv(4, (3, 3), (2, 2)).apply(params, x[:n]), atol=1e-5)
