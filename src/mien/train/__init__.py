"""Training of the built-in model: data (training tensors, mirroring) and the loop."""
