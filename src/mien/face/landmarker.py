"""MediaPipe FaceLandmarker (Tasks API): 478 landmarks, 52 blendshapes and the head-pose matrix.

A thin wrapper over ``mediapipe.tasks.python.vision.FaceLandmarker`` in IMAGE mode, with the options
the project's references and data were made with (``shared/reference/README.md`` section 1:
``output_face_blendshapes=True, output_facial_transformation_matrixes=True``, confidences 0.5).

Design notes
* mediapipe 1.2.2's ``FaceLandmarker.__del__`` raises (and prints) a TypeError when it runs during
  interpreter shutdown, so every graph is closed explicitly: ``close()``, the context manager, or, as
  a last resort, when the wrapper is garbage-collected or by an ``atexit`` hook (see ``_OPEN``).
* The native graph logs a handful of absl/TFLite lines to stderr when it starts (absl ignores
  ``GLOG_minloglevel``). We silence file descriptor 2 only while the graph is being built; inference
  itself writes nothing.
* ``min_short_side``: the faces128 pool upscaled photos whose short side is under 256 px (bicubic)
  before running MediaPipe (``shared/data/faces128/README.md``, Alignment step 1). We do the same by
  default so alignment reproduces the pool; landmarks are always reported in the original photo's
  pixels. The README does not say which bicubic; we use OpenCV's ``INTER_CUBIC`` (on the dev photos
  it and Pillow's BICUBIC land equally close to the pool's points). Pass ``min_short_side=None`` to
  feed the photo as is (the reference outputs were computed that way, on photos >= 256 px anyway).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mien.face.pose import pose_from_matrix
from mien.weights import locate

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Imported here, not inside a method: mediapipe's first import keeps a traceback alive that would
# otherwise pin the calling frames (and the FaceLandmarker in them) for the whole session.
import mediapipe as mp  # noqa: E402
from mediapipe.tasks.python import BaseOptions, vision  # noqa: E402

NUM_LANDMARKS = 478
NUM_BLENDSHAPES = 52


@dataclass
class Face:
    """One face as MediaPipe sees it, in the coordinates of the photo given to ``detect``."""

    landmarks: np.ndarray  # (478, 3) float32 pixels: x*W, y*H, z*W (z: MediaPipe's relative depth)
    landmarks_norm: np.ndarray  # (478, 3) float32, as MediaPipe returns them (x, y in [0, 1])
    blendshapes: np.ndarray  # (52,) float32 scores in MediaPipe's order (models.blendshapes names)
    matrix: np.ndarray  # (4, 4) float32 facial transformation matrix (canonical face -> camera)
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) extent of the landmarks, pixels

    @property
    def pose(self) -> tuple[float, float, float]:
        """(yaw, pitch, roll) in degrees; see :func:`mien.face.pose.pose_from_matrix`."""
        return pose_from_matrix(self.matrix)

    @property
    def box_area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null for the duration (native logging bypasses sys.stderr)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Graphs not closed yet. mediapipe tears its native dispatcher down from an atexit hook registered
# when it loads its library; a graph still open after that prints a TypeError traceback from
# ``__del__``. So we keep our own hook, re-registered after every new graph (atexit runs last-in
# first-out), that closes whatever is left before mediapipe's hook runs.
_OPEN: dict[int, object] = {}


def _close_quietly(task) -> None:
    _OPEN.pop(id(task), None)
    with contextlib.suppress(Exception):
        task.close()


def _close_all_open() -> None:
    for task in list(_OPEN.values()):
        _close_quietly(task)
        # By now concurrent.futures has stopped mediapipe's dispatcher thread, so close() could not
        # reach the native side; the process is exiting anyway. Clearing the handle turns the
        # later ``__del__`` into a no-op instead of a traceback.
        if getattr(task, "_handle", None) is not None:
            task._handle = None


def _track(owner, task) -> weakref.finalize:
    """Close ``task`` when ``owner`` is collected, or at exit before mediapipe shuts down."""
    _OPEN[id(task)] = task
    atexit.unregister(_close_all_open)
    atexit.register(_close_all_open)
    fin = weakref.finalize(owner, _close_quietly, task)
    fin.atexit = False  # the hook above does it, earlier than finalize's own exit hook would
    return fin


class FaceLandmarker:
    """MediaPipe FaceLandmarker in IMAGE mode. Use as a context manager or call :meth:`close`.

    ``num_faces`` is MediaPipe's maximum number of faces; ``detect(max_faces=...)`` may ask for more
    and then builds (once) a second graph with that limit.
    """

    def __init__(
        self,
        num_faces: int = 1,
        min_short_side: int | None = 256,
        model_path: str | Path | None = None,
        quiet: bool = True,
    ):
        self.num_faces = int(num_faces)
        self.min_short_side = min_short_side
        self.model_path = str(model_path or locate("face_landmarker"))
        self.quiet = quiet
        self._tasks: dict[int, tuple[object, weakref.finalize]] = {}
        self._task(self.num_faces)  # fail early on a bad model file

    def _task(self, num_faces: int):
        if num_faces not in self._tasks:
            opts = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=self.model_path),
                running_mode=vision.RunningMode.IMAGE,
                num_faces=num_faces,
                output_face_blendshapes=True,
                output_facial_transformation_matrixes=True,
            )
            with _quiet_stderr() if self.quiet else contextlib.nullcontext():
                task = vision.FaceLandmarker.create_from_options(opts)
            self._tasks[num_faces] = (task, _track(self, task))
        return self._tasks[num_faces][0]

    def close(self) -> None:
        """Release the native graphs. Safe to call twice."""
        for _, fin in self._tasks.values():
            fin()
        self._tasks.clear()

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, rgb: np.ndarray, max_faces: int | None = None) -> list[Face]:
        """Faces in an ``HxWx3`` uint8 RGB photo, largest landmark box first (at most ``max_faces``)."""
        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        n = self.num_faces if max_faces is None else int(max_faces)
        inp = self._upscaled(rgb)
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(inp))
        result = self._task(n).detect(image)
        faces = [_to_face(result, i, w, h) for i in range(len(result.face_landmarks))]
        faces.sort(key=lambda f: -f.box_area)
        return faces[:n]

    def _upscaled(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        if not self.min_short_side or min(h, w) >= self.min_short_side:
            return rgb
        s = self.min_short_side / min(h, w)
        size = (max(self.min_short_side, round(w * s)), max(self.min_short_side, round(h * s)))
        return cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    return rgb


def _to_face(result, i: int, w: int, h: int) -> Face:
    norm = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[i]], dtype=np.float32)
    px = norm * np.array([w, h, w], dtype=np.float32)
    scores = np.array([c.score for c in result.face_blendshapes[i]], dtype=np.float32)
    matrix = np.asarray(result.facial_transformation_matrixes[i], dtype=np.float32).reshape(4, 4)
    x0, y0 = px[:, :2].min(axis=0)
    x1, y1 = px[:, :2].max(axis=0)
    return Face(px, norm, scores, matrix, (float(x0), float(y0), float(x1), float(y1)))
