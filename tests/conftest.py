"""Every test runs on 8 fake CPU devices; must run before jax is imported."""

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")

# Many tests compile the same functions (one train step per test run); a persistent cache makes repeats cheap.
import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.path.join(os.environ.get("TMPDIR", "/tmp"), "jax_cache_contrastive"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_simclr_run(tmp_path_factory):
  """One finished tiny SimCLR run (4 steps, eval, checkpoints), shared by the tests that only read its outputs."""
  from configs import simclr_shapes
  from train import trainer

  config = simclr_shapes.get_config("tiny")
  workdir = str(tmp_path_factory.mktemp("tiny_simclr"))
  results = trainer.train_and_evaluate(config, workdir, progress=False)
  return config, workdir, results
