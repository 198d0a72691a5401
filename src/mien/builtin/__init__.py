"""The built-in face model: a diffusers UNet with named condition streams (identity, expression).

config.py   ModelConfig, TrainConfig, PRESETS
streams.py  condition streams: encoder, null tokens, guidance dropout
attention.py  decoupled cross-attention per stream (a diffusers attention processor)
backbone.py Backbone: UNet, latent normalisation, velocity, spatial reference (BackboneConfig)
adapter.py  ConditionAdapter: streams + their K/V, attached to any diffusers UNet (AdapterConfig)
model.py    AdaptedModel (backbone + adapter), MienModel: both from one ModelConfig, save/from_pretrained
loss.py     masked rectified-flow matching loss
"""

import importlib

# Names load on first use (PEP 562), so that `import mien.builtin.config` (the CLI reads its
# dataclasses to build flags) does not import torch and diffusers.
_EXPORTS = {"AdapterConfig": "adapter", "ConditionAdapter": "adapter", "Backbone": "backbone",
            "BackboneConfig": "backbone", "PRESETS": "config", "ModelConfig": "config", "StreamConfig": "config",
            "TrainConfig": "config", "FlowMatchingLoss": "loss", "AdaptedModel": "model", "MienModel": "model"}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mien.builtin' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mien.builtin.{_EXPORTS[name]}"), name)
