"""Kill storm: a tiny SimCLR run killed at random instants, restarted after each kill, ends bit-identical to a run
that was never interrupted (every parameter, optimizer and data-position leaf of the final checkpoint, and every
logged loss, replayed steps included, which pins the data order).

python benchmarks/fault_storm.py --signal=KILL --kills=20 --steps=1000 --seed=0
python benchmarks/fault_storm.py --signal=TERM --kills=20 --steps=1000 --seed=1

Each run is `main.py --config=configs/simclr_shapes.py:tiny` with --steps, a checkpoint every --checkpoint_every
steps and the loss logged every step, in subprocesses sharing a persistent compilation cache (restarts skip XLA
compilation). Kill instants are uniform in [0, --max_delay_s] seconds after the process starts (imports, restore,
compilation, training, saving and evaluation are all hit); a run that ends before its instant ends the storm. Prints
one JSON line: kills, kills_while_training, restarts, steps_lost_total (steps executed more than once), identical,
wall_s (of the storm, after the uninterrupted reference run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main_command(workdir: str, overrides: dict) -> list[str]:
  """The training command of the storm: the tiny SimCLR recipe with `overrides` (config key -> value)."""
  return [
    sys.executable,
    os.path.join(REPO, "main.py"),
    f"--config={os.path.join(REPO, 'configs', 'simclr_shapes.py')}:tiny",
    f"--workdir={workdir}",
    *(f"--config.{key}={value}" for key, value in overrides.items()),
  ]


def finished_steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []


def _wait_for_checkpoint(
  workdir: str, proc: subprocess.Popen, done: Callable[[list[int]], bool], timeout_s: float
) -> bool:
  """Waits until `done(finished steps)` holds; False if the process exits first."""
  deadline = time.time() + timeout_s
  while not done(finished_steps(workdir)):
    if proc.poll() is not None:
      return False
    if time.time() > deadline:
      proc.kill()
      raise TimeoutError(f"the awaited checkpoint did not appear within {timeout_s} s in {workdir}")
    time.sleep(0.02)
  return True


def _run(
  workdir: str,
  overrides: dict,
  env: dict,
  sig: int | None,
  delay_s: float,
  *,
  after_checkpoint: bool,
  until_final_checkpoint: bool,
  timeout_s: float,
) -> dict:
  """One run of main_command; `sig` is sent `delay_s` after its start (or after its first new checkpoint) unless it
  ended before; `until_final_checkpoint` SIGKILLs it (not a kill of the storm) once the last step's checkpoint exists."""
  start = finished_steps(workdir)[-1] if finished_steps(workdir) else 0
  killed = False
  with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:  # pipes could fill up
    proc = subprocess.Popen(
      main_command(workdir, overrides), cwd=REPO, env=env, stdout=stdout, stderr=stderr, text=True
    )
    if sig is not None:
      progressed = lambda steps: not after_checkpoint or (steps and steps[-1] > start)
      if _wait_for_checkpoint(workdir, proc, progressed, timeout_s):
        deadline = time.time() + delay_s
        while time.time() < deadline and proc.poll() is None:
          time.sleep(0.01)
        if proc.poll() is None:
          proc.send_signal(sig)
          killed = True
    elif until_final_checkpoint:
      if _wait_for_checkpoint(workdir, proc, lambda steps: overrides["total_steps"] in steps, timeout_s):
        proc.kill()
    proc.wait(timeout=timeout_s)
    stdout.seek(0)
    stderr.seek(0)
    return dict(signal=sig, killed=killed, returncode=proc.returncode, stdout=stdout.read(), stderr=stderr.read())


def storm(
  workdir: str,
  overrides: dict,
  signals: list[int],
  *,
  seed: int,
  max_delay_s: float,
  env: dict,
  after_checkpoint: bool = False,
  until_final_checkpoint: bool = False,
  timeout_s: float = 600.0,
) -> dict:
  """Runs main_command in `workdir`, sending the next of `signals` to each run at a random instant and restarting it,
  then once more to the end. Returns {"kills", "restarts", "runs": [{"signal", "killed", "returncode", "stdout",
  "stderr"}]}; a run that ends by itself before its instant (finished, or failed) ends the storm early.

  The instant is uniform in [0, max_delay_s] seconds after the process starts, or (`after_checkpoint`) after its
  first new checkpoint, so that every run makes progress. `until_final_checkpoint` ends the last run as soon as
  the checkpoint of config.total_steps exists (skipping its evaluation) instead of waiting for it to exit.
  """
  rng, runs = random.Random(seed), []
  for sig in [*signals, None]:
    options = dict(
      after_checkpoint=after_checkpoint, until_final_checkpoint=until_final_checkpoint, timeout_s=timeout_s
    )
    runs.append(_run(workdir, overrides, env, sig, rng.uniform(0.0, max_delay_s), **options))
    if not runs[-1]["killed"]:
      break
  return dict(kills=sum(r["killed"] for r in runs), restarts=len(runs) - 1, runs=runs)


