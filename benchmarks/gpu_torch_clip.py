"""The torch peer of gpu_step.py's CLIP step, in plain torch + timm (open_clip is not on the GPU machines): prints one
JSON line, or one saying why it skipped.

    BATCH=1024 python benchmarks/gpu_torch_clip.py

Same shapes as ours: timm's ViT-B/16 (224 px, class token) and CLIP's text transformer (context 77, vocab 49408,
width 512, 12 layers, 8 heads, causal, pre-LN, features of the EOT token = the largest id, as open_clip), both projected
to 512, a learnable logit scale, CLIP's symmetric cross-entropy over the batch, AdamW (lr 1e-4, weight decay 0.1),
bfloat16 autocast with float32 parameters; attention through torch's scaled_dot_product_attention (flash kernels).
BATCH (default 256; halved until a step fits), STEPS (10), TORCH_COMPILE=1 (torch.compile the model: slower to start),
FLOPS_PER_PAIR (our XLA count, for an MFU on the same FLOPs), PEAK_TFLOPS (989: H100 / H200 dense bf16),
GPU_BENCH_SIZE=tiny (CPU smoke test sizes).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

TINY = os.environ.get("GPU_BENCH_SIZE", "") == "tiny"


def skip(reason: str) -> None:
  print(json.dumps({"workload": "clip_vit_b16_bf16_torch", "skipped": reason}))
  sys.exit(0)


try:
  import timm
  import torch
  from torch import nn
  from torch.nn import functional as F
except ImportError as e:
  skip(f"torch / timm not importable here ({e})")


class TextTower(nn.Module):
  """CLIP's text transformer: token + position embeddings, causal pre-LN blocks, final LN, EOT token, projection."""

  def __init__(self, vocab: int, context: int, width: int, depth: int, heads: int, embed: int):
    super().__init__()
    self.token = nn.Embedding(vocab, width)
    self.position = nn.Parameter(torch.randn(context, width) * 0.01)
    layer = nn.TransformerEncoderLayer(width, heads, 4 * width, 0.0, F.gelu, batch_first=True, norm_first=True)
    self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
    self.ln = nn.LayerNorm(width)
    self.proj = nn.Linear(width, embed, bias=False)
    self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

  def forward(self, tokens):
    x = self.blocks(self.token(tokens) + self.position, mask=self.mask, is_causal=True)
    x = self.ln(x)[torch.arange(tokens.shape[0], device=tokens.device), tokens.argmax(dim=-1)]
    return self.proj(x)


class Clip(nn.Module):
  def __init__(self, sizes: dict):
    super().__init__()
    self.image = timm.create_model(
      sizes["vit"], pretrained=False, num_classes=0, global_pool="token", **sizes["vit_kw"]
    )
    self.image_proj = nn.Linear(self.image.num_features, sizes["embed"], bias=False)
    self.text = TextTower(
      sizes["vocab"], sizes["context"], sizes["width"], sizes["depth"], sizes["heads"], sizes["embed"]
    )
    self.logit_scale = nn.Parameter(torch.tensor(2.6593))

  def forward(self, images, tokens):
    x = F.normalize(self.image_proj(self.image(images)), dim=-1)
    y = F.normalize(self.text(tokens), dim=-1)
    logits = self.logit_scale.exp().clamp(max=100) * x @ y.T
    labels = torch.arange(x.shape[0], device=x.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def sizes() -> dict:
  if TINY:
    kw = dict(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    return dict(vit="vit_base_patch16_224", vit_kw=kw, vocab=100, context=8, width=16, depth=1, heads=2, embed=16)
  return dict(vit="vit_base_patch16_224", vit_kw={}, vocab=49408, context=77, width=512, depth=12, heads=8, embed=512)


def run(batch: int, steps: int, device: str, size: dict) -> list[float]:
  model = Clip(size).to(device)
  if os.environ.get("TORCH_COMPILE") == "1":
    model = torch.compile(model)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
  pixels = size["vit_kw"].get("img_size", 224)
  images = torch.randn(batch, 3, pixels, pixels, device=device)
  tokens = torch.randint(1, size["vocab"], (batch, size["context"]), device=device)
  times = []
  for i in range(steps + 1):
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16):
      loss = model(images, tokens)
    loss.backward()
    opt.step()
    float(loss.detach())  # waits for the step
    if i:
      times.append(time.perf_counter() - start)
  return times


def main() -> None:
  device = "cuda" if torch.cuda.is_available() else "cpu"
  batch, steps = int(os.environ.get("BATCH", 8 if TINY else 256)), int(os.environ.get("STEPS", 2 if TINY else 10))
  while True:
    try:
      times = run(batch, steps, device, sizes())
      break
    except torch.OutOfMemoryError:
      if batch <= 1:
        skip("out of memory at batch 1")
      batch //= 2
      torch.cuda.empty_cache()
  step_s = statistics.median(times)
  flops = float(os.environ.get("FLOPS_PER_PAIR", 0)) * batch
  peak = float(os.environ.get("PEAK_TFLOPS", 989)) * 1e12
  print(
    json.dumps(
      {
        "workload": "clip_vit_b16_bf16_torch",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "framework": f"torch {torch.__version__}, timm {timm.__version__}",
        "batch": batch,
        "step_s": round(step_s, 4),
        "step_s_all": [round(t, 4) for t in times],
        "examples_per_s": round(batch / step_s, 1),
        "mfu": round(flops / step_s / peak, 4) if flops and device == "cuda" else None,
        "peak_device_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None,
        "torch_compile": os.environ.get("TORCH_COMPILE") == "1",
      }
    )
  )


if __name__ == "__main__":
  main()
