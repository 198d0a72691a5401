"""Head pose (yaw, pitch, roll in degrees) from MediaPipe's facial transformation matrix.

The matrix is MediaPipe's face-geometry pose transform: it maps the canonical face model into the
"metric 3D space", a right-handed space with a virtual perspective camera at the origin looking
along -Z, X to the image right and Y up (MediaPipe Face Mesh documentation, "Face Transform
Module" / "Metric 3D Space", google-ai-edge/mediapipe docs/solutions/face_mesh.md; the solver is
``mediapipe/modules/face_geometry/libs/procrustes_solver.cc``). The canonical face looks along +Z
(towards the camera) with +Y up, so a frontal, upright face has a rotation close to the identity.

We write the rotation as ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)`` (rotations about the camera axes,
yaw applied last) and report, in degrees:

* yaw > 0: the head turns towards the *subject's left*, i.e. the nose points to the image right in
  an unmirrored photo (a right-handed turn about +Y).
* pitch > 0: the head tilts *up* (nose up, chin forward). This is the negative of the right-handed
  angle about +X, chosen so that "looking up" reads positive.
* roll > 0: the head tilts *counter-clockwise as seen in the image* (the top of the head moves to
  the image left, towards the subject's right shoulder; a right-handed turn about +Z, which points
  at the viewer).

The signs are checked against the landmarks in ``tests/test_landmarker.py`` (nose offset for yaw,
eye-line slope for roll).
"""

from __future__ import annotations

import numpy as np


def rotation_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """The 3x3 rotation of a 4x4 pose matrix, with any uniform scale divided out (re-orthonormalised)."""
    m = np.asarray(matrix, dtype=np.float64)[:3, :3]
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    return r if np.linalg.det(r) > 0 else u @ np.diag([1.0, 1.0, -1.0]) @ vt


def pose_from_matrix(matrix: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from a 4x4 MediaPipe facial transformation matrix."""
    r = rotation_from_matrix(matrix)
    # R = Ry(a) Rx(b) Rz(c):  R[1,2] = -sin b,  R[0,2] = sin a cos b,  R[2,2] = cos a cos b,
    #                         R[1,0] = cos b sin c,  R[1,1] = cos b cos c.
    yaw = np.degrees(np.arctan2(r[0, 2], r[2, 2]))
    pitch_rh = np.degrees(np.arcsin(np.clip(-r[1, 2], -1.0, 1.0)))
    roll = np.degrees(np.arctan2(r[1, 0], r[1, 1]))
    return float(yaw), float(-pitch_rh), float(roll)


def matrix_from_pose(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The 3x3 rotation for (yaw, pitch, roll) degrees in this module's convention (inverse of
    :func:`pose_from_matrix` on rotations)."""
    a, b, c = np.radians([yaw, -pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz
