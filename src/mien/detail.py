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
   person's brow moved, texture and all, not a new brow painted beside a ghost of the old one. Motions
   under half a photo pixel are not applied (``snap``): the pixels are copied, since any sub-pixel
   resampling softens the finest texture (rounding larger ones to whole pixels tore the photo's lines).
2. **What a warp cannot explain: the low band.** The edit minus the warped original crop, low-passed
   (Gaussian), its colour drift (the sampler's, not the decoder's: docs/fullres.md; measured over the still
   face pixels the model redraws: its luminance globally and its chroma per region, or all of it per region) removed
   and small values set to zero (the non-negative garrote, which leaves large ones nearly whole), is added at photo
   resolution: shading, a deepened nasolabial fold, the dark of an opened mouth, a smile's cheeks. (``reference``,
   not the default: the edit minus the decoder's reconstruction of the unedited crop instead, so the decoder's own
   error cancels.)
3. **The mid band, by structure.** Above that low-pass the decoder returns the original's edges
   attenuated (blur); the part of the edit's mid band that a local fit on the warped original's does not
   explain is new structure (a crease, a lip line, teeth) and is added. The photo keeps its own texture
   wherever the edit only lost it; where the new structure or the low-band change is large, the photo's
   unexplained mid band gives way (a feature repainted rather than moved leaves no copy), while its fine
   detail above the crop's resolution stays. The upsampled edit itself is used where the new
   structure is large (a repainted eye, teeth), or where the flow stretches the photo so much (a shadow
   pulled into a crease) that the warp is not trusted; there too the warped photo's detail finer than the
   crop can hold is laid over it (``photo_detail``), so a region the edit redraws is not softer than the
   photo around it.
4. **The feature rule (off by default: ``feature_regions``).** Inside the eye openings from the photo's
   landmarks (and optionally the inner lips), grown a little and united with themselves moved by the flow,
   the upsampled edit itself is taken, without the photo's fine band, wherever the edit differs from the
   warped original crop by more than ``feature_edit``: an eye the edit closes or narrows is the edit's, and
   the photo's old iris does not show under lids the flow moved only part of the way.
5. **Small faces.** Where one crop pixel spans about one photo pixel or less (``photo_detail_weight`` below 1),
   the crop holds all the detail the photo has, and the photo's own feature edges moved by the flow keep the old
   expression at full resolution: there, by 1 - that weight, the edit itself is taken inside the eyes, brows and
   lips (``small_face_features``), and the photo's mid band gives way where the edit attenuated it
   (``small_face_mid``). Faces of 1.5 photo px per crop px or more are not touched.
6. **Mask.** The face oval from the photo's MediaPipe landmarks (FACEMESH_FACE_OVAL), united with
   the same oval moved by the flow (a dropped jaw), limited to the region the edit may redraw
   (``keep``: the model's own soft weight, except where the flow moves the face, ``keep_full``: the model
   already blended its edit there, and a brow raised into that edge is not weakened twice) and feathered
   (``keep_after_feather``: the limit after the feather instead, not the default). Outside it the photo is
   returned bit for bit.

7. **Interlaced photos.** A video frame's two fields, taken a field apart in time, comb every edge that moved
   between them row by row; the decoder's crop has no comb, and the output would keep it wherever the photo's own
   pixels carry the edit. Where the face's rows comb (:func:`comb`: above ``deinterlace_comb``), the photo pixels the
   transfer moves come from the photo filtered down its columns by [1, 2, 1] / 4 (``deinterlace``), inside the mask
   only; a photo not flagged is untouched.

Everything at crop resolution is computed once on 128-256 px arrays; at photo resolution there are
four resamplings of the face's bounding region (the photo's own with Lanczos), one Gaussian blur and one
blend, so the
cost grows with the face's area, not the photo's (``scripts/bench_fullres.py``; figures in ``docs/fullres.md``).
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

