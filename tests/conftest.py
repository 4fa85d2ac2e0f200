"""Every test runs on 8 fake CPU devices; must run before jax is imported."""

import os
import subprocess
import sys

_flags = os.environ.get("XLA_FLAGS", "")
# The suite is dominated by compilation (most programs run a few steps): LLVM's optimisation passes take ~20% of it,
# so tests compile at -O0 unless XLA_FLAGS chooses a level. float32 results may then differ from -O3 in the last bits
# (other instruction selection), as they do between CPU kinds: comparisons use float64 or tolerances that allow it.
if "--xla_backend_optimization_level" not in _flags:
  _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, "..", "shared", "data")

# Many tests compile the same functions (one train step per test run); a persistent cache makes repeats cheap.
import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.path.join(os.environ.get("TMPDIR", "/tmp"), "jax_cache_contrastive"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


# The files whose tests take longest with a cold compilation cache, longest first. `make test` runs two pytest-xdist
# workers, a file per work unit (--dist loadfile --no-loadscope-reorder): starting with these keeps one worker from
# finishing a long file alone while the other has nothing left.
LONGEST_FIRST = (
  "test_recipes.py",
  "test_train.py",
  "test_pretrained.py",
  "test_checkpointing.py",
  "test_bert_minilm.py",
  "test_benchmarks.py",
  "test_input_train.py",
  "test_faults.py",
  "test_multihost.py",
  "test_simskip.py",
  "test_scale_run.py",
  "test_export_text.py",
  "test_scale.py",
)


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="module")
def sharding():
  """Batch sharding over the 8 fake devices' "data" axis."""
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  return jax.sharding.NamedSharding(mesh, jax.P("data"))


def embed_cli(workdir, artifact, source, output, *flags: str) -> subprocess.CompletedProcess:
  """`main.py --mode=embed` on source in a subprocess, as a user runs it; stdout / stderr captured as text."""
  command = [
    sys.executable,
    "main.py",
    "--mode=embed",
    f"--workdir={workdir}",
    f"--artifact={artifact}",
    f"--input={source}",
    f"--output={output}",
    *flags,
  ]
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def nt_xent_denominators(z1, z2, tau):
  """Per sample i: s_i = cos(z1_i, z2_i) / tau and the NT-Xent denominators D1_i, D2_i (all but self), float64."""
  u = np.concatenate([z1, z2]).astype(np.float64)
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  e = np.exp(u @ u.T / tau) * (1 - np.eye(len(u)))
  n = len(z1)
  return np.sum(u[:n] * u[n:], 1) / tau, e[:n].sum(1), e[n:].sum(1)


@pytest.fixture(scope="session")
def tiny_simclr_run(tmp_path_factory):
  """One finished tiny SimCLR run (4 steps, eval, checkpoints), shared by the tests that only read its outputs."""
  from configs import simclr_shapes
  from train import trainer

  config = simclr_shapes.get_config("tiny")
  workdir = str(tmp_path_factory.mktemp("tiny_simclr"))
  results = trainer.train_and_evaluate(config, workdir, progress=False)
  return config, workdir, results
