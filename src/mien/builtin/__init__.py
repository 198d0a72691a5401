"""The built-in face model: a diffusers UNet with named condition streams (identity, expression).

config.py   ModelConfig, TrainConfig, PRESETS
streams.py  condition streams: encoder, null tokens, guidance dropout
attention.py  decoupled cross-attention per stream (a diffusers attention processor)
backbone.py Backbone: UNet, latent normalisation, velocity, spatial reference (BackboneConfig)
adapter.py  ConditionAdapter: streams + their K/V, attached to any diffusers UNet (AdapterConfig)
model.py    AdaptedModel (backbone + adapter), MienModel: both from one ModelConfig, save/from_pretrained
loss.py     masked rectified-flow matching loss
"""

from mien.builtin.adapter import AdapterConfig, ConditionAdapter
from mien.builtin.backbone import Backbone, BackboneConfig
from mien.builtin.config import PRESETS, ModelConfig, StreamConfig, TrainConfig
from mien.builtin.loss import FlowMatchingLoss
from mien.builtin.model import AdaptedModel, MienModel

__all__ = ["AdaptedModel", "AdapterConfig", "Backbone", "BackboneConfig", "ConditionAdapter", "PRESETS", "ModelConfig",
           "StreamConfig", "TrainConfig", "MienModel", "FlowMatchingLoss"]  # fmt: skip
