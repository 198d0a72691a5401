"""The built-in model's UNet without importing diffusers: the same modules, parameter names and arithmetic as
diffusers' ``UNet2DConditionModel`` for the configurations mien builds (every block a cross-attention block),
so it loads the same state dict and computes bit-identical outputs. It is a copy on purpose, kept honest by a
check: tests/test_compact_unet.py holds its parameter names, outputs and gradients equal to diffusers' for
the model presets.

Why: importing diffusers' UNet takes about 4.7 s of CPU on the 2-core machine (it imports torch._dynamo,
peft, transformers and every diffusers model), more than a whole generation; `mien generate` pays it on
every start (docs/performance.md, "Where the time goes"). :func:`build_unet` builds this module when the
config only uses what it implements (:func:`supported`) and diffusers' class otherwise.

The code follows diffusers 0.42 (Apache License 2.0, Copyright The HuggingFace Team): ``UNet2DConditionModel``
(unets/unet_2d_condition.py), ``CrossAttnDownBlock2D``, ``UNetMidBlock2DCrossAttn``, ``CrossAttnUpBlock2D``
(unets/unet_2d_blocks.py), ``ResnetBlock2D`` (resnet.py), ``Downsample2D``, ``Upsample2D``,
``Transformer2DModel`` (continuous input, convolutional projections), ``BasicTransformerBlock``,
``FeedForward`` with ``GEGLU``, ``Attention`` with ``AttnProcessor2_0`` semantics, ``Timesteps`` and
``TimestepEmbedding``, reduced to the options above; every tensor operation is the one diffusers runs, in
its order, so no float sum changes.
"""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

# UNet2DConditionModel arguments this module implements (others, or other block types: diffusers' class)
SUPPORTED_KEYS = {"sample_size", "in_channels", "out_channels", "down_block_types", "up_block_types",
                  "block_out_channels", "attention_head_dim", "layers_per_block", "cross_attention_dim",
                  "norm_num_groups"}  # fmt: skip
# diffusers' defaults for the keys a config may leave out
DEFAULTS = {"sample_size": None, "in_channels": 4, "out_channels": 4, "attention_head_dim": 8, "layers_per_block": 2,
            "cross_attention_dim": 1280, "norm_num_groups": 32}  # fmt: skip
NORM_EPS = 1e-5  # diffusers' norm_eps default: the resnets' and the output GroupNorm's epsilon


def supported(kwargs: dict) -> bool:
    """Whether :class:`CompactUNet` implements these UNet2DConditionModel arguments exactly."""
    if set(kwargs) - SUPPORTED_KEYS or "down_block_types" not in kwargs or "up_block_types" not in kwargs:
        return False
    down, up = list(kwargs["down_block_types"]), list(kwargs["up_block_types"])
    blocks = list(kwargs.get("block_out_channels", ()))
    heads = kwargs.get("attention_head_dim", DEFAULTS["attention_head_dim"])
    return (bool(down) and set(down) == {"CrossAttnDownBlock2D"} and set(up) == {"CrossAttnUpBlock2D"}
            and len(down) == len(up) == len(blocks) and isinstance(kwargs.get("layers_per_block", 2), int)
            and isinstance(kwargs.get("cross_attention_dim", 1280), int)
            and (isinstance(heads, int) or len(heads) == len(down)))  # fmt: skip


def build_unet(kwargs: dict) -> nn.Module:
    """:class:`CompactUNet` when it implements ``kwargs`` (:func:`supported`), else diffusers' UNet2DConditionModel."""
    if supported(kwargs):
        return CompactUNet(**kwargs)
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**kwargs)


class Attention(nn.Module):
    """diffusers' ``Attention`` with its defaults (no bias on q/k/v, no norms, no residual): the attributes its
    processors read, and ``forward`` passing the keyword arguments the processor accepts."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, cross_attention_dim: int | None = None):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.is_cross_attention = cross_attention_dim is not None
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(cross_attention_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(cross_attention_dim or query_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=True), nn.Dropout(0.0)])
        self.group_norm = self.spatial_norm = self.norm_q = self.norm_k = None
        self.norm_cross = False
        self.residual_connection = False
        self.rescale_output_factor = 1.0
        self.processor = None
        self._accepts: frozenset = frozenset()

    def set_processor(self, processor) -> None:
        self.processor = processor
        self._accepts = frozenset(inspect.signature(processor.__call__).parameters)

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k in self._accepts}
        return self.processor(self, hidden_states, encoder_hidden_states=encoder_hidden_states,
                              attention_mask=attention_mask, **kwargs)  # fmt: skip


class PlainAttnProcessor:
    """diffusers' ``AttnProcessor2_0`` for an :class:`Attention` without mask or norms (what the compact UNet
    uses until :func:`mien.builtin.attention.install_stream_processors` replaces it)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        from mien.builtin.attention import self_attention

        return self_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states, gate = self.proj(hidden_states).chunk(2, dim=-1)
        return hidden_states * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for module in self.net:
            hidden_states = module(hidden_states)
        return hidden_states


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention, GEGLU feed-forward, each after a LayerNorm and with a residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=True, eps=1e-5)
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=True, eps=1e-5)
        self.attn2 = Attention(dim, heads, dim_head, cross_attention_dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=True, eps=1e-5)
        self.ff = FeedForward(dim)

    def forward(self, hidden_states, encoder_hidden_states, cross_attention_kwargs: dict | None):
        kwargs = cross_attention_kwargs or {}
        hidden_states = self.attn1(self.norm1(hidden_states), encoder_hidden_states=None, attention_mask=None,
                                   **kwargs) + hidden_states  # fmt: skip
        hidden_states = self.attn2(self.norm2(hidden_states), encoder_hidden_states=encoder_hidden_states,
                                   attention_mask=None, **kwargs) + hidden_states  # fmt: skip
        return self.ff(self.norm3(hidden_states)) + hidden_states


