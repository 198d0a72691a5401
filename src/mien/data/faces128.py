"""The shared aligned face pool ``faces128``: manifest, selection and image reading.

The pool (``shared/data/faces128``; its README is the reference for every field used here) is a
set of uncompressed tar shards of 128×128 WebP crops plus ``manifest.jsonl``, one JSON object per
sample. Design notes:

- Reads go straight to the member bytes. Each shard is indexed once per process with
  :mod:`tarfile` (member name → data offset and size; cached at module level, so forked workers
  inherit it) and members are read with ``os.pread`` on a plain file handle. That avoids
  ``tarfile``'s stateful stream, is safe across threads, and, since handles are reopened when the
  process id changes, across forked DataLoader workers.
- Shards are opened lazily, so a folder holding the manifest and only some shards (as on the lent
  GPU machine, see ``shared/GPU.md``) serves the samples in those shards.
- Face data must never be committed, nor images derived from it (README "Sources and terms").
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from mien.errors import MienError

ENV_VAR = "MIEN_DATA"
SIZE = 128  # crop side in pixels (README "Alignment")
MANIFEST = "manifest.jsonl"

# Closed vocabularies from the README's "Manifest fields" table; select() rejects other values
# so that a typo fails loudly instead of selecting nothing.
SPLITS = ("train", "dev")
SOURCES = ("utkface", "celeba", "cfp", "lag", "taiwanese", "london", "essex94")
# The sources whose keys start otherwise than their name; the rest are their own key prefix (key_sources).
KEY_PREFIXES = {"taiwanese": "tw", "utkface": "utk", "essex94": "essex"}
EXPRESSIONS = ("neutral", "happy", "sad", "angry", "disgusted", "fearful", "surprised")

_REQUIRED = ("key", "shard", "split", "source", "affine", "src_size", "fill")
_CORE = frozenset(_REQUIRED) | {"identity", "expression"}
_FIX = "re-copy it from shared/data/faces128, or set MIEN_DATA to a complete copy"


def key_sources(keys) -> np.ndarray:
    """The source of each key: its prefix before the first '_' (cfp, lag, celeba, tw, ...), what a training pack's
    keys carry (mien.data.pack) and per-source training weights name (mien.train.data.SourceDraw)."""
    return np.array([str(k).split("_", 1)[0] for k in keys])


def source_prefix(name: str, known, what: str) -> str:
    """``name`` (a key prefix, or a :data:`SOURCES` name such as ``taiwanese``) as the key prefix among ``known``;
    a :class:`mien.errors.MienError` starting with ``what`` and listing ``known`` when the data holds no such
    source."""
    from mien.errors import MienError

    prefix = KEY_PREFIXES.get(name, name)
    if prefix not in known:
        raise MienError(f"{what}: no such source in the data; its sources are {', '.join(sorted(known))}")
    return prefix


Affine = tuple[tuple[float, float, float], tuple[float, float, float]]


def default_data_dir() -> Path:
    """``$MIEN_DATA`` if set, else ``../shared/data/faces128`` beside a source checkout."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise MienError(f"{ENV_VAR}={env} is not a folder: point it at a copy of faces128")
        return path
    cand = _checkout_data_dir()
    if cand.is_dir():
        return cand
    raise MienError(
        f"face data not found (looked in {cand}): set {ENV_VAR} to a folder holding faces128's "
        "manifest.jsonl and tar shards"
    )


def _checkout_data_dir() -> Path:
    # src/mien/data/faces128.py: the repository root is parents[3]; the workplace keeps shared/
    # beside the checkout.
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / "faces128"


@dataclass(frozen=True)
class Sample:
    """One manifest row. Fields without a column here (``observer_ratings``, ``view``,
    ``performance``, ``name``, ``age``, ``gender``, ``race``, ``age_group``, ``points5``,
    ``faces_found``) are kept as-is in ``extra``."""

    key: str  # unique id, also the tar member name without extension
    shard: str  # tar file holding the crop, e.g. "train-003.tar"
    split: str  # "train" or "dev"
    source: str  # one of SOURCES
    identity: str | None  # "<source>:<id>"; None for UTKFace (treat each photo as its own person)
    expression: str | None  # Taiwanese and London only; one of EXPRESSIONS
    affine: Affine  # 2×3, source-photo pixels -> crop pixels; np.asarray(affine) is the matrix
    src_size: tuple[int, int]  # (width, height) of the source photo
    fill: float  # share of the crop lying outside the source photo (mirror-filled)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Sample:
        missing = [f for f in _REQUIRED if f not in row]
        if missing:
            raise KeyError(f"missing field(s) {', '.join(missing)}")
        (a0, a1), (w, h) = row["affine"], row["src_size"]
        return cls(
            key=str(row["key"]),
            shard=str(row["shard"]),
            split=str(row["split"]),
            source=str(row["source"]),
            identity=row.get("identity"),
            expression=row.get("expression"),
            affine=(_three_floats(a0), _three_floats(a1)),
            src_size=(int(w), int(h)),
            fill=float(row["fill"]),
            extra={k: v for k, v in row.items() if k not in _CORE},
        )


