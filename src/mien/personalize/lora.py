"""The person's LoRA on a diffusers UNet (peft) and the person folder it is saved in.

A LoRA (Hu et al., "LoRA", ICLR 2022) adds a trainable low-rank update ``B A x * alpha / r`` beside each
wrapped linear layer; ``B`` starts at zero, so the wrapped UNet first behaves exactly like the base one.
It is injected with peft into the backbone's UNet only (:data:`mien.builtin.config.LORA_TARGETS`, the
attention projections, by default; :data:`mien.builtin.config.LORA_TARGET_SETS` names the others, peft wrapping
a Conv2d as it wraps a Linear): the condition adapter's stream keys and values stay as trained, so the
expression stream the person's photos cannot teach is not overwritten. The same calls work on any
diffusers ``UNet2DConditionModel`` (tests personalise a Stable-Diffusion-shaped one).

The person folder::

    adapter_config.json        peft's LoraConfig (``LoraConfig.from_pretrained`` reads it)
    adapter_model.safetensors  the LoRA weights, peft's key layout (``get_peft_model_state_dict``)
    inputs.safetensors         the aligned photos and their conditions (:mod:`mien.personalize.inputs`)
    card.json                  photos used (names, SHA256), base model SHA256, steps, time, settings
    checkpoint.pt              while training is unfinished: what a rerun resumes from
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from mien.errors import MienError
from mien.lora_rows import scale_rows

CARD_NAME, ADAPTER_CONFIG, ADAPTER_WEIGHTS = "card.json", "adapter_config.json", "adapter_model.safetensors"
ADAPTER_NAME = "person"
def lora_config(rank: int, alpha: float, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, init_lora_weights=True)


def add_lora(unet: nn.Module, config, adapter_name: str = ADAPTER_NAME) -> list[nn.Parameter]:
    """Wrap ``unet``'s target layers with a fresh LoRA (its ``B`` zero) and return the LoRA's parameters,
    the only ones that train (everything else is frozen)."""
    from peft import inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    unet.requires_grad_(False)
    inject_adapter_in_model(config, unet, adapter_name=adapter_name)
    for m in unet.modules():  # the update B A x passes through lora_B: where a row's scale applies (mien.lora_rows)
        if isinstance(m, LoraLayer) and adapter_name in m.lora_B:
            m.lora_B[adapter_name].register_forward_hook(scale_rows)
    params = [p for n, p in unet.named_parameters() if "lora_" in n and f".{adapter_name}." in n]
    for p in params:
        p.requires_grad_(True)
    if not params:
        raise MienError(f"the LoRA found none of its target modules {list(config.target_modules)} in the UNet")
    return params


def lora_state(unet: nn.Module, adapter_name: str = ADAPTER_NAME) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(unet, adapter_name=adapter_name).items()}


def set_lora_state(unet: nn.Module, state: dict, adapter_name: str = ADAPTER_NAME) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, state, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise MienError(f"the person's adapter does not fit this UNet (unexpected {unexpected[:3]})")


def set_scale(unet: nn.Module, scale: float, adapter_name: str = ADAPTER_NAME) -> None:
    """Every LoRA layer's output times ``scale`` (0: the base model's output exactly)."""
    from peft.tuners.lora import LoraLayer

    for m in unet.modules():
        if isinstance(m, LoraLayer) and adapter_name in m.lora_A:
            m.scaling[adapter_name] = scale * m.lora_alpha[adapter_name] / m.r[adapter_name]


def enable(unet: nn.Module, on: bool) -> None:
    """Turn the LoRA layers on or off (off: the base model; the tuning-free comparison)."""
    from peft.tuners.lora import LoraLayer

    for m in unet.modules():
        if isinstance(m, LoraLayer):
            m.enable_adapters(on)


def save_adapter(unet: nn.Module, config, directory: Path, adapter_name: str = ADAPTER_NAME) -> int:
    """peft's ``adapter_config.json`` + ``adapter_model.safetensors`` (fp16, written atomically); returns
    the weight file's size in bytes."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() for k, v in lora_state(unet, adapter_name).items()}
    tmp = directory / (ADAPTER_WEIGHTS + ".tmp")
    save_file(state, tmp, metadata={"format": "pt"})
    os.replace(tmp, directory / ADAPTER_WEIGHTS)
    config.save_pretrained(str(directory))
    return (directory / ADAPTER_WEIGHTS).stat().st_size


def write_card(directory: Path, card: dict) -> None:
    tmp = Path(directory) / (CARD_NAME + ".tmp")
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    os.replace(tmp, Path(directory) / CARD_NAME)


def read_card(directory: str | Path) -> dict:
    directory = Path(directory)
    fix = "pass a folder written by `mien personalize --out`"
    if not directory.is_dir():
        raise MienError(f"--person {directory}: no such folder; {fix}")
    for name in (CARD_NAME, ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (directory / name).is_file():
            raise MienError(f"--person {directory}: {name} is missing (training unfinished or folder damaged); {fix}")
    try:
        return json.loads((directory / CARD_NAME).read_text())
    except ValueError as e:
        raise MienError(f"--person {directory}: {CARD_NAME} is not valid JSON ({e}); {fix}") from None


def check_base(card: dict, model_sha256: str, directory: str | Path) -> None:
    """The person's adapter only fits the base model it was trained on: a one-line error otherwise."""
    want = card.get("base_model_sha256", "")
    if want != model_sha256:
        raise MienError(f"--person {directory} was personalised on base model {want[:12] or '(unknown)'}, not this "
                        f"model {model_sha256[:12]}; personalise again with this model (mien personalize)")


def load_person(unet: nn.Module, directory: str | Path, model_sha256: str, adapter_name: str = ADAPTER_NAME) -> dict:
    """The person folder's LoRA loaded into ``unet`` (injected on first use, replaced afterwards) after the
    base-model check; returns its card."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    directory = Path(directory)
    card = read_card(directory)
    check_base(card, model_sha256, directory)
    config = LoraConfig.from_pretrained(str(directory))
    has = any(f".{adapter_name}." in n for n, _ in unet.named_parameters() if "lora_" in n)
    if not has:
        add_lora(unet, config, adapter_name)
        unet.requires_grad_(False)
    set_lora_state(unet, {k: v.float() for k, v in load_file(directory / ADAPTER_WEIGHTS).items()}, adapter_name)
    enable(unet, True)
    return card
