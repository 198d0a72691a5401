"""Turn packed chunks into training tensors: decode WebP, TAEF2-encode on the GPU, build masks.

Runs on the lent GPU machine (no MediaPipe there: everything it needs is in the pack). Each chunk's
tensors are cached on the machine's disk as safetensors (nothing is unpickled on load), so a later call
of the same lease only encodes new chunks. With ``embed`` (for the consistency identity loss,
:mod:`mien.train.loss_consistency`) each photo's and its mirror image's recogniser embeddings are
computed alongside.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from mien.data.pack import read_chunk
from mien.face.align import validity_mask
from mien.data.faces128 import key_sources
from mien.train.data import TrainTensors


def _decode(b: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))


def decode_chunk(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A chunk's conditions, its faces as uint8 (N, 128, 128, 3) and their validity masks (N, 128, 128)."""
    cond, webp = read_chunk(path)
    with ThreadPoolExecutor(16) as pool:
        images = np.stack(list(pool.map(_decode, webp)))
        masks = np.stack(list(pool.map(lambda i: validity_mask(cond["affine"][i], tuple(cond["src_size"][i]), 128),
                                       range(len(webp)))))
    return cond, images, masks


@torch.no_grad()
def encode_chunk(path: Path, taef2, device, batch: int = 512, embed=None) -> dict[str, torch.Tensor]:
    cond, images, masks = decode_chunk(path)
    lat, lat_m, emb, emb_m = [], [], [], []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i: i + batch]).to(device).permute(0, 3, 1, 2).float() / 255
        lat.append(taef2.encode(x).half().cpu())
        lat_m.append(taef2.encode(x.flip(-1)).half().cpu())
        if embed is not None:
            emb.append(embed(x).half().cpu())
            emb_m.append(embed(x.flip(-1)).half().cpu())
    # share of real (non-filled) pixels per 8x8 patch = per latent cell
    m = F.avg_pool2d(torch.from_numpy(masks.astype(np.float32))[:, None], 8).half()
    out = {"latents": torch.cat(lat), "latents_mirrored": torch.cat(lat_m), "mask": m,
           "identity": torch.from_numpy(cond["identity"]), "expression": torch.from_numpy(cond["expression"]),
           "group": torch.from_numpy(cond["group"].astype(np.int64))}  # fmt: skip
    if embed is not None:
        out["embedding"], out["embedding_mirrored"] = torch.cat(emb), torch.cat(emb_m)
    return out


def chunk_sources(paths: list[Path]) -> np.ndarray:
    """Each photo's source (its key's prefix) in the chunks, in :func:`load_chunks`' order; no image is read."""
    parts = []
    for p in paths:
        with np.load(p) as z:
            parts.append(key_sources(z["key"]))
    return np.concatenate(parts) if parts else np.array([], dtype=str)


def load_chunks(paths: list[Path], cache: Path, taef2, device, embed=None) -> tuple[TrainTensors, dict]:
    """Encode (or load from ``cache``) each chunk and join them into one :class:`TrainTensors`."""
    cache.mkdir(parents=True, exist_ok=True)
    parts = []
    for p in paths:
        c = cache / (Path(p).stem + ("-emb" if embed is not None else "") + ".latents.safetensors")
        if not c.exists():
            tmp = c.with_name(c.name + ".tmp")
            save_file({k: v.contiguous() for k, v in encode_chunk(Path(p), taef2, device, embed=embed).items()}, tmp)
            tmp.replace(c)  # atomic: an interrupted call leaves no half-written cache
        parts.append(load_file(c))
    names = ("latents", "latents_mirrored", "mask", "identity", "expression")
    cat = {k: torch.cat([q[k] for q in parts]) for k in names + (("embedding", "embedding_mirrored") if embed else ())}
    group = np.concatenate([q["group"].numpy() for q in parts])
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    members = {int(group[g[0]]): g for g in np.split(order, bounds)}
    refs = []
    for i, g in enumerate(group):
        m = members[int(g)]
        others = m[m != i]
        refs.append(others if len(others) else np.array([i]))
    tensors = TrainTensors(cat["latents"], cat["mask"], cat["identity"], cat["expression"], refs, cat["latents_mirrored"],
                           cat.get("embedding"), cat.get("embedding_mirrored"), chunk_sources(paths))  # fmt: skip
    info = {"images": len(group), "people": len(members), "self_ref": int(sum(len(r) == 1 and r[0] == i for i, r in enumerate(refs)))}
    return tensors, info
