"""Where dlib's five parts sit in a faces128-aligned crop (the constant DLIB5_IN_CROP_128 in
src/mien/models/identity.py). Runs MediaPipe on every third dev crop and averages the stand-in points.

    python scripts/measure_crop_dlib_points.py
"""

import numpy as np

from mien.data.faces128 import Faces128
from mien.face import align
from mien.face.landmarker import FaceLandmarker

ds = Faces128(split="dev")
pts = []
with FaceLandmarker() as lm:
    for _, img in ds.iter_images(ds.samples[::3], progress=True):
        faces = lm.detect(img)
        if faces:
            pts.append(align.dlib_points(faces[0].landmarks))
p = np.array(pts)
print(f"{len(p)} crops; mean points:", np.round(p.mean(0), 2).tolist())
print("per-point std (px):", np.round(p.std(0), 2).tolist())