def _three_floats(row: Iterable[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in row)
    return a, b, c


def load_manifest(data_dir: str | Path | None = None) -> list[Sample]:
    """All rows of ``<data_dir>/manifest.jsonl`` (default: :func:`default_data_dir`), in order."""
    path = Path(data_dir if data_dir is not None else default_data_dir()) / MANIFEST
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise MienError(f"{path} not found: {_FIX}") from None
    return [_parse_line(path, n, line) for n, line in enumerate(lines, 1) if line.strip()]


def _parse_line(path: Path, lineno: int, line: str) -> Sample:
    try:
        return Sample.from_row(json.loads(line))
    except json.JSONDecodeError as e:
        raise MienError(f"{path} line {lineno}: not valid JSON ({e}): {_FIX}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise MienError(f"{path} line {lineno}: not a faces128 sample ({e}): {_FIX}") from None


def select(
    samples: Iterable[Sample],
    split: str | Collection[str] | None = None,
    source: str | Collection[str] | None = None,
    identity: str | Collection[str] | None = None,
    expression: str | Collection[str] | None = None,
) -> list[Sample]:
    """The samples matching every given filter; each filter is one value or a collection of them."""
    wanted = {
        "split": _wanted(split, SPLITS, "split"),
        "source": _wanted(source, SOURCES, "source"),
        "identity": _wanted(identity, None, "identity"),
        "expression": _wanted(expression, EXPRESSIONS, "expression"),
    }
    wanted = {k: v for k, v in wanted.items() if v is not None}
    return [s for s in samples if all(getattr(s, k) in v for k, v in wanted.items())]


def _wanted(
    value: str | Collection[str] | None, allowed: tuple[str, ...] | None, what: str
) -> frozenset[str] | None:
    if value is None:
        return None
    values = frozenset([value] if isinstance(value, str) else value)
    unknown = sorted(values - set(allowed)) if allowed else []
    if unknown:
        raise MienError(f"unknown {what} {', '.join(unknown)}: choose from {', '.join(allowed)}")
    return values


def validity_mask(sample: Sample) -> np.ndarray:
    """Bool 128×128: True where the crop shows the source photo, False where it was mirror-filled.

    Rebuilt as the README prescribes for ``fill``: warp a ones-image of ``src_size`` with
    ``affine``, nearest neighbour, zero border. ``1 - mask.mean()`` reproduces ``fill``.
    """
    w, h = sample.src_size
    warped = cv2.warpAffine(
        np.ones((h, w), np.uint8),
        np.asarray(sample.affine, np.float64),
        (SIZE, SIZE),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return warped.astype(bool)


@lru_cache(maxsize=None)
def _index_tar(path: str, size: int, mtime_ns: int) -> dict[str, tuple[int, int]]:
    # size and mtime are part of the cache key so that a re-copied shard is indexed again.
    with tarfile.open(path) as tar:
        return {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}


def _shard_index(path: Path, key: str) -> dict[str, tuple[int, int]]:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MienError(
            f"shard {path.name} (holding {key}) not found in {path.parent}: copy it there from "
            f"shared/data/faces128, or set {ENV_VAR} to a folder that has it"
        ) from None
    try:
        return _index_tar(str(path), st.st_size, st.st_mtime_ns)
    except (tarfile.TarError, OSError) as e:
        raise MienError(
            f"shard {path} is truncated or corrupt ({e}; needed for {key}): {_FIX}"
        ) from None


def _read_at(f: io.RawIOBase, lock: threading.Lock, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(f.fileno(), size, offset)
    with lock:  # no pread (Windows): seek + read must not interleave between threads
        f.seek(offset)
        return f.read(size)


def _decode(data: bytes, what: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.array(im.convert("RGB"))  # a writable copy (np.asarray's view is read-only)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MienError(f"{what} cannot be decoded ({e}): {_FIX}") from None


class Faces128:
    """Random access and iteration over the pool's crops.

    ``faces[i]`` is ``(sample, image)`` for ``faces.samples[i]``; iteration follows that order.
    :meth:`iter_images` is the fast path for passes over whole shards. The view holds all manifest
    rows unless ``samples`` or :func:`select` filters (``split=``, ``source=``, ...) narrow it.
    """

    def __init__(
        self, data_dir: str | Path | None = None, samples: Iterable[Sample] | None = None, **filters
    ):
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        rows = load_manifest(self.data_dir) if samples is None else samples
        self.samples = select(rows, **filters)
        self._by_key = {s.key: s for s in self.samples}
        self._indexes: dict[str, dict[str, tuple[int, int]]] = {}
        self._files: dict[str, io.RawIOBase] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Sample, np.ndarray]:
        sample = self.samples[i]
        return sample, self.image(sample)

    def __iter__(self) -> Iterator[tuple[Sample, np.ndarray]]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"Faces128({len(self)} samples in {self.data_dir})"

    def sample(self, key: str | Sample) -> Sample:
        if isinstance(key, Sample):
            return key
        try:
            return self._by_key[key]
        except KeyError:
            where = self.data_dir / MANIFEST
            raise MienError(f"no sample {key!r} in this view of {where}") from None

    def image(self, key: str | Sample) -> np.ndarray:
        """The aligned crop: uint8 RGB, 128×128×3."""
        sample = self.sample(key)
        what = f"{sample.key}.webp in {sample.shard}"
        img = _decode(self._read(sample, f"{sample.key}.webp"), what)
        if img.shape != (SIZE, SIZE, 3):
            raise MienError(f"{what} is {img.shape[1]}×{img.shape[0]}, not {SIZE}×{SIZE}: {_FIX}")
        return img

    def image_bytes(self, key: str | Sample) -> bytes:
        """The crop's WebP file as stored in its shard (for repacking without re-encoding)."""
        sample = self.sample(key)
        return self._read(sample, f"{sample.key}.webp")

    def has_raw_photo(self, key: str | Sample) -> bool:
        sample = self.sample(key)
        return f"{sample.key}.raw.jpg" in self._index(sample)

    def raw_photo(self, key: str | Sample) -> np.ndarray:
        """The dev source photo, uint8 RGB, downscaled to ≤ 512 px.

        Only some dev samples carry one (see :meth:`has_raw_photo`). It may be smaller than
        ``src_size``, which ``affine`` refers to: scale coordinates by the size ratio.
        """
        sample = self.sample(key)
        if not self.has_raw_photo(sample):
            raise MienError(
                f"{sample.shard} has no raw photo for {sample.key}: raw photos ship only with some "
                "dev samples; check Faces128.has_raw_photo first"
            )
        return _decode(self._read(sample, f"{sample.key}.raw.jpg"), f"{sample.key}.raw.jpg")

    def mask(self, key: str | Sample) -> np.ndarray:
        """Bool 128×128 validity mask of the crop (see :func:`validity_mask`)."""
        return validity_mask(self.sample(key))

    def iter_images(
        self, samples: Iterable[Sample] | None = None, progress: bool = False
    ) -> Iterator[tuple[Sample, np.ndarray]]:
        """Yield ``(sample, image)`` shard by shard, each shard in file order (sequential reads)."""
        todo = list(self.samples if samples is None else samples)
        by_shard: dict[str, list[Sample]] = {}
        for s in todo:
            by_shard.setdefault(s.shard, []).append(s)
        with tqdm(total=len(todo), unit="img", disable=not progress) as bar:
            for _, group in sorted(by_shard.items()):
                index = self._index(group[0])
                group.sort(key=lambda s: index.get(f"{s.key}.webp", (-1, 0))[0])
                for s in group:
                    yield s, self.image(s)
                    bar.update()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __enter__(self) -> Faces128:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Pickled for spawned DataLoader workers: file handles and locks do not travel.
        return {**self.__dict__, "_files": {}, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _pid=os.getpid(), _lock=threading.Lock())

    def _index(self, sample: Sample) -> dict[str, tuple[int, int]]:
        index = self._indexes.get(sample.shard)
        if index is None:
            index = _shard_index(self.data_dir / sample.shard, sample.key)
            self._indexes[sample.shard] = index
        return index

    def _read(self, sample: Sample, member: str) -> bytes:
        try:
            offset, size = self._index(sample)[member]
        except KeyError:
            raise MienError(
                f"shard {sample.shard} has no member {member} (key {sample.key}): the shard does "
                f"not match {MANIFEST}; {_FIX}"
            ) from None
        data = _read_at(self._file(sample.shard), self._lock, size, offset)
        if len(data) != size:
            raise MienError(
                f"shard {sample.shard} is truncated inside {member} (key {sample.key}): {_FIX}"
            )
        return data

    def _file(self, shard: str) -> io.RawIOBase:
        if self._pid != os.getpid():
            # Forked (e.g. a DataLoader worker): close the inherited copies, open our own.
            self.close()
            self._pid, self._lock = os.getpid(), threading.Lock()
        f = self._files.get(shard)
        if f is None:
            with self._lock:
                f = self._files.get(shard) or open(self.data_dir / shard, "rb", buffering=0)
                self._files[shard] = f
        return f
