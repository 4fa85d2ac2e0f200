"""export.embed on a toy two-tower export (a linear map of pixels, a bag of byte tokens; compiles in a blink): every
input format, bad inputs skipped with reasons, the index, resumption, the sharded call. The real models' embeddings
are checked against training in test_export.py and test_export_text.py."""

import io
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import tokenization
from export import embed, embed_inputs, jax_export
from records import images

SIZE, MAX_LEN, DIM = 8, 16, 4
RNG = np.random.default_rng(0)
W_IMAGE = (RNG.standard_normal((SIZE * SIZE * 3, DIM)) / 10).astype(np.float32)
W_TEXT = RNG.standard_normal((259, DIM)).astype(np.float32)


def _png(h: int, w: int, mode: str = "RGB", fmt: str = "PNG", seed: int = 0) -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).convert(mode).save(buf, format=fmt)
  return buf.getvalue()


def _expected_images(datas: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
  """Float64 embeddings of the toy image tower after the evaluation decode, and a float32 error bound for each."""
  x = np.stack([images.decode_image(d, SIZE) for d in datas]).reshape(len(datas), -1) / 255.0
  # A float32 dot product of length K errs by at most K * 2^-24 * sum |x_i w_i|.
  return x @ W_IMAGE.astype(np.float64), x.shape[1] * 2.0**-24 * (np.abs(x) @ np.abs(W_IMAGE)) + 1e-7


def _expected_texts(texts: list[str]) -> np.ndarray:
  tokens = tokenization.get("bytes").encode(texts, MAX_LEN)
  counts = np.stack([np.bincount(t[t != 0], minlength=259) for t in tokens])
  return counts @ W_TEXT.astype(np.float64)  # exact in float32 too: small integer counts, <= 16 terms


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("toy_export"))

  def embed_image(params, _, batch):
    x = batch["image"].astype(jnp.float32) / 255.0
    return x.reshape(x.shape[0], -1) @ params["image"]

  def embed_text(params, _, batch):
    tokens = batch["text"]
    return (jax.nn.one_hot(tokens, 259) * (tokens != 0)[..., None]).sum(1) @ params["text"]

  params = {"image": W_IMAGE, "text": W_TEXT}
  jax_export.export_image_encoder(embed_image, params, {}, image_shape=(SIZE, SIZE, 3), out_dir=out)
  jax_export.export_text_encoder(embed_text, params, {}, max_len=MAX_LEN, out_dir=out)
  return out


GOOD = {"a/x.png": _png(20, 30), "a/b/y.jpg": _png(8, 8, fmt="JPEG", seed=1), "z.png": _png(16, 12, "L", seed=2)}
BAD = {
  "a/empty.png": (b"", "empty"),
  "a/truncated.png": (_png(20, 20, seed=3)[:300], "truncated"),
  "b/not_an_image.jpg": (b"hello", "not an image"),
  "b/deep.png": (None, "wrong mode"),  # 16-bit grayscale, written below
}


def _image_tree(root) -> None:
  for name, data in {**GOOD, **{k: v[0] for k, v in BAD.items()}}.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
      Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 900).save(path)
    else:
      path.write_bytes(data)
  (root / "a" / "notes.txt").write_text("not an input: no image extension")


def test_folder_embeds_every_good_image_as_evaluation_decodes_it_and_lists_the_broken_ones(toy_export, tmp_path):
  _image_tree(tmp_path / "in")
  summary = embed.embed_path(toy_export, str(tmp_path / "in"), str(tmp_path / "out"), batch_size=8, progress=False)
  index = list(embed.read_index(str(tmp_path / "out")))
  walk = ["z.png", "a/empty.png", "a/truncated.png", "a/x.png", "a/b/y.jpg", "b/deep.png", "b/not_an_image.jpg"]
  assert [os.path.relpath(line["path"], tmp_path / "in") for line in index] == walk  # a folder's files, then subfolders
  reasons = {os.path.relpath(x["path"], tmp_path / "in"): x["reason"] for x in index if x["status"] == "skipped"}
  assert {k: v.split(":")[0] for k, v in reasons.items()} == {k: v[1] for k, v in BAD.items()}
  ok = [x for x in index if x["status"] == "ok"]
  assert [x["row"] for x in ok] == list(range(len(GOOD)))
  emb = embed.load_embeddings(str(tmp_path / "out"), "image")
  expected, bound = _expected_images([GOOD[os.path.relpath(x["path"], tmp_path / "in")] for x in ok])
  assert emb.shape == (len(GOOD), DIM) and emb.dtype == np.float32
  assert np.all(np.abs(emb - expected) <= bound)
  assert summary["embedded"] == len(GOOD) and summary["skipped"] == {v[1]: 1 for v in BAD.values()}
  assert "skipped 4 (empty: 1, not an image: 1, truncated: 1, wrong mode: 1)" in embed.summary_line("o", summary)