def _records(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def logged_losses(workdir: str) -> list[tuple[int, float]]:
  """(step, train/loss) of every line of metrics.jsonl, in order: a step replayed after a restart appears again."""
  return [(r["step"], r["train/loss"]) for r in _records(workdir) if "train/loss" in r]


def differences(reference: str, workdir: str, step: int) -> list[str]:
  """What differs between the checkpoints of `step` of two workdirs and between their logged losses ([] if none).

  Arrays are compared bit for bit; a loss of the storm's run must equal the reference's loss of the same step every
  time that step was logged (runs, restarts and replays alike), which checks that each step saw the same batch.
  """
  import jax
  import numpy as np
  import orbax.checkpoint as ocp

  import checkpointing

  def saved(workdir):
    checkpointer = checkpointing.Checkpointer(workdir, async_save=False)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore())
    restored = checkpointer.manager.restore(step, args=args)
    checkpointer.close()
    return jax.tree.map(np.asarray, restored["state"]), restored["data"]

  (ref_state, ref_data), (state, data) = saved(reference), saved(workdir)
  found = []
  if jax.tree.structure(ref_state) != jax.tree.structure(state):
    return ["state structures differ"]
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ref_state), jax.tree.leaves(state)):
    if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
      found.append(f"state{jax.tree_util.keystr(path)}")
  if ref_data != data:
    found.append(f"data position {data} != {ref_data}")
  expected = dict(logged_losses(reference))
  found += [
    f"loss at step {s}: {v!r} != {expected[s]!r}"
    for s, v in logged_losses(workdir)
    if s in expected and v != expected[s]
  ]
  return found


def runs_that_trained(workdir: str) -> int:
  """Runs that logged at least one train step (each run logs its compiled step's statistics first)."""
  records = _records(workdir)
  starts = [i for i, r in enumerate(records) if any(k.startswith("compiled/") for k in r)] + [len(records)]
  return sum(any("train/loss" in r for r in records[a:b]) for a, b in zip(starts, starts[1:]))


def steps_lost(workdir: str, total_steps: int) -> int:
  """Steps executed more than once (each replay of a step logs it again; log_every=1)."""
  return len(logged_losses(workdir)) - total_steps


def environment(cache_dir: str) -> dict:
  """The runs' environment: a shared persistent compilation cache, so that a restart loads its programs."""
  return dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
  parser.add_argument("--kills", type=int, default=20)
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--checkpoint_every", type=int, default=5)
  parser.add_argument("--max_delay_s", type=float, default=12.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="", help="default: a new temporary directory")
  parser.add_argument("--cache_dir", default=os.path.join(tempfile.gettempdir(), "jax_cache_fault_storm"))
  args = parser.parse_args()

  root = args.workdir or tempfile.mkdtemp(prefix="fault_storm_")
  overrides = dict(total_steps=args.steps, checkpoint_every=args.checkpoint_every, log_every=1, keep_checkpoints=2)
  overrides["export.enabled"] = False
  env = environment(args.cache_dir)
  reference, stormed = os.path.join(root, "reference"), os.path.join(root, "storm")
  os.makedirs(root, exist_ok=True)
  done = subprocess.run(main_command(reference, overrides), cwd=REPO, env=env, capture_output=True, text=True)
  if done.returncode != 0:
    sys.exit(f"the uninterrupted run failed (rc={done.returncode}):\n{done.stderr[-3000:]}")

  start = time.time()
  sig = getattr(signal, f"SIG{args.signal}")
  result = storm(stormed, overrides, [sig] * args.kills, seed=args.seed, max_delay_s=args.max_delay_s, env=env)
  last = result["runs"][-1]
  if last["returncode"] != 0:
    sys.exit(f"the final run failed (rc={last['returncode']}):\n{last['stderr'][-3000:]}")
  found = differences(reference, stormed, args.steps)
  summary = dict(
    signal=args.signal,
    kills=result["kills"],
    kills_while_training=runs_that_trained(stormed) - 1,  # the others hit start-up (imports, restore, compilation)
    restarts=result["restarts"],
    steps_lost_total=steps_lost(stormed, args.steps),
    identical=not found,
    steps=args.steps,
    checkpoint_every=args.checkpoint_every,
    seed=args.seed,
    wall_s=round(time.time() - start, 1),
  )
  print(json.dumps(summary))
  if found:
    print("\n".join(found[:20]), file=sys.stderr)


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  main()
