"""The analysis cache: every image, real or generated, analysed once by content.

Every image goes through one :class:`~mien.analysis.FaceAnalyzer` call, and analyses are cached by
image content plus a fingerprint of the analysis code and weights (:class:`AnalysisCache`, persistent
in the user cache by default). So real photos are analysed once across runs, a ``copy`` output is the
identical record of its identity photo (expression change exactly 0), and a rerun that needs nothing
new never loads the models.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mien import __version__
from mien.errors import NoFaceError
from mien.evaluate.benchmark import LABELS

# The analysis code and weights whose change invalidates cached analyses.
_ANALYSIS_MODULES = ("mien.analysis", "mien.face.align", "mien.face.landmarker", "mien.face.pose",
                     "mien.models.faceapi_recognition", "mien.models.faceapi_expression", "mien.models.tfjs",
                     "mien.models.mobilefacenet", "mien.models.tflite_graph", "mien.models.tflite_ops",
                     "mien.models.blendshapes")
_ANALYSIS_WEIGHTS = ("face_landmarker", "faceapi_recognition", "faceapi_expression", "mobilefacenet")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mien" / "evaluate"


def analyzer_fingerprint() -> str:
    """Hash of the analysis source files and weight checksums: cached analyses are valid while it holds."""
    from mien.weights import FILES

    h = hashlib.sha256(__version__.encode())
    for name in _ANALYSIS_MODULES:
        h.update(Path(importlib.util.find_spec(name).origin).read_bytes())
    for name in _ANALYSIS_WEIGHTS:
        h.update(FILES[name].sha256.encode())
    return h.hexdigest()[:16]


def image_sha(rgb: np.ndarray) -> str:
    rgb = np.ascontiguousarray(rgb)
    return hashlib.sha256(repr(rgb.shape).encode() + rgb.tobytes()).hexdigest()


def to_record(face) -> dict:
    """A :class:`~mien.analysis.FaceAnalysis` as plain lists (labels in ``LABELS`` order)."""
    r6 = lambda v: [round(float(x), 6) for x in v]  # noqa: E731
    return {
        "faceapi": r6(face.faceapi),
        "mobilefacenet": r6(face.mobilefacenet),
        "expression": r6(face.expression[lab] for lab in LABELS),
        "blendshapes": r6(face.blendshapes.values()),
        "pose": [round(float(face.pose[k]), 3) for k in ("yaw", "pitch", "roll")],
    }


class AnalysisCache:
    """``cache(rgb) -> record``: a record dict, or ``{"error": ...}`` when no face is found.

    In memory always; also appended to ``<dir>/analyses.jsonl`` when a folder is given. The analyzer
    is built on the first miss only.
    """

    def __init__(self, folder: Path | None, make_analyzer: Callable[[], object], fingerprint: str):
        self.fingerprint, self._make, self._analyzer = fingerprint, make_analyzer, None
        self._mem: dict[str, dict] = {}
        self._file = None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "analyses.jsonl"
            if path.exists():
                self._mem.update(_read_cache(path, fingerprint))
            self._file = path.open("a", encoding="utf-8")
        self.hits = self.misses = 0

    def __call__(self, rgb: np.ndarray, sha: str | None = None) -> dict:
        key = f"{self.fingerprint}:{sha or image_sha(rgb)}"
        rec = self._mem.get(key)
        if rec is not None:
            self.hits += 1
            return rec
        self.misses += 1
        if self._analyzer is None:
            self._analyzer = self._make()
        try:
            rec = to_record(self._analyzer.analyze(rgb)[0])
        except NoFaceError as e:
            rec = {"error": str(e)}
        self._mem[key] = rec
        if self._file is not None:
            self._file.write(json.dumps({"key": key, "record": rec}) + "\n")
            self._file.flush()
        return rec

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._analyzer is not None and hasattr(self._analyzer, "close"):
            self._analyzer.close()


def _read_cache(path: Path, fingerprint: str) -> dict[str, dict]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interrupted run
            continue
        if d.get("key", "").startswith(fingerprint + ":"):
            out[d["key"]] = d["record"]
    return out
