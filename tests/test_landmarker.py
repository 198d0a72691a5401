"""MediaPipe wrapper (mien.face.landmarker) and head pose (mien.face.pose)."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from mien.face.pose import matrix_from_pose, pose_from_matrix


def test_pose_round_trips_through_matrix():
    for ypr in [(0, 0, 0), (30, -10, 5), (-45, 20, -15), (10, 60, 80)]:
        m = np.eye(4)
        m[:3, :3] = matrix_from_pose(*ypr)
        np.testing.assert_allclose(pose_from_matrix(m), ypr, atol=1e-9)


def test_pose_sign_conventions():
    # A canonical-face point in front of the nose (+Z) moves towards camera +X (image right) for
    # positive yaw, towards +Y (image up) for positive pitch; +X moves to +Y for positive roll.
    nose = np.array([0.0, 0.0, 1.0])
    assert (matrix_from_pose(20, 0, 0) @ nose)[0] > 0.3
    assert (matrix_from_pose(0, 20, 0) @ nose)[1] > 0.3
    assert (matrix_from_pose(0, 0, 20) @ np.array([1.0, 0.0, 0.0]))[1] > 0.3


def test_pose_ignores_uniform_scale():
    m = np.eye(4)
    m[:3, :3] = 2.5 * matrix_from_pose(12, -7, 3)
    np.testing.assert_allclose(pose_from_matrix(m), (12, -7, 3), atol=1e-9)


# -------------------------------------------------------------------------------- MediaPipe


@pytest.fixture(scope="module")
def reference(reference_dir):
    return json.loads((reference_dir / "mediapipe_face_landmarker.json").read_text())


@pytest.fixture(scope="module")
def landmarker(shared_dir):
    from mien.face.landmarker import FaceLandmarker

    # The references were computed with num_faces=1 on the photos as they are.
    with FaceLandmarker(num_faces=1, min_short_side=None) as lm:
        yield lm


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.shared
def test_landmarker_reproduces_reference(reference_dir, reference, landmarker):
    """Landmarks and blendshapes are bit-identical to the stored MediaPipe 1.2.2 run. The matrix
    (solved on the CPU after inference) differs by up to 3.4e-5 here, in its translation column."""
    for name, e in reference["images"].items():
        img = _rgb(reference_dir / "images" / name)
        (face,) = landmarker.detect(img)
        norm = np.array(e["landmarks_xyz"], dtype=np.float32)
        np.testing.assert_allclose(face.landmarks_norm, norm, atol=1e-6, err_msg=name)
        w, h = e["image_size_wh"]
        np.testing.assert_allclose(face.landmarks, norm * np.array([w, h, w], np.float32), rtol=1e-6)
        np.testing.assert_allclose(face.blendshapes, np.array(e["blendshape_scores"], np.float32), atol=1e-6)
        np.testing.assert_allclose(face.matrix, np.array(e["facial_transformation_matrix"]), atol=1e-4)
        assert face.landmarks.shape == (478, 3) and face.blendshapes.shape == (52,)
        x0, y0, x1, y1 = face.box
        assert x0 == face.landmarks[:, 0].min() and y1 == face.landmarks[:, 1].max()


@pytest.mark.shared
def test_frontal_reference_photos_have_small_pose(reference_dir, reference, landmarker):
    # London set, frontal studio photos: measured |yaw| <= 6.8, |pitch| <= 7.8, |roll| <= 5.3 degrees.
    for name in reference["images"]:
        if name.startswith("london_"):
            yaw, pitch, roll = landmarker.detect(_rgb(reference_dir / "images" / name))[0].pose
            assert max(abs(yaw), abs(pitch), abs(roll)) < 10, (name, yaw, pitch, roll)


@pytest.mark.shared
def test_pose_follows_image_rotation_and_mirroring(reference_dir, landmarker):
    img = _rgb(reference_dir / "images" / "london_002_neutral.jpg")
    yaw, pitch, roll = landmarker.detect(img)[0].pose
    h, w = img.shape[:2]
    # cv2: positive angle = counter-clockwise as seen in the image.
    rotated = cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), 15, 1.0), (w, h))
    assert landmarker.detect(rotated)[0].pose[2] - roll == pytest.approx(15, abs=3)
    turned = img[:, ::-1].copy()  # mirror: the turn flips, the tilt up/down does not
    yaw_m, pitch_m, roll_m = landmarker.detect(turned)[0].pose
    assert yaw_m == pytest.approx(-yaw, abs=2) and pitch_m == pytest.approx(pitch, abs=2)
    assert roll_m == pytest.approx(-roll, abs=2)


@pytest.mark.shared
def test_faces_are_sorted_largest_first(reference_dir):
    from mien.face.landmarker import FaceLandmarker

    big = _rgb(reference_dir / "images" / "london_001_neutral.jpg")
    small = _rgb(reference_dir / "images" / "london_003_neutral.jpg")
    small = cv2.resize(small, (256, 256), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((512, 512 + 256, 3), np.uint8)
    canvas[:, 256:] = big
    canvas[128:384, :256] = small
    with FaceLandmarker(num_faces=1) as lm:
        faces = lm.detect(canvas, max_faces=3)
        assert len(faces) == 2
        assert faces[0].box_area > faces[1].box_area and faces[0].box[0] > 256
        assert len(lm.detect(canvas, max_faces=1)) == 1
        assert lm.detect(np.zeros((200, 200, 3), np.uint8)) == []


@pytest.mark.shared
def test_small_photos_are_upscaled_but_reported_in_their_own_pixels(reference_dir, reference):
    from mien.face.landmarker import FaceLandmarker

    name = "london_004_neutral.jpg"
    small = np.asarray(Image.open(reference_dir / "images" / name).convert("RGB").resize((160, 160), Image.LANCZOS))
    expected = np.array(reference["images"][name]["landmarks_xyz"])[:, :2] * 160
    with FaceLandmarker(min_short_side=256) as lm:
        (face,) = lm.detect(small)
    assert face.landmarks[:, :2].max() < 160
    assert np.abs(face.landmarks[:, :2] - expected).mean() < 1.0  # px of the 160 px photo


@pytest.mark.shared
def test_rejects_non_rgb_input(landmarker):
    with pytest.raises(ValueError, match="uint8 RGB"):
        landmarker.detect(np.zeros((64, 64), np.uint8))


@pytest.mark.shared
def test_unclosed_landmarker_exits_quietly(shared_dir):
    """mediapipe 1.2.2 prints a TypeError traceback at exit for an unclosed task, and its graph logs
    to stderr on start: a script that never calls close() must leave stderr empty."""
    code = (
        "import numpy as np\n"
        "from mien.face.landmarker import FaceLandmarker\n"
        "lm = FaceLandmarker()\n"
        "lm.detect(np.zeros((64, 64, 3), np.uint8), max_faces=2)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
