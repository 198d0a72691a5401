"""`mien annotate`: automatic labels for every crop of the faces128 pool, as a Parquet sidecar.

Per image: MediaPipe's 52 blendshapes and head pose (on the crop upscaled to 256 px, as the pool's
own alignment ran), face-api expression probabilities, the two identity embeddings of the crop
(:class:`mien.models.identity.IdentityEncoder`), whether analysis succeeded and why not; after the
pass, blendshape-derived Action Unit *estimates* (:mod:`mien.expression.aus`, calibrated on this pool).

Resumable: work is written in parts of ``PART_SIZE`` images (atomic rename), a re-run skips keys
already in a part, and :func:`finalize` joins the parts into ``annotations.parquet`` plus
``annotations.json`` (versions, weight checksums, counts). The shards are never written.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mien import __version__
from mien.data.faces128 import Faces128, Sample, load_manifest, select
from mien.models.blendshapes import BLENDSHAPE_NAMES
from mien.models.faceapi_expression import EXPRESSIONS

PART_SIZE = 256
SIDECAR = "annotations.parquet"
WEIGHTS_USED = ("face_landmarker", "faceapi_recognition", "faceapi_expression", "mobilefacenet")


@dataclass
class Row:
    key: str
    ok: bool
    error: str
    blendshapes: np.ndarray  # (52,)
    pose: np.ndarray  # (3,) yaw, pitch, roll in degrees
    expression: np.ndarray  # (7,)
    faceapi: np.ndarray  # (128,)
    mobilefacenet: np.ndarray  # (192,)


def _vector_column(rows: list[np.ndarray], width: int) -> pa.Array:
    flat = pa.array(np.stack(rows).astype(np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def rows_to_table(rows: list[Row]) -> pa.Table:
    return pa.table(
        {
            "key": [r.key for r in rows],
            "ok": [r.ok for r in rows],
            "error": [r.error for r in rows],
            "blendshapes": _vector_column([r.blendshapes for r in rows], 52),
            "yaw": [float(r.pose[0]) for r in rows],
            "pitch": [float(r.pose[1]) for r in rows],
            "roll": [float(r.pose[2]) for r in rows],
            "expression": _vector_column([r.expression for r in rows], 7),
            "faceapi": _vector_column([r.faceapi for r in rows], 128),
            "mobilefacenet": _vector_column([r.mobilefacenet for r in rows], 192),
        }
    )


class CropAnnotator:
    """Runs the analysis models on aligned 128 px crops; one instance per process."""

    def __init__(self, device: str = "cpu"):
        import torch

        from mien.face.landmarker import FaceLandmarker
        from mien.models.faceapi_expression import FaceExpressionNet
        from mien.models.identity import IdentityEncoder

        self.torch = torch
        self.device = torch.device(device)
        self.landmarker = FaceLandmarker()
        self.identity = IdentityEncoder.from_weights().to(self.device)
        self.expression = FaceExpressionNet.from_weights().to(self.device).eval()

    def close(self) -> None:
        self.landmarker.close()

    def __call__(self, keys: list[str], images: list[np.ndarray]) -> list[Row]:
        torch = self.torch
        bs = np.zeros((len(images), 52), np.float32)
        pose = np.zeros((len(images), 3), np.float32)
        ok = np.zeros(len(images), bool)
        errors = [""] * len(images)
        for i, img in enumerate(images):
            faces = self.landmarker.detect(img)
            if faces:
                bs[i], pose[i], ok[i] = faces[0].blendshapes, faces[0].pose, True
            else:
                errors[i] = "no face found by MediaPipe"
        with torch.no_grad():
            x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().to(self.device)
            emb = self.identity(x)
            chip, _ = self.identity.crops(x)
            # The expression net's reference input is the 150 chip resized to 112 with Pillow's
            # (antialiased) bilinear; torch's antialiased bilinear is the closest differentiable match.
            small = torch.nn.functional.interpolate(chip, size=(112, 112), mode="bilinear", antialias=True)
            probs = self.expression.predict(small.clamp(0, 255))
        fa, mf, pr = (t.cpu().numpy() for t in (emb["faceapi"], emb["mobilefacenet"], probs))
        return [Row(k, bool(ok[i]), errors[i], bs[i], pose[i], pr[i], fa[i], mf[i]) for i, k in enumerate(keys)]


def done_keys(parts_dir: Path) -> set[str]:
    keys: set[str] = set()
    for p in sorted(parts_dir.glob("part-*.parquet")):
        keys.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
    return keys


def _write_part(parts_dir: Path, name: str, rows: list[Row]) -> None:
    tmp = parts_dir / f".{name}.tmp"
    pq.write_table(rows_to_table(rows), tmp)
    os.replace(tmp, parts_dir / f"{name}.parquet")


def _worker(args) -> int:
    data_dir, samples, parts_dir, wid, counter = args
    import torch

    torch.set_num_threads(1)
    ds = Faces128(data_dir, samples=samples)
    ann = CropAnnotator()
    n, keys, imgs, part = 0, [], [], 0
    try:
        for s, img in ds.iter_images():
            keys.append(s.key)
            imgs.append(img)
            if len(keys) == PART_SIZE:
                _write_part(parts_dir, f"part-w{wid}-{time.time_ns()}", ann(keys, imgs))
                with counter.get_lock():
                    counter.value += len(keys)
                n, keys, imgs = n + len(keys), [], []
        if keys:
            _write_part(parts_dir, f"part-w{wid}-{time.time_ns()}", ann(keys, imgs))
            with counter.get_lock():
                counter.value += len(keys)
            n += len(keys)
    finally:
        ann.close()
    return n


def annotate(out_dir: Path, data_dir: Path | None = None, split=("train", "dev"), limit: int | None = None,
             workers: int = 2, progress: bool = True) -> Path:
    """Annotate the pool into ``out_dir``; returns the sidecar path. Safe to interrupt and re-run."""
    from tqdm import tqdm

    ds = Faces128(data_dir, split=split)
    parts = Path(out_dir) / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    have = done_keys(parts)
    todo = [s for s in ds.samples if s.key not in have]
    if limit is not None:
        todo = todo[: max(0, limit - len(have))]
    if todo:
        shards = sorted({s.shard for s in todo})
        groups = [[s for s in todo if s.shard in shards[i::workers]] for i in range(workers)]
        groups = [g for g in groups if g]
        ctx = mp.get_context("spawn")  # MediaPipe's native graphs do not survive fork
        counter = ctx.Value("i", 0)
        procs = [ctx.Process(target=_worker, args=((ds.data_dir, g, parts, i, counter),)) for i, g in enumerate(groups)]
        for p in procs:
            p.start()
        try:
            with tqdm(total=len(todo), unit="img", desc="annotating", disable=not progress, smoothing=0.05) as bar:
                while any(p.is_alive() for p in procs):
                    time.sleep(1.0)
                    bar.n = counter.value
                    bar.refresh()
                bar.n = counter.value
                bar.refresh()
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join()
        if any(p.exitcode != 0 for p in procs):
            from mien.errors import MienError

            raise MienError(f"an annotation worker failed; finished parts are kept in {parts}; re-run to continue")
    return finalize(Path(out_dir), ds.data_dir)


def finalize(out_dir: Path, data_dir: Path) -> Path:
    """Join the parts (ordered by key) and add AU estimates and the provenance JSON."""
    from mien.expression.aus import AU_NAMES, AUCalibration, blendshapes_to_aus
    from mien.weights import FILES, sha256_of, locate

    parts = sorted((out_dir / "parts").glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    table = table.sort_by("key")
    keys = table.column("key").to_pylist()
    if len(set(keys)) != len(keys):  # a part re-written after an interruption: keep one copy per key
        _, first = np.unique(np.array(keys), return_index=True)
        table = table.take(pa.array(np.sort(first)))
    manifest = {s.key: s for s in load_manifest(data_dir)}
    split = np.array([manifest[k].split for k in table.column("key").to_pylist()])
    ok = np.array(table.column("ok").to_pylist())
    bs = np.asarray(table.column("blendshapes").combine_chunks().flatten()).reshape(-1, 52)
    fit = ok & (split == "train")
    if not fit.any():  # a dev-only run: calibrate on what there is
        fit = ok
    calib = AUCalibration.fit(bs[fit], source=f"faces128 train split, {int(fit.sum())} annotated crops")
    calib.save(out_dir / "au_calibration.json")
    aus = blendshapes_to_aus(bs, calib).astype(np.float32)
    aus[~ok] = np.nan
    table = table.append_column("aus", _vector_column(list(aus), len(AU_NAMES)))
    table = table.append_column("split", pa.array(split.tolist()))
    tmp = out_dir / f".{SIDECAR}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out_dir / SIDECAR)
    meta = {
        "mien_version": __version__,
        "rows": table.num_rows,
        "ok": int(ok.sum()),
        "failed": int((~ok).sum()),
        "columns": {
            "blendshapes": list(BLENDSHAPE_NAMES),
            "expression": list(EXPRESSIONS),
            "aus": list(AU_NAMES),
            "pose": "yaw, pitch, roll in degrees from MediaPipe's facial transformation matrix",
            "faceapi": "raw 128-D dlib-convention descriptor of the crop's fixed dlib chip",
            "mobilefacenet": "raw 192-D MobileFaceNet embedding of the crop's fixed ArcFace 112 crop",
            "aus_note": "Action Units are estimates computed from blendshapes (no image->AU model exists here)",
        },
        "weights": {n: {"file": FILES[n].path, "sha256": sha256_of(locate(n))} for n in WEIGHTS_USED},
        "versions": _versions(),
        "data_dir": str(data_dir),
    }
    (out_dir / "annotations.json").write_text(json.dumps(meta, indent=1))
    return out_dir / SIDECAR


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    return {p: md.version(p) for p in ("mediapipe", "torch", "numpy", "pyarrow", "opencv-python-headless")}


def load_annotations(path: Path) -> dict[str, np.ndarray]:
    """The sidecar as numpy arrays keyed by column (vectors stacked), rows in key order."""
    t = pq.read_table(path)
    out: dict[str, np.ndarray] = {}
    for name in t.column_names:
        col = t.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            out[name] = np.asarray(col.flatten()).reshape(len(col), col.type.list_size)
        else:
            out[name] = np.asarray(col.to_pylist())
    return out


__all__ = ["annotate", "finalize", "load_annotations", "CropAnnotator", "Sample", "select"]
