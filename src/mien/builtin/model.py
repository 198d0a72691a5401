"""The built-in model: a stock diffusers UNet2DConditionModel plus named condition streams.

Prediction is the rectified-flow velocity (Liu et al. 2023; Esser et al. 2024, SD3): with
``x_t = (1 - t) x0 + t eps`` for t in [0, 1], the network predicts ``v = eps - x0``; the UNet sees
the timestep as ``t * 1000`` so its sinusoidal embedding covers the range it was designed for.
Latents are TAEF2 latents normalised per channel with ``config.latent_mean/std``.

Conditions become tokens in the streams (streams.py) and reach every cross-attention layer through
``StreamAttnProcessor`` (attention.py); the UNet itself is diffusers' code, unmodified.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn

from mien.builtin.attention import install_stream_processors
from mien.builtin.config import ModelConfig, load_json, save_json
from mien.builtin.streams import build_streams
from mien.errors import MienError

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


class MienModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.unet = UNet2DConditionModel(**config.unet)
        self.streams = build_streams(config.streams, config.cross_attention_dim)
        layout = [(s.name, s.n_tokens) for s in config.streams]
        self.stream_kv = install_stream_processors(self.unet, layout, config.zero_init_streams)

    @property
    def stream_names(self) -> list[str]:
        return list(self.streams.keys())

    def encode_conditions(self, cond: dict, batch_size: int, null: dict | None = None) -> torch.Tensor:
        """Every stream's tokens, concatenated in stream order: (B, sum n_tokens, D).

        A stream missing from ``cond`` (or given as None) gets its null tokens; ``null[name]`` (B,)
        bool nulls single samples (the guidance batch, joint dropout).
        """
        null = null or {}
        unknown = (set(cond) | set(null)) - set(self.streams)
        if unknown:
            raise ValueError(f"unknown condition streams {sorted(unknown)}; the model has {self.stream_names}")
        tokens = [stream(cond.get(name), batch_size, null.get(name)) for name, stream in self.streams.items()]
        return torch.cat(tokens, dim=1)

    def velocity(self, x_t: torch.Tensor, t, cond: dict, scales: dict | None = None,
                 null: dict | None = None) -> torch.Tensor:  # fmt: skip
        """Predicted velocity ``eps - x0`` at ``x_t``, t in [0, 1] (scalar or (B,)).

        ``scales[name]`` multiplies that stream's attention output in every layer; 0 removes the
        stream entirely (not the same as its null tokens, which the model was trained on).
        """
        batch = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device, dtype=torch.float32).reshape(-1).expand(batch)
        tokens = self.encode_conditions(cond, batch, null)
        kwargs = {"stream_scales": dict(scales)} if scales else None
        return self.unet(x_t, t * 1000, encoder_hidden_states=tokens, cross_attention_kwargs=kwargs).sample

    forward = velocity  # DDP and accelerate hooks call forward

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return z * std + mean

    def _stats(self, z: torch.Tensor):
        """Per-channel statistics shaped (1, C, 1, 1); mean 0 / std 1 while the config has none."""
        c = self.config
        mean = torch.tensor(c.latent_mean if c.latent_mean is not None else [0.0] * z.shape[1])
        std = torch.tensor(c.latent_std if c.latent_std is not None else [1.0] * z.shape[1])
        return mean.to(z).view(1, -1, 1, 1), std.to(z).view(1, -1, 1, 1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = torch.float16) -> None:
        """``config.json`` + ``model.safetensors`` (UNet, streams, stream K/V), written atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in self.state_dict().items()}  # fmt: skip
        tmp = directory / (WEIGHTS_NAME + ".tmp")
        save_file(state, tmp, metadata={"format": "pt", "preset": self.config.preset})
        os.replace(tmp, directory / WEIGHTS_NAME)
        save_json(self.config, directory / (CONFIG_NAME + ".tmp"))
        os.replace(directory / (CONFIG_NAME + ".tmp"), directory / CONFIG_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "MienModel":
        """The model saved in ``directory`` (fp32, eval mode); unknown config keys are errors."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise MienError(f"{directory} is not a saved mien model: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")
        model = cls(load_json(ModelConfig, directory / CONFIG_NAME))
        state = load_file(directory / WEIGHTS_NAME)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise MienError(f"{directory / WEIGHTS_NAME} does not match its config: "
                            f"missing {missing[:5]}, unexpected {unexpected[:5]}")  # fmt: skip
        return model.eval()
