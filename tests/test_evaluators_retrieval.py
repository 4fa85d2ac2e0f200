"""retrieval_recall on a tiny 2-D example whose ranks are worked out by hand."""

import numpy as np
import pytest

from evaluators import retrieval_recall

# Images point along +x, +y, -x (scaled by 3: recall must not depend on norms).
IMAGES = 3.0 * np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
# Caption i belongs to image i. Cosines (rows: texts, columns: images):
#   t0 = ( .8,  .6):  .8   .6  -.8   -> own image 0 is first
#   t1 = ( .6, -.8):  .6  -.8  -.6   -> own image 1 is third
#   t2 = (-.8, -.6): -.8  -.6   .8   -> own image 2 is first
TEXTS = np.array([[0.8, 0.6], [0.6, -0.8], [-0.8, -0.6]])


def test_one_caption_per_image():
  # image -> text, same cosines by columns: image 0 ranks t0 first, image 1 ranks t1 last (t0 .6, t2 -.6 above it),
  # image 2 ranks t2 first. So both directions have ranks (0, 2, 0).
  recall = retrieval_recall(IMAGES, TEXTS, ks=(1, 2, 3))
  assert recall == pytest.approx(
    {"i2t_r@1": 2 / 3, "i2t_r@2": 2 / 3, "i2t_r@3": 1.0, "t2i_r@1": 2 / 3, "t2i_r@2": 2 / 3, "t2i_r@3": 1.0}
  )


def test_several_captions_per_image():
  # A second caption of image 1, t3 = (0, 1): cosines 0, 1, 0. Image 1 now finds t3 first, so i2t ranks are (0, 0, 0);
  # t3 finds image 1 first, so t2i ranks are (0, 2, 0, 0).
  texts = np.concatenate([TEXTS, [[0.0, 1.0]]])
  recall = retrieval_recall(IMAGES, texts, ks=(1, 3), text_to_image=np.array([0, 1, 2, 1]))
  assert recall == pytest.approx({"i2t_r@1": 1.0, "i2t_r@3": 1.0, "t2i_r@1": 3 / 4, "t2i_r@3": 1.0})


def test_chunking_does_not_change_recall():
  rng = np.random.default_rng(0)
  images, texts = rng.normal(size=(50, 8)), rng.normal(size=(100, 8))
  text_to_image = np.repeat(np.arange(50), 2)
  assert retrieval_recall(images, texts, text_to_image=text_to_image, chunk_size=7) == retrieval_recall(
    images, texts, text_to_image=text_to_image
  )


def test_image_without_caption_is_rejected():
  with pytest.raises(ValueError, match="every image needs a caption"):
    retrieval_recall(IMAGES, TEXTS[:2], text_to_image=np.array([0, 0]))