class Transformer2DModel(nn.Module):
    """GroupNorm, 1x1 conv in, transformer blocks over the H*W tokens, 1x1 conv out, residual."""

    def __init__(self, heads: int, dim_head: int, in_channels: int, cross_attention_dim: int, norm_num_groups: int):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(num_groups=norm_num_groups, num_channels=in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner, kernel_size=1, stride=1, padding=0)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, dim_head, cross_attention_dim)])
        self.proj_out = nn.Conv2d(inner, in_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, hidden_states, encoder_hidden_states, cross_attention_kwargs=None):
        batch, _, height, width = hidden_states.shape
        residual = hidden_states
        hidden_states = self.proj_in(self.norm(hidden_states))
        inner = hidden_states.shape[1]
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch, height * width, inner)
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states, encoder_hidden_states, cross_attention_kwargs)
        hidden_states = hidden_states.reshape(batch, height, width, inner).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(hidden_states) + residual


class ResnetBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float = NORM_EPS):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups=groups, num_channels=in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(num_groups=groups, num_channels=out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nonlinearity = nn.SiLU()
        self.conv_shortcut = None
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=True)

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv1(self.nonlinearity(self.norm1(input_tensor)))
        temb = self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        hidden_states = self.norm2(hidden_states + temb)
        hidden_states = self.conv2(self.dropout(self.nonlinearity(hidden_states)))
        if self.conv_shortcut is not None:
            if self.training:
                input_tensor = input_tensor.contiguous()
            input_tensor = self.conv_shortcut(input_tensor)
        return (input_tensor + hidden_states) / 1.0


class Downsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1, bias=True)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(hidden_states)


class Upsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=True)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.shape[0] >= 64:
            hidden_states = hidden_states.contiguous()
        if hidden_states.numel() * 2 > pow(2, 31):
            hidden_states = hidden_states.contiguous()
        return self.conv(F.interpolate(hidden_states, scale_factor=2.0, mode="nearest"))


class CrossAttnDownBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, temb_channels, layers, heads, cross_attention_dim, groups, down):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels,
                                                    temb_channels, groups) for i in range(layers)])  # fmt: skip
        self.attentions = nn.ModuleList([Transformer2DModel(heads, out_channels // heads, out_channels,
                                                            cross_attention_dim, groups) for _ in range(layers)])  # fmt: skip
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels)]) if down else None

    def forward(self, hidden_states, temb, encoder_hidden_states, cross_attention_kwargs):
        output_states = ()
        for resnet, attn in zip(self.resnets, self.attentions):
            hidden_states = attn(resnet(hidden_states, temb), encoder_hidden_states, cross_attention_kwargs)
            output_states = output_states + (hidden_states,)
        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden_states = downsampler(hidden_states)
            output_states = output_states + (hidden_states,)
        return hidden_states, output_states