# MediaPipe face mesh eye contours (FACEMESH_LEFT_EYE / FACEMESH_RIGHT_EYE, lid margins) and the inner lip line
# (FACEMESH_LIPS, inner), each as one closed polygon in order.
EYES = ((263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
        (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246))  # fmt: skip
INNER_LIPS = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
# MediaPipe face mesh brows (FACEMESH_LEFT_EYEBROW / RIGHT_EYEBROW: upper edge outer to inner, then lower edge inner to
# outer) and the outer lip line (FACEMESH_LIPS, outer), each as one closed polygon in order.
BROWS = ((300, 293, 334, 296, 336, 285, 295, 282, 283, 276), (70, 63, 105, 66, 107, 55, 65, 52, 53, 46))
OUTER_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
# the polygons feature_polygons() gives for each name of a "+"-joined regions string
FEATURES = {"eyes": EYES, "brows": BROWS, "lips": (OUTER_LIPS,), "mouth": (INNER_LIPS,)}


@dataclass(frozen=True)
class DetailSettings:
    """The parameters of :func:`transfer_detail`, in 128 px crop units and grey levels (chosen on the tuning
    people of the dev split, ``scripts/bench_fullres.py --split tune``; docs/fullres.md)."""

    flow_upsample: int = 2  # DIS runs on crops upsampled this much (sub-pixel motion of small features)
    flow_smooth: float = 2.0  # Gaussian sigma applied to the flow (crop px)
    still_motion: float = 0.25  # motion below this (crop px) is treated as none; ramps to full at twice it
    max_motion: float = 10.0  # motion is clipped to this length (crop px): bounds how far the mask can grow
    residual_sigma: float = 1.5  # the residual's low-pass (crop px): the split between the low and mid band
    residual_floor: float = 3.0  # residual magnitudes below this (grey levels) are dropped (decoder noise)
    # new content decided by structure: the edit's mid band less the part of it the warped original explains
    # (the same edges, attenuated by the decoder); False: by the low-passed residual's size (the older rule)
    structure: bool = True
    structure_sigma: float = 2.0  # window (crop px) of the local fit of the edit's mid band on the original's
    structure_floor: float = 2.0  # mid-band differences below this (grey levels) are dropped (decoder noise)
    shrink: str = "garrote"  # how values above the floors are kept: "soft" (less the floor) or "garrote" (x (1 - floor^2
    # / x^2): large values nearly whole, so a broad change of a few grey levels is not cut by the floor)
    replace: tuple[float, float] = (4.0, 10.0)  # size of new structure where the photo's mid band gives way
    replace_low: tuple[float, float] = (15.0, 35.0)  # size of the low-band change where it gives way too
    stretch: tuple[float, float] = (0.6, 1.2)  # flow gradient (|d flow / dx|) where the edit itself takes
    # over: a warp that stretches the photo this much (a shadow pulled into a crease) is not trusted
    new_content: tuple[float, float] = (10.0, 20.0)  # size (grey levels) of the new structure (or, with
    # structure=False, of the residual) where the edit itself takes over
    drift_sigma: float = 0.0  # colour drift measured per region over still skin with this window (crop px); 0: global
    drift_chroma_sigma: float = 8.0  # with drift_sigma 0: the drift's chroma (its part off the grey axis) measured per
    # region with this window (crop px), its luminance still one value for the face, so a cast over part of the face is
    # removed there while an expression's shading (a change of luminance) is kept; 0: off, the rule before
    # (docs/fullres.md, "the drift's chroma per region": chosen on the tuning people, confirmed on the report people)
    drift_editable: float = 0.5  # the drift is measured over the still face pixels the model redraws more than this
    # (mien.paste.editable_region, its soft weight): the expression moves most of the fully redrawn centre, and at 0.99
    # (the rule before) the few still pixels left there measured a wrong drift, or none on 14 of the 84 tuning images
    # (docs/fullres.md, "the colour drift's scope"; chosen on the tuning people)
    drift_fallback: bool = True  # where MIN_STILL or fewer of those are, all still face pixels measure it; False: no
    # drift is removed there (the rule before)
    photo_detail: float = 1.0  # where the edit itself is taken, the warped photo's detail finer than this Gaussian
    # (crop px) is added to it (the band a 128 px crop cannot hold), weighted by photo_detail_weight (none for a
    # face the photo shows no finer than the crop); 0: the upsampled edit alone
    photo_detail_ramp: tuple[float, float] = (1.0, 1.5)  # photo px per crop px where photo_detail starts and is
    # whole: from 1.5 the London faces keep all of it; Essex's (~1.1) nearly none (docs/fullres.md, tuning)
    snap: float = 0.5  # photo displacements shorter than this (photo px) are rounded to whole pixels: the photo's
    # pixels are copied there, not resampled (any sub-pixel resampling softens the finest texture); 0: off. At 0.5
    # that is "under half a pixel: not moved"; at 1 a motion of 0.5-1 px became a whole pixel, and where a smooth
    # flow crosses 0.5 the photo tore by a pixel: on small faces, whose motions are mostly under a pixel, those
    # tears made the output sharper than the photo (Essex tuning 1.10 -> 0.99; docs/fullres.md)
    resample: str = "lanczos4"  # how the photo is moved by the flow: "lanczos4" keeps more fine texture than "cubic"
    # the feature rule: inside the eye openings (and with "eyes+mouth" the inner lips) from the landmarks, grown by
    # ``feature_margin`` crop px and united with the same polygons moved by the flow, the upsampled edit itself is
    # taken, without the photo's fine band, where the edit differs from the warped original crop by more than
    # ``feature_edit`` (grey levels, smoothstep range; the difference low-passed by ``feature_sigma``): a lid the
    # edit closes is the edit's, and the photo's iris does not show through it. "": off.
    feature_regions: str = ""
    feature_edit: tuple[float, float] = (10.0, 20.0)
    feature_sigma: float = 1.0
    feature_margin: float = 2.0
    # the small-face rule: on a face the crop samples at about the photo's resolution the photo holds nothing finer
    # than the edit, and its moved features (their full-resolution edges) keep the old expression; there the edit
    # itself is taken inside these feature regions (grown and moved as for the feature rule, photo_detail as elsewhere),
    # by 1 - photo_detail_weight: whole at 1 photo px per crop px or less, none from photo_detail_ramp[1] (London's
    # faces unchanged). "": off. (docs/fullres.md: chosen on the tuning people)
    small_face_features: str = "eyes+brows+lips"
    small_face_mid: float = 1.0  # on such a face the photo's mid band (at crop scale: its feature edges themselves, not
    # texture finer than the crop) gives way to the edit's by this times 1 - photo_detail_weight, where the edit
    # attenuated it (the mid-band rule keeps the photo's there, taking the attenuation for the decoder's blur); 0: off
    small_face_whole: float = 0.0  # on such a face the edit itself (the photo's fine band laid over it as elsewhere)
    # is taken over the whole mask by this times 1 - photo_detail_weight, not only inside the feature regions, so the
    # photo's own edges there (an interlaced video frame's comb) give way to the edit's; 0: off, the rule before (Essex
    # report people +0.7 points of face-api's reading for sharpness and still skin: docs/fullres.md, "where Essex's
    # reading goes")
    keep_full: float = 0.5  # the mask is limited by the kept region: times editable (mien.paste.editable_region,
    # the model's own soft weight of what it may redraw), but where the flow moves the face (brows raised into
    # that soft edge, a dropped chin) by min(1, editable / keep_full): what the model already blended at its edge
    # is not attenuated a second time there, while still skin at the edge keeps the weight; 1: editable everywhere
    # (docs/fullres.md: chosen on the tuning people)
    keep_shading: tuple[float, float] = (0.0, 0.0)  # where the edit's low band (colour drift removed) changes the
    # luminance by this much (grey levels, smoothstep range), the kept region's soft edge limits the mask as where the
    # flow moves the face (``keep_full``), so an expression's shading there (a forehead lit by raised brows, a shadow
    # under an opened mouth) is not weakened a second time, while still skin whose colour only the edit's cast
    # changes keeps the weight; (0, 0): off, the rule before
    feather: float = 3.0  # mask edge softening (crop px)
    keep_after_feather: bool = False  # the kept region's limit (``keep_full``) multiplies the mask after the feather,
    # not before it: the feather (an erosion by its width, then a blur) is for the face oval's hard edge; the model's
    # weight is soft already, and eroded it moved the kept region's edge inward by the feather's width, taking the
    # edit's shading at the forehead, chin and cheeks at part weight once more; but the same pixels hold the decoder's
    # error, and on the tuning people still skin lost 2-3 dB for no gain in expression (docs/fullres.md, "what the
    # surroundings cost"): False, the rule before
    jaw_margin: float = 2.0  # the oval grown by this (crop px) before feathering
    # what the edit is compared with to find what it changed: "photo" the photo's crop (the rule before: the change
    # then also holds the decoder's own error, its colour cast and blur); "decoded" the decoder's reconstruction of
    # the unedited crop (decode(encode(crop)), the latent the edit starts from), for the flow and the residual, so
    # that error cancels; "decoded-residual" that reconstruction for the residual only, the flow from the photo's
    # crop. The "decoded" ones need transfer_detail's ``reconstruction`` (docs/fullres.md, "the decoder's
    # reconstruction as the reference")
    reference: str = "photo"
    # interlaced inputs (a video frame whose two fields were taken a field apart in time: a row-to-row comb on every
    # edge that moved between them, which the decoder's clean crop does not have and face-api reads as less of the
    # edit's expression): where the photo's comb over the face (:func:`comb`) is above ``deinterlace_comb``, the photo
    # pixels the transfer carries into the output (moved by the flow, and their fine band where the edit itself is
    # taken) come from the photo de-interlaced: "vertical" a [1, 2, 1] / 4 filter down the columns, "fields" the odd
    # rows replaced by the mean of the even rows around them; "": off, the rule before. Only inside the mask: outside
    # it the photo stays bit for bit, and a photo not flagged comes out as without the setting (no London photo is).
    # Essex report people (all flagged but one): face-api's accuracy against the crop's -7.7 -> -6.2 points, 0 lost
    # and 4 gained, for sharpness 1.04 -> 0.85 (the photo's comb counted as its detail) and still skin -0.34 dB
    # (docs/fullres.md, "interlaced photos": chosen on the tuning people)
    deinterlace: str = "vertical"
    deinterlace_comb: float = 1.04  # between the London tuning photos' faces (0.92-1.00) and Essex's (1.09-1.44)
    deinterlace_crop: bool = False  # the crop the flow and the residual are measured on is the de-interlaced one too
    # (on the tuning people less of the gain: p +0.009 against +0.030 without it)

    @property
    def uses_reconstruction(self) -> bool:
        """Whether :func:`transfer_detail` needs ``reconstruction``: every reference but the photo's crop."""
        return self.reference != "photo"


DEFAULT = DetailSettings()
REFERENCES = ("photo", "decoded", "decoded-residual")
DEINTERLACE = ("", "vertical", "fields")
MIN_STILL = 50  # still face pixels (crop px) below which no colour drift is measured over them
RESAMPLE = {"cubic": cv2.INTER_CUBIC, "lanczos4": cv2.INTER_LANCZOS4}


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


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE) if sigma > 0 else x


