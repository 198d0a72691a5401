"""Face geometry: five-point alignment, crops for each model, validity masks, pasting back.

Every crop mien makes or reads comes from here, so the conventions live in one place:

* ``align_face`` reproduces the faces128 pool (``shared/data/faces128/README.md``, "Alignment"):
  Umeyama similarity from five MediaPipe points to :data:`TEMPLATE_128`, ``cv2.warpAffine`` with
  ``INTER_AREA`` when shrinking and ``INTER_CUBIC`` when enlarging, ``BORDER_REFLECT101``.
  (OpenCV's ``warpAffine`` treats ``INTER_AREA`` as ``INTER_LINEAR``; we pass the flag anyway so
  the call is the one the pool was built with.)
* ``arcface_crop`` is the MobileFaceNet input (``shared/reference/README.md`` section 4).
* ``dlib_chip`` is the face-api/dlib recognition input: a re-implementation of dlib's
  ``get_face_chip_details`` + ``extract_image_chip`` (dlib ``image_transforms/interpolation.h``,
  ``image_pyramid.h``), fed either dlib's own 5 points or equivalents taken from MediaPipe.

Affine matrices are 2x3 and map source-photo pixel coordinates to crop pixel coordinates (OpenCV's
convention: pixel centres at integer coordinates).
"""

from __future__ import annotations

import cv2
import numpy as np

# faces128 template, 128x128 crop: the ArcFace 112 template centred, scaled by 1.13 and shifted up
# 6 px (shared/data/faces128/README.md, "Alignment", step 3). Order: image-left eye, image-right eye,
# nose tip, image-left mouth corner, image-right mouth corner.
TEMPLATE_128 = np.array(
    [[43.98, 52.24], [83.81, 52.02], [64.02, 74.89], [47.66, 98.21], [80.64, 98.03]], dtype=np.float64
)

# The standard ArcFace/InsightFace 112x112 five-point template (shared/reference/README.md section 4;
# insightface `arcface_dst`). Same point order as TEMPLATE_128.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

# MediaPipe landmark indices behind the five points (faces128 README step 2): each point is the mean
# of its indices. Eyes are the mean of the two corners; 1 is the nose tip; 61/291 the mouth corners.
FIVE_POINT_INDICES = ((33, 133), (362, 263), (1,), (61,), (291,))

# dlib's 5-point chip template, in units of the unpadded chip (dlib `get_face_chip_details`,
# image_transforms/interpolation.h, 5-part branch). Part order of shape_predictor_5_face_landmarks:
# 0/1 outer/inner corner of the eye on the image right, 2/3 outer/inner corner of the eye on the
# image left, 4 the point under the nose at the top of the philtrum.
DLIB_5PT_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

# MediaPipe stand-ins for dlib's 5 parts, chosen by measurement against dlib's own points on the
# 16 reference images (shared/reference/dlib_descriptors.json; outer eye corners ~100-120 px apart):
# outer eye corners 263 / 33 (mean distance to dlib's parts 1.2 / 0.9 px); for the inner corners the
# lower-lid points next to the canthus, 382 / 155 (1.4 / 1.5 px; the canthi 362 / 133 sit 2-3 px
# nearer the nose than dlib's points); for the nose bottom landmark 2, the subnasale (2.1 px; 94 is
# 2.8 px, 164 and 19 over 4 px). With these points face-api descriptors of the chips reach cosine
# >= 0.9978 to dlib's own descriptors (0.9970 with the canthi 362 / 133, or with 94 for the nose).
# Chosen and checked on the same 16 images (8 people): an in-sample figure.
DLIB_5PT_FROM_MEDIAPIPE = (263, 382, 33, 155, 2)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The five alignment points (5, 2), float64, from MediaPipe landmarks (478, 2 or 3) in pixels."""
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    return np.stack([lm[list(ix)].mean(axis=0) for ix in FIVE_POINT_INDICES])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping ``src``
    points onto ``dst``, as a 2x3 matrix.

    Umeyama, "Least-squares estimation of transformation parameters between two point patterns",
    IEEE TPAMI 13(4), 1991, eqs. 38-43; the same computation as scikit-image's
    ``SimilarityTransform.estimate`` and dlib's ``find_similarity_transform``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0 or (np.linalg.matrix_rank(cov) == 1 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        d[-1] = -1  # the closest proper rotation, never a reflection (Umeyama eq. 39)
    rot = u @ np.diag(d) @ vt
    var = src_c.var(axis=0).sum()
    scale = (s @ d) / var if var > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = dst_mean - m[:, :2] @ src_mean
    return m


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2x3 affine matrix."""
    p = np.asarray(points, dtype=np.float64)
    return p @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """The 2x3 inverse of a 2x3 affine matrix (crop -> photo for an alignment matrix)."""
    a = np.asarray(m, dtype=np.float64)[:, :2]
    inv = np.linalg.inv(a)
    return np.hstack([inv, -inv @ np.asarray(m, dtype=np.float64)[:, 2:]])


