"""The denoising backbone: a diffusers UNet2DConditionModel, the latent normalisation and the velocity
wrapper, apart from the condition adapter (:mod:`mien.builtin.adapter`) that feeds its cross-attention.
For mien's own configurations the UNet is :class:`mien.builtin.unet.CompactUNet`, the same network
without importing diffusers (:func:`mien.builtin.unet.build_unet`).

Prediction is the rectified-flow velocity (Liu et al. 2023; Esser et al. 2024, SD3): with
``x_t = (1 - t) x0 + t eps`` for t in [0, 1], the network predicts ``v = eps - x0``; the UNet sees the
timestep as ``t * 1000`` so its sinusoidal embedding covers the range it was designed for. Latents are
normalised per channel with ``config.latent_mean/std``.

With ``config.reference`` the UNet also takes a spatial reference: the raw latent of an identity photo,
normalised here and concatenated to ``x_t`` as more input channels (InstructPix2Pix, Brooks et al. 2023,
sec. 3.4). Embeddings alone keep identity only loosely (docs/training.md, "Why a spatial reference"): a 128-D descriptor
cannot carry hair, skin and face shape. Zeros stand for "no reference". With ``config.reference_pool`` = k
the UNet sees the reference only average-pooled over k x k latent cells (:func:`coarse`): trained on its
own photo's latent seen that way, it takes colour, lighting and layout from the photo it edits.

The latent shape (channels, size) is the UNet's own (``out_channels``, ``sample_size``); the face box in
latent cells is in the config, so another backbone (a Stable Diffusion UNet, a LoRA-wrapped one:
``peft.inject_adapter_in_model(LoraConfig(target_modules=LORA_TARGETS), backbone.unet)``, with
:data:`mien.builtin.config.LORA_TARGETS`) brings its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BackboneConfig:
    unet: dict = field(default_factory=dict)  # UNet2DConditionModel keyword arguments (when it builds its UNet)
    latent_mean: list[float] | None = None  # per-channel latent statistics (None: mean 0, std 1)
    latent_std: list[float] | None = None
    reference: bool = False  # a spatial reference latent concatenated to the input (in_channels doubled)
    reference_pool: int = 0  # k > 0: the reference seen average-pooled over k x k cells
    # (y0, y1, x0, x1) latent cells an edit may redraw with keep="background"; None: mien.regions.FACE_BOX
    face_box: tuple[int, int, int, int] | None = None


def coarse(z: torch.Tensor, k: int) -> torch.Tensor:
    """``z`` (B, C, H, W) averaged over k x k cells and spread back to H x W (bilinear).

    On the 16 x 16 latent of a 128 px face, k = 4 leaves 4 x 4 cells of 32 px: enough for skin tone,
    hair, lighting and where the face sits, too coarse for the shape of a mouth or an eye.
    """
    return F.interpolate(F.avg_pool2d(z, k), size=z.shape[-2:], mode="bilinear", align_corners=False)


class Backbone(nn.Module):
    """A diffusers UNet as a flow-velocity model over normalised latents (module docstring)."""

    def __init__(self, config: BackboneConfig, unet: nn.Module | None = None):
        super().__init__()
        from mien.builtin.unet import build_unet

        self.config = config
        # diffusers' UNet2DConditionModel, or the same network without importing diffusers (mien.builtin.unet)
        self.unet = unet if unet is not None else build_unet(config.unet)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the latents it denoises: also the shape of one noise sample."""
        c = self.unet.config
        size = c.sample_size if isinstance(c.sample_size, int) else c.sample_size[0]
        return int(c.out_channels), int(size), int(size)

    @property
    def face_box(self) -> tuple[int, int, int, int]:
        from mien.regions import FACE_BOX

        return tuple(self.config.face_box) if self.config.face_box is not None else FACE_BOX

    def velocity(self, x_t: torch.Tensor, t, tokens: torch.Tensor, reference: torch.Tensor | None = None,
                 reference_drop: torch.Tensor | None = None, stream_scales: dict | None = None) -> torch.Tensor:  # fmt: skip
        """Predicted velocity ``eps - x0`` at ``x_t`` (normalised latents), t in [0, 1] (scalar or (B,)),
        cross-attending to ``tokens`` (B, L, D); ``reference`` (B, C, H, W) raw latents, ``reference_drop``
        (B,) bool rows that get none; ``stream_scales`` reach the adapter's attention processors."""
        batch = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device, dtype=torch.float32).reshape(-1).expand(batch)
        if self.config.reference:
            x_t = torch.cat([x_t, self.reference_input(reference, x_t, reference_drop)], dim=1)
        elif reference is not None:
            raise ValueError("this backbone has no spatial reference input (config.reference is False)")
        kwargs = {"stream_scales": dict(stream_scales)} if stream_scales else None
        return self.unet(x_t, t * 1000, encoder_hidden_states=tokens, cross_attention_kwargs=kwargs).sample

    def reference_input(self, reference, x_t: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        """The normalised reference latent, zero where absent or dropped.

        A reference row that is exactly zero everywhere also means "none" (the training data's
        people with a single photo), which lets one batch mix samples with and without one.
        """
        if reference is None:
            return torch.zeros_like(x_t)
        ref = reference.to(x_t)
        present = ref.flatten(1).abs().amax(1) > 0
        if drop is not None:
            present = present & ~drop.to(present.device)
        ref = self.normalize(ref)
        if self.config.reference_pool:
            ref = coarse(ref, self.config.reference_pool)
        return torch.where(present.view(-1, 1, 1, 1), ref, torch.zeros_like(ref))

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