def _colour_drift(low: np.ndarray, still: np.ndarray, sigma: float) -> np.ndarray:
    """The edit's colour drift in the low-passed residual ``low`` (128, 128, 3), measured over the ``still``
    face pixels: one colour for the whole crop (``sigma`` 0: the median), or a smooth field (normalised
    Gaussian average over still pixels, ``sigma`` crop px) so that a skin-tone change over part of the face is
    removed there and does not end at the jaw; where few still pixels are near, the global median."""
    glob = np.median(low[still], axis=0) if still.sum() > MIN_STILL else np.zeros(3, np.float32)
    if sigma <= 0 or still.sum() <= MIN_STILL:
        return np.broadcast_to(glob.astype(np.float32), low.shape).copy()
    w = _blur(still.astype(np.float32), sigma)
    local = _blur(low * still[..., None], sigma) / np.maximum(w, 1e-6)[..., None]
    trust = np.clip(w / 0.2, 0.0, 1.0)[..., None]  # a fifth of the window still: the local measure holds
    return (local * trust + glob * (1.0 - trust)).astype(np.float32)


def _local_chroma(drift: np.ndarray, local: np.ndarray) -> np.ndarray:
    """``drift``'s luminance (its projection on the grey axis, R = G = B) with ``local``'s chroma (the rest)."""
    grey = lambda x: (x.mean(axis=2, keepdims=True) * np.ones(3, np.float32))  # noqa: E731
    return (grey(drift) + local - grey(local)).astype(np.float32)


