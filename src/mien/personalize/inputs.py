"""The person's photos made ready for training: read, aligned, checked to show one person, measured.

Each readable photo with a face is aligned as generation aligns it (:func:`mien.pipeline.align_photos`)
and described by what training needs: the 128 px crop, the share of real pixels per latent cell (a photo
near its edge leaves border fill, which no loss should learn), its own expression (52 blendshapes + head
pose, the condition it is trained with) and the latent cells of its eyes, brows and mouth (the
landmark-weighted loss). Unreadable files and photos without a face are named and left out; so are
photos of someone else (:func:`mien.face.one_person.keep_one_person`, the check generation applies too). The
result saves as ``inputs.safetensors`` in the person folder, so training and generation need neither the
photos nor MediaPipe again (the GPU machine has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mien.checksums import sha256_of
from mien.errors import MienError, NoFaceError
from mien.face.one_person import keep_one_person

INPUTS_NAME = "inputs.safetensors"

# MediaPipe face-mesh landmark indices (mediapipe.solutions.face_mesh_connections: FACEMESH_LIPS,
# FACEMESH_LEFT_EYE, FACEMESH_RIGHT_EYE, FACEMESH_LEFT_EYEBROW, FACEMESH_RIGHT_EYEBROW): the regions
# FaceExpr's attention-focused fusion is about (eyes, mouth), with the brows that carry surprise and anger
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409, 78, 95, 88,
        178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)  # fmt: skip
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_BROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
RIGHT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
FEATURES = LIPS + LEFT_EYE + RIGHT_EYE + LEFT_BROW + RIGHT_BROW


@dataclass
class PersonInputs:
    """Aligned photos of one person and what training reads from them (module docstring)."""

    names: list[str]  # the photos used, as given
    sha256: list[str]  # their file hashes (the card records these, not the photos' names alone)
    crops: np.ndarray  # (N, 128, 128, 3) uint8 aligned faces
    mask: np.ndarray  # (N, 1, 16, 16) float32 share of real pixels per latent cell
    features: np.ndarray  # (N, 1, 16, 16) float32 1 on cells of the eyes, brows and mouth
    expression: np.ndarray  # (N, 55) float32 blendshapes + pose / 90: each photo's own expression
    skipped: list[str] = field(default_factory=list)  # "name: reason" for every photo left out

    def __len__(self) -> int:
        return len(self.names)

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        arrays = {"crops": self.crops, "mask": self.mask, "features": self.features, "expression": self.expression}
        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, Path(directory) / INPUTS_NAME)

    @classmethod
    def load(cls, directory: Path, names: list[str], sha256: list[str]) -> "PersonInputs":
        from safetensors.torch import load_file

        t = {k: v.numpy() for k, v in load_file(Path(directory) / INPUTS_NAME).items()}
        return cls(list(names), list(sha256), t["crops"], t["mask"], t["features"], t["expression"])


def feature_cells(landmarks_crop: np.ndarray, size: int = 16, cell: int = 8, dilate: int = 1) -> np.ndarray:
    """(1, size, size) float32: 1 on latent cells holding an eye, brow or mouth landmark (crop pixels),
    grown by ``dilate`` cells."""
    m = torch.zeros(1, 1, size, size)
    xy = np.clip((landmarks_crop[list(FEATURES), :2] // cell).astype(int), 0, size - 1)
    m[0, 0, xy[:, 1], xy[:, 0]] = 1
    if dilate:
        m = F.max_pool2d(m, 2 * dilate + 1, stride=1, padding=dilate)
    return m[0].numpy()


def read_photos(paths: list[str | Path], warn) -> tuple[list[np.ndarray], list[str], list[str]]:
    """(the readable photos, their names, "name: reason" for each unreadable one); each unreadable one is
    also named through ``warn`` and left out."""
    from mien.io.image import load_rgb

    photos, names, skipped = [], [], []
    for p in paths:
        try:
            photos.append(load_rgb(p))
            names.append(str(p))
        except MienError as e:
            warn(f"skipped {e}")
            skipped.append(str(e))  # load_rgb's messages start with the path: "name: reason"
    if not photos:
        raise MienError("none of the photos could be read; give JPEG, PNG or WebP photos of the person")
    return photos, names, skipped


def prepare(landmarker, paths: list[str | Path], identity_encoder, warn=print, threshold: float | None = None,
            dilate: int = 1) -> PersonInputs:  # fmt: skip
    """Read, align and check ``paths`` (module docstring); ``identity_encoder`` (face-api) checks that the
    photos show one person; ``warn(message)`` reports every photo left out."""
    from mien.expression.targets import expression_vector
    from mien.face.align import apply_affine, validity_mask
    from mien.pipeline import align_photos

    photos, names, unreadable = read_photos(paths, warn)
    try:
        aligned = align_photos(landmarker, photos, names)
    except NoFaceError:
        raise NoFaceError("no usable face in any photo (" + ", ".join(names) + "); give photos where the face "
                          "is visible, frontal-ish and well lit") from None  # fmt: skip
    for msg in aligned.skipped:
        warn(f"skipped {msg}")
    aligned = keep_one_person(aligned, names, identity_encoder, lambda name, why: warn(f"skipped {name}: {why}"),
                              threshold)  # fmt: skip
    crops, masks, feats, exprs = [], [], [], []
    for k, i in enumerate(aligned.sources):
        h, w = photos[i].shape[:2]
        m = aligned.matrices[k]
        valid = torch.from_numpy(validity_mask(m, (w, h), 128).astype(np.float32))[None, None]
        masks.append(F.avg_pool2d(valid, 8)[0].numpy())
        face = aligned.faces[k]
        feats.append(feature_cells(apply_affine(m, face.landmarks[:, :2]), dilate=dilate))
        exprs.append(expression_vector(face.blendshapes, face.pose))
        crops.append(aligned.crops[k])
    kept = [names[i] for i in aligned.sources]
    skipped = unreadable + aligned.skipped
    return PersonInputs(kept, [sha256_of(n) for n in kept], np.stack(crops), np.stack(masks).astype(np.float32),
                        np.stack(feats).astype(np.float32), np.stack(exprs).astype(np.float32), skipped)  # fmt: skip


def stored_subject(directory: str | Path):
    """(photos, :class:`mien.pipeline.AlignedPhotos`) of the aligned photos a person folder keeps, for
    generating without the original photos (each crop is its own photo: identity matrix)."""
    from types import SimpleNamespace

    from mien.expression.targets import POSE_SCALE
    from mien.personalize.lora import read_card
    from mien.pipeline import AlignedPhotos

    card = read_card(directory)
    if not (Path(directory) / INPUTS_NAME).is_file():
        raise MienError(f"--person {directory}: {INPUTS_NAME} is missing; give --identity PHOTO, or personalise again")
    photos = card.get("photos", [])
    inputs = PersonInputs.load(Path(directory), [p["name"] for p in photos], [p["sha256"] for p in photos])
    crops = [np.ascontiguousarray(c) for c in inputs.crops]
    faces = [SimpleNamespace(pose=tuple(float(v) for v in e[52:] * POSE_SCALE), blendshapes=e[:52].copy())
             for e in inputs.expression]  # fmt: skip
    eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    return crops, AlignedPhotos(crops, faces, [], [eye] * len(crops), list(range(len(crops))))