def test_path_list_and_npy_inputs_give_the_folder_embeddings(toy_export, tmp_path):
  for name, data in GOOD.items():
    (tmp_path / name.replace("/", "_")).write_bytes(data)
  (tmp_path / "list.txt").write_text("\n".join([*(n.replace("/", "_") for n in GOOD), "", "missing.png"]) + "\n")
  embed.embed_path(toy_export, str(tmp_path / "list.txt"), str(tmp_path / "o1"), batch_size=8, progress=False)
  index = list(embed.read_index(str(tmp_path / "o1")))
  assert [x["line"] for x in index] == [1, 2, 3, 5] and index[-1]["reason"] == "missing: no such file"
  expected, bound = _expected_images(list(GOOD.values()))
  assert np.all(np.abs(embed.load_embeddings(str(tmp_path / "o1")) - expected) <= bound)

  pixels = np.stack([np.asarray(Image.open(io.BytesIO(_png(20, 30, seed=s))).convert("RGB")) for s in (0, 5)])
  np.save(tmp_path / "pixels.npy", pixels)
  embed.embed_path(toy_export, str(tmp_path / "pixels.npy"), str(tmp_path / "o2"), batch_size=8, progress=False)
  assert [x["item"] for x in embed.read_index(str(tmp_path / "o2"))] == [0, 1]
  expected, bound = _expected_images([_png(20, 30, seed=s) for s in (0, 5)])  # same resize + crop as files
  assert np.all(np.abs(embed.load_embeddings(str(tmp_path / "o2")) - expected) <= bound)


def test_sentence_file_skips_invalid_utf8_lines_and_the_index_keeps_each_rows_line(toy_export, tmp_path):
  (tmp_path / "s.txt").write_bytes("a circle\n\nZwei Männer\r\n".encode() + b"bad \xff byte\nlast line")
  embed.embed_path(toy_export, str(tmp_path / "s.txt"), str(tmp_path / "out"), batch_size=8, progress=False)
  index = list(embed.read_index(str(tmp_path / "out")))
  assert [(x["line"], x["row"], x.get("text")) for x in index] == [
    (1, 0, "a circle"),
    (2, 1, ""),
    (3, 2, "Zwei Männer"),
    (4, None, None),
    (5, 3, "last line"),
  ]
  assert index[3]["reason"].startswith("invalid utf-8: byte 4")
  emb = embed.load_embeddings(str(tmp_path / "out"), "text")
  sentences = ["a circle", "", "Zwei Männer", "last line"]
  np.testing.assert_allclose(emb, _expected_texts(sentences), rtol=1e-6, atol=1e-6)
  assert not os.path.exists(tmp_path / "out" / "image")

  np.save(tmp_path / "ids.npy", tokenization.get("bytes").encode(sentences, MAX_LEN))  # token ids: the same rows
  embed.embed_path(toy_export, str(tmp_path / "ids.npy"), str(tmp_path / "ids"), batch_size=8, progress=False)
  np.testing.assert_array_equal(embed.load_embeddings(str(tmp_path / "ids"), "text"), emb)


