"""Detail transfer: a 128 px edit carried to the photo's own resolution.

The model edits an aligned 128 px crop; the photo's face is usually 300-1,000 px wide. Pasting the
crop back (:func:`mien.paste.paste_into_photo`) replaces the photo's skin, hair and eye detail with
the crop's and, where a feature moved, leaves a faint copy of it where it was (the model repaints
the feature rather than moving it). Here the edit only says *what changed*, and the photo supplies
*what it looks like* at full resolution:

1. **Motion.** Dense optical flow (OpenCV DIS, Kroeger et al., ECCV 2016) from the edited crop back
   to the original crop, computed on both crops upsampled 2x and brightness-normalised, lightly
   smoothed, with sub-threshold motion set to zero so that still skin is not resampled. Upsampled
   to the photo through the alignment matrix, it moves the photo's own pixels: a raised brow is the
   person's brow moved, texture and all, not a new brow painted beside a ghost of the old one.
2. **What a warp cannot explain.** The edit minus the warped original crop, low-passed (Gaussian),
   its global colour drift (the decoder's, measured as the median over still face pixels) removed
   and small values shrunk to zero (soft threshold), is added at photo resolution: shading, a
   deepened nasolabial fold, the dark of an opened mouth. The result is a two-band (Laplacian)
   blend: low frequencies from the edit, high frequencies from the warped photo.
3. **New content.** Where that residual is large (teeth, the inside of an opened mouth: nothing in
   the photo to move there) the upsampled edit itself is used, colour-corrected the same way.
4. **Mask.** The face oval from the photo's MediaPipe landmarks (FACEMESH_FACE_OVAL), united with
   the same oval moved by the flow (a dropped jaw), limited to the region the edit may redraw
   (``keep``) and feathered. Outside it the photo is returned bit for bit.

Everything at crop resolution is computed once on 128-256 px arrays; at photo resolution there are
four resamplings of the face's bounding region and one blend, so the cost grows with the face's
area, not the photo's (``scripts/bench_fullres.py``; figures in ``docs/fullres.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mien.face import align

# MediaPipe face mesh FACEMESH_FACE_OVAL (mediapipe/python/solutions/face_mesh_connections.py), as one
# closed polygon in order: forehead centre (10), round the image-right side to the chin (152) and back.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # fmt: skip

# The face oval in 128 px crop coordinates when no landmarks are given: the mean of FACE_OVAL over the
# London Set photos of the faces128 dev split, aligned (scripts/face_oval_template.py prints it).
TEMPLATE_OVAL_128 = np.array(
    [[63.7, 15.9], [76.4, 16.1], [87.4, 18.0], [97.7, 22.1], [104.6, 28.3], [109.1, 36.5], [111.5, 45.2],
     [112.5, 55.9], [112.2, 66.0], [111.4, 76.3], [109.7, 87.2], [106.8, 98.7], [102.6, 107.5], [97.7, 113.6],
     [91.3, 118.9], [85.7, 122.4], [79.8, 125.2], [72.9, 127.3], [64.3, 127.9], [55.7, 127.4], [48.9, 125.3],
     [43.1, 122.5], [37.5, 119.1], [31.2, 113.9], [26.5, 107.9], [22.3, 99.2], [19.4, 87.7], [17.5, 76.8],
     [16.5, 66.6], [15.9, 56.6], [16.8, 46.0], [18.9, 37.2], [23.2, 29.1], [30.0, 22.7], [40.0, 18.4],
     [51.0, 16.4]])  # fmt: skip


@dataclass(frozen=True)
class DetailSettings:
    """The parameters of :func:`transfer_detail`, in 128 px crop units and grey levels (chosen on the tuning
    people of the dev split, ``scripts/bench_fullres.py --split tune``; docs/fullres.md)."""

    flow_upsample: int = 2  # DIS runs on crops upsampled this much (sub-pixel motion of small features)
    flow_smooth: float = 1.0  # Gaussian sigma applied to the flow (crop px)
    still_motion: float = 0.25  # motion below this (crop px) is treated as none; ramps to full at twice it
    max_motion: float = 10.0  # motion is clipped to this length (crop px): bounds how far the mask can grow
    residual_sigma: float = 1.5  # the residual's low-pass (crop px)
    residual_floor: float = 3.0  # residual magnitudes below this (grey levels) are dropped (decoder noise)
    new_content: tuple[float, float] = (15.0, 35.0)  # residual magnitude where the edit itself takes over
    feather: float = 3.0  # mask edge softening (crop px)
    jaw_margin: float = 2.0  # the oval grown by this (crop px) before feathering


DEFAULT = DetailSettings()


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _normalised_grey(rgb: np.ndarray, up: int) -> np.ndarray:
    """Grey, upsampled ``up``x, mean 128 / std 40: the decoder's brightness drift should not read as motion."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if up > 1:
        g = cv2.resize(g, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
    g = (g - g.mean()) / max(float(g.std()), 1.0) * 40.0 + 128.0
    return np.clip(g, 0, 255).astype(np.uint8)


def crop_flow(original: np.ndarray, edited: np.ndarray, settings: DetailSettings = DEFAULT) -> np.ndarray:
    """(128, 128, 2) float32 backward flow in crop pixels: ``edited(x) ~ original(x + flow(x))``, with still
    regions exactly zero."""
    up = settings.flow_upsample
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(_normalised_grey(edited, up), _normalised_grey(original, up), None)
    size = original.shape[0]
    if up > 1:
        flow = cv2.resize(flow, (size, size), interpolation=cv2.INTER_AREA) / up
    if settings.flow_smooth > 0:
        flow = cv2.GaussianBlur(flow, (0, 0), settings.flow_smooth, borderType=cv2.BORDER_REPLICATE)
    mag = np.linalg.norm(flow, axis=2)
    gain = _smoothstep(mag, settings.still_motion, 2 * settings.still_motion)
    gain *= np.minimum(1.0, settings.max_motion / np.maximum(mag, 1e-6))
    flow *= gain[..., None]
    return flow.astype(np.float32)


def _remap_crop(img: np.ndarray, flow: np.ndarray, interpolation=cv2.INTER_LINEAR, border=cv2.BORDER_REFLECT101):
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, gx + flow[..., 0], gy + flow[..., 1], interpolation, borderMode=border)


