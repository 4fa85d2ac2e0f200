"""Flax models for contrastive learning, looked up by name: `models.get("resnet18_cifar")(dtype=jnp.bfloat16)`.

Encoders map a batch to pooled float32 features, `__call__(x, *, train) -> [B, D]`; heads map features to
embeddings with the same signature. `models.names()` lists what is registered. Pretrained BERT-family sentence
encoders (all-MiniLM-L6-v2) load with `models.convert.load_bert(dir)`; Hugging Face CLIP / SigLIP two-towers with
`models.hf_clip.load(dir)`.
"""

from models.registry import build, get, names, register
from models import bert, decoder, dense, graph, heads, resnet, text, timeseries, two_tower, vit  # noqa: F401,E402  (importing a module registers its models)

__all__ = ["build", "get", "names", "register"]
