"""Print mien.detail.TEMPLATE_OVAL_128: the mean MediaPipe face oval, in aligned 128 px crop coordinates,
over the London Set neutral photos of the faces128 dev split (used when a paste is given no landmarks).

    python scripts/face_oval_template.py DIR    # DIR: the london_*_neutral.raw.jpg files of dev.tar
"""

import sys
from pathlib import Path

import numpy as np

from mien.detail import FACE_OVAL
from mien.face import align
from mien.face.landmarker import FaceLandmarker
from mien.io.image import load_rgb

ovals = []
with FaceLandmarker() as lm:
    for path in sorted(Path(sys.argv[1]).glob("london_*_neutral.raw.jpg")):
        faces = lm.detect(load_rgb(path))
        if faces:
            m = align.alignment_matrix(align.five_points(faces[0].landmarks))
            ovals.append(align.apply_affine(m, faces[0].landmarks[list(FACE_OVAL), :2]))
mean = np.mean(ovals, axis=0)
print(f"# {len(ovals)} photos")
print("TEMPLATE_OVAL_128 = np.array([" + ", ".join(f"[{x:.1f}, {y:.1f}]" for x, y in mean) + "])")
