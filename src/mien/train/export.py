"""What a training run hands on: the EMA weights of its checkpoint as a model folder, and files split into
parts small enough for a device call's return trip.

The loop saves the EMA model itself once every step is done (``OUT/model``); :func:`export_ema` writes
the same from any checkpoint, so a run stopped by ``--time-budget`` still yields a usable model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel

from mien.builtin.config import ModelConfig, from_dict
from mien.builtin.model import MienModel
from mien.errors import MienError

PART_BYTES = 15 * 2**20  # the device tool returns files of at most 16 MiB


def export_ema(checkpoint: str | Path, directory: str | Path) -> int:
    """Write the EMA weights of ``checkpoint`` (a loop checkpoint.pt) as a model folder (fp16 safetensors +
    config.json, as the loop's final save); returns the checkpoint's step."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise MienError(f"{checkpoint} not found: nothing to export (train first)")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net = MienModel(from_dict(ModelConfig, state["model_config"]))
    net.load_state_dict(state["model"])
    ema = EMAModel(net.parameters())
    ema.load_state_dict(state["ema"])
    ema.copy_to(net.parameters())
    net.save_pretrained(directory, dtype=torch.float16)
    return int(state["step"])


def split_file(path: str | Path, out_dir: str | Path, part_bytes: int = PART_BYTES) -> list[str]:
    """Copy ``path`` into ``out_dir`` as ``NAME.part0``, ``NAME.part1``, ... of at most ``part_bytes`` each
    (join them with ``cat NAME.part* > NAME``; the parts sort correctly below ten); returns their names."""
    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, names = path.read_bytes(), []
    if len(data) > 10 * part_bytes:
        raise MienError(f"{path} needs more than 10 parts of {part_bytes} bytes; raise the part size")
    for i in range(0, max(len(data), 1), part_bytes):
        name = f"{path.name}.part{i // part_bytes}"
        (out_dir / name).write_bytes(data[i : i + part_bytes])
        names.append(name)
    return names


def copy_small(paths: list[Path], out_dir: str | Path) -> list[str]:
    """Copy the files of ``paths`` that exist into ``out_dir`` (logs, configs); returns their names."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for p in paths:
        if p.is_file():
            shutil.copy(p, out_dir / p.name)
            names.append(p.name)
    return names
