"""The built-in model: a stock diffusers UNet2DConditionModel plus named condition streams.

Prediction is the rectified-flow velocity (Liu et al. 2023; Esser et al. 2024, SD3): with
``x_t = (1 - t) x0 + t eps`` for t in [0, 1], the network predicts ``v = eps - x0``; the UNet sees
the timestep as ``t * 1000`` so its sinusoidal embedding covers the range it was designed for.
Latents are TAEF2 latents normalised per channel with ``config.latent_mean/std``.

Conditions become tokens in the streams (streams.py) and reach every cross-attention layer through
``StreamAttnProcessor`` (attention.py); the UNet itself is diffusers' code, unmodified.

With ``config.reference`` the identity stream also has a spatial part: ``cond["reference"]``, the raw
TAEF2 latent of an identity photo, normalised here and concatenated to ``x_t`` as 32 more input
channels (InstructPix2Pix, Brooks et al. 2023, sec. 3.4). Embeddings alone kept identity only loosely
(docs/training.md, run 1): a 128-D descriptor cannot carry hair, skin and face shape. Zeros stand for
"no reference"; they are used whenever the identity stream is nulled, so identity guidance moves both.
With ``config.reference_pool`` = k the model sees the reference only average-pooled over k x k latent
cells (:func:`coarse`): trained on its own photo's latent seen that way, it takes colour, lighting
and layout from the photo it edits and the expression from the expression stream (docs/training.md,
run 4).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn

from mien.builtin.attention import install_stream_processors
from mien.builtin.config import ModelConfig, load_json, save_json
from mien.builtin.streams import build_streams
from mien.errors import MienError
from mien.weights import sha256_of

CONFIG_NAME, WEIGHTS_NAME, CHECKSUM_NAME = "config.json", "model.safetensors", "SHA256SUMS"


def _weight_files(directory: Path) -> list[str]:
    """The model folder's weight files: the UNet's, and a fine-tuned TAEF2 decoder when the config names one."""
    names = [WEIGHTS_NAME]
    try:
        decoder = json.loads((directory / CONFIG_NAME).read_text()).get("decoder")
    except (OSError, ValueError, AttributeError):  # unreadable: load_json says so in one line later
        decoder = None
    if isinstance(decoder, str) and decoder:
        names.append(decoder)
    return names


def write_checksum(directory: str | Path) -> None:
    """``SHA256SUMS`` beside the weights (sha256sum's format), so a damaged copy is caught on load."""
    directory = Path(directory)
    lines = [f"{sha256_of(directory / name)}  {name}\n" for name in _weight_files(directory) if (directory / name).is_file()]
    (directory / CHECKSUM_NAME).write_text("".join(lines))


def verify_checksum(directory: str | Path) -> str:
    """The model's SHA256, after checking every weight file against ``SHA256SUMS`` when the folder has one
    (folders without it still load): that of ``model.safetensors``, or, with a fine-tuned decoder, the
    SHA256 of the two files' hex digests joined by a space (so outputs name the pair that made them)."""
    directory = Path(directory)
    sums = directory / CHECKSUM_NAME
    want = dict(line.split()[::-1] for line in sums.read_text().splitlines() if line.strip()) if sums.is_file() else {}
    shas = {}
    for name in _weight_files(directory):
        if not (directory / name).is_file():
            raise MienError(f"model file {directory / name} is missing (named in {CONFIG_NAME}); reinstall mien "
                            "(or re-export the model) to get a complete copy")  # fmt: skip
        shas[name] = sha256_of(directory / name)
        if want.get(name) and shas[name] != want[name]:
            raise MienError(f"{directory / name} does not match its checksum in {CHECKSUM_NAME}: the file is "
                            "damaged or was replaced; reinstall mien (or re-export the model) to get an intact copy")  # fmt: skip
    if len(shas) == 1:
        return shas[WEIGHTS_NAME]
    return hashlib.sha256(" ".join(shas[n] for n in _weight_files(directory)).encode()).hexdigest()


def coarse(z: torch.Tensor, k: int) -> torch.Tensor:
    """``z`` (B, C, H, W) averaged over k x k cells and spread back to H x W (bilinear).

    On the 16 x 16 latent of a 128 px face, k = 4 leaves 4 x 4 cells of 32 px: enough for skin tone,
    hair, lighting and where the face sits, too coarse for the shape of a mouth or an eye.
    """
    return F.interpolate(F.avg_pool2d(z, k), size=z.shape[-2:], mode="bilinear", align_corners=False)


class MienModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.sha256: str | None = None  # of the weight files it was loaded from (from_pretrained, verify_checksum)
        self.decoder_path: Path | None = None  # its fine-tuned TAEF2 decoder, if any (from_pretrained)
        self.config = config
        self.unet = UNet2DConditionModel(**config.unet)
        self.streams = build_streams(config.streams, config.cross_attention_dim)
        layout = [(s.name, s.n_tokens) for s in config.streams]
        self.stream_kv = install_stream_processors(self.unet, layout, config.zero_init_streams)

    @property
    def stream_names(self) -> list[str]:
        return list(self.streams.keys())

    def encode_conditions(self, cond: dict, batch_size: int, null: dict | None = None,
                          dropout: bool = True) -> torch.Tensor:  # fmt: skip
        """Every stream's tokens, concatenated in stream order: (B, sum n_tokens, D).

        A stream missing from ``cond`` (or given as None) gets its null tokens; ``null[name]`` (B,)
        bool nulls single samples (the guidance batch, joint dropout). In training mode each stream's
        own dropout is added unless ``dropout=False`` (the caller drew it already).
        """
        null = self.dropout_null(null, batch_size) if dropout else (null or {})
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
        cond = dict(cond)
        reference = cond.pop("reference", None)
        null = self.dropout_null(null, batch)
        if self.config.reference:
            x_t = torch.cat([x_t, self._reference_input(reference, x_t, null)], dim=1)
        elif reference is not None:
            raise ValueError("this model has no spatial reference input (config.reference is False)")
        tokens = self.encode_conditions(cond, batch, null, dropout=False)
        kwargs = {"stream_scales": dict(scales)} if scales else None
        return self.unet(x_t, t * 1000, encoder_hidden_states=tokens, cross_attention_kwargs=kwargs).sample

    forward = velocity  # DDP and accelerate hooks call forward

    def dropout_null(self, null: dict | None, batch: int) -> dict:
        """``null`` with each stream's training-time dropout (its ``drop_mask``) OR-ed in."""
        null = dict(null or {})
        for name, stream in self.streams.items():
            drop = stream.drop_mask(batch, next(stream.parameters()).device)
            if drop is not None:
                null[name] = drop if null.get(name) is None else drop | null[name].to(drop.device, torch.bool)
        return null

    def _reference_input(self, reference, x_t: torch.Tensor, null: dict | None) -> torch.Tensor:
        """The normalised reference latent, zero where absent or where the identity stream is nulled.

        A reference row that is exactly zero everywhere also means "none" (the training data's
        people with a single photo), which lets one batch mix samples with and without one.
        """
        if reference is None:
            return torch.zeros_like(x_t)
        ref = reference.to(x_t)
        present = ref.flatten(1).abs().amax(1) > 0
        drop = (null or {}).get("identity")
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
        write_checksum(directory)

    def load_weights_from(self, directory: str | Path) -> None:
        """Start from the weights of a saved model whose config may lack the spatial reference.

        The reference's extra input channels of ``conv_in`` start at zero (InstructPix2Pix, Brooks et
        al. 2023, sec. 3.4), so the grown model first behaves exactly like the saved one. Any other
        difference between the two is an error.
        """
        state = load_file(Path(directory) / WEIGHTS_NAME)
        own = self.state_dict()
        key = "unet.conv_in.weight"
        if key in state and state[key].shape != own[key].shape:
            old = state[key]
            if old.shape[1] > own[key].shape[1] or old.shape[0] != own[key].shape[0]:
                raise MienError(f"{directory}: conv_in {tuple(old.shape)} cannot grow into {tuple(own[key].shape)}")
            grown = torch.zeros_like(own[key])
            grown[:, : old.shape[1]] = old.to(grown.dtype)
            state[key] = grown
        missing, unexpected = self.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        if missing or unexpected:
            raise MienError(f"{directory} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "MienModel":
        """The model saved in ``directory`` (fp32, eval mode); unknown config keys are errors."""
        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise MienError(f"model file {directory / name} is missing; pass a folder saved by mien training "
                                "(config.json + model.safetensors), or reinstall mien for the built-in model")  # fmt: skip
        sha = verify_checksum(directory)
        model = cls(load_json(ModelConfig, directory / CONFIG_NAME))
        model.sha256 = sha  # of the weight files, for output metadata and results (no second read)
        # the fine-tuned TAEF2 decoder to decode this model's outputs with (None: the pretrained one)
        model.decoder_path = directory / model.config.decoder if model.config.decoder else None
        state = load_file(directory / WEIGHTS_NAME)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise MienError(f"{directory / WEIGHTS_NAME} does not match its config: "
                            f"missing {missing[:5]}, unexpected {unexpected[:5]}")  # fmt: skip
        return model.eval()
