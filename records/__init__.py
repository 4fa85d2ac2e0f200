"""Record formats leaf: how examples are stored and decoded (image bytes, shard files), below input_pipeline/ and
export/, which both read them. Imports only numpy and Pillow (and format libraries), never TensorFlow or JAX."""
