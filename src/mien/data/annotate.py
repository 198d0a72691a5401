"""`mien annotate`: automatic labels for every crop of the faces128 pool, as a Parquet sidecar.

Three column groups, each produced by its own models and resumable on its own:
  landmarks      MediaPipe on the crop upscaled to 256 px (as the pool's alignment ran): ok/error,
                 52 blendshapes, head pose (yaw, pitch, roll in degrees)
  faceapi        face-api.js on the crop's fixed dlib chip (:class:`mien.models.identity.IdentityEncoder`):
                 the 128-D descriptor and the 7 expression probabilities
  mobilefacenet  the 192-D MobileFaceNet embedding of the crop's fixed ArcFace crop
After the passes, :func:`finalize` adds blendshape-derived Action Unit *estimates*
(:mod:`mien.expression.aus`, calibrated on the train rows) and joins everything by sample key.

Work is written in parts of ``PART_SIZE`` images per group (atomic rename); a re-run skips keys a
group already has, so an interrupted run loses at most one part per worker. The shards are never written.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mien import __version__
from mien.data.faces128 import Faces128, load_manifest
from mien.errors import MienError
from mien.models.blendshapes import BLENDSHAPE_NAMES
from mien.models.faceapi_expression import EXPRESSIONS

PART_SIZE = 256
SIDECAR = "annotations.parquet"
GROUPS = ("landmarks", "faceapi", "mobilefacenet")
WEIGHTS = {"landmarks": ("face_landmarker",), "faceapi": ("faceapi_recognition", "faceapi_expression"),
           "mobilefacenet": ("mobilefacenet",)}
VECTOR_WIDTH = {"blendshapes": 52, "expression": 7, "faceapi": 128, "mobilefacenet": 192}


def _vector_column(rows: np.ndarray) -> pa.Array:
    rows = np.asarray(rows, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1])


def _table(columns: dict[str, object]) -> pa.Table:
    return pa.table({k: _vector_column(v) if isinstance(v, np.ndarray) and v.ndim == 2 else v
                     for k, v in columns.items()})


class CropAnnotator:
    """Runs one group's models on aligned 128 px crops; one instance per process."""

    def __init__(self, group: str, device: str = "cpu"):
        import torch

        self.group, self.torch, self.device = group, torch, torch.device(device)
        if group == "landmarks":
            from mien.face.landmarker import FaceLandmarker

            self.landmarker = FaceLandmarker()
        else:
            from mien.models.identity import IdentityEncoder

            self.identity = IdentityEncoder.from_weights().to(self.device)
        if group == "faceapi":
            from mien.models.faceapi_expression import FaceExpressionNet

            self.expression = FaceExpressionNet.from_weights().to(self.device).eval()

    def close(self) -> None:
        if self.group == "landmarks":
            self.landmarker.close()

    def __call__(self, keys: list[str], images: list[np.ndarray]) -> pa.Table:
        return _table({"key": keys, **getattr(self, f"_{self.group}")(images)})

    def _landmarks(self, images):
        n = len(images)
        bs, pose, ok, err = np.zeros((n, 52), np.float32), np.zeros((n, 3), np.float32), [False] * n, [""] * n
        for i, img in enumerate(images):
            faces = self.landmarker.detect(img)
            if faces:
                bs[i], pose[i], ok[i] = faces[0].blendshapes, faces[0].pose, True
            else:
                err[i] = "no face found by MediaPipe"
        return {"ok": ok, "error": err, "blendshapes": bs, "yaw": pose[:, 0], "pitch": pose[:, 1], "roll": pose[:, 2]}

    def _batch(self, images):
        return self.torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().to(self.device)

    def _faceapi(self, images):
        with self.torch.no_grad():
            chip, _ = self.identity.crops(self._batch(images))
            desc = self.identity.recognition(chip)
            probs = self.expression.predict_chip(chip)
        return {"faceapi": desc.cpu().numpy(), "expression": probs.cpu().numpy()}

    def _mobilefacenet(self, images):
        with self.torch.no_grad():
            _, arc = self.identity.crops(self._batch(images))
            return {"mobilefacenet": self.identity.mobilefacenet(arc).cpu().numpy()}


def done_keys(parts_dir: Path) -> set[str]:
    keys: set[str] = set()
    for p in sorted(parts_dir.glob("part-*.parquet")):
        keys.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
    return keys


def _write_part(parts_dir: Path, wid: int, table: pa.Table) -> None:
    name = f"part-w{wid}-{time.time_ns()}"
    tmp = parts_dir / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, parts_dir / f"{name}.parquet")


def _worker(args) -> None:
    data_dir, samples, out_dir, groups, device, wid, counter = args
    import torch

    torch.set_num_threads(1)  # one process per core
    ds = Faces128(data_dir, samples=samples)
    annotators = {g: CropAnnotator(g, device) for g in groups}
    todo = {g: done_keys(out_dir / "parts" / g) for g in groups}  # keys already done, per group
    keys, imgs = [], []

    def flush():
        for g, ann in annotators.items():
            sel = [i for i, k in enumerate(keys) if k not in todo[g]]
            if sel:
                _write_part(out_dir / "parts" / g, wid, ann([keys[i] for i in sel], [imgs[i] for i in sel]))
        with counter.get_lock():
            counter.value += len(keys)

    try:
        for s, img in ds.iter_images():
            keys.append(s.key)
            imgs.append(img)
            if len(keys) == PART_SIZE:
                flush()
                keys, imgs = [], []
        if keys:
            flush()
    finally:
        for ann in annotators.values():
            ann.close()


