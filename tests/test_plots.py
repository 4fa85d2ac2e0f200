"""Plots are written as PNG files, one per kind of curve that was logged."""

import json

import numpy as np

from evaluators import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_metrics(path, with_temperature=True):
  """A fake run: noisy decaying loss every 10 steps, three evals every 200 steps, a learnable temperature."""
  rng = np.random.default_rng(0)
  with open(path, "w") as f:
    for step in range(10, 2001, 10):
      record = {"step": step, "train/loss": 6 * np.exp(-step / 600) + 1 + 0.2 * rng.normal(), "train/lr": 0.1}
      if with_temperature:
        record["train/temperature"] = 0.07 + 0.4 * np.exp(-step / 400)
      f.write(json.dumps(record) + "\n")
      if step % 200 == 0:
        acc = 0.9 - 0.8 * np.exp(-step / 500)
        f.write(
          json.dumps(
            {
              "step": step,
              "eval/knn_acc": acc,
              "eval/linear_acc": acc + 0.03,
              "eval/sts_spearman": 100 * acc - 10,
              "eval/loss": 3 - acc,
            }
          )
          + "\n"
        )


def sample_pairs(n=200, d=32, noise=0.6, seed=0):
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=(n, d))
  return z1, z1 + noise * rng.normal(size=(n, d))


def clustered_embeddings(num_classes=10, per_class=60, d=32, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(num_classes), per_class)
  return 3 * rng.normal(size=(num_classes, d))[labels] + rng.normal(size=(len(labels), d)), labels


def _is_png(path):
  return path.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_curves_writes_loss_eval_and_temperature(tmp_path):
  write_metrics(tmp_path / "metrics.jsonl")
  written = plots.plot_curves(str(tmp_path / "metrics.jsonl"), str(tmp_path / "plots"))
  assert sorted(p.rsplit("/", 1)[1] for p in written) == ["eval.png", "loss.png", "temperature.png"]
  assert all(_is_png(tmp_path / "plots" / name) for name in ("eval.png", "loss.png", "temperature.png"))


def test_plot_curves_skips_temperature_when_not_logged(tmp_path):
  write_metrics(tmp_path / "metrics.jsonl", with_temperature=False)
  plots.plot_curves(str(tmp_path / "metrics.jsonl"), str(tmp_path))
  assert (tmp_path / "loss.png").exists() and not (tmp_path / "temperature.png").exists()


def test_plot_embeddings_2d_and_similarity_histogram(tmp_path):
  emb, labels = clustered_embeddings()
  names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
  plots.plot_embeddings_2d(emb, labels, names, str(tmp_path / "pca.png"))
  plots.plot_similarity_histogram(*sample_pairs(), str(tmp_path / "similarity.png"))
  assert _is_png(tmp_path / "pca.png") and _is_png(tmp_path / "similarity.png")
