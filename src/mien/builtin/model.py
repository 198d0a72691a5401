"""The built-in model: a backbone (:mod:`mien.builtin.backbone`: a stock diffusers UNet2DConditionModel,
latent normalisation, the rectified-flow velocity and the spatial identity reference) with a condition
adapter (:mod:`mien.builtin.adapter`: the identity and expression streams and their keys and values in
every cross-attention layer) attached.

:class:`AdaptedModel` composes any backbone with any adapter (a Stable Diffusion UNet takes mien's
adapter the same way); :class:`MienModel` builds both from one :class:`ModelConfig` and saves them
together as ``model.safetensors`` in the flat layout the shipped model has (``unet.*``, ``streams.*``,
``stream_kv.*``), split on load (:func:`split_state`), so its weights and hash are unchanged. The
spatial reference belongs to the identity stream: zeros whenever that stream is nulled, so identity
guidance moves both.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mien.builtin.adapter import ConditionAdapter
from mien.builtin.backbone import Backbone, coarse  # noqa: F401 - coarse: part of the model's documented behaviour
from mien.builtin.config import ModelConfig, load_json, save_json
from mien.checksums import read_sums, sha256_of, write_sums
from mien.errors import MienError

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
    write_sums(directory / CHECKSUM_NAME, [name for name in _weight_files(directory) if (directory / name).is_file()])


def verify_checksum(directory: str | Path) -> str:
    """The model's SHA256, after checking every weight file against ``SHA256SUMS`` when the folder has one
    (folders without it still load): that of ``model.safetensors``, or, with a fine-tuned decoder, the
    SHA256 of the two files' hex digests joined by a space (so outputs name the pair that made them)."""
    directory = Path(directory)
    sums = directory / CHECKSUM_NAME
    want = read_sums(sums) if sums.is_file() else {}
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


class AdaptedModel(nn.Module):
    """A backbone (:class:`mien.builtin.backbone.Backbone`) with a condition adapter
    (:class:`mien.builtin.adapter.ConditionAdapter`) attached to its UNet: ``velocity(x_t, t, cond)`` with
    ``cond`` {stream name: (B, in_dim)} plus an optional ``"reference"`` latent, which belongs to
    ``reference_stream`` (nulled with it, in dropout and in guidance)."""

    reference_stream = "identity"

    def __init__(self, backbone: Backbone, adapter: ConditionAdapter):
        super().__init__()
        self.backbone, self.adapter = backbone, adapter

    @property
    def stream_names(self) -> list[str]:
        return self.adapter.stream_names

    def encode_conditions(self, cond: dict, batch_size: int, null: dict | None = None,
                          dropout: bool = True) -> torch.Tensor:  # fmt: skip
        return self.adapter.encode(cond, batch_size, null, dropout)

    def dropout_null(self, null: dict | None, batch: int) -> dict:
        return self.adapter.dropout_null(null, batch)

    def velocity(self, x_t: torch.Tensor, t, cond: dict, scales: dict | None = None,
                 null: dict | None = None, dropout: bool = True) -> torch.Tensor:  # fmt: skip
        """Predicted velocity ``eps - x0`` at ``x_t``, t in [0, 1] (scalar or (B,)).

        ``scales[name]`` multiplies that stream's attention output in every layer; 0 removes the
        stream entirely (not the same as its null tokens, which the model was trained on).
        ``dropout=False``: ``null`` already holds the training-time dropout (drawn by the caller with
        :meth:`dropout_null`, which needs to know which samples lost a condition), so none is added.
        """
        batch = x_t.shape[0]
        cond = dict(cond)
        reference = cond.pop("reference", None)
        null = self.adapter.dropout_null(null, batch) if dropout else dict(null or {})
        tokens = self.adapter.encode(cond, batch, null, dropout=False)
        return self.backbone.velocity(x_t, t, tokens, reference, null.get(self.reference_stream), scales)

    forward = velocity  # DDP and accelerate hooks call forward

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return self.backbone.normalize(z)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return self.backbone.denormalize(z)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# model.safetensors keeps one flat state dict, "unet.*" (the backbone) and "streams.*", "stream_kv.*" (the
# adapter), as the shipped model has always been saved: the loader splits it (so its hash is unchanged)
_FILE_PREFIXES = {"unet.": "backbone.unet.", "streams.": "adapter.streams.", "stream_kv.": "adapter.stream_kv."}


def split_state(state: dict) -> dict:
    """A model.safetensors state dict -> MienModel's (backbone.*, adapter.*); unknown keys stay as they are."""
    out = {}
    for k, v in state.items():
        prefix = next((p for p in _FILE_PREFIXES if k.startswith(p)), None)
        out[_FILE_PREFIXES[prefix] + k[len(prefix):] if prefix else k] = v
    return out


def joined_state(state: dict) -> dict:
    """MienModel's state dict -> the flat layout of model.safetensors (:func:`split_state` reversed)."""
    back = {v: k for k, v in _FILE_PREFIXES.items()}
    out = {}
    for k, v in state.items():
        prefix = next((p for p in back if k.startswith(p)), None)
        out[back[prefix] + k[len(prefix):] if prefix else k] = v
    return out


class MienModel(AdaptedModel):
    """The built-in model: its backbone and adapter from one :class:`ModelConfig`, saved together."""

    def __init__(self, config: ModelConfig):
        backbone = Backbone(config.backbone_config())
        super().__init__(backbone, ConditionAdapter(config.adapter_config()).attach(backbone.unet))
        self.config = config
        self.sha256: str | None = None  # of the weight files it was loaded from (from_pretrained, verify_checksum)
        self.decoder_path: Path | None = None  # its fine-tuned TAEF2 decoder, if any (from_pretrained)

    @property
    def unet(self):
        return self.backbone.unet

    @property
    def streams(self) -> nn.ModuleDict:
        return self.adapter.streams

    @property
    def stream_kv(self) -> nn.ModuleDict:
        return self.adapter.stream_kv

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = torch.float16) -> None:
        """``config.json`` + ``model.safetensors`` (UNet, streams, stream K/V), written atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in joined_state(self.state_dict()).items()}  # fmt: skip
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
        own = joined_state(self.state_dict())
        key = "unet.conv_in.weight"
        if key in state and state[key].shape != own[key].shape:
            old = state[key]
            if old.shape[1] > own[key].shape[1] or old.shape[0] != own[key].shape[0]:
                raise MienError(f"{directory}: conv_in {tuple(old.shape)} cannot grow into {tuple(own[key].shape)}")
            grown = torch.zeros_like(own[key])
            grown[:, : old.shape[1]] = old.to(grown.dtype)
            state[key] = grown
        missing, unexpected = self.load_state_dict(split_state({k: v.float() for k, v in state.items()}), strict=False)
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
        missing, unexpected = model.load_state_dict(split_state(load_file(directory / WEIGHTS_NAME)), strict=False)
        if missing or unexpected:
            raise MienError(f"{directory / WEIGHTS_NAME} does not match its config: "
                            f"missing {missing[:5]}, unexpected {unexpected[:5]}")  # fmt: skip
        return model.eval()
