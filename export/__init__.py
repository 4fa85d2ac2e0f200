"""Exported encoders: `jax.export` artifacts (and TF SavedModel) plus an `embed` entry point without training code."""
