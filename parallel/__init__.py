"""Sharding leaf: the device mesh, batch axes and specs, and regex partition rules for parameters.

Imported by train/, methods/, input_pipeline/ and evaluators/; imports only jax and numpy.
"""
