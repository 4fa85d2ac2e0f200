"""Trainer: mesh and partitioning, optimizers, train state, the jitted step, the loop, checkpoints and metrics."""