def test_jsonl_and_tsv_pairs_feed_both_towers_in_one_pass_and_a_broken_pair_is_skipped_whole(toy_export, tmp_path):
  (tmp_path / "x.png").write_bytes(GOOD["a/x.png"])
  (tmp_path / "bad.png").write_bytes(b"")
  rows = [{"image": "x.png", "text": "a red circle"}, {"image": "bad.png", "text": "lost"}, {"text": "no image"}]
  (tmp_path / "p.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n{not json\n")
  (tmp_path / "p.tsv").write_text("image\ttext\nx.png\ta red circle\nbad.png\tlost\nno tab here\n")
  for name, reasons in [("p.jsonl", ["empty", "missing", "bad record"]), ("p.tsv", ["empty", "bad record"])]:
    out = str(tmp_path / f"out_{name}")
    summary = embed.embed_path(toy_export, str(tmp_path / name), out, batch_size=8, progress=False)
    index = list(embed.read_index(out))
    assert index[0] == {"row": 0, "line": index[0]["line"], "path": "x.png", "text": "a red circle", "status": "ok"}
    assert [x["reason"].split(":")[0] for x in index[1:]] == reasons and summary["embedded"] == 1
    expected, bound = _expected_images([GOOD["a/x.png"]])
    assert np.all(np.abs(embed.load_embeddings(out, "image") - expected) <= bound)
    np.testing.assert_allclose(embed.load_embeddings(out, "text"), _expected_texts(["a red circle"]), atol=1e-6)


def test_tar_and_array_record_shards_feed_both_towers_and_bad_rows_are_skipped_with_reasons(toy_export, tmp_path):
  from array_record.python import array_record_module

  from records import examples, webdataset

  x, y, z = GOOD["a/x.png"], GOOD["a/b/y.jpg"], GOOD["z.png"]
  rows = [(x, "a red circle"), (b"hello", "lost"), (z, "a grey square"), (y, "a blue star")]
  webdataset.write_shard(
    str(tmp_path / "s-0.tar"), [(f"{i:03d}", {"png": r[0], "txt": r[1].encode()}) for i, r in enumerate(rows[:3])]
  )
  webdataset.write_shard(str(tmp_path / "s-1.tar"), [("003", {"jpg": y, "txt": b"a blue star"})])
  data = (tmp_path / "s-1.tar").read_bytes()
  (tmp_path / "s-2.tar").write_bytes(data[:600])  # a copy cut short inside its image member (after a 512-byte header)
  writer = array_record_module.ArrayRecordWriter(str(tmp_path / "s-0.array_record"), "group_size:1")
  for image, text in rows:
    writer.write(examples.encode({"image": image, "caption": text}))
  writer.write(b"\xc1 not msgpack")
  writer.close()
  cases = [
    ("s-{0..2}.tar", ["not an image", "damaged"], "sample"),
    ("s-*.array_record", ["not an image", "bad record"], "record"),
  ]
  for pattern, reasons, position in cases:
    out = str(tmp_path / f"out_{position}")
    summary = embed.embed_path(toy_export, str(tmp_path / pattern), out, batch_size=8, progress=False)
    index = list(embed.read_index(out))
    ok = [r for r in index if r["status"] == "ok"]
    assert [r["text"] for r in ok] == ["a red circle", "a grey square", "a blue star"] and summary["embedded"] == 3
    assert [r["reason"].split(":")[0] for r in index if r["status"] == "skipped"] == reasons
    assert all(position in r and "shard" in r for r in index)
    expected, bound = _expected_images([x, z, y])
    assert np.all(np.abs(embed.load_embeddings(out, "image") - expected) <= bound)
    np.testing.assert_allclose(embed.load_embeddings(out, "text"), _expected_texts([r["text"] for r in ok]), atol=1e-6)


