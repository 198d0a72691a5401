"""The built-in face model: a diffusers UNet with named condition streams (identity, expression).

config.py   ModelConfig, TrainConfig, PRESETS
streams.py  condition streams: encoder, null tokens, guidance dropout
attention.py  decoupled cross-attention per stream (a diffusers attention processor)
model.py    MienModel: velocity prediction, save_pretrained / from_pretrained
loss.py     masked rectified-flow matching loss
"""

from mien.builtin.config import PRESETS, ModelConfig, StreamConfig, TrainConfig
from mien.builtin.loss import FlowMatchingLoss
from mien.builtin.model import MienModel

__all__ = ["PRESETS", "ModelConfig", "StreamConfig", "TrainConfig", "MienModel", "FlowMatchingLoss"]
