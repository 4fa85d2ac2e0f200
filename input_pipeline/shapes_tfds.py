"""The embedded "shapes" dataset as a TFDS builder, generated locally with no download.

Importing this module registers it (it imports tensorflow_datasets, so nothing in the core imports it):

    import tensorflow_datasets as tfds
    from input_pipeline import shapes_tfds  # noqa: F401
    ds = tfds.load("shapes", split="train", data_dir=...)          # 50k / 10k, 32 px
    ds = tfds.load("shapes/tiny", split="train", data_dir=...)     # 512 / 256, for tests

Images are PNG-encoded (lossless), so the pixels equal those of `shapes.render` for the same seed, split, index.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import shapes


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  image_size: int = 32
  num_classes: int = len(shapes.CLASS_NAMES)
  train_size: int = 50_000
  test_size: int = 10_000
  seed: int = 0


class Shapes(tfds.core.GeneratorBasedBuilder):
  """Procedural geometric shapes with random colours, size, position and rotation, and a caption."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
    ShapesConfig(name="32px", description="50,000 train / 10,000 test images of 32x32."),
    ShapesConfig(name="tiny", description="512 train / 256 test images of 32x32.", train_size=512, test_size=256),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
          "label": tfds.features.ClassLabel(names=shapes.CLASS_NAMES[: self.builder_config.num_classes]),
          "caption": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "label"),
      disable_shuffling=True,  # Keep example i at position i, as in the NumPy source.
      homepage="https://github.com/",  # Generated locally: there is no upstream page.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    c = self.builder_config
    return {
      "train": self._generate_examples("train", c.train_size),
      "test": self._generate_examples("test", c.test_size),
    }

  def _generate_examples(self, split: str, num_examples: int):
    c = self.builder_config
    for i in range(num_examples):
      image, label, caption = shapes.render_example(c.seed, split, i, c.image_size, c.num_classes)
      yield i, {"image": np.asarray(image), "label": label, "caption": caption}