def face_oval(landmarks: np.ndarray | None, matrix: np.ndarray) -> np.ndarray:
    """(36, 2) float64 face-oval polygon in crop coordinates: from the photo's landmarks when given, else
    the template's."""
    if landmarks is None:
        return template_oval()
    return align.apply_affine(matrix, np.asarray(landmarks, np.float64)[list(FACE_OVAL), :2])


def _polygon_mask(poly: np.ndarray, size: int, scale: int = 4) -> np.ndarray:
    """Anti-aliased (size, size) float32 mask of a polygon in crop coordinates (pixel centres at integers)."""
    big = np.zeros((size * scale, size * scale), np.uint8)
    pts = np.round((poly + 0.5) * scale - 0.5).astype(np.int32)
    cv2.fillPoly(big, [pts], 255)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def crop_plan(original: np.ndarray, edited: np.ndarray, oval: np.ndarray, editable: np.ndarray | None,
              settings: DetailSettings = DEFAULT) -> dict[str, np.ndarray]:  # fmt: skip
    """Everything detail transfer decides at crop resolution: ``flow`` (backward, crop px), ``residual``
    (low-passed, colour drift removed, float32 grey levels), ``new`` (weight of the edit itself), ``alpha``
    (the feathered face mask), ``drift`` (the per-channel colour drift removed), all (128, 128[, C])."""
    size = original.shape[0]
    flow = crop_flow(original, edited, settings)
    warped = _remap_crop(original.astype(np.float32), flow)
    residual = edited.astype(np.float32) - warped
    residual = cv2.GaussianBlur(residual, (0, 0), settings.residual_sigma, borderType=cv2.BORDER_REPLICATE)
    oval_mask = _polygon_mask(oval, size)
    still = (oval_mask > 0.99) & (np.linalg.norm(flow, axis=2) == 0)
    if editable is not None:
        still &= editable > 0.99
    drift = np.median(residual[still], axis=0) if still.sum() > 50 else np.zeros(3, np.float32)
    residual -= drift
    mag = np.linalg.norm(residual, axis=2)
    shrink = np.maximum(mag - settings.residual_floor, 0.0) / np.maximum(mag, 1e-6)
    new = _smoothstep(mag, *settings.new_content)
    new = cv2.GaussianBlur(new, (0, 0), settings.residual_sigma)
    residual = residual * shrink[..., None]
    # the mask: the oval, grown a little, united with where the flow moves it (a dropped jaw, raised brows)
    grown = cv2.dilate(oval_mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)),
                       iterations=max(1, round(settings.jaw_margin / 2)))  # fmt: skip
    moved = _remap_crop(grown, flow, border=cv2.BORDER_CONSTANT)
    alpha = np.maximum(grown, moved)
    if editable is not None:
        alpha *= editable
    if settings.feather > 0:
        # blur inside the region only (erode first), so the feathered mask never reaches past it
        r = int(np.ceil(settings.feather))
        core = cv2.erode(alpha, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        alpha = np.minimum(alpha, cv2.GaussianBlur(core, (0, 0), settings.feather / 2.0 + 1e-6))
    alpha[alpha < 1e-3] = 0.0
    alpha[alpha > 1 - 1e-3] = 1.0
    return {"flow": flow, "residual": residual.astype(np.float32), "new": new.astype(np.float32),
            "alpha": alpha.astype(np.float32), "drift": drift.astype(np.float32)}  # fmt: skip


def _region(alpha: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) photo pixels the crop's non-zero mask can reach, clipped to the photo."""
    ys, xs = np.nonzero(alpha)
    if len(xs) == 0:
        return None
    corners = np.array([[xs.min() - 1, ys.min() - 1], [xs.max() + 1, ys.min() - 1],
                        [xs.min() - 1, ys.max() + 1], [xs.max() + 1, ys.max() + 1]], np.float64)  # fmt: skip
    p = align.apply_affine(align.invert_affine(matrix), corners)
    h, w = shape
    x0, y0 = np.floor(p.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(p.max(axis=0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


def transfer_detail(photo: np.ndarray, image: np.ndarray, matrix: np.ndarray, keep: str = "background",
                    landmarks: np.ndarray | None = None, settings: DetailSettings = DEFAULT) -> np.ndarray:  # fmt: skip
    """The photo with the expression of the edited 128 px crop ``image``, at the photo's resolution (module
    docstring). ``matrix``: the photo -> crop alignment matrix; ``keep``: the settings' kept region (only
    what the edit may redraw changes); ``landmarks``: the photo's MediaPipe landmarks of this face (478, 2+)
    for a face-shaped mask (else a template oval). Pixels outside the mask are returned unchanged."""
    from mien.paste import editable_region

    photo = np.ascontiguousarray(photo)
    matrix = np.asarray(matrix, np.float64)
    size = image.shape[0]
    original = align.warp_to_crop(photo, matrix, size)
    plan = crop_plan(original, image, face_oval(landmarks, matrix) * (size / 128.0), editable_region(keep, size),
                     settings)  # fmt: skip
    box = _region(plan["alpha"], matrix, photo.shape[:2])
    out = photo.copy()
    if box is None:
        return out
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    a = matrix[:, :2]
    m_region = np.hstack([a, (a @ np.array([x0, y0], np.float64) + matrix[:, 2])[:, None]])  # region px -> crop

    def up(x, interpolation=cv2.INTER_LINEAR):  # crop-space array -> the photo region, same sampling grid
        return cv2.warpAffine(x, m_region, (w, h), flags=cv2.WARP_INVERSE_MAP | interpolation,
                              borderMode=cv2.BORDER_REPLICATE)  # fmt: skip

    field = up(np.dstack([plan["flow"], plan["alpha"], plan["new"]]))
    alpha = field[..., 2]
    inside = alpha > 0
    if not inside.any():
        return out
    # crop displacement -> photo displacement: d_photo = A^-1 d_crop
    ainv = np.linalg.inv(a).astype(np.float32)
    dx = ainv[0, 0] * field[..., 0] + ainv[0, 1] * field[..., 1]
    dy = ainv[1, 0] * field[..., 0] + ainv[1, 1] * field[..., 1]
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    warped = cv2.remap(photo, gx + dx, gy + dy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    face = warped.astype(np.float32) + up(plan["residual"])
    new = field[..., 3:4]
    if (new > 0).any():
        edit_up = up(image.astype(np.float32) - plan["drift"], cv2.INTER_CUBIC)
        face = face * (1.0 - new) + edit_up * new
    region = photo[y0:y1, x0:x1]
    a3 = alpha[..., None]
    blended = np.clip(np.rint(region.astype(np.float32) * (1.0 - a3) + face * a3), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(inside[..., None], blended, region)
    return out


def template_oval() -> np.ndarray:
    return TEMPLATE_OVAL_128.copy()
