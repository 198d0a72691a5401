"""Condition streams: each turns one named condition into cross-attention tokens.

A stream owns its encoder, its learned null tokens and its training-time dropout, as DiT's
``LabelEmbedder`` owns its null class and ``dropout_prob`` (Peebles & Xie 2023, models.py). The null
tokens are the stream's "unconditional" value for classifier-free guidance: during training a
dropped sample sees them instead of its encoding, so at sampling time ``null`` asks the model for
its prediction without that condition (guidance.py).

A new kind of condition (text, a background photo) is a new stream class with the same
``forward(x, batch_size, null)`` contract and ``n_tokens``/``width``; the backbone and the attention
processor only see names and token counts.
"""

from __future__ import annotations

import torch
from torch import nn

from mien.builtin.config import StreamConfig
from mien.errors import MienError


class VectorStream(nn.Module):
    """A fixed-size vector -> ``n_tokens`` tokens of width ``width`` (MLP, then LayerNorm per token).

    The MLP-then-LayerNorm shape follows IP-Adapter's ``ImageProjModel`` (Ye et al. 2023), which maps
    one embedding to a few tokens the same way.
    """

    def __init__(self, cfg: StreamConfig, width: int):
        super().__init__()
        self.name, self.in_dim, self.n_tokens, self.width = cfg.name, cfg.in_dim, cfg.n_tokens, width
        self.dropout_prob = cfg.dropout_prob
        self.mlp = nn.Sequential(
            nn.Linear(cfg.in_dim, cfg.hidden_dim), nn.SiLU(), nn.Linear(cfg.hidden_dim, cfg.n_tokens * width)
        )
        self.norm = nn.LayerNorm(width)
        # DiT initialises its label table with std 0.02; the null tokens are drawn the same way
        self.null_tokens = nn.Parameter(torch.randn(cfg.n_tokens, width) * 0.02)

    def forward(self, x: torch.Tensor | None, batch_size: int, null: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in_dim) or None -> (B, n_tokens, width).

        ``x=None`` gives the null tokens for the whole batch; ``null`` (B,) bool picks samples that get
        them. Training-time dropout is drawn by the model with ``drop_mask`` and arrives in ``null``,
        so parts of a condition that live outside the tokens (the spatial reference of the identity
        stream, model.py) are dropped together with them.
        """
        null_tokens = self.null_tokens.unsqueeze(0).expand(batch_size, -1, -1)
        if x is None:
            return null_tokens
        if x.shape != (batch_size, self.in_dim):
            raise ValueError(f"stream {self.name!r} expects ({batch_size}, {self.in_dim}), got {tuple(x.shape)}")
        tokens = self.norm(self.mlp(x).view(batch_size, self.n_tokens, self.width))
        if null is None:
            return tokens
        return torch.where(null.to(x.device, torch.bool).view(-1, 1, 1), null_tokens.to(tokens.dtype), tokens)

    def drop_mask(self, batch_size: int, device) -> torch.Tensor | None:
        """Training-time guidance dropout (DiT ``LabelEmbedder.token_drop``); None when not training."""
        if not self.training or self.dropout_prob <= 0:
            return None
        return torch.rand(batch_size, device=device) < self.dropout_prob


# stream kinds by name, for configs; a text or background stream registers here
STREAM_KINDS: dict[str, type[nn.Module]] = {"vector": VectorStream}


def build_streams(configs: list[StreamConfig], width: int) -> nn.ModuleDict:
    """The model's streams, keyed by name, in token order."""
    for cfg in configs:
        if cfg.kind not in STREAM_KINDS:
            raise MienError(f"stream {cfg.name!r}: unknown kind {cfg.kind!r}; known kinds are {sorted(STREAM_KINDS)}")
    return nn.ModuleDict({cfg.name: STREAM_KINDS[cfg.kind](cfg, width) for cfg in configs})
