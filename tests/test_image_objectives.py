"""The objectives on SimCLR's views (multi-view InfoNCE, iSogCLR's per-example table, redundancy reduction), soft-label
SupCon's targets, and the dense method's probe: wiring and equations, without training (tests/test_recipes.py trains
each recipe)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import losses
import methods
from configs import default, dense_shapes, simclr_shapes
from configs import overrides as overrides_lib
from evaluators import dense_probe
from input_pipeline import shapes
from methods import simclr, supcon
from parallel import mesh as mesh_lib
from parallel import partition
from parallel import rows as rows_lib

from conftest import nt_xent_denominators


@pytest.fixture(scope="module")
def mesh8():
  return mesh_lib.build_mesh({"data": 8, "fsdp": 1})


def test_row_tables_gather_and_scatter_on_8_devices_are_plain_indexing(mesh8):
  spec = mesh_lib.batch_spec(mesh8)
  axis = mesh_lib.batch_axis_name(mesh8)
  table = {"a": jnp.arange(32, dtype=jnp.float32), "b": jnp.arange(64, dtype=jnp.int32).reshape(32, 2)}
  ids = jnp.asarray([5, 31, 0, 5, 12, 7, 40, 19, 3, 3, 28, 16, 9, 1, 30, 2], jnp.int32)  # repeats, one out of range
  new = {"a": -jnp.arange(16, dtype=jnp.float32) - 1, "b": -jnp.arange(32, dtype=jnp.int32).reshape(16, 2) - 1}

  def step(table, ids, new):
    return rows_lib.gather_rows(table, ids, axis), rows_lib.scatter_rows(table, ids, new, axis)

  got_rows, got_table = jax.jit(
    jax.shard_map(step, mesh=mesh8, in_specs=(spec, spec, spec), out_specs=(spec, spec), check_vma=True)
  )(table, ids, new)
  valid = np.asarray(ids) < 32
  for k in table:
    want = np.where(valid.reshape((-1,) + (1,) * (table[k].ndim - 1)), np.asarray(table[k])[np.minimum(ids, 31)], 0)
    np.testing.assert_array_equal(got_rows[k], want)
    expected = np.asarray(table[k]).copy()
    for j in reversed(range(len(ids))):  # the first occurrence of a repeated id wins
      if valid[j]:
        expected[ids[j]] = np.asarray(new[k])[j]
    np.testing.assert_array_equal(got_table[k], expected)
  np.testing.assert_array_equal(got_rows["a"], jax.jit(rows_lib.gather_rows)(table, ids)["a"])  # no axis


def test_partition_rules_split_example_state_by_row(mesh8):
  tree = {"extra": {"example_state": {"tau": jax.ShapeDtypeStruct((24,), jnp.float32)}}}
  shardings = partition.infer_shardings(tree, mesh8, rules=default.get_config().partition_rules)
  assert tuple(shardings["extra"]["example_state"]["tau"].spec) == (("data", "fsdp"),)
  with pytest.raises(ValueError, match="divisible by the 8 batch shards"):
    partition.infer_shardings({"extra": {"example_state": {"tau": jax.ShapeDtypeStruct((20,), jnp.float32)}}}, mesh8)


def _isogclr_reference(z, tau, rho):
  """The first iSogCLR step (zero state) in float64 NumPy: loss value, moving averages {s_x, s_y, b_x, b_y} and each
  example's temperature gradient G = mean over its two anchor views of log(s / (N - 1)) + b + rho - sum_j w_ij a_ij
  (Qiu et al. 2023; LibAUC GCLoss_v1), with a_ij = (x_i.y_j - x_i.y_i) / tau_i, w_ij = e^(a_ij - b_i) / s_i."""
  u = z / np.linalg.norm(z, axis=-1, keepdims=True)
  n = len(u)
  value, state, grads = 0.0, {}, []
  for side, (anchor, other) in zip("xy", ((u[:, 0], u[:, 1]), (u[:, 1], u[:, 0]))):
    sim = anchor @ other.T
    d = sim - np.diagonal(sim)[:, None]
    a = d / tau[:, None]
    b = np.maximum(0.0, a.max(1))
    e = np.exp(a - b[:, None]) * (1 - np.eye(n))
    s = e.sum(1)
    w = e / s[:, None]
    grad = np.log(s / (n - 1)) + b + rho - np.sum(w * a, 1)
    value += np.mean(np.sum(w * d, 1) + grad * tau)
    state.update({f"s_{side}": s, f"b_{side}": b})
    grads.append(grad)
  return value, state, (grads[0] + grads[1]) / 2


def test_isogclr_table_step_on_8_devices_follows_the_paper_step(mesh8):
  """One sharded step against the float64 NumPy step: loss, the examples' moving averages and temperatures written
  back to their rows (tau <- clip(tau - eta u), u = beta G from zero), the other rows untouched."""
  tau_config = default.isogclr()
  hyper = dict(gamma=0.9, rho=0.3)
  ids = np.asarray([3, 17, 0, 22, 9, 14, 5, 30, 11, 26, 7, 1, 19, 28, 12, 24])
  with jax.enable_x64(True):  # float64: equal to NumPy up to summation order
    z = np.random.default_rng(0).normal(size=(16, 2, 6))
    tau = np.linspace(0.06, 0.5, 32)
    table = {k: jnp.zeros(32, jnp.float64) for k in ("s_x", "s_y", "b_x", "b_y", "tau_grad")}
    table["tau"] = jnp.asarray(tau)
    step = simclr.isogclr_table_step(mesh8, losses.isogclr, hyper, tau_config)
    value, new, _ = jax.jit(step)(jnp.asarray(z), jnp.asarray(ids, jnp.int32), table)
    want_value, want_state, grad = _isogclr_reference(z, tau[ids], hyper["rho"])
    np.testing.assert_allclose(value, want_value, rtol=1e-10)
    for k, v in want_state.items():
      np.testing.assert_allclose(new[k][ids], v, rtol=1e-10, err_msg=k)
    momentum = tau_config.tau_momentum * grad
    np.testing.assert_allclose(new["tau_grad"][ids], momentum, rtol=1e-10)
    lo, hi = tau_config.tau_range
    np.testing.assert_allclose(new["tau"][ids], np.clip(tau[ids] - tau_config.tau_lr * momentum, lo, hi), rtol=1e-10)
    untouched = np.setdiff1d(np.arange(32), ids)
    np.testing.assert_array_equal(new["tau"][untouched], tau[untouched])
    np.testing.assert_array_equal(new["s_x"][untouched], 0.0)


def test_simclr_with_two_views_mv_info_nce_is_nt_xent_plus_log_cosh_of_the_denominator_gap(mesh8):
  """Through the method: MV-InfoNCE on V = 2 views = NT-Xent + mean_i log cosh((log D1_i - log D2_i) / 2) >= NT-Xent
  (equal only when each sample's two denominators match), on the same embeddings."""
  config = simclr_shapes.get_config("tiny,multiview")
  config.simclr.num_views = 2
  mv = methods.get("simclr")(config, mesh8)
  ntx = methods.get("simclr")(_nt_xent(config), mesh8)
  z = np.random.default_rng(1).normal(size=(16, 2, 8)).astype(np.float32)
  zs = jax.device_put(z, mesh_lib.batch_sharding(mesh8))
  both = jax.jit(lambda z: [m.embedding_loss_fn(None, {}, z, None)[0] for m in (mv, ntx)])
  mv_value, ntx_value = (float(v) for v in both(zs))
  s, d1, d2 = nt_xent_denominators(z[:, 0], z[:, 1], config.loss.temperature)
  np.testing.assert_allclose(ntx_value, np.mean((np.log(d1) + np.log(d2)) / 2 - s), rtol=1e-5)
  gap = np.mean(np.log(np.cosh((np.log(d1) - np.log(d2)) / 2)))
  np.testing.assert_allclose(mv_value, ntx_value + gap, rtol=1e-5)
  assert mv_value > ntx_value


def _nt_xent(config):
  c = config.copy_and_resolve_references()
  c.loss = type(c.loss)(dict(name="nt_xent", temperature=config.loss.temperature))
  return c


def test_simclr_objectives_refuse_wrong_losses_with_one_line(mesh8):
  barlow = overrides_lib.apply(simclr_shapes.get_config("tiny"), [("loss.name", "barlow_twins")])
  with pytest.raises(ValueError, match="loss.temperature is not an argument of barlow_twins.*simclr_shapes.py"):
    methods.get("simclr")(barlow, mesh8)
  four_views = overrides_lib.apply(simclr_shapes.get_config("tiny"), [("simclr.num_views", "4")])
  with pytest.raises(ValueError, match="more than two need loss.name='mv_info_nce'"):
    methods.get("simclr")(four_views, mesh8)


def test_soft_supcon_targets_are_class_and_superclass_multi_hot():
  table = supcon.multi_hot_table(5, ((0, 3), (1, 2, 4)))
  np.testing.assert_array_equal(table[3], [0, 0, 0, 1, 0, 1, 0])
  np.testing.assert_array_equal(table[4], [0, 0, 0, 0, 1, 0, 1])
  unit = table / np.linalg.norm(table, axis=1, keepdims=True)
  assert unit[0] @ unit[3] == pytest.approx(0.5) and unit[0] @ unit[1] == 0  # partial positives in one group
  with pytest.raises(ValueError, match="exactly one group"):
    supcon.multi_hot_table(5, ((0, 3), (1, 2)))


def test_shapes_masks_mark_the_shape_pixels_with_its_class():
  images, labels, _ = shapes.render(0, "test", np.arange(6), image_size=32)
  masks = shapes.render_masks(0, "test", np.arange(6), image_size=32)
  for image, label, mask in zip(images.astype(float), labels, masks):
    assert set(np.unique(mask)) == {0, 1 + label}
    assert 0.02 < np.mean(mask > 0) < 0.6
    # Flat colours: shape and background pixels are far apart in colour, each class close to its own mean.
    fg, bg = image[mask > 0].mean(0), image[mask == 0].mean(0)
    assert np.linalg.norm(fg - bg) > 30


def test_dense_probe_reads_masks_from_informative_feature_maps_only():
  """A feature map that holds the (downsampled) mask one-hot segments well; a random one does not."""
  masks = shapes.render_masks(0, "train", np.arange(40), image_size=8, num_classes=3)
  labels = masks.reshape(40, 4, 2, 4, 2).max(axis=(2, 4))  # a 4 x 4 feature map
  informative = np.eye(4, dtype=np.float32)[labels] + 0.01 * np.random.default_rng(0).normal(size=(40, 4, 4, 4))
  random = np.random.default_rng(1).normal(size=(40, 4, 4, 4)).astype(np.float32)
  probe = functools.partial(dense_probe.dense_linear_probe, num_classes=4, epochs=20, lrs=(0.1,), batch_size=9)
  good = probe(informative[:30], masks[:30], informative[30:], masks[30:])
  bad = probe(random[:30], masks[:30], random[30:], masks[30:])
  assert good["miou"] > 0.6 and good["pixel_accuracy"] > 0.9, good
  assert bad["miou"] < 0.4, bad


def test_the_dense_baseline_command_is_simclr_on_the_dense_encoder_with_a_dense_probe():
  """The README's baseline of the dense recipe: SimCLR on dense_shapes' encoder, with a dense_probe evaluation."""
  base = simclr_shapes.get_config()
  config = overrides_lib.apply(base, [("model.stage_sizes", "(1, 1, 1)"), ("evals.dense_probe.type", "dense_probe")])
  assert config.evals.dense_probe.type == "dense_probe"
  assert tuple(config.model.stage_sizes) == tuple(dense_shapes.get_config().model.stage_sizes)
