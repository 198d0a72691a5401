"""Decoupled cross-attention per condition stream, as a diffusers attention processor.

Each cross-attention layer (``attn2`` of a diffusers ``BasicTransformerBlock``) receives the
streams' tokens concatenated in a fixed order (``encoder_hidden_states``: (B, sum n_s, D)) and
attends to each stream separately, with its own keys and values, summing the results:

    out = to_out( sum_s scale_s * softmax(q K_s^T / sqrt(d)) V_s )

This is IP-Adapter's decoupled cross-attention (Ye et al. 2023, sec. "Decoupled Cross-Attention":
Z_new = Attention(Q, K, V) + Attention(Q, K', V'), scaled by lambda at inference), generalised from
(text, image) to any number of named streams, and FineFace's way of adding an AU token (extra K/V
projections on every cross-attention layer). The first stream uses the layer's own ``to_k``/``to_v``
(on Stable Diffusion that is the text stream with its pretrained projections); every further stream
gets a ``StreamKV`` pair per layer. Those pairs are ordinary modules returned by
``install_stream_processors`` so the caller owns, trains and saves them; the processor itself is a
plain object holding references (diffusers would otherwise register it inside the UNet).

``scale_s = 0`` skips the stream: the layer then computes exactly what it computes without it.
Scales arrive per call as ``cross_attention_kwargs={"stream_scales": {...}}``; nothing is stored on
the processor between calls, so concurrent requests with different scales are safe. Self-attention
layers get a processor that accepts and ignores that argument (otherwise diffusers warns on every
call that it is unused). The self-attention is diffusers' ``AttnProcessor2_0`` (:func:`self_attention`),
kept here so that this module, and the compact UNet that uses it (:mod:`mien.builtin.unet`), work without
importing diffusers.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn


class StreamKV(nn.Module):
    """Key and value projections of one extra stream at one cross-attention layer."""

    def __init__(self, attn: nn.Module, zero_init_value: bool):
        super().__init__()
        bias = attn.to_k.bias is not None
        self.to_k = nn.Linear(attn.to_k.in_features, attn.to_k.out_features, bias=bias)
        self.to_v = nn.Linear(attn.to_v.in_features, attn.to_v.out_features, bias=bias)
        if zero_init_value:  # a new stream starts as a no-op (ControlNet's zero convolution idea)
            nn.init.zeros_(self.to_v.weight)
            if bias:
                nn.init.zeros_(self.to_v.bias)


def self_attention(attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                   temb=None) -> torch.Tensor:  # fmt: skip
    """diffusers' ``AttnProcessor2_0.__call__`` (0.42), operation for operation, for a diffusers ``Attention`` or
    :class:`mien.builtin.unet.Attention` layer."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch_size, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
    batch_size, sequence_length, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.to_k(encoder_hidden_states)
    value = attn.to_v(encoder_hidden_states)
    inner_dim = key.shape[-1]
    head_dim = inner_dim // attn.heads
    query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                   is_causal=False)  # fmt: skip
    hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
    hidden_states = hidden_states.to(query.dtype)
    hidden_states = attn.to_out[0](hidden_states)
    hidden_states = attn.to_out[1](hidden_states)
    if input_ndim == 4:
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attn.rescale_output_factor


class SelfAttnProcessor:
    """diffusers' stock processor (:func:`self_attention`), accepting (and ignoring) the streams' per-call scales."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 stream_scales=None):  # fmt: skip
        return self_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class StreamAttnProcessor:
    """Cross-attention over named token streams, each with its own K/V and scale."""

    def __init__(self, layout: list[tuple[str, int]], kv: nn.ModuleDict):
        self.layout = layout  # (stream name, token count) in token order
        self.kv = kv  # extra streams' projections at this layer (all but the first stream)

    def __call__(self, attn: nn.Module, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, stream_scales: dict[str, float] | None = None):  # fmt: skip
        if attention_mask is not None or attn.spatial_norm is not None:
            raise NotImplementedError("StreamAttnProcessor supports neither attention masks nor spatial norm")
        if encoder_hidden_states is None:
            raise ValueError("StreamAttnProcessor is for cross-attention; it got no encoder_hidden_states")
        residual, input_ndim = hidden_states, hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = _heads(attn, attn.to_q(hidden_states))
        if attn.norm_q is not None:
            query = attn.norm_q(query)

        out = None
        for name, tokens, scale in self._streams(encoder_hidden_states, stream_scales or {}):
            kv = self.kv[name] if name in self.kv else None
            to_k, to_v = (attn.to_k, attn.to_v) if kv is None else (kv.to_k, kv.to_v)
            key, value = _heads(attn, to_k(tokens)), _heads(attn, to_v(tokens))
            if attn.norm_k is not None:
                key = attn.norm_k(key)
            part = F.scaled_dot_product_attention(query, key, value)
            part = part if scale == 1 else part * scale
            out = part if out is None else out + part
        if out is None:  # every stream off: no cross-attention contribution before to_out
            out = torch.zeros_like(query)

        batch, heads, length, head_dim = out.shape
        hidden_states = out.transpose(1, 2).reshape(batch, length, heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _streams(self, encoder_hidden_states: torch.Tensor, scales: dict[str, float]):
        """(name, tokens, scale) per stream with a non-zero scale, splitting the token sequence."""
        total = sum(n for _, n in self.layout)
        if encoder_hidden_states.shape[1] != total:
            raise ValueError(f"expected {total} condition tokens {self.layout}, got {encoder_hidden_states.shape[1]}")
        unknown = set(scales) - {name for name, _ in self.layout}
        if unknown:
            raise ValueError(f"stream_scales names unknown streams {sorted(unknown)}")
        start = 0
        for name, n in self.layout:
            scale = scales.get(name, 1.0)
            if scale != 0:
                yield name, encoder_hidden_states[:, start : start + n], scale
            start += n


def _heads(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, L, heads * d) -> (B, heads, L, d)."""
    return x.view(x.shape[0], -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)


def install_stream_processors(
    unet: nn.Module, layout: list[tuple[str, int]], zero_init_value: bool = True
) -> nn.ModuleDict:
    """Give every cross-attention layer of ``unet`` a ``StreamAttnProcessor`` for ``layout``.

    Returns the extra streams' projections as ``{layer key: {stream name: StreamKV}}``; the caller
    must own that ModuleDict (assign it to a module attribute) so it is trained, moved and saved.
    Layer widths come from each ``Attention`` module (diffusers' or :class:`mien.builtin.unet.Attention`); the
    layer key is only a unique label.
    """
    kv_all, processors = nn.ModuleDict(), {}
    for name, module in unet.named_modules():
        if not _is_attention(module):
            continue
        if not module.is_cross_attention:
            processors[f"{name}.processor"] = SelfAttnProcessor()
            continue
        kv = nn.ModuleDict({s: StreamKV(module, zero_init_value) for s, _ in layout[1:]})
        kv_all[name.replace(".", "_")] = kv
        processors[f"{name}.processor"] = StreamAttnProcessor(list(layout), kv)
    unet.set_attn_processor(processors)
    return kv_all


def _is_attention(module: nn.Module) -> bool:
    """A diffusers ``Attention`` layer or the compact UNet's (:mod:`mien.builtin.unet`), without importing
    diffusers (a diffusers layer exists only once diffusers is imported)."""
    from mien.builtin.unet import Attention as CompactAttention

    if isinstance(module, CompactAttention):
        return True
    processors = sys.modules.get("diffusers.models.attention_processor")
    return processors is not None and isinstance(module, processors.Attention)