def _shrink(x: np.ndarray, floor: float, kind: str = "soft") -> np.ndarray:
    """``x`` (..., C) with magnitudes below ``floor`` set to zero and those above shrunk: by the floor ("soft"),
    or by floor^2 / magnitude (the non-negative garrote, Breiman 1995: large values nearly unchanged)."""
    mag = np.maximum(np.linalg.norm(x, axis=2, keepdims=True), 1e-6)
    if kind == "garrote":
        return x * np.maximum(1.0 - (floor / mag) ** 2, 0.0)
    return x * (np.maximum(mag - floor, 0.0) / mag)


def _mid_band(edited: np.ndarray, warped: np.ndarray, low: np.ndarray, settings: DetailSettings, small: float = 0.0,
              photo: np.ndarray | None = None):  # fmt: skip
    """What the edit changes in the mid band (between the residual's low-pass and the crop's pixel), as an
    addition to the warped photo. The decoder returns the original's edges attenuated (blur): locally,
    edit_mid ~ beta * warped_mid with 0 <= beta <= 1, fitted by least squares over a ``structure_sigma``
    window. What the fit leaves (a crease, a lip line, teeth) is new structure and is added; lost texture
    (beta < 1) adds nothing, so the photo's own texture stays. Where the new structure is large (``replace``,
    grey levels), or the low band ``low`` changes much (``replace_low``: a feature erased), the photo's
    unexplained mid band gives way, so that a feature the edit repainted elsewhere (a lip line lowered
    without motion) leaves no copy of itself at the old place. Returns the addition and the size of the
    new structure (grey levels). ``small`` (the small-face rule's weight times ``small_face_mid``): the photo's
    unexplained mid band gives way at least this much everywhere. ``photo``: the warped photo's crop when ``warped``
    is the warped reference the edit is compared with (the decoder's reconstruction): where the photo's mid band gives
    way, the output's mid band is then the edit's, as with the photo's crop as the reference."""
    s, w = settings.residual_sigma, settings.structure_sigma
    he = edited - _blur(edited, s)
    hw = warped - _blur(warped, s)
    beta = np.clip(_blur(he * hw, w) / np.maximum(_blur(hw * hw, w), 1.0), 0.0, 1.0)
    new = _shrink(he - beta * hw, settings.structure_floor, settings.shrink)
    size = np.sqrt(_blur(np.sum(new * new, axis=2), w))
    gone = np.maximum(np.maximum(_smoothstep(size, *settings.replace), small),
                      _smoothstep(np.linalg.norm(low, axis=2), *settings.replace_low))[..., None]  # fmt: skip
    if photo is None:
        return new - gone * (1.0 - beta) * hw, size
    return new - gone * (photo - _blur(photo, s) - beta * hw), size


