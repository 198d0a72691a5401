"""The condition adapter: named condition streams and their per-layer keys and values, attached to any
diffusers UNet2DConditionModel's cross-attention (the backbone, :mod:`mien.builtin.backbone`, stays stock).

The streams (:mod:`mien.builtin.streams`) turn conditions into tokens; :func:`install_stream_processors`
(:mod:`mien.builtin.attention`) gives every cross-attention layer of the UNet a StreamAttnProcessor and
returns the extra streams' K/V, which the adapter owns, trains and saves. The first stream uses each
layer's own ``to_k``/``to_v`` (on Stable Diffusion that is the text stream with its pretrained
projections, IP-Adapter's layout). Saved on its own as ``adapter_config.json`` + ``adapter.safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mien.builtin.attention import install_stream_processors
from mien.builtin.config import StreamConfig, from_dict
from mien.builtin.streams import build_streams
from mien.errors import MienError

ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME = "adapter_config.json", "adapter.safetensors"


@dataclass
class AdapterConfig:
    streams: list[StreamConfig] = field(default_factory=list)  # in token order; the first uses the layer's to_k/to_v
    width: int = 256  # token width: the UNet's cross_attention_dim
    zero_init_streams: bool = True  # extra streams' value projections start at 0 (the UNet's output unchanged)

    def __post_init__(self):
        self.streams = [s if isinstance(s, StreamConfig) else from_dict(StreamConfig, s) for s in self.streams]


class ConditionAdapter(nn.Module):
    """Streams + their K/V at every cross-attention layer of the UNet it is attached to."""

    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.config = config
        self.streams = build_streams(config.streams, config.width)
        self.stream_kv = nn.ModuleDict()  # filled by attach(): one entry per cross-attention layer

    def attach(self, unet: nn.Module) -> "ConditionAdapter":
        """Install the stream attention processors on ``unet`` (a diffusers UNet2DConditionModel whose
        cross_attention_dim is the adapter's width); the K/V of the extra streams are created here."""
        dim = getattr(getattr(unet, "config", None), "cross_attention_dim", self.config.width)
        if dim != self.config.width:
            raise MienError(f"adapter tokens are {self.config.width} wide but the UNet's cross_attention_dim is {dim}")
        layout = [(s.name, s.n_tokens) for s in self.config.streams]
        self.stream_kv = install_stream_processors(unet, layout, self.config.zero_init_streams)
        return self

    @property
    def stream_names(self) -> list[str]:
        return list(self.streams.keys())

    def encode(self, cond: dict, batch_size: int, null: dict | None = None, dropout: bool = True) -> torch.Tensor:
        """Every stream's tokens, concatenated in stream order: (B, sum n_tokens, D).

        A stream missing from ``cond`` (or given as None) gets its null tokens; ``null[name]`` (B,)
        bool nulls single samples (the guidance batch, joint dropout). In training mode each stream's
        own dropout is added unless ``dropout=False`` (the caller drew it already).
        """
        null = self.dropout_null(null, batch_size) if dropout else (null or {})
        unknown = (set(cond) | set(null)) - set(self.streams)
        if unknown:
            raise ValueError(f"unknown condition streams {sorted(unknown)}; the adapter has {self.stream_names}")
        tokens = [stream(cond.get(name), batch_size, null.get(name)) for name, stream in self.streams.items()]
        return torch.cat(tokens, dim=1)

    def dropout_null(self, null: dict | None, batch: int) -> dict:
        """``null`` with each stream's training-time dropout (its ``drop_mask``) OR-ed in."""
        null = dict(null or {})
        for name, stream in self.streams.items():
            drop = stream.drop_mask(batch, next(stream.parameters()).device)
            if drop is not None:
                null[name] = drop if null.get(name) is None else drop | null[name].to(drop.device, torch.bool)
        return null

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / ADAPTER_WEIGHTS_NAME, metadata={"format": "pt"})
        (directory / (ADAPTER_CONFIG_NAME + ".tmp")).write_text(json.dumps(dataclasses.asdict(self.config), indent=2) + "\n")
        os.replace(directory / (ADAPTER_CONFIG_NAME + ".tmp"), directory / ADAPTER_CONFIG_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | Path, unet: nn.Module) -> "ConditionAdapter":
        """The adapter saved in ``directory``, attached to ``unet`` (the one it was trained on, or one with the
        same cross-attention layers)."""
        directory = Path(directory)
        data = json.loads((directory / ADAPTER_CONFIG_NAME).read_text())
        adapter = cls(from_dict(AdapterConfig, data)).attach(unet)
        missing, unexpected = adapter.load_state_dict(load_file(directory / ADAPTER_WEIGHTS_NAME), strict=False)
        if missing or unexpected:
            raise MienError(f"{directory / ADAPTER_WEIGHTS_NAME} does not fit this UNet: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}")
        return adapter
