"""Image encoders, heads and the model registry, at CPU-test sizes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models.heads import normalize_prototypes


def key(seed: int = 0):
  # XLA:CPU compiles threefry random-number code slowly (seconds per init); "rbg" keys compile ~5x faster.
  return jax.random.key(seed, impl="rbg")


def randn(seed: int, *shape):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def init(model, x):
  return jax.jit(lambda k: model.init(k, x, train=False))(key())


def apply(model, variables, x, **kwargs):
  """model.apply under jit (op-by-op dispatch is several times slower for these small models)."""
  return jax.jit(lambda v, x: model.apply(v, x, **kwargs))(variables, x)


def shapes(model, x):
  """Variable shapes without compiling or running anything."""
  return jax.eval_shape(lambda: model.init(key(), x, train=False))


def num_params(variables) -> int:
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


def small_resnet(**kwargs):
  return models.get("resnet")(stage_sizes=(1, 1), width=8, stem="cifar", **kwargs)


def test_get_unknown_name_lists_known_names():
  with pytest.raises(ValueError, match="resnet18_cifar"):
    models.get("resnet17")


def test_names_lists_every_required_model():
  assert {
    "resnet",
    "resnet18",
    "resnet50",
    "resnet18_cifar",
    "resnet50_cifar",
    "resnet_tiny_cifar",
    "vit",
    "vit_tiny",
    "vit_s16",
    "vit_b16",
    "projection_head",
    "prediction_head",
    "prototypes",
    "mlp_encoder",
    "text_transformer",
    "two_tower",
    "caption_decoder",
    "bert",
  } <= set(models.names())


@pytest.mark.parametrize(
  "name,kwargs,dim",
  [
    ("resnet_tiny_cifar", {}, 128),
    ("vit_tiny", {}, 64),
    ("vit_tiny", dict(pool="gap", depth=1), 64),
  ],
)
def test_tiny_image_encoder_runs_and_pools_to_batch_by_dim(name, kwargs, dim):
  model = models.get(name)(**kwargs)
  x = jnp.ones((2, 16, 16, 3))
  out = jax.jit(lambda k: model.apply(model.init(k, x, train=False), x, train=False))(key())
  chex.assert_shape(out, (2, dim))
  assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize(
  "name,kwargs,size,dim",
  [
    ("resnet18", {}, 64, 512),
    ("resnet50", {}, 64, 2048),
    ("resnet50", dict(stem="cifar"), 32, 2048),
    ("resnet18_cifar", {}, 32, 512),
    ("resnet50_cifar", {}, 32, 2048),
    ("resnet", dict(stage_sizes=(1, 1), width=8, block="bottleneck"), 32, 64),
    ("vit", dict(patch_size=8, width=32, depth=1, num_heads=2), 32, 32),
    ("vit_s16", {}, 32, 384),
    ("vit_b16", {}, 32, 768),
  ],
)
def test_encoder_output_shape(name, kwargs, size, dim):
  model = models.get(name)(**kwargs)
  x = jnp.ones((2, size, size, 3))
  out = jax.eval_shape(lambda: model.apply(model.init(key(), x, train=False), x, train=False))
  chex.assert_shape(out, (2, dim))


def test_resnet18_cifar_has_the_torch_peer_layer_shapes():
  """../shared/peers/resnet_cifar_torch.py: 20 convs, 20 BNs, 11,168,832 parameters (BN scale + bias)."""
  variables = shapes(models.get("resnet18_cifar")(), jnp.ones((1, 32, 32, 3)))
  assert num_params(variables) == 11_168_832
  params = variables["params"]
  kernels = [x.shape for path, x in jax.tree_util.tree_leaves_with_path(params) if "kernel" in str(path[-1])]
  assert len(kernels) == 20
  assert params["stem_conv"]["kernel"].shape == (3, 3, 3, 64)
  assert "proj_conv" not in params["stage1_block1"]
  assert params["stage2_block1"]["proj_conv"]["kernel"].shape == (1, 1, 64, 128)
  assert params["stage4_block2"]["conv2"]["kernel"].shape == (3, 3, 512, 512)
  assert len(jax.tree.leaves(variables["batch_stats"])) == 2 * 20  # mean and var of each BN


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_resnet_recomputes_each_inner_norm_relu_instead_of_keeping_it(block, monkeypatch):
  """The BN -> ReLU -> conv pairs inside a block run under remat (resnet._norm_relu_conv): same parameters, outputs,
  statistics and gradients as the plain composition, with fewer activation-sized arrays kept for the backward pass."""
  import contextlib
  import io
  import re

  from jax.ad_checkpoint import print_saved_residuals

  from models import resnet

  model = small_resnet(block=block)
  x, w = randn(2, 4, 8, 8, 3), randn(3, 4, 4, 4, 64 if block == "bottleneck" else 16)
  variables = init(model, x)

  def loss(params, x):
    out, stats = model.apply({**variables, "params": params}, x, train=True, pool=False, mutable=["batch_stats"])
    return jnp.sum(out * w), stats

  def run():
    grads, stats = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(variables["params"], x)
    listing = io.StringIO()  # one line per array the backward pass keeps, "f32[4,8,8,8] output of ..."
    with contextlib.redirect_stdout(listing):
      print_saved_residuals(lambda p, x: loss(p, x)[0], variables["params"], x)
    sizes = [np.prod([int(d) for d in m.split(",")]) for m in re.findall(r"^\w+\[([\d,]+)\]", listing.getvalue(), re.M)]
    return (grads, stats), sum(size >= 4 * 4 * 4 * 16 for size in sizes)  # a whole activation of either stage

  recomputed, kept_recomputed = run()
  monkeypatch.setattr(resnet, "_norm_relu_conv", resnet._norm_relu_conv_fn)
  plain, kept_plain = run()
  chex.assert_trees_all_close(recomputed, plain, rtol=1e-6, atol=1e-6)
  blocks = 2  # one per stage; each pair spares the ReLU's output
  assert kept_recomputed <= kept_plain - blocks * (2 if block == "bottleneck" else 1)


def test_resnet50_has_torchvision_backbone_param_count():
  assert num_params(shapes(models.get("resnet50")(), jnp.ones((1, 64, 64, 3)))) == 23_508_032


@pytest.fixture(scope="module")
def bn_outputs():
  """A small ResNet (zero-init residuals) in train and eval mode on two batches that share sample 0."""
  model = small_resnet(zero_init_residual=True)
  x = randn(1, 4, 8, 8, 3)
  other = x.at[1:].multiply(3.0)
  variables = init(model, x)

  @jax.jit
  def run(variables):
    outs = {}
    for train in (True, False):
      out, updates = model.apply(variables, x, train=train, mutable=["batch_stats"])
      out_other, _ = model.apply(variables, other, train=train, mutable=["batch_stats"])
      outs[train] = (out, out_other, updates["batch_stats"])
    return outs

  return variables, run(variables)


def test_batchnorm_train_mode_normalises_with_batch_stats_and_updates_running_averages(bn_outputs):
  variables, outs = bn_outputs
  out, out_other_batch, batch_stats = outs[True]
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], batch_stats)
  assert all(jax.tree.leaves(moved))
  assert not np.allclose(out[0], out_other_batch[0], atol=1e-4)  # sample 0 depends on the rest of its batch


def test_batchnorm_eval_mode_uses_running_averages_and_leaves_them_alone(bn_outputs):
  variables, outs = bn_outputs
  out, out_other_batch, batch_stats = outs[False]
  chex.assert_trees_all_equal(variables["batch_stats"], batch_stats)
  np.testing.assert_allclose(out[0], out_other_batch[0], rtol=1e-5, atol=1e-5)


def test_zero_init_residual_zeroes_the_last_bn_scale_of_each_block(bn_outputs):
  params = bn_outputs[0]["params"]
  for i in (1, 2):
    assert not jnp.any(params[f"stage{i}_block1"]["bn2"]["scale"])
    assert jnp.all(params[f"stage{i}_block1"]["bn1"]["scale"] == 1)
  assert jnp.all(params["stem_bn"]["scale"] == 1)


def test_bfloat16_compute_keeps_float32_params_and_output():
  for model in (small_resnet(dtype=jnp.bfloat16), models.get("vit_tiny")(depth=1, dtype=jnp.bfloat16)):
    x = jnp.ones((2, 16, 16, 3))
    variables = shapes(model, x)
    out = jax.eval_shape(lambda v, model=model, x=x: model.apply(v, x, train=False), variables)
    assert {p.dtype for p in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
    assert out.dtype == jnp.float32


def test_vit_remat_keeps_param_names_and_gradients():
  x = randn(2, 2, 8, 8, 3)
  plain, remat = models.get("vit_tiny")(depth=1), models.get("vit_tiny")(depth=1, remat=True)
  variables = init(plain, x)
  assert jax.tree.structure(variables) == jax.tree.structure(shapes(remat, x))
  loss_and_grad = lambda model: jax.jit(jax.value_and_grad(lambda v: jnp.sum(model.apply(v, x, train=True) ** 2)))
  chex.assert_trees_all_close(loss_and_grad(plain)(variables), loss_and_grad(remat)(variables), rtol=1e-5, atol=1e-6)


def test_vit_return_tokens_gives_the_token_sequence():
  model = models.get("vit_tiny")()
  x = jnp.ones((2, 16, 16, 3))
  pooled, tokens = jax.eval_shape(
    lambda: model.apply(model.init(key(), x, train=False), x, train=False, return_tokens=True)
  )
  chex.assert_shape(pooled, (2, 64))
  chex.assert_shape(tokens, (2, 1 + 16, 64))


@pytest.mark.parametrize(
  "name,kwargs,out_dim",
  [
    ("projection_head", dict(hidden_dim=32, out_dim=8), 8),
    ("projection_head", dict(hidden_dim=32, out_dim=8, num_layers=3, use_bn=False), 8),
    ("prediction_head", dict(hidden_dim=32), 256),
    ("prototypes", dict(num_prototypes=10), 10),
    ("mlp_encoder", dict(hidden_dim=32, out_dim=8), 8),
  ],
)
def test_head_output_shape(name, kwargs, out_dim):
  model = models.get(name)(**kwargs)
  h = jnp.ones((4, 16))
  out, _ = jax.eval_shape(
    lambda: model.apply(model.init(key(), h, train=False), h, train=True, mutable=["batch_stats"])
  )
  chex.assert_shape(out, (4, out_dim))


def test_projection_head_is_linear_bn_relu_linear():
  params = shapes(models.get("projection_head")(hidden_dim=32, out_dim=8), jnp.ones((2, 16)))["params"]
  assert set(params) == {"fc0", "bn0", "fc1"}
  assert "bias" not in params["fc0"]  # BN follows: a bias would be redundant (lightly does the same)


def test_mlp_encoder_adds_input_when_widths_match():
  model = models.get("mlp_encoder")(hidden_dim=32)
  x = randn(4, 4, 16)
  variables = init(model, x)
  mlp = models.get("projection_head")(hidden_dim=32, out_dim=16, use_bn=False)
  residual = apply(mlp, {"params": variables["params"]["mlp"]}, x, train=False)
  np.testing.assert_allclose(apply(model, variables, x, train=False), x + residual, rtol=1e-6)


def test_prototypes_score_is_cosine_after_normalize_prototypes():
  model = models.get("prototypes")(num_prototypes=5)
  z = randn(5, 3, 16)
  params = normalize_prototypes(init(model, z)["params"])
  kernel = params["prototypes"]["kernel"]
  np.testing.assert_allclose(jnp.linalg.norm(kernel, axis=0), 1.0, rtol=1e-6)
  scores = apply(model, {"params": params}, 10.0 * z, train=False)
  cosine = (z / jnp.linalg.norm(z, axis=1, keepdims=True)) @ kernel
  np.testing.assert_allclose(scores, cosine, rtol=1e-5, atol=1e-6)


def test_gelu_equals_jax_exact_gelu_in_value_and_gradient():
  from models.transformer import gelu

  x = jnp.linspace(-6.0, 6.0, 1001)
  np.testing.assert_allclose(gelu(x), jax.nn.gelu(x, approximate=False), atol=2e-6)
  grad = lambda f: jax.vmap(jax.grad(f))(x)
  np.testing.assert_allclose(grad(gelu), grad(lambda v: jax.nn.gelu(v, approximate=False)), atol=2e-6)
  assert gelu(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("residual, relu", [(False, False), (True, True)])
def test_fused_batchnorm_equals_nn_batchnorm_then_residual_and_relu(residual, relu):
  """models.norm.BatchNorm vs nn.BatchNorm (two-pass variance) + residual + ReLU: outputs, gradients of y, params and
  residual, and the running statistics, in train and eval mode. float64, so the two orders of the same sums agree to
  rounding."""
  import flax.linen as nn
  from models.norm import BatchNorm

  kw = dict(momentum=0.9, epsilon=1e-5, dtype=jnp.float64, param_dtype=jnp.float64, name="bn")

  class Reference(nn.Module):
    train: bool

    @nn.compact
    def __call__(self, y, r):
      z = nn.BatchNorm(use_running_average=not self.train, use_fast_variance=False, **kw)(y) + r
      return nn.relu(z) if relu else z

  class Fused(nn.Module):
    train: bool

    @nn.compact
    def __call__(self, y, r):
      return BatchNorm(use_running_average=not self.train, **kw)(y, r if residual else None, relu=relu)

  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    y, w, r = (jnp.asarray(rng.normal(size=(4, 3, 3, 5)) * 3 + 1) for _ in range(3))
    r = r if residual else jnp.zeros_like(y)
    variables = {
      "params": {"bn": {"scale": jnp.linspace(0.5, 1.5, 5), "bias": jnp.linspace(-1, 1, 5)}},
      "batch_stats": {"bn": {"mean": jnp.linspace(-1, 1, 5), "var": jnp.linspace(1, 2, 5)}},
    }

    def grads_and_stats(model):
      def loss(params, y, r):
        out, stats = model.apply({**variables, "params": params}, y, r, mutable=["batch_stats"])
        return jnp.sum(out * w), (out, stats)

      return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(variables["params"], y, r)

    for train in (True, False):
      ours, theirs = grads_and_stats(Fused(train)), grads_and_stats(Reference(train))
      if not residual:  # the reference adds zeros, which the fused module never sees
        ours, theirs = (ours[0][:2], ours[1]), (theirs[0][:2], theirs[1])
      chex.assert_trees_all_close(ours, theirs, rtol=1e-12, atol=1e-12)