def _stretch(flow: np.ndarray) -> np.ndarray:
    """Frobenius norm of the flow's Jacobian (crop px per crop px): 0 for a translation, ~1 where the warp
    doubles or halves a length."""
    return np.sqrt(sum(np.gradient(flow[..., c], axis=a) ** 2 for c in (0, 1) for a in (0, 1))).astype(np.float32)


def feature_polygons(landmarks: np.ndarray | None, matrix: np.ndarray, regions: str) -> list[np.ndarray]:
    """The feature polygons named in ``regions`` ("+"-joined names of :data:`FEATURES`: "eyes" the eye openings,
    "brows", "lips" the outer lip line, "mouth" the inner lips) in crop coordinates, from the photo's landmarks;
    none without landmarks or with ``regions`` "" ."""
    if landmarks is None or not regions:
        return []
    unknown = set(regions.split("+")) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown feature region(s) {sorted(unknown)} in {regions!r}: use {'+'.join(FEATURES)}")
    groups = [g for name in regions.split("+") for g in FEATURES[name]]
    lm = np.asarray(landmarks, np.float64)
    return [align.apply_affine(matrix, lm[list(g), :2]) for g in groups]


def _feature_region(polygons: list[np.ndarray], flow: np.ndarray, settings: DetailSettings) -> np.ndarray:
    """(128, 128) float32: the polygons grown by ``feature_margin`` and united with themselves moved by the flow."""
    size = flow.shape[0]
    region = np.zeros((size, size), np.float32)
    for poly in polygons:
        region = np.maximum(region, _polygon_mask(poly, size))
    if settings.feature_margin > 0:
        r = int(np.ceil(settings.feature_margin))
        region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return np.maximum(region, _remap_crop(region, flow, border=cv2.BORDER_CONSTANT))


def _feature_weight(diff: np.ndarray, polygons: list[np.ndarray], flow: np.ndarray,
                    settings: DetailSettings) -> np.ndarray:  # fmt: skip
    """(128, 128) float32 weight of the edit itself inside the feature polygons (:func:`_feature_region`) times a
    smoothstep of the size of the edit's difference from the warped original ``diff`` (low-passed by
    ``feature_sigma``)."""
    big = _smoothstep(np.linalg.norm(_blur(diff, settings.feature_sigma), axis=2), *settings.feature_edit)
    return _blur(_feature_region(polygons, flow, settings) * big, settings.feature_sigma).astype(np.float32)


def _reference(original: np.ndarray, reconstruction: np.ndarray | None, settings: DetailSettings) -> np.ndarray:
    """What the edit is compared with (``settings.reference``): the photo's crop, or the decoder's reconstruction of
    it, whose own error (colour cast, blur) the edit holds too and so is not taken for a change."""
    if settings.reference not in REFERENCES:
        raise ValueError(f"unknown reference {settings.reference!r}: use one of {', '.join(REFERENCES)}")
    if not settings.uses_reconstruction:
        return original
    if reconstruction is None or reconstruction.shape != original.shape:
        raise ValueError(f"reference {settings.reference!r} needs the decoder's reconstruction of the unedited crop "
                         f"{original.shape} (transfer_detail(..., reconstruction=...)); got "
                         f"{None if reconstruction is None else reconstruction.shape}")
    return reconstruction


def _keep_limit(editable: np.ndarray, flow: np.ndarray, settings: DetailSettings,
                low: np.ndarray | None = None) -> np.ndarray:
    """How the kept region limits the mask: ``editable`` (the model's soft weight of what it may redraw) where the
    face is still; where the flow moves it (softened over ``feather`` / 2 crop px), min(1, editable / ``keep_full``):
    the model has already blended its edit into the kept region by that weight, so a feature it moved into the
    soft edge (a raised brow, a dropped chin) is not attenuated by it a second time. With ``keep_shading`` the same
    where ``low`` (the edit's low band, colour drift removed) changes the luminance by that much."""
    if settings.keep_full >= 1.0:
        return editable
    moving = _smoothstep(np.linalg.norm(flow, axis=2), settings.still_motion, 2 * settings.still_motion)
    if low is not None and settings.keep_shading[1] > 0:
        moving = np.maximum(moving, _smoothstep(np.abs(low.mean(axis=2)), *settings.keep_shading))
    moving = _blur(moving, settings.feather / 2.0)
    full = np.minimum(1.0, editable / max(settings.keep_full, 1e-6))
    return editable + moving * (full - editable)