def test_an_interrupted_run_resumed_writes_the_same_files_as_one_run(toy_export, tmp_path, monkeypatch):
  (tmp_path / "in").mkdir()
  for i in range(29):  # parts of 12 rows, batches of 8: a part boundary falls inside a batch
    (tmp_path / "in" / f"{i:02d}.png").write_bytes(b"broken" if i % 7 == 3 else _png(10 + i, 12, seed=i))
  args = dict(batch_size=8, shard_rows=12, dtype="float16", progress=False)
  embed.embed_path(toy_export, str(tmp_path / "in"), str(tmp_path / "once"), **args)

  call, calls = embed._Towers.__call__, []

  def interrupted(self, inputs):
    calls.append(len(inputs))
    if len(calls) == 3:
      raise KeyboardInterrupt
    return call(self, inputs)

  monkeypatch.setattr(embed._Towers, "__call__", interrupted)
  with pytest.raises(KeyboardInterrupt):
    embed.embed_path(toy_export, str(tmp_path / "in"), str(tmp_path / "twice"), **args)
  assert sorted(os.listdir(tmp_path / "twice" / "index")) == ["part-00000.jsonl"]
  monkeypatch.setattr(embed._Towers, "__call__", call)
  embed.embed_path(toy_export, str(tmp_path / "in"), str(tmp_path / "twice"), **args)

  names = sorted(
    os.path.relpath(os.path.join(r, f), tmp_path / "once") for r, _, fs in os.walk(tmp_path / "once") for f in fs
  )
  assert names == sorted(
    os.path.relpath(os.path.join(r, f), tmp_path / "twice") for r, _, fs in os.walk(tmp_path / "twice") for f in fs
  )
  assert "image/part-00002.npy" in names and not any(n.endswith(".tmp") for n in names)
  for name in names:
    if name != "summary.json":  # its seconds differ
      assert (tmp_path / "once" / name).read_bytes() == (tmp_path / "twice" / name).read_bytes(), name
  emb = embed.load_embeddings(str(tmp_path / "twice"))
  assert emb.dtype == np.float16 and emb.shape == (25, DIM)


def test_a_rerun_with_other_settings_stops_and_a_finished_run_is_not_redone(toy_export, tmp_path):
  (tmp_path / "s.txt").write_text("one\ntwo\n")
  args = (toy_export, str(tmp_path / "s.txt"), str(tmp_path / "out"))
  first = embed.embed_path(*args, batch_size=8, progress=False)
  assert embed.embed_path(*args, batch_size=8, progress=False) == first
  with pytest.raises(ValueError, match="other settings.*dtype"):
    embed.embed_path(*args, dtype="float16", progress=False)
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "mine.txt").write_text("x")
  with pytest.raises(ValueError, match="not empty"):
    embed.embed_path(toy_export, str(tmp_path / "s.txt"), str(tmp_path / "full"), progress=False)


def test_batches_are_split_over_the_local_devices(toy_export):
  fn, devices = jax_export.load_sharded(toy_export, "image")
  x = np.random.default_rng(0).integers(0, 256, (16, SIZE, SIZE, 3), dtype=np.uint8)
  out = fn(x)
  assert devices == len(jax.local_devices()) == 8 and len(out.sharding.device_set) == 8
  expected, bound = (
    (x.reshape(16, -1) / 255.0) @ W_IMAGE,
    192 * 2.0**-24 * (x.reshape(16, -1) / 255.0) @ np.abs(W_IMAGE),
  )
  assert np.all(np.abs(np.asarray(out) - expected) <= bound + 1e-7)


def test_a_card_asking_for_other_preprocessing_is_refused():
  pre = {"image_size": 8, **jax_export.IMAGE_PREPROCESSING}
  assert embed.check_preprocessing({"preprocessing": pre}) == 8
  with pytest.raises(ValueError, match="bilinear"):
    embed.check_preprocessing({"preprocessing": {**pre, "interpolation": "bilinear"}})
  with pytest.raises(ValueError, match="export again"):
    embed.check_preprocessing({"preprocessing": "included: x/255"})


def test_format_detection_by_folder_suffix_and_first_line(tmp_path):
  (tmp_path / "paths.txt").write_text("\n photos/cat.JPG\n")
  (tmp_path / "sentences.txt").write_text("a photo of a cat\n")
  found = {p: embed_inputs.detect_format(str(tmp_path / p)) for p in ("paths.txt", "sentences.txt")}
  assert found == {"paths.txt": "paths", "sentences.txt": "sentences"}
  suffixed = (str(tmp_path), "x.npy", "x.jsonl", "x.tsv", "d/{0..9}.tar", "d/*.array_record")
  assert [embed_inputs.detect_format(p) for p in suffixed] == ["folder", "npy", "jsonl", "tsv", "tar", "array_record"]


def test_throughput_benchmark_skips_cleanly_without_the_data():
  script = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "embed_throughput.py"
  )
  env = {**os.environ, "DATA": "/nonexistent/cifar10.npz"}
  out = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
  assert "skipped" in json.loads(out.strip().splitlines()[-1])