def affine_scale(m: np.ndarray) -> float:
    """The uniform scale of a similarity matrix (crop pixels per photo pixel)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(m, dtype=np.float64)[:, :2]))))


def template(size: int = 128) -> np.ndarray:
    """TEMPLATE_128 scaled for a ``size`` x ``size`` crop (faces128 README step 4)."""
    return TEMPLATE_128 * (size / 128.0)


def alignment_matrix(points5: np.ndarray, size: int = 128) -> np.ndarray:
    """The faces128 alignment matrix (photo -> crop) for five points in photo pixels."""
    return similarity_transform(points5, template(size))


def warp_to_crop(rgb: np.ndarray, m: np.ndarray, size: int = 128) -> np.ndarray:
    """Warp a photo into a ``size`` crop exactly as the faces128 pool was built (README step 4)."""
    flags = cv2.INTER_AREA if affine_scale(m) < 1.0 else cv2.INTER_CUBIC
    return cv2.warpAffine(
        np.ascontiguousarray(rgb), np.asarray(m, dtype=np.float64), (size, size),
        flags=flags, borderMode=cv2.BORDER_REFLECT101,
    )


def align_face(rgb: np.ndarray, points5: np.ndarray, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Aligned ``size`` x ``size`` crop of the face at ``points5`` and its 2x3 photo -> crop matrix."""
    m = alignment_matrix(points5, size)
    return warp_to_crop(rgb, m, size), m


