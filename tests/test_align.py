"""Face geometry (mien.face.align): the transforms and crops reproduce the references and the
faces128 pool, and the geometric helpers behave (inverse, paste-back round trip)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from mien.face import align


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# -------------------------------------------------------------------------------- pure geometry


def _similarity(scale: float, angle_deg: float, t: tuple[float, float]) -> np.ndarray:
    a = np.radians(angle_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([r, np.array(t)[:, None]])


def test_similarity_transform_recovers_exact_similarity():
    src = np.array([[10.0, 20.0], [50.0, 22.0], [30.0, 45.0], [15.0, 70.0], [48.0, 69.0]])
    m = _similarity(1.7, 23.0, (-12.0, 40.0))
    np.testing.assert_allclose(align.similarity_transform(src, align.apply_affine(m, src)), m, atol=1e-10)


def test_similarity_transform_never_reflects():
    src = align.TEMPLATE_128
    mirrored = src * np.array([-1.0, 1.0])  # a left-right mirror cannot be fitted without reflection
    m = align.similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_invert_affine_round_trips():
    m = _similarity(0.4, -8.0, (3.0, -70.0))
    p = np.random.default_rng(0).uniform(0, 500, size=(20, 2))
    np.testing.assert_allclose(align.apply_affine(align.invert_affine(m), align.apply_affine(m, p)), p, atol=1e-9)


def test_five_points_uses_the_readme_landmarks():
    lm = np.random.default_rng(1).uniform(0, 100, size=(478, 3))
    p = align.five_points(lm)
    np.testing.assert_allclose(p[0], (lm[33, :2] + lm[133, :2]) / 2)
    np.testing.assert_allclose(p[1], (lm[362, :2] + lm[263, :2]) / 2)
    np.testing.assert_allclose(p[2:], lm[[1, 61, 291], :2])


def test_template_scales_with_crop_size():
    p5 = align.TEMPLATE_128 * 2.3 + 40.0
    np.testing.assert_allclose(align.alignment_matrix(p5, 256), 2 * align.alignment_matrix(p5, 128), atol=1e-12)


def test_paste_back_only_touches_the_face_region():
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 256, size=(300, 260, 3), dtype=np.uint8)
    m = _similarity(0.6, 10.0, (-20.0, -40.0))
    crop = np.full((128, 128, 3), 200, np.uint8)
    out = align.paste_back(photo, crop, m)
    inside = align.apply_affine(align.invert_affine(m), [[64.0, 64.0]])[0].round().astype(int)
    assert (out[inside[1], inside[0]] == 200).all()
    assert (out[0, :] == photo[0, :]).all() and (out[-1, :] == photo[-1, :]).all()


# -------------------------------------------------------------------------------- references


@pytest.fixture(scope="module")
def mobilefacenet_ref(reference_dir):
    return json.loads((reference_dir / "mobilefacenet_reference.json").read_text())["images"]


@pytest.fixture(scope="module")
def dlib_ref(reference_dir):
    return json.loads((reference_dir / "dlib_descriptors.json").read_text())["images"]


@pytest.fixture(scope="module")
def mediapipe_ref(reference_dir):
    return json.loads((reference_dir / "mediapipe_face_landmarker.json").read_text())["images"]


@pytest.mark.shared
def test_similarity_transform_matches_skimage_reference(mobilefacenet_ref):
    for name, e in mobilefacenet_ref.items():
        m = align.arcface_matrix(np.array(e["src5_xy"]))
        np.testing.assert_allclose(m, np.array(e["affine_2x3"]), atol=1e-9, err_msg=name)


@pytest.mark.shared
def test_arcface_crop_reproduces_reference_chips(reference_dir, mobilefacenet_ref):
    for name, e in mobilefacenet_ref.items():
        crop = align.arcface_crop(_rgb(reference_dir / "images" / name), np.array(e["src5_xy"]))
        diff = np.abs(crop.astype(int) - _rgb(reference_dir / e["crop_file"]).astype(int))
        # cv2.warpAffine's bilinear weights are fixed point and its rounding depends on the version and the
        # CPU's code path: identical on some machines, 6 of 37,632 values off by one with OpenCV 5.1 on an AMD
        # EPYC. A wrong matrix or interpolation would move far more.
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (name, diff.max(), (diff > 0).mean())


@pytest.mark.shared
def test_dlib_chip_reproduces_reference_chips_exactly(reference_dir, dlib_ref):
    # With dlib's own 5 points our re-implementation of get_face_chip is bit-exact on all 16.
    for name, e in dlib_ref.items():
        chip = align.dlib_chip(_rgb(reference_dir / "images" / name), np.array(e["landmarks5_xy"], float))
        np.testing.assert_array_equal(chip, _rgb(reference_dir / e["chip_file"]), err_msg=name)


@pytest.mark.shared
def test_dlib_chip_pyramid_path_matches_direct_path(reference_dir, dlib_ref):
    """A 3x upscaled photo makes dlib go through its 2x pyramid; the chip must still show the same
    face in the same place (measured: 2-5 levels of mean difference, from the pyramid's blur)."""
    import cv2

    name = "london_002_neutral.jpg"
    img = _rgb(reference_dir / "images" / name)
    pts = np.array(dlib_ref[name]["landmarks5_xy"], float)
    big = cv2.resize(img, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    rect, angle = align._dlib_chip_details(pts * 3 + 1, 150, 0.25)
    assert align._dlib_bounding_box(rect, angle, 150, big.shape)[1] >= 1  # the pyramid is used
    diff = np.abs(align.dlib_chip(big, pts * 3 + 1).astype(int) - align.dlib_chip(img, pts))
    assert diff.mean() < 6.0


def _mediapipe_px(e) -> np.ndarray:
    w, h = e["image_size_wh"]
    return np.array(e["landmarks_xyz"])[:, :2] * [w, h]


@pytest.mark.shared
def test_dlib_chip_from_mediapipe_landmarks_is_close(reference_dir, dlib_ref, mediapipe_ref):
    """No dlib here: MediaPipe stand-ins for its 5 points give nearly the same chip
    (measured mean abs error 6.5, max 11.2 over the 16 images: a sub-pixel shift of a sharp image)."""
    errs = []
    for name, e in dlib_ref.items():
        img = _rgb(reference_dir / "images" / name)
        chip = align.dlib_chip(img, _mediapipe_px(mediapipe_ref[name]))
        errs.append(np.abs(chip.astype(int) - _rgb(reference_dir / e["chip_file"])).mean())
    assert np.mean(errs) < 8.0 and max(errs) < 14.0


@pytest.mark.shared
def test_faceapi_descriptors_of_mediapipe_chips_match_dlib(reference_dir, dlib_ref, mediapipe_ref):
    """Descriptors of chips cut with MediaPipe points vs dlib's descriptors of dlib's chips
    (measured cosine min 0.9978, mean 0.9987; L2 <= 0.098, dlib's same-person threshold is 0.6)."""
    torch = pytest.importorskip("torch")
    recognition = pytest.importorskip("mien.models.faceapi_recognition")
    net = recognition.FaceRecognitionNet.from_weights().eval()
    names = list(dlib_ref)
    chips = [align.dlib_chip(_rgb(reference_dir / "images" / n), _mediapipe_px(mediapipe_ref[n])) for n in names]
    with torch.no_grad():
        ours = net(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()).numpy()
    ref = np.array([dlib_ref[n]["descriptor"] for n in names])
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.996
    assert np.linalg.norm(ours - ref, axis=1).max() < 0.15


# -------------------------------------------------------------------------------- faces128 pool


@pytest.fixture(scope="module")
def faces128(shared_dir):
    return shared_dir / "data" / "faces128"


@pytest.fixture(scope="module")
def manifest(faces128):
    """All dev rows plus every 10th train row (parsing all 36,787 takes seconds)."""
    with open(faces128 / "manifest.jsonl") as f:
        return [json.loads(line) for i, line in enumerate(f) if i % 10 == 0 or '"split": "dev"' in line]


@pytest.mark.shared
def test_validity_mask_reproduces_manifest_fill(manifest):
    # `affine` is stored rounded to 5 decimals, which moves a few boundary pixels under
    # nearest-neighbour sampling (up to 5 of 16,384 over the whole pool), and `fill` to 4 decimals.
    diff = np.array([align.fill_fraction(r["affine"], r["src_size"]) - r["fill"] for r in manifest])
    assert len(diff) > 4000
    assert np.abs(diff).max() <= 6 / 128**2
    assert np.abs(diff).mean() < 5e-5  # rounding to 4 decimals alone gives 2.5e-5


@pytest.mark.shared
def test_realigning_dev_photos_reproduces_shipped_crops(faces128, manifest):
    """Full pipeline on 40 dev photos (raw.jpg: the source, downscaled to <= 512 px) vs the pool's
    crops, over the valid mask. scripts/bench_alignment.py over all 372: mean 2.38, p95 3.49,
    max 4.44; the WebP q90 coding alone accounts for ~1.7 and the 512 px downscale of the London
    photos for ~3.5 (warping with the pool's own matrix gives 3.5 there)."""
    from mien.face.landmarker import FaceLandmarker

    rows = {r["key"]: r for r in manifest if r["split"] == "dev"}
    with tarfile.open(faces128 / "dev.tar") as tar:
        raw_names = sorted(n for n in tar.getnames() if n.endswith(".raw.jpg"))[::9][:40]
        files = {n: tar.extractfile(n).read() for n in raw_names}
        webps = [n.replace(".raw.jpg", ".webp") for n in raw_names]
        files |= {n: tar.extractfile(n).read() for n in webps}
    errors = []
    with FaceLandmarker(num_faces=2) as lm:
        for n in raw_names:
            row = rows[n.removesuffix(".raw.jpg")]
            raw = np.asarray(Image.open(io.BytesIO(files[n])).convert("RGB"))
            shipped = np.asarray(Image.open(io.BytesIO(files[n.replace(".raw.jpg", ".webp")])).convert("RGB"))
            faces = lm.detect(raw)
            assert faces, f"no face in {n}"
            crop, _ = align.align_face(raw, align.five_points(faces[0].landmarks))
            mask = align.validity_mask(row["affine"], row["src_size"])
            errors.append(np.abs(crop.astype(int) - shipped)[mask].mean())
    assert len(errors) == 40
    assert np.mean(errors) < 3.0 and max(errors) < 5.5


@pytest.mark.shared
def test_paste_back_round_trip(reference_dir, mobilefacenet_ref):
    """align -> paste an edited crop back -> realign gives the edited crop again (inside the feather)."""
    for name in ("london_001_neutral.jpg", "tw_2211c05.jpg"):
        photo = _rgb(reference_dir / "images" / name)
        p5 = np.array(mobilefacenet_ref[name]["src5_xy"])
        crop, m = align.align_face(photo, p5)
        edited = 255 - crop
        again, _ = align.align_face(align.paste_back(photo, edited, m), p5)
        inner = (slice(16, 112), slice(16, 112))
        assert np.abs(again.astype(int) - edited)[inner].mean() < 1.5  # measured 0.56-0.81
        untouched, _ = align.align_face(align.paste_back(photo, crop, m), p5)
        assert np.abs(untouched.astype(int) - crop).mean() < 1.0  # measured 0.37-0.59