class UNetMidBlock2DCrossAttn(nn.Module):
    def __init__(self, channels, temb_channels, heads, cross_attention_dim, groups):
        super().__init__()
        self.attentions = nn.ModuleList([Transformer2DModel(heads, channels // heads, channels, cross_attention_dim,
                                                            groups)])  # fmt: skip
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb_channels, groups) for _ in range(2)])

    def forward(self, hidden_states, temb, encoder_hidden_states, cross_attention_kwargs):
        hidden_states = self.resnets[0](hidden_states, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            hidden_states = resnet(attn(hidden_states, encoder_hidden_states, cross_attention_kwargs), temb)
        return hidden_states


class CrossAttnUpBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, prev_output_channel, temb_channels, layers, heads,
                 cross_attention_dim, groups, up):  # fmt: skip
        super().__init__()
        resnets, attentions = [], []
        for i in range(layers):
            skip = in_channels if i == layers - 1 else out_channels
            resnet_in = prev_output_channel if i == 0 else out_channels
            resnets.append(ResnetBlock2D(resnet_in + skip, out_channels, temb_channels, groups))
            attentions.append(Transformer2DModel(heads, out_channels // heads, out_channels, cross_attention_dim, groups))
        self.attentions = nn.ModuleList(attentions)
        self.resnets = nn.ModuleList(resnets)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if up else None

    def forward(self, hidden_states, res_hidden_states_tuple, temb, encoder_hidden_states, cross_attention_kwargs):
        for resnet, attn in zip(self.resnets, self.attentions):
            res_hidden_states = res_hidden_states_tuple[-1]
            res_hidden_states_tuple = res_hidden_states_tuple[:-1]
            hidden_states = torch.cat([hidden_states, res_hidden_states], dim=1)
            hidden_states = attn(resnet(hidden_states, temb), encoder_hidden_states, cross_attention_kwargs)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states)
        return hidden_states


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """diffusers' ``get_timestep_embedding`` with flip_sin_to_cos=True, downscale_freq_shift=0, scale 1."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32, device=timesteps.device)
    exponent = exponent / (half - 0)
    emb = timesteps[:, None].float() * torch.exp(exponent)[None, :]
    emb = 1 * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(sample)))


class CompactUNet(nn.Module):
    """``UNet2DConditionModel(**kwargs)`` for the configurations of :func:`supported` (module docstring):
    ``unet(sample, timestep, encoder_hidden_states=..., cross_attention_kwargs=...).sample``."""

    def __init__(self, down_block_types, up_block_types, block_out_channels, sample_size=None, in_channels=4,
                 out_channels=4, attention_head_dim=8, layers_per_block=2, cross_attention_dim=1280,
                 norm_num_groups=32):  # fmt: skip
        super().__init__()
        blocks = list(block_out_channels)
        n = len(blocks)
        heads = [attention_head_dim] * n if isinstance(attention_head_dim, int) else list(attention_head_dim)
        self.config = SimpleNamespace(sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
                                      down_block_types=tuple(down_block_types), up_block_types=tuple(up_block_types),
                                      block_out_channels=tuple(blocks), attention_head_dim=attention_head_dim,
                                      layers_per_block=layers_per_block, cross_attention_dim=cross_attention_dim,
                                      norm_num_groups=norm_num_groups)  # fmt: skip
        temb = blocks[0] * 4
        self.conv_in = nn.Conv2d(in_channels, blocks[0], kernel_size=3, padding=1)
        self.time_embedding = TimestepEmbedding(blocks[0], temb)
        self.down_blocks = nn.ModuleList()
        out = blocks[0]
        for i in range(n):
            inp, out = out, blocks[i]
            self.down_blocks.append(CrossAttnDownBlock2D(inp, out, temb, layers_per_block, heads[i], cross_attention_dim,
                                                         norm_num_groups, down=i < n - 1))  # fmt: skip
        self.mid_block = UNetMidBlock2DCrossAttn(blocks[-1], temb, heads[-1], cross_attention_dim, norm_num_groups)
        rev, rev_heads = blocks[::-1], heads[::-1]
        self.up_blocks = nn.ModuleList()
        out = rev[0]
        for i in range(n):
            prev, out, inp = out, rev[i], rev[min(i + 1, n - 1)]
            self.up_blocks.append(CrossAttnUpBlock2D(inp, out, prev, temb, layers_per_block + 1, rev_heads[i],
                                                     cross_attention_dim, norm_num_groups, up=i < n - 1))  # fmt: skip
        self.conv_norm_out = nn.GroupNorm(num_channels=blocks[0], num_groups=norm_num_groups, eps=NORM_EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(blocks[0], out_channels, kernel_size=3, padding=1)
        self.set_attn_processor({name + ".processor": PlainAttnProcessor() for name, m in self.named_modules()
                                 if isinstance(m, Attention)})  # fmt: skip

    def set_attn_processor(self, processors) -> None:
        """diffusers' ``set_attn_processor``: one processor for every attention layer, or a dict
        {"<module name>.processor": processor}."""
        for name, module in self.named_modules():
            if isinstance(module, Attention):
                module.set_processor(processors[f"{name}.processor"] if isinstance(processors, dict) else processors)

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                cross_attention_kwargs: dict | None = None, return_dict: bool = True):  # fmt: skip
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], dtype=torch.float64 if isinstance(timestep, float) else torch.int64,
                                     device=sample.device)  # fmt: skip
        elif len(timesteps.shape) == 0:
            timesteps = timesteps[None].to(sample.device)
        timesteps = timesteps.expand(sample.shape[0])
        t_emb = timestep_embedding(timesteps, self.config.block_out_channels[0]).to(dtype=sample.dtype)
        emb = self.time_embedding(t_emb)
        sample = self.conv_in(sample)
        res_samples = (sample,)
        for block in self.down_blocks:
            sample, more = block(sample, emb, encoder_hidden_states, cross_attention_kwargs)
            res_samples += more
        sample = self.mid_block(sample, emb, encoder_hidden_states, cross_attention_kwargs)
        for block in self.up_blocks:
            skips = res_samples[-len(block.resnets):]
            res_samples = res_samples[: -len(block.resnets)]
            sample = block(sample, skips, emb, encoder_hidden_states, cross_attention_kwargs)
        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        return SimpleNamespace(sample=sample) if return_dict else (sample,)