def annotate(out_dir: Path, data_dir: Path | None = None, split=("train", "dev"), groups=GROUPS,
             limit: int | None = None, workers: int = 2, device: str = "cpu", progress: bool = True) -> Path:
    """Annotate the pool into ``out_dir``; returns the sidecar path. Safe to interrupt and re-run."""
    from tqdm import tqdm

    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise MienError(f"unknown column group(s) {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    out_dir = Path(out_dir)
    ds = Faces128(data_dir, split=split)
    for g in groups:
        (out_dir / "parts" / g).mkdir(parents=True, exist_ok=True)
    done = set.intersection(*(done_keys(out_dir / "parts" / g) for g in groups))
    todo = [s for s in ds.samples if s.key not in done]
    if limit is not None:
        todo = todo[: max(0, limit - len(done))]
    if todo:
        shards = sorted({s.shard for s in todo})
        chunks = [[s for s in todo if s.shard in shards[i::workers]] for i in range(workers)]
        if len(shards) < workers:  # few shards (e.g. dev only): split by position instead
            chunks = [todo[i::workers] for i in range(workers)]
        chunks = [c for c in chunks if c]
        ctx = mp.get_context("spawn")  # MediaPipe's native graphs do not survive fork
        counter = ctx.Value("i", 0)
        procs = [ctx.Process(target=_worker, args=((ds.data_dir, c, out_dir, tuple(groups), device, i, counter),))
                 for i, c in enumerate(chunks)]
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
            raise MienError(f"an annotation worker failed; finished parts are kept in {out_dir / 'parts'}; re-run to continue")
    return finalize(out_dir, ds.data_dir)


def _group_table(out_dir: Path, group: str) -> pa.Table | None:
    parts = sorted((out_dir / "parts" / group).glob("part-*.parquet"))
    if not parts:
        return None
    t = pa.concat_tables([pq.read_table(p) for p in parts]).sort_by("key")
    keys = np.array(t.column("key").to_pylist())
    _, first = np.unique(keys, return_index=True)  # a part re-done after an interruption: keep one
    return t.take(pa.array(np.sort(first))) if len(first) != len(keys) else t


def finalize(out_dir: Path, data_dir: Path) -> Path:
    """Join the groups by key (missing values NaN), add AU estimates, write the provenance JSON."""
    from mien.checksums import sha256_of
    from mien.expression.aus import AU_NAMES, AUCalibration, blendshapes_to_aus
    from mien.weights import FILES, locate

    tables = {g: t for g in GROUPS if (t := _group_table(out_dir, g)) is not None}
    if "landmarks" not in tables:
        raise MienError(f"{out_dir} has no landmarks annotations yet; run `mien annotate` first")
    base = tables["landmarks"]
    keys = base.column("key").to_pylist()
    cols: dict[str, object] = {name: base.column(name) for name in base.column_names}
    for g in ("faceapi", "mobilefacenet"):
        t = tables.get(g)
        pos = {k: i for i, k in enumerate(t.column("key").to_pylist())} if t is not None else {}
        names = ["faceapi", "expression"] if g == "faceapi" else ["mobilefacenet"]
        for name in names:
            arr = np.full((len(keys), VECTOR_WIDTH[name]), np.nan, np.float32)
            if t is not None:
                src = np.asarray(t.column(name).combine_chunks().flatten()).reshape(t.num_rows, -1)
                have = np.array([k in pos for k in keys])
                arr[have] = src[[pos[k] for k in keys if k in pos]]
            cols[name] = arr
    manifest = {s.key: s for s in load_manifest(data_dir)}
    split = np.array([manifest[k].split for k in keys])
    ok = np.asarray(base.column("ok").to_pylist())
    bs = np.asarray(base.column("blendshapes").combine_chunks().flatten()).reshape(-1, 52)
    fit = ok & (split == "train")
    if not fit.any():  # a dev-only run: calibrate on what there is
        fit = ok
    calib = AUCalibration.fit(bs[fit], source=f"faces128 {'train' if (split == 'train').any() else 'dev'} split, "
                              f"{int(fit.sum())} annotated crops")
    calib.save(out_dir / "au_calibration.json")
    aus = blendshapes_to_aus(bs, calib).astype(np.float32)
    aus[~ok] = np.nan
    cols["aus"], cols["split"] = aus, split.tolist()
    table = _table(cols)
    tmp = out_dir / f".{SIDECAR}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out_dir / SIDECAR)
    meta = {
        "mien_version": __version__,
        "rows": table.num_rows,
        "ok": int(ok.sum()),
        "failed": int((~ok).sum()),
        "groups_complete": {g: (tables[g].num_rows if g in tables else 0) for g in GROUPS},
        "columns": {
            "blendshapes": list(BLENDSHAPE_NAMES),
            "expression": list(EXPRESSIONS),
            "aus": list(AU_NAMES),
            "pose": "yaw, pitch, roll in degrees from MediaPipe's facial transformation matrix",
            "faceapi": "raw 128-D dlib-convention descriptor of the crop's fixed dlib chip",
            "mobilefacenet": "raw 192-D MobileFaceNet embedding of the crop's fixed ArcFace 112 crop",
            "aus_note": "Action Units are estimates computed from blendshapes (no image->AU model exists here)",
            "missing": "NaN where a group has not run yet for that key",
        },
        "weights": {n: {"file": FILES[n].path, "sha256": sha256_of(locate(n))} for g in GROUPS for n in WEIGHTS[g]},
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
