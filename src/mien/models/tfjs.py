"""Read TensorFlow.js weight files (``*-weights_manifest.json`` + binary shards) into torch tensors.

Format (tfjs-core ``src/io/io_utils.ts``, ``decodeWeights``): the manifest is a list of groups, each
``{"paths": [shard, ...], "weights": [{"name", "shape", "dtype", "quantization"?}, ...]}``. A group's
shards are concatenated and its tensors are stored back to back in manifest order, little-endian,
without padding. A quantised tensor stores ``quantization.dtype`` values instead of ``dtype`` ones:

- ``uint8`` / ``uint16``: ``value = q * scale + min``. JavaScript evaluates this in float64 and stores
  the result in a ``Float32Array``; we do the same (float64, then round once to float32) so the
  dequantised weights are bit-identical to what face-api.js computes with.
- ``float16``: IEEE half floats, widened exactly to float32.

Every tensor comes back as float32 (int32 / bool ones too): mien only reads network weights here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mien.errors import WeightsError

# Bytes per stored value (tfjs-core ``DTYPE_VALUE_SIZE_MAP``) and the numpy type to read it as.
_STORED = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "bool": np.dtype("u1"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
}


def _decode(entry: dict, raw: bytes) -> np.ndarray:
    """One manifest entry's bytes -> float32 array of its shape."""
    quant = entry.get("quantization")
    stored = _STORED[quant["dtype"] if quant else entry["dtype"]]
    values = np.frombuffer(raw, dtype=stored)
    if quant and quant["dtype"] in ("uint8", "uint16"):
        values = values.astype(np.float64) * quant["scale"] + quant["min"]
        if entry["dtype"] == "int32":  # tfjs rounds dequantised int tensors
            values = np.round(values)
    return values.astype(np.float32).reshape(entry["shape"])


def _nbytes(entry: dict) -> int:
    quant = entry.get("quantization")
    key = quant["dtype"] if quant else entry["dtype"]
    if key not in _STORED:
        raise WeightsError(f"TF.js tensor '{entry['name']}' has unsupported dtype '{key}'")
    return int(np.prod(entry["shape"], dtype=np.int64)) * _STORED[key].itemsize


def load_tfjs_weights(
    manifest: str | Path, shards: Sequence[str | Path] | None = None
) -> dict[str, torch.Tensor]:
    """Named float32 tensors from a TF.js manifest and its binary shard(s).

    ``shards`` overrides the manifest's ``paths`` (all groups' paths, in order), for weight files that
    were located separately from their manifest (``mien.weights.locate``); by default the paths are
    resolved next to the manifest. Raises :class:`WeightsError` naming the tensor whose bytes run past
    the end of its shards, or saying how many bytes are left over.
    """
    manifest = Path(manifest)
    groups = json.loads(manifest.read_text())
    wanted = [p for g in groups for p in g["paths"]]
    files = [Path(p) for p in shards] if shards is not None else [manifest.parent / p for p in wanted]
    if len(files) != len(wanted):
        raise WeightsError(
            f"{manifest.name} lists {len(wanted)} shard(s) {wanted}, but {len(files)} were given"
        )

    out: dict[str, torch.Tensor] = {}
    start = 0
    for group in groups:
        group_files = files[start : start + len(group["paths"])]
        start += len(group["paths"])
        buf = b"".join(f.read_bytes() for f in group_files)
        offset = 0
        for entry in group["weights"]:
            size = _nbytes(entry)
            if offset + size > len(buf):
                raise WeightsError(
                    f"TF.js tensor '{entry['name']}' {entry['shape']} needs bytes {offset}..{offset + size} "
                    f"but {', '.join(map(str, group_files))} hold only {len(buf)}: "
                    "wrong or truncated weight file"
                )
            out[entry["name"]] = torch.from_numpy(_decode(entry, buf[offset : offset + size]))
            offset += size
        if offset != len(buf):
            raise WeightsError(
                f"{manifest.name} describes {offset} bytes but {', '.join(str(f) for f in group_files)} hold "
                f"{len(buf)}: the weight file does not belong to this manifest"
            )
    return out
