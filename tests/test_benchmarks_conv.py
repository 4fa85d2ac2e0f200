"""models.conv: the blocked convolution equals nn.Conv (values, gradients, parameters) and plugs into the ResNet."""
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


@pytest.mark.parametrize("kernel,strides,padding,use_bias", [
    (3, 1, ((1, 1), (1, 1)), False),  # ResNet 3x3
    (3, 2, ((1, 1), (1, 1)), True),  # strided 3x3
    (1, 2, ((0, 0), (0, 0)), False),  # projection shortcut
    (3, 2, "SAME", False),
    (2, 2, "VALID", True),
])
def test_blocked_conv_equals_nn_conv_in_value_and_gradients(kernel, strides, padding, use_bias):
    # block_rows=30 splits the 6 images of 5x5 (or 9x9) outputs into several blocks.
    kwargs = dict(features=5, kernel_size=(kernel, kernel), strides=(strides, strides), padding=padding,
                  use_bias=use_bias)
    reference, blocked = conv.get("xla")(**kwargs), conv.get("blocked")(**kwargs, block_rows=30)
    x = randn(0, 6, 9, 9, 4)
    variables = reference.init(jax.random.key(0), x)
    variables = jax.tree.map(lambda v: v + 0.1, variables)  # nonzero bias
    (want, want_grads), (got, got_grads) = loss_and_grads(reference, variables, x), loss_and_grads(blocked, variables, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_blocked_conv_has_the_parameters_of_nn_conv():
    x = jnp.zeros((2, 8, 8, 3))
    shapes = lambda impl: jax.eval_shape(lambda: conv.get(impl)(4, (3, 3)).init(jax.random.key(0), x))
    assert jax.tree.map(lambda s: s.shape, shapes("blocked")) == jax.tree.map(lambda s: s.shape, shapes("xla"))


def test_unknown_conv_impl_lists_the_known_ones():
    with pytest.raises(ValueError, match="blocked"):
        conv.get("winograd")


def test_resnet_with_blocked_convs_computes_what_the_xla_one_computes():
    x = randn(1, 4, 16, 16, 3)
    make = lambda impl: models.get("resnet")(stage_sizes=(1, 1), width=8, stem="cifar", conv_impl=impl)
    variables = jax.jit(lambda k: make("xla").init(k, x, train=False))(jax.random.key(0))
    run = lambda impl: jax.jit(lambda v, x: make(impl).apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    (want, want_stats), (got, got_stats) = run("xla"), run("blocked")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    for g, w in zip(jax.tree.leaves(got_stats), jax.tree.leaves(want_stats)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