def validity_mask(m: np.ndarray, src_size: tuple[int, int], size: int = 128) -> np.ndarray:
    """Boolean (size, size) mask of crop pixels that come from inside the photo.

    ``src_size`` is (width, height), as in the faces128 manifest. Built as the README prescribes:
    warp a ones-image of the photo's size with nearest neighbour; outside pixels are 0. The pool's
    ``fill`` field is ``1 - mask.mean()``.
    """
    w, h = int(src_size[0]), int(src_size[1])
    ones = np.ones((h, w), np.uint8)
    out = cv2.warpAffine(
        ones, np.asarray(m, dtype=np.float64), (size, size),
        flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    return out.astype(bool)


def fill_fraction(m: np.ndarray, src_size: tuple[int, int], size: int = 128) -> float:
    """Share of the crop that lies outside the photo (the manifest's ``fill``)."""
    return float(1.0 - validity_mask(m, src_size, size).mean())


def feathered_mask(mask: np.ndarray | None, size: int, feather: float) -> np.ndarray:
    """A float32 (size, size) alpha in [0, 1]: ``mask`` (default: the whole crop) with its edges and
    the crop border faded over about ``feather`` pixels."""
    alpha = np.ones((size, size), np.float32) if mask is None else np.asarray(mask, np.float32).copy()
    if feather <= 0:
        return alpha
    border = int(np.ceil(feather))
    alpha[:border], alpha[-border:], alpha[:, :border], alpha[:, -border:] = 0, 0, 0, 0
    sigma = feather / 2.0
    return cv2.GaussianBlur(alpha, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)


def paste_back(
    photo: np.ndarray,
    crop: np.ndarray,
    m: np.ndarray,
    mask: np.ndarray | None = None,
    feather: float | None = None,
) -> np.ndarray:
    """Paste an aligned crop back into the photo it came from (inverse warp, feathered blend).

    ``m`` is the photo -> crop matrix the crop was made with (any crop size; the crop may also be an
    edited or generated face). ``mask`` (crop-sized, bool or float in [0, 1]) limits what is pasted,
    e.g. a face-region mask; by default the whole crop is. ``feather`` (crop pixels, default
    size/16) softens the mask edge so no seam shows. Returns a new uint8 photo.
    """
    size = crop.shape[0]
    feather = size / 16.0 if feather is None else feather
    h, w = photo.shape[:2]
    inv_flags = cv2.WARP_INVERSE_MAP | (cv2.INTER_CUBIC if affine_scale(m) < 1.0 else cv2.INTER_LINEAR)
    face = cv2.warpAffine(
        np.ascontiguousarray(crop), np.asarray(m, dtype=np.float64), (w, h),
        flags=inv_flags, borderMode=cv2.BORDER_REPLICATE,
    ).astype(np.float32)
    alpha = cv2.warpAffine(
        feathered_mask(mask, size, feather), np.asarray(m, dtype=np.float64), (w, h),
        flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )[..., None]
    out = photo.astype(np.float32) * (1.0 - alpha) + face * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def arcface_matrix(points5: np.ndarray, size: int = 112) -> np.ndarray:
    """Photo -> crop matrix onto the ArcFace template (scaled by size/112)."""
    return similarity_transform(points5, ARCFACE_112 * (size / 112.0))


def arcface_crop(rgb: np.ndarray, points5: np.ndarray, size: int = 112) -> np.ndarray:
    """The 112x112 MobileFaceNet input: ArcFace-template alignment, bilinear, black outside
    (shared/reference/README.md section 4; reproduces ``chips/*_arc112.png``)."""
    return cv2.warpAffine(
        np.ascontiguousarray(rgb), arcface_matrix(points5, size), (size, size),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


# ---------------------------------------------------------------------------------------------
# dlib face chips


def dlib_points(points: np.ndarray) -> np.ndarray:
    """dlib's 5 parts (5, 2): returned as is when given 5 points, taken from MediaPipe landmarks
    (478, 2 or 3) through :data:`DLIB_5PT_FROM_MEDIAPIPE` otherwise."""
    p = np.asarray(points, dtype=np.float64)[:, :2]
    return p if len(p) == 5 else p[list(DLIB_5PT_FROM_MEDIAPIPE)]


def dlib_chip(rgb: np.ndarray, points: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The ``size`` x ``size`` dlib face chip, as ``dlib.get_face_chip(img, shape, size, padding)``.

    ``points`` are dlib's 5 parts (shape_predictor_5_face_landmarks order) or MediaPipe landmarks.
    Bilinear sampling, black outside the photo, and dlib's 2x Gaussian pyramid when the chip is much
    smaller than the face, as in dlib's ``extract_image_chips``.
    """
    rect, angle = _dlib_chip_details(dlib_points(points), size, padding)
    return _dlib_extract_chip(np.ascontiguousarray(rgb), rect, angle, size)


def _dlib_chip_details(points: np.ndarray, size: int, padding: float) -> tuple[np.ndarray, float]:
    """dlib ``get_face_chip_details`` + ``chip_details(chip_points, img_points, dims)``: the chip's
    rectangle (l, t, r, b) in the photo and its rotation angle (radians)."""
    chip_pts = (padding + DLIB_5PT_TEMPLATE) / (2 * padding + 1) * size
    m = similarity_transform(chip_pts, points)  # chip -> photo, fitted in dlib's direction
    angle = float(np.arctan2(m[1, 0], m[0, 0]))
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    cx, cy = m @ np.array([size / 2.0, size / 2.0, 1.0])
    half = (size * scale - 1.0) / 2.0  # dlib centered_drect: width-1 spans the rectangle
    return np.array([cx - half, cy - half, cx + half, cy + half]), angle


def _rect_down(r: np.ndarray) -> np.ndarray:
    # dlib pyramid_down<2>::point_down: p/2 - (1.25, 0.75). The filter itself centres output pixel
    # i on input 2i + 2 (offset (1, 1)); we keep dlib's numbers, so pyramid chips carry dlib's own
    # ~0.1-0.3 px shift.
    return r / 2.0 - np.array([1.25, 0.75, 1.25, 0.75])


def _rect_area(r: np.ndarray) -> float:
    return (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0)  # dlib drectangle: width = r - l + 1


def _rotated_corners(r: np.ndarray, angle: float) -> np.ndarray:
    """tl, tr, bl, br of rectangle ``r`` rotated by ``angle`` about its centre (dlib rotate_point)."""
    c = np.array([(r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0])
    pts = np.array([[r[0], r[1]], [r[2], r[1]], [r[0], r[3]], [r[2], r[3]]]) - c
    cos, sin = np.cos(angle), np.sin(angle)
    return pts @ np.array([[cos, sin], [-sin, cos]]) + c


def _dlib_pyramid_down(img: np.ndarray) -> np.ndarray:
    """dlib ``pyramid_down<2>`` on an RGB image: 5-tap [1 4 6 4 1] filter both ways, keep every other
    pixel, integer arithmetic, result floored (image_pyramid.h, pyramid_down_2_1, RGB overload)."""
    if img.shape[0] <= 8 or img.shape[1] <= 8:
        return img[:0, :0]  # dlib clears the output for such small images
    a = img.astype(np.uint32)
    cols = 2 * np.arange((a.shape[1] - 3) // 2)
    t = a[:, cols] + 4 * a[:, cols + 1] + 6 * a[:, cols + 2] + 4 * a[:, cols + 3] + a[:, cols + 4]
    rows = 2 + 2 * np.arange((a.shape[0] - 3) // 2)
    d = t[rows - 2] + 4 * t[rows - 1] + 6 * t[rows] + 4 * t[rows + 1] + t[rows + 2]
    return (d // 256).astype(np.uint8)


def _dlib_bounding_box(rect: np.ndarray, angle: float, size: int, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """Integer crop (l, t, r, b) of the photo dlib works on and the pyramid depth it builds."""
    depth, grow, r = 0, 2.0, _rect_down(rect)
    while _rect_area(r) > size * size:
        r, depth, grow = _rect_down(r), depth + 1, grow * 2 + 2
    corners = _rotated_corners(rect, angle)
    box = np.array([*corners.min(axis=0) - grow, *corners.max(axis=0) + grow])
    box = np.maximum(box, [0, 0, -np.inf, -np.inf])
    box = np.minimum(box, [np.inf, np.inf, shape[1] - 1, shape[0] - 1])
    return np.floor(box + 0.5).astype(int), depth  # drectangle -> rectangle rounds


def _dlib_extract_chip(img: np.ndarray, rect: np.ndarray, angle: float, size: int) -> np.ndarray:
    """dlib ``extract_image_chips`` for one chip with ``interpolate_bilinear``."""
    box, depth = _dlib_bounding_box(rect, angle, size, img.shape)
    src = img[box[1] : box[3] + 1, box[0] : box[2] + 1]
    r = rect - np.array([box[0], box[1], box[0], box[1]], dtype=np.float64)
    level = -1
    while _rect_area(_rect_down(r)) > size * size and level + 1 < depth:
        level, r = level + 1, _rect_down(r)
    for _ in range(level + 1):
        src = _dlib_pyramid_down(src)
    tl, tr, bl, _ = _rotated_corners(r, angle)
    # chip pixel (c, r) -> source point: (0,0)->tl, (size-1,0)->tr, (0,size-1)->bl (find_affine_transform)
    ex, ey = (tr - tl) / (size - 1), (bl - tl) / (size - 1)
    cc, rr = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    x = tl[0] + cc * ex[0] + rr * ey[0]
    y = tl[1] + cc * ex[1] + rr * ey[1]
    return _bilinear_dlib(src, x, y)


def _bilinear_dlib(src: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dlib ``interpolate_bilinear`` (black where any of the 4 neighbours is outside) followed by
    dlib's double -> uint8 ``assign_pixel`` (clamp, then truncate)."""
    h, w = src.shape[:2]
    if h < 2 or w < 2:  # nothing to interpolate from (face entirely outside the photo)
        return np.zeros((*x.shape, 3), np.uint8)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    ok = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < w) & (y0 + 1 < h)
    x0c, y0c = np.clip(x0, 0, max(w - 2, 0)), np.clip(y0, 0, max(h - 2, 0))
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    s = src.astype(np.float64)
    tl, tr = s[y0c, x0c], s[y0c, x0c + 1]
    bl, br = s[y0c + 1, x0c], s[y0c + 1, x0c + 1]
    val = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    out = np.clip(val, 0, 255).astype(np.uint8)  # astype truncates like static_cast
    out[~ok] = 0
    return out
