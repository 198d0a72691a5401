"""The face analysis stack: one call from an RGB photo to everything mien knows about each face.

Composition only; each model lives in its own module:
  detection, 478 landmarks, 52 blendshapes, pose  -> :mod:`mien.face.landmarker` (MediaPipe)
  identity, 128-D dlib/face-api descriptor         -> :mod:`mien.models.faceapi_recognition` on a dlib-style chip
  identity, 192-D MobileFaceNet embedding          -> :mod:`mien.models.mobilefacenet` on the ArcFace 112 crop
  7 basic-expression probabilities                 -> :mod:`mien.models.faceapi_expression` on the chip resized to 112
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from mien.errors import NoFaceError
from mien.face import align
from mien.face.landmarker import Face, FaceLandmarker
from mien.models.blendshapes import BLENDSHAPE_NAMES
from mien.models.faceapi_expression import EXPRESSIONS, FaceExpressionNet
from mien.models.faceapi_recognition import FaceRecognitionNet
from mien.models.mobilefacenet import MobileFaceNet

# Below this inter-ocular distance (pixels in the photo) the 150 px identity chip would be upscaled
# more than ~4x and the descriptors stop being meaningful; MediaPipe itself still finds such faces.
MIN_EYE_DISTANCE_PX = 16.0


@dataclass
class FaceAnalysis:
    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (478, 3) pixels
    points5: np.ndarray  # (5, 2) alignment points, pixels
    faceapi: np.ndarray  # (128,) raw dlib-convention descriptor: same person when L2 distance < 0.6
    mobilefacenet: np.ndarray  # (192,) L2-normalised
    expression: dict[str, float]
    blendshapes: dict[str, float]
    pose: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "identity": {
                "faceapi": [round(float(v), 6) for v in self.faceapi],
                "mobilefacenet": [round(float(v), 6) for v in self.mobilefacenet],
            },
            "expression": {k: round(float(v), 6) for k, v in self.expression.items()},
            "blendshapes": {k: round(float(v), 6) for k, v in self.blendshapes.items()},
            "pose": {k: round(float(v), 3) for k, v in self.pose.items()},
        }


class FaceAnalyzer:
    """Loads the four models once; :meth:`analyze` runs them on every face of a photo."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.landmarker = FaceLandmarker(num_faces=2)  # two: to warn when a photo has several faces
        self.recognition = FaceRecognitionNet.from_weights().to(self.device).eval()
        self.expression = FaceExpressionNet.from_weights().to(self.device).eval()
        self.mobilefacenet = MobileFaceNet.from_weights().to(self.device).eval()

    def close(self) -> None:
        self.landmarker.close()

    def __enter__(self) -> "FaceAnalyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def analyze(self, rgb: np.ndarray, all_faces: bool = False) -> list[FaceAnalysis]:
        """Analyse the largest face (or all faces). Raises :class:`NoFaceError` when none is usable."""
        from mien.io.image import check_face_size

        check_face_size(rgb)
        faces = self.landmarker.detect(rgb, max_faces=8 if all_faces else 2)
        if not faces:
            raise NoFaceError("no face found; use a photo where the face is visible, frontal-ish and well lit")
        notes = []
        if len(faces) > 1 and not all_faces:
            notes.append(f"{len(faces)}+ faces found; analysed the largest (--all-faces lists every face; "
                         "mien generate --face N edits face N)")
            faces = faces[:1]
        usable = [f for f in faces if _eye_distance(f) >= MIN_EYE_DISTANCE_PX]
        if not usable:
            raise NoFaceError(
                f"the face is too small to analyse (eyes {_eye_distance(faces[0]):.0f} px apart, "
                f"need {MIN_EYE_DISTANCE_PX:.0f}); use a larger or closer photo"
            )
        results = self._analyze_faces(rgb, usable)
        results[0].warnings.extend(notes)
        return results

    @torch.no_grad()
    def _analyze_faces(self, rgb: np.ndarray, faces: list[Face]) -> list[FaceAnalysis]:
        chips, chips112, arcs, pts = [], [], [], []
        for f in faces:
            p5 = align.five_points(f.landmarks)
            chip = align.dlib_chip(rgb, f.landmarks)
            chips.append(chip)
            # The expression net's reference input is the 150 chip resized with Pillow's bilinear
            # (shared/reference/README.md, section 3).
            chips112.append(np.asarray(Image.fromarray(chip).resize((112, 112), Image.BILINEAR)))
            arcs.append(align.arcface_crop(rgb, p5))
            pts.append(p5)
        desc = self.recognition(_batch(chips, self.device)).cpu().numpy()
        probs = self.expression.predict(_batch(chips112, self.device)).cpu().numpy()
        emb = torch.nn.functional.normalize(self.mobilefacenet(_batch(arcs, self.device)), dim=1).cpu().numpy()
        out = []
        for i, f in enumerate(faces):
            yaw, pitch, roll = f.pose
            out.append(
                FaceAnalysis(
                    box=tuple(float(v) for v in f.box),
                    landmarks=f.landmarks,
                    points5=pts[i],
                    faceapi=desc[i],
                    mobilefacenet=emb[i],
                    expression=dict(zip(EXPRESSIONS, probs[i].tolist())),
                    blendshapes=dict(zip(BLENDSHAPE_NAMES, f.blendshapes.tolist())),
                    pose={"yaw": yaw, "pitch": pitch, "roll": roll},
                )
            )
        return out


def _eye_distance(face: Face) -> float:
    p5 = align.five_points(face.landmarks)
    return float(np.linalg.norm(p5[0] - p5[1]))


def _batch(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x.to(device)