def crop_plan(original: np.ndarray, edited: np.ndarray, oval: np.ndarray, editable: np.ndarray | None,
              settings: DetailSettings = DEFAULT, features: list[np.ndarray] | None = None,
              small_face: tuple[list[np.ndarray], float] = ([], 0.0),
              reconstruction: np.ndarray | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Everything detail transfer decides at crop resolution: ``flow`` (backward, crop px), ``residual``
    (what is added to the warped photo: the low band of edit - warped original, colour drift removed, plus
    the new mid-band structure; float32 grey levels), ``new`` (weight of the edit itself), ``alpha`` (the
    feathered face mask), ``drift`` (the per-pixel colour drift removed from the edit), ``feature`` (weight of the
    feature rule: the edit without the photo's fine band, inside ``features``, the feature polygons in crop
    coordinates), all (128, 128[, C]). ``small_face``: (polygons, weight) of the small-face rule: the edit itself
    is taken inside the polygons by that weight (``new``), and the photo's mid band gives way by it times
    ``small_face_mid``. ``reconstruction``: the decoder's reconstruction of ``original``, the reference that
    ``settings.reference`` "decoded" and "decoded-residual" compare the edit with."""
    size = original.shape[0]
    reference = _reference(original, reconstruction, settings)
    flow = crop_flow(reference if settings.reference == "decoded" else original, edited, settings)
    warped = _remap_crop(reference.astype(np.float32), flow)
    warped_photo = None if reference is original else _remap_crop(original.astype(np.float32), flow)
    edit = edited.astype(np.float32)
    low = _blur(edit - warped, settings.residual_sigma)
    oval_mask = _polygon_mask(oval, size)
    still = (oval_mask > 0.99) & (np.linalg.norm(flow, axis=2) == 0)
    if editable is not None:  # where the model redraws the still face (too few pixels there: all of the still face)
        redrawn = still & (editable > settings.drift_editable)
        still = still if settings.drift_fallback and redrawn.sum() <= MIN_STILL else redrawn
    drift = _colour_drift(low, still, settings.drift_sigma)
    if settings.drift_chroma_sigma > 0 and settings.drift_sigma <= 0:
        drift = _local_chroma(drift, _colour_drift(low, still, settings.drift_chroma_sigma))
    low -= drift
    if settings.structure:
        mid, size_of_new = _mid_band(edit, warped, low, settings, small_face[1] * settings.small_face_mid,
                                     warped_photo)  # fmt: skip
        new = _smoothstep(size_of_new, *settings.new_content)
        new = _blur(np.maximum(new, _smoothstep(_stretch(flow), *settings.stretch)), settings.residual_sigma)
        residual = _shrink(low, settings.residual_floor, settings.shrink) + mid
    else:
        new = _blur(_smoothstep(np.linalg.norm(low, axis=2), *settings.new_content), settings.residual_sigma)
        residual = _shrink(low, settings.residual_floor)
    feature = (_feature_weight(edit - warped - drift, features, flow, settings) if features
               else np.zeros(new.shape, np.float32))  # fmt: skip
    new = np.maximum(new, feature)
    polygons, weight = small_face
    if polygons and weight > 0:
        region = _blur(_feature_region(polygons, flow, settings), settings.feature_sigma)
        new = np.maximum(new, weight * region)
    if settings.small_face_whole > 0 and weight > 0:
        new = np.maximum(new, min(weight * settings.small_face_whole, 1.0))
    # the mask: the oval, grown a little, united with where the flow moves it (a dropped jaw, raised brows)
    grown = cv2.dilate(oval_mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)),
                       iterations=max(1, round(settings.jaw_margin / 2)))  # fmt: skip
    moved = _remap_crop(grown, flow, border=cv2.BORDER_CONSTANT)
    alpha = np.maximum(grown, moved)
    limit = _keep_limit(editable, flow, settings, low) if editable is not None else None
    if limit is not None and not settings.keep_after_feather:
        alpha *= limit
    if settings.feather > 0:
        # blur inside the region only (erode first), so the feathered mask never reaches past it
        r = int(np.ceil(settings.feather))
        core = cv2.erode(alpha, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        alpha = np.minimum(alpha, cv2.GaussianBlur(core, (0, 0), settings.feather / 2.0 + 1e-6))
    if limit is not None and settings.keep_after_feather:
        alpha *= limit
    alpha[alpha < 1e-3] = 0.0
    alpha[alpha > 1 - 1e-3] = 1.0
    return {"flow": flow, "residual": residual.astype(np.float32), "new": new.astype(np.float32),
            "alpha": alpha.astype(np.float32), "drift": drift.astype(np.float32),
            "feature": feature.astype(np.float32)}  # fmt: skip


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
                    landmarks: np.ndarray | None = None, settings: DetailSettings = DEFAULT,
                    reconstruction: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The photo with the expression of the edited 128 px crop ``image``, at the photo's resolution (module
    docstring). ``matrix``: the photo -> crop alignment matrix; ``keep``: the settings' kept region (only
    what the edit may redraw changes); ``landmarks``: the photo's MediaPipe landmarks of this face (478, 2+)
    for a face-shaped mask (else a template oval); ``reconstruction``: the decoder's reconstruction of the unedited
    crop (``image``'s size, uint8), used by ``settings.reference`` "decoded" (else ignored). Pixels outside the mask
    are returned unchanged."""
    photo = np.ascontiguousarray(photo)
    matrix = np.asarray(matrix, np.float64)
    source = deinterlaced_source(photo, matrix, image.shape[0], landmarks, settings)
    plan = plan_for(source if settings.deinterlace_crop else photo, image, matrix, keep, landmarks, settings,
                    reconstruction)  # fmt: skip
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
    if settings.snap > 0:
        small = np.hypot(dx, dy) < settings.snap
        dx, dy = np.where(small, np.rint(dx), dx), np.where(small, np.rint(dy), dy)
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    warped = cv2.remap(source, gx + dx, gy + dy, RESAMPLE[settings.resample], borderMode=cv2.BORDER_REFLECT101)
    face = warped.astype(np.float32) + up(plan["residual"])
    new = field[..., 3:4]
    if (new > 0).any():
        edit_up = up(image.astype(np.float32) - plan["drift"], cv2.INTER_CUBIC)
        reach = plan["photo_detail_weight"]
        if settings.photo_detail > 0 and reach > 0:
            # the photo's fine band where the edit agrees with it; none where the feature rule takes the edit
            fine = _fine_band(warped, settings.photo_detail / align.affine_scale(matrix))
            edit_up += fine * (reach * (1.0 - up(plan["feature"])[..., None]))
        face = face * (1.0 - new) + edit_up * new
    region = photo[y0:y1, x0:x1]
    a3 = alpha[..., None]
    blended = np.clip(np.rint(region.astype(np.float32) * (1.0 - a3) + face * a3), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(inside[..., None], blended, region)
    return out


def plan_for(photo: np.ndarray, image: np.ndarray, matrix: np.ndarray, keep: str = "background",
             landmarks: np.ndarray | None = None, settings: DetailSettings = DEFAULT,
             reconstruction: np.ndarray | None = None) -> dict:  # fmt: skip
    """:func:`crop_plan` for :func:`transfer_detail`'s arguments (the photo's crop, its oval and feature polygons,
    the kept region, the small-face rule's weight from the photo pixels per crop pixel), plus ``original``: the
    photo's crop, and ``photo_detail_weight``: :func:`photo_detail_weight` of ``matrix`` (the small-face rule's
    weight is 1 minus it)."""
    from mien.paste import editable_region

    size = image.shape[0]
    original = align.warp_to_crop(photo, matrix, size)
    polygons = lambda regions: [p * (size / 128.0) for p in feature_polygons(landmarks, matrix, regions)]  # noqa: E731
    weight = photo_detail_weight(matrix, settings.photo_detail_ramp)
    small = 1.0 - weight
    small_face = (polygons(settings.small_face_features) if small > 0 else [], small)
    plan = crop_plan(original, image, face_oval(landmarks, matrix) * (size / 128.0), editable_region(keep, size),
                     settings, polygons(settings.feature_regions), small_face, reconstruction)  # fmt: skip
    return {**plan, "original": original, "photo_detail_weight": weight}


def face_box(landmarks: np.ndarray | None, matrix: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the photo pixels of the face oval's bounding box (:func:`face_oval`), clipped to the photo."""
    p = align.apply_affine(align.invert_affine(matrix), face_oval(landmarks, matrix))
    h, w = shape
    x0, y0 = np.floor(p.min(axis=0)).astype(int)
    x1, y1 = np.ceil(p.max(axis=0)).astype(int) + 1
    return max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)


def comb(photo: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """How much the photo's rows comb over ``box`` (x0, y0, x1, y1, photo px): the mean |grey - the mean of the
    rows above and below| over the same with the rows two away (the same field of an interlaced frame), divided by
    that ratio along the rows. About 1 for a progressive photo, whose texture has no direction (0.92-1.00 over the
    London tuning photos' faces); above 1 where the two fields of a video frame differ, each row's neighbours being
    the other field (Essex's 1.09-1.44). 1.0 for a box too small to measure."""
    x0, y0, x1, y1 = box
    g = cv2.cvtColor(np.ascontiguousarray(photo[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    if min(g.shape) < 8:
        return 1.0
    c = g[2:-2, 2:-2]
    dev = lambda a, b: float(np.abs(c - (a + b) / 2.0).mean())  # noqa: E731
    rows = dev(g[1:-3, 2:-2], g[3:-1, 2:-2]) / max(dev(g[:-4, 2:-2], g[4:, 2:-2]), 1e-6)
    cols = dev(g[2:-2, 1:-3], g[2:-2, 3:-1]) / max(dev(g[2:-2, :-4], g[2:-2, 4:]), 1e-6)
    return rows / max(cols, 1e-6)


def deinterlace(photo: np.ndarray, box: tuple[int, int, int, int], kind: str) -> np.ndarray:
    """``photo[y0:y1, x0:x1]`` de-interlaced (uint8): "vertical" each row the [1, 2, 1] / 4 mean of itself and the
    rows above and below, "fields" the odd rows of the photo the mean of the even rows above and below (the even
    field kept; at the photo's edges the rows are reflected)."""
    if kind not in DEINTERLACE or not kind:
        raise ValueError(f"unknown deinterlace {kind!r}: use one of {', '.join(k for k in DEINTERLACE if k)}")
    x0, y0, x1, y1 = box
    h = photo.shape[0]
    rows = np.abs(np.arange(y0 - 1, y1 + 1))  # reflected at the edges (-1 -> 1, h -> h - 2)
    rows = np.where(rows >= h, 2 * (h - 1) - rows, rows)
    slab = photo[rows, x0:x1].astype(np.float32)
    above, here, below = slab[:-2], slab[1:-1], slab[2:]
    if kind == "vertical":
        out = (above + 2.0 * here + below) / 4.0
    else:
        odd = (np.arange(y0, y1) % 2 == 1).reshape((-1,) + (1,) * (photo.ndim - 1))
        out = np.where(odd, (above + below) / 2.0, here)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def deinterlaced_source(photo: np.ndarray, matrix: np.ndarray, size: int, landmarks: np.ndarray | None,
                        settings: DetailSettings) -> np.ndarray:  # fmt: skip
    """The photo the transfer moves its pixels from: ``photo`` itself, or with ``settings.deinterlace`` and a
    :func:`comb` over the face above ``settings.deinterlace_comb``, a copy de-interlaced over the crop's window
    (``size`` crop px) and as far around it as the flow can reach (``max_motion``) plus the resampling's support."""
    if not settings.deinterlace:
        return photo
    if settings.deinterlace not in DEINTERLACE:
        raise ValueError(f"unknown deinterlace {settings.deinterlace!r}: use one of "
                         f"{', '.join(k for k in DEINTERLACE if k)}")
    if comb(photo, face_box(landmarks, matrix, photo.shape[:2])) <= settings.deinterlace_comb:
        return photo
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    p = align.apply_affine(align.invert_affine(matrix), corners)
    pad = settings.max_motion / align.affine_scale(matrix) + 6
    h, w = photo.shape[:2]
    x0, y0 = np.floor(p.min(axis=0) - pad).astype(int)
    x1, y1 = np.ceil(p.max(axis=0) + pad).astype(int)
    box = (max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h))
    if box[2] <= box[0] or box[3] <= box[1]:
        return photo
    out = photo.copy()
    out[box[1]:box[3], box[0]:box[2]] = deinterlace(photo, box, settings.deinterlace)
    return out


def photo_detail_weight(matrix: np.ndarray, ramp: tuple[float, float] = (1.0, 1.5)) -> float:
    """How much of the photo's fine band ``photo_detail`` lays over the edit, from the photo pixels one crop
    pixel spans: the photo holds detail finer than the crop only where that is more than one (Nyquist), so 0
    for a face the crop samples at or above the photo's resolution (a small face: the resampled edit already
    has all the detail the photo can show, and adding the photo's band doubles it), rising linearly to 1 at
    ``ramp[1]`` photo pixels per crop pixel."""
    lo, hi = ramp
    return float(np.clip((1.0 / align.affine_scale(matrix) - lo) / max(hi - lo, 1e-6), 0.0, 1.0))


def _fine_band(img: np.ndarray, sigma: float) -> np.ndarray:
    """What a Gaussian of ``sigma`` (photo px) removes from ``img``: its detail finer than that, float32."""
    f = img.astype(np.float32)
    return f - cv2.GaussianBlur(f, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)


def template_oval() -> np.ndarray:
    return TEMPLATE_OVAL_128.copy()
