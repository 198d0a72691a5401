"""`mien data pack`: the training view in chunks that each fit one GPU call.

A lent GPU call carries at most 64 MiB (code + data, shared/GPU.md), so the train split is written as
chunks of at most ``max_mb`` MB, each one self-contained ``.npz``: the crops' original WebP bytes
(not re-encoded; concatenated, with offsets: a tar's 512-byte headers and padding would add ~17 % to
4.5 kB images) plus the conditions (keys, identity and expression vectors, person groups, affine
matrices and source sizes for the validity masks). Chunks are cut along people, so every identity
reference of a sample lies in its own chunk and a run can train on any subset of chunks; people with
several photos come first.
``pack.json`` lists the chunks; ``SHA256SUMS`` lets the GPU side verify what arrived (``sha256sum -c``, or
:func:`mien.checksums.failures`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from mien.checksums import write_sums
from mien.data.training_view import TrainingView

# Bytes of one chunk file that belong to no image: the zip entry headers, central directory and npy
# header of each of the 10 arrays (about 250 bytes each with numpy's zip64 extras; 4 kB is a bound).
NPZ_OVERHEAD = 4096


def _arrays(view: TrainingView, idx: np.ndarray, data: list[bytes]) -> dict[str, np.ndarray]:
    """The arrays of one chunk file (what :func:`read_chunk` reads): ``data`` are the images' WebP bytes."""
    return {
        "webp": np.frombuffer(b"".join(data), dtype=np.uint8),
        "offsets": np.cumsum([0] + [len(d) for d in data]).astype(np.int64),
        "key": np.array([view.samples[i].key for i in idx]),
        "identity": view.identity[idx].astype(np.float16),
        "expression": view.expression[idx].astype(np.float16),
        "group": view.group[idx],
        "self_ref": view.self_ref[idx],
        "affine": np.array([view.samples[i].affine for i in idx], dtype=np.float32),
        "src_size": np.array([view.samples[i].src_size for i in idx], dtype=np.int32),
    }


def row_bytes(view: TrainingView) -> int:
    """Bytes per image of a chunk's arrays besides its WebP bytes, measured on the arrays themselves for
    the whole pool. Keys are stored as fixed-width UTF-32 (4 bytes x the longest key in the array), so
    the pool's figure bounds every chunk's."""
    idx = np.arange(len(view.samples))
    return math.ceil(sum(a.nbytes for a in _arrays(view, idx, [b""] * len(idx)).values()) / len(idx))


def _chunks_by_person(view: TrainingView, sizes: np.ndarray, max_bytes: int,
                      first: np.ndarray | None = None) -> list[np.ndarray]:
    """Images cut into chunks of at most ``max_bytes`` along people; ``first`` (per image, bool): the people
    it marks go ahead of all others (see :func:`pack`)."""
    order = np.argsort(view.group, kind="stable")
    bounds = np.flatnonzero(np.diff(view.group[order])) + 1
    people = np.split(order, bounds)
    # People with several photos first (in random order), then the single-photo people: the first
    # chunks hold every identity pair, so a run that can carry only some chunks (one per GPU call
    # beside the shipped model, shared/GPU.md) still has all the cross-photo identity references.
    rng = np.random.default_rng(0)
    people = [people[i] for i in rng.permutation(len(people))]
    people = [p for p in people if len(p) > 1] + [p for p in people if len(p) == 1]
    if first is not None:  # stable: within each part the order above
        people = [p for p in people if first[p[0]]] + [p for p in people if not first[p[0]]]
    chunks, cur, cur_bytes = [], [], 0
    for p in people:
        b = int(sizes[p].sum())
        if cur and cur_bytes + b > max_bytes:
            chunks.append(np.concatenate(cur))
            cur, cur_bytes = [], 0
        cur.append(p)
        cur_bytes += b
    if cur:
        chunks.append(np.concatenate(cur))
    return chunks


def _first_mask(view: TrainingView, first: tuple[str, ...]) -> np.ndarray:
    from mien.data.faces128 import key_sources, source_prefix

    source = key_sources([s.key for s in view.samples])
    known = set(source.tolist())
    return np.isin(source, [source_prefix(name, known, f"--first {name}") for name in first])


def pack(annotations: Path, out_dir: Path, data_dir: Path | None = None, split: str = "train",
         max_mb: float = 24.0, progress: bool = True, first: tuple[str, ...] = ()) -> Path:
    """Pack the split's training view into chunks (module docstring). ``first``: sources (key prefixes such as
    ``tw``, or faces128's names such as ``taiwanese``) whose people go into the first chunks ahead of the
    others, so a run that carries only chunk-00 has all of them (the posed pairs that ``mien train
    --source-weight`` weights up, docs/training.md)."""
    from tqdm import tqdm

    from mien.data.annotate import load_annotations  # pyarrow: not needed (nor present) on the GPU side
    from mien.data.faces128 import Faces128
    from mien.data.training_view import build

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = Faces128(data_dir, split=split)
    view = build(ds.samples, load_annotations(annotations))
    blobs = {}
    for s in tqdm(view.samples, desc="reading crops", unit="img", disable=not progress):
        blobs[s.key] = ds.image_bytes(s)
    # Per image: its WebP bytes + its conditions, counted as the file stores them, so a chunk of several
    # people never exceeds max_mb (one person larger than that still gets a chunk of their own).
    sizes = np.array([len(blobs[s.key]) for s in view.samples]) + row_bytes(view)
    chunks = _chunks_by_person(view, sizes, int(max_mb * 1e6) - NPZ_OVERHEAD,
                               _first_mask(view, first) if first else None)
    entries = []
    for c, idx in enumerate(chunks):
        name = f"chunk-{c:02d}.npz"
        cond = _arrays(view, idx, [blobs[view.samples[i].key] for i in idx])
        tmp = out_dir / f".{name}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **cond)
        os.replace(tmp, out_dir / name)
        entries.append({"file": name, "images": int(len(idx)), "people": int(len(np.unique(view.group[idx]))),
                        "bytes": (out_dir / name).stat().st_size})
    write_sums(out_dir / "SHA256SUMS", [e["file"] for e in entries])
    meta = {"split": split, "images": len(view.samples), "self_ref": int(view.self_ref.sum()),
            "annotations": str(annotations), "chunks": entries,
            "expression_vector": "52 MediaPipe blendshapes, then yaw, pitch, roll in degrees / 90",
            "identity_vector": "face-api 128-D descriptor of the crop, L2-normalised"}
    (out_dir / "pack.json").write_text(json.dumps(meta, indent=1))
    return out_dir / "pack.json"


def read_chunk(path: Path) -> tuple[dict[str, np.ndarray], list[bytes]]:
    """(conditions, WebP bytes per sample in the same order) of one chunk."""
    with np.load(path) as z:
        cond = {k: z[k] for k in z.files}
    webp, off = cond.pop("webp"), cond.pop("offsets")
    return cond, [webp[off[i]: off[i + 1]].tobytes() for i in range(len(off) - 1)]
