"""PNG plots of a run: training curves from the metrics JSONL, a 2-D PCA of embeddings, similarity histograms.

Figures are drawn with matplotlib's object API on the Agg canvas, so nothing touches pyplot's global backend or state.
"""

import collections
import json
import math
import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluators.health import positive_negative_similarities


def _new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
  figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
  FigureCanvasAgg(figure)
  return figure


def _read_series(metrics_jsonl_path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """metric name -> (steps, values), from lines like {"step": 10, "train/loss": 5.1}; non-numbers are skipped."""
  series = collections.defaultdict(list)
  with open(metrics_jsonl_path) as f:
    for line in f:
      if not line.strip():
        continue
      record = json.loads(line)
      for name, value in record.items():
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
          series[name].append((record["step"], value))
  return {name: tuple(np.asarray(c) for c in zip(*sorted(points))) for name, points in series.items()}


def _plot_series(axes, name: str, steps: np.ndarray, values: np.ndarray, smooth: bool = False) -> None:
  """One line per metric; with `smooth` and many points, the raw values faint under a centred moving average."""
  window = len(values) // 25 * 2 + 1
  if smooth and window > 1:
    lines = axes.plot(steps, values, alpha=0.3, linewidth=1)
    average = np.convolve(values, np.ones(window) / window, mode="valid")
    axes.plot(
      steps[window // 2 : len(steps) - window // 2],
      average,
      color=lines[0].get_color(),
      linewidth=2,
      label=f"{name} (moving average of {window})",
    )
  else:
    axes.plot(steps, values, marker="o" if len(values) < 20 else None, linewidth=1.5, label=name)


def plot_curves(metrics_jsonl_path: str, out_dir: str) -> list[str]:
  """Writes loss.png (every metric named *loss*), eval.png (one panel per other eval/* metric) and temperature.png
  (every *temperature* metric) into out_dir, each only when such metrics were logged. Returns the written paths."""
  series = _read_series(metrics_jsonl_path)
  loss = sorted(n for n in series if "loss" in n)
  temperature = sorted(n for n in series if "temperature" in n)
  evals = sorted(n for n in series if n.startswith("eval/") and n not in loss)
  os.makedirs(out_dir, exist_ok=True)
  written = []

  for filename, names, title, smooth in (
    ("loss.png", loss, "Loss", True),
    ("temperature.png", temperature, "Temperature", False),
  ):
    if not names:
      continue
    figure = _new_figure()
    axes = figure.add_subplot()
    for name in names:
      _plot_series(axes, name, *series[name], smooth=smooth)
    axes.set(title=title, xlabel="step", ylabel=title.lower())
    axes.grid(alpha=0.3)
    axes.legend()
    written.append(os.path.join(out_dir, filename))
    figure.savefig(written[-1])

  if evals:
    cols = min(3, len(evals))
    rows = math.ceil(len(evals) / cols)
    figure = _new_figure(4.2 * cols, 3.4 * rows)
    for i, name in enumerate(evals):
      axes = figure.add_subplot(rows, cols, i + 1)
      _plot_series(axes, name, *series[name])
      axes.set(title=name, xlabel="step", ylabel=name.removeprefix("eval/"))
      axes.grid(alpha=0.3)
    figure.suptitle("Evaluations")
    written.append(os.path.join(out_dir, "eval.png"))
    figure.savefig(written[-1])
  return written


def plot_embeddings_2d(emb: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None, out_path: str) -> None:
  """Scatter of the first two principal components of [N, D] embeddings, coloured by class, with a legend."""
  emb = np.asarray(emb, np.float64)
  labels = np.asarray(labels)
  centred = emb - emb.mean(axis=0)
  _, singular_values, components = np.linalg.svd(centred, full_matrices=False)
  projected = centred @ components[:2].T
  explained = singular_values[:2] ** 2 / np.sum(singular_values**2)
  classes = np.unique(labels)
  figure = _new_figure(7.5, 6.0)
  axes = figure.add_subplot()
  cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
  for i, c in enumerate(classes):
    points = projected[labels == c]
    name = class_names[c] if class_names is not None else str(c)
    axes.scatter(points[:, 0], points[:, 1], s=8, alpha=0.7, color=cmap(i % cmap.N), label=name)
  axes.set(
    title=f"Embeddings: PCA to 2-D ({len(emb)} points)",
    xlabel=f"PC 1 ({100 * explained[0]:.1f}% of variance)",
    ylabel=f"PC 2 ({100 * explained[1]:.1f}% of variance)",
  )
  axes.grid(alpha=0.3)
  axes.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5, frameon=False)
  figure.savefig(out_path)


def plot_similarity_histogram(z1: np.ndarray, z2: np.ndarray, out_path: str) -> None:
  """Histograms of the cosine similarity of positive pairs (z1[i], z2[i]) and of negatives (z1[i], z2[j != i])."""
  positives, negatives = (np.asarray(s) for s in positive_negative_similarities(z1, z2))
  figure = _new_figure()
  axes = figure.add_subplot()
  bins = np.linspace(-1.0, 1.0, 81)
  for values, name, colour in ((negatives, "negatives", "tab:red"), (positives, "positives", "tab:blue")):
    axes.hist(
      values,
      bins=bins,
      density=True,
      alpha=0.5,
      color=colour,
      label=f"{name} (n={len(values)}, mean {values.mean():.3f})",
    )
    axes.axvline(values.mean(), color=colour, linestyle="--", linewidth=1.5)
  axes.set(
    title="Cosine similarity of positive and negative pairs",
    xlabel="cosine similarity",
    ylabel="density",
    xlim=(-1.0, 1.0),
  )
  axes.grid(alpha=0.3)
  axes.legend()
  figure.savefig(out_path)
