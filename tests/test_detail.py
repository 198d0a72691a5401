"""Detail transfer (mien.detail): the edit's motion moves the photo's own pixels at full resolution, what the
warp cannot explain comes from the edit, and nothing outside the face mask changes."""

import cv2
import numpy as np
import pytest

from mien.detail import crop_flow, transfer_detail
from mien.face import align
from mien.paste import paste_into_photo

SIZE = 512  # the photo; the crop is a quarter of it, as for a 4x larger face than the model's


def textured_photo(seed=0):
    """Smooth shading plus fine texture (the detail the 128 px crop cannot hold), uint8 RGB."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.uniform(60, 200, (8, 8, 3)).astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 25, (SIZE, SIZE)).astype(np.float32), (0, 0), 1.0)
    medium = cv2.GaussianBlur(rng.normal(0, 60, (SIZE, SIZE)).astype(np.float32), (0, 0), 6.0)
    return np.clip(coarse + (fine + medium)[..., None], 0, 255).astype(np.uint8)


MATRIX = np.array([[0.25, 0.0, 0.0], [0.0, 0.25, 0.0]])  # photo -> 128 px crop


def bump_flow(size, amplitude, centre=(64.0, 70.0), sigma=12.0):
    """A smooth backward flow (output x takes from x + flow): an upward push around ``centre``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    g = amplitude * np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2))
    return np.dstack([np.zeros_like(g), g]).astype(np.float32)


def remap(img, flow):
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)


def test_a_known_warp_is_recovered_at_full_resolution():
    photo = textured_photo()
    original = align.warp_to_crop(photo, MATRIX)
    flow128 = bump_flow(128, 3.0)
    edited = remap(original, flow128)
    got_flow = crop_flow(original, edited)
    centre = (slice(58, 82), slice(52, 76))
    assert np.abs(got_flow[centre][..., 1] - flow128[centre][..., 1]).mean() < 0.5  # ~3 px motion found

    expected = remap(photo, bump_flow(SIZE, 12.0, centre=(64.0 * 4 + 1.5, 70.0 * 4 + 1.5), sigma=48.0))
    new = transfer_detail(photo, edited, MATRIX, keep="none")
    old = paste_into_photo(photo, edited, MATRIX, keep="none")
    box = (slice(200, 340), slice(180, 340))  # the moved region, photo pixels
    err_new = np.abs(new[box].astype(float) - expected[box]).mean()
    err_old = np.abs(old[box].astype(float) - expected[box]).mean()
    lap = lambda a: cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)[box].var()
    assert err_new < 0.4 * err_old and err_new < 8
    assert lap(new) > 0.8 * lap(expected) > 2 * lap(old)  # the moved region keeps the photo's fine texture


def test_a_zero_edit_returns_the_photo():
    photo = textured_photo(1)
    original = align.warp_to_crop(photo, MATRIX)
    out = transfer_detail(photo, original, MATRIX, keep="background")
    diff = np.abs(out.astype(int) - photo)
    assert diff.max() <= 3 and diff.mean() < 0.2
    # the default (template) oval: the corners, the top of the head and everything below the chin untouched
    assert np.array_equal(out[:40], photo[:40]) and np.array_equal(out[:, :40], photo[:, :40])


def test_the_decoders_colour_drift_is_not_pasted():
    """A uniform colour shift of the whole crop (what the decoder adds, not an expression) leaves the photo."""
    photo = textured_photo(2)
    original = align.warp_to_crop(photo, MATRIX)
    shifted = np.clip(original.astype(int) + [12, -8, 6], 0, 255).astype(np.uint8)
    out = transfer_detail(photo, shifted, MATRIX, keep="none")
    mean_shift = (out.astype(float) - photo).reshape(-1, 3)[np.abs(out.astype(int) - photo).reshape(-1, 3).sum(1) > 0]
    assert len(mean_shift) == 0 or np.abs(mean_shift.mean(axis=0)).max() < 2.0


def test_new_content_comes_from_the_edit():
    """What the photo has nothing to move into place for (teeth in an opened mouth) is the edit's."""
    photo = textured_photo(3)
    original = align.warp_to_crop(photo, MATRIX)
    edited = original.copy()
    edited[92:104, 54:74] = 250  # a bright bar where the mouth is
    out = transfer_detail(photo, edited, MATRIX, keep="none")
    assert out[92 * 4 + 12 : 104 * 4 - 12, 54 * 4 + 12 : 74 * 4 - 12].mean() > 220
    assert photo[92 * 4 + 12 : 104 * 4 - 12, 54 * 4 + 12 : 74 * 4 - 12].mean() < 200


@pytest.mark.parametrize("keep", ["background", "none"])
def test_nothing_outside_the_face_oval_changes(keep):
    from mien.detail import DEFAULT, FACE_OVAL, TEMPLATE_OVAL_128

    photo = textured_photo(4)
    edited = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)  # as different as can be
    lm = np.zeros((478, 3))
    lm[list(FACE_OVAL), :2] = TEMPLATE_OVAL_128 * 4  # this photo's face: the template oval
    out = transfer_detail(photo, edited, MATRIX, keep=keep, landmarks=lm)
    inside = np.zeros(photo.shape[:2], np.uint8)
    # the oval can grow by the largest motion allowed, its margin and the feather (crop px; 4 photo px each)
    r = int(4 * (DEFAULT.max_motion + DEFAULT.jaw_margin + DEFAULT.feather + 1))
    grown = cv2.dilate(cv2.fillPoly(inside, [np.round(TEMPLATE_OVAL_128 * 4).astype(np.int32)], 1),
                       cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    assert np.array_equal(out[grown == 0], photo[grown == 0]) and not np.array_equal(out, photo)


def test_a_new_line_on_a_blurred_edit_keeps_the_photos_texture_around_it():
    """The decoder returns the photo blurred; a crease it adds is new structure. The crease is carried to the
    photo, and the photo's own texture stays on and around it (the edit is not pasted wholesale there)."""
    photo = textured_photo(5)
    original = align.warp_to_crop(photo, MATRIX)
    edited = cv2.GaussianBlur(original, (0, 0), 1.0).astype(int)
    edited[70:72, 40:88] -= 60  # a dark crease, 2 crop px wide
    edited = np.clip(edited, 0, 255).astype(np.uint8)
    out = transfer_detail(photo, edited, MATRIX, keep="none")
    line = (slice(70 * 4 + 2, 72 * 4 - 2), slice(44 * 4, 84 * 4))
    assert out[line].mean() < photo[line].mean() - 30
    near = (slice(62 * 4, 80 * 4), slice(44 * 4, 84 * 4))  # the crease and the skin either side of it
    lap = lambda a: cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)[near].var()
    assert lap(out) > 0.8 * lap(photo)


def test_a_line_repainted_lower_leaves_no_copy_at_its_old_place():
    """The model often repaints a feature at its new place rather than moving it (a lowered lip line): the
    photo's old line gives way to the new one instead of staying beside it as a ghost."""
    photo = textured_photo(6).astype(int)
    photo[58 * 4 : 60 * 4, 40 * 4 : 88 * 4] -= 70  # the photo's own line (a lip line), 2 crop px thick
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    original = align.warp_to_crop(photo, MATRIX)
    edited = cv2.GaussianBlur(align.warp_to_crop(textured_photo(6), MATRIX), (0, 0), 1.0).astype(int)
    edited[66:68, 40:88] -= 70  # the same line, 8 crop px lower, the old one gone
    edited = np.clip(edited, 0, 255).astype(np.uint8)
    out = transfer_detail(photo, edited, MATRIX, keep="none")
    old, new = (slice(58 * 4, 60 * 4), slice(48 * 4, 80 * 4)), (slice(66 * 4, 68 * 4), slice(48 * 4, 80 * 4))
    skin = textured_photo(6)
    assert out[old].mean() > skin[old].mean() - 15  # the old line is (nearly) gone
    assert out[new].mean() < skin[new].mean() - 35  # the new one is there
    assert original[58:60, 48:80].mean() < skin[old].mean() - 35  # (the photo did have the old line)


def test_a_colour_drift_over_part_of_the_face_is_removed_there_with_drift_sigma():
    """The decoder can shift the colour of one side of the face only; measured per region, that is removed."""
    from mien.detail import DetailSettings

    photo = textured_photo(7)
    original = align.warp_to_crop(photo, MATRIX)
    edited = original.astype(int)
    edited[:, :64] += [14, 10, 4]
    edited = np.clip(edited, 0, 255).astype(np.uint8)
    out = transfer_detail(photo, edited, MATRIX, keep="none", settings=DetailSettings(drift_sigma=8.0))
    left, right = (slice(40 * 4, 90 * 4), slice(30 * 4, 56 * 4)), (slice(40 * 4, 90 * 4), slice(72 * 4, 98 * 4))
    for side in (left, right):
        assert np.abs(out[side].astype(float).mean(axis=(0, 1)) - photo[side].mean(axis=(0, 1))).max() < 2.5


def test_a_cast_over_part_of_the_face_is_removed_there_and_a_shading_kept_with_drift_chroma_sigma():
    """A colour cast over one side (no change of luminance) and a shadow over the other (luminance only), neither
    moving: one colour for the face removes neither; per region (``drift_sigma``) both go; with the chroma per region
    (``drift_chroma_sigma``) the cast goes and the shadow stays."""
    from mien.detail import DetailSettings

    photo = textured_photo(7)
    original = align.warp_to_crop(photo, MATRIX)
    edited = original.astype(int)
    edited[:, 80:] += [10, -4, -6]  # a cast: its mean over the channels is zero
    edited[:, :32] -= 12  # a shadow
    edited = np.clip(edited, 0, 255).astype(np.uint8)
    cast, shade = (slice(40 * 4, 90 * 4), slice(86 * 4, 100 * 4)), (slice(40 * 4, 90 * 4), slice(20 * 4, 28 * 4))
    got = {}
    for name, settings in (("one", DetailSettings(drift_chroma_sigma=0.0)), ("region", DetailSettings(drift_sigma=8.0)),
                           ("chroma", DetailSettings(drift_chroma_sigma=8.0))):  # fmt: skip
        d = transfer_detail(photo, edited, MATRIX, keep="none", settings=settings).astype(float) - photo
        got[name] = (np.abs(d[cast].mean(axis=(0, 1))).max(), d[shade].mean())
    assert got["one"][0] > 5 and got["one"][1] < -9  # neither removed
    assert got["region"][0] < 2.5 and got["region"][1] > -4  # both removed
    assert got["chroma"][0] < 2.5 and got["chroma"][1] < -9  # the cast removed, the shadow kept


def test_a_skin_tone_shift_of_the_still_face_is_removed_where_the_expression_moves_the_centre():
    """The decoder's colour drift is measured over the still face pixels the model redraws (its soft weight above
    ``drift_editable``, 0.5). Where the expression moves the whole fully redrawn centre no pixel there is still: the
    rule before (0.99, no fallback) measured nothing and pasted the drift into the still skin around it; the default
    removes it, and a local shading the edit adds (a shadow) keeps its contrast."""
    from mien.detail import DetailSettings
    from mien.paste import editable_region

    photo = textured_photo(7)
    original = align.warp_to_crop(photo, MATRIX)
    moved = remap(original, bump_flow(128, 3.0, centre=(64.0, 76.0), sigma=20.0)).astype(np.float32)
    y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    shadow = -30 * np.exp(-((x - 48) ** 2 + (y - 92) ** 2) / (2 * 4.0**2))
    edited = np.clip(moved + shadow[..., None] + [10, 6, -8], 0, 255).astype(np.uint8)
    editable = editable_region("background")
    still = (np.linalg.norm(crop_flow(original, edited), axis=2) == 0) & (editable > 0.5) & (editable < 0.99)
    assert not (still & (editable > 0.99)).any() and still.sum() > 300
    still = cv2.resize(still.astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST).astype(bool)
    core, ring = (slice(88 * 4, 96 * 4), slice(44 * 4, 52 * 4)), (slice(80 * 4, 104 * 4), slice(36 * 4, 60 * 4))
    shift, contrast = [], []
    for settings in (DetailSettings(drift_editable=0.99, drift_fallback=False), DetailSettings()):
        d = transfer_detail(photo, edited, MATRIX, keep="background", settings=settings).astype(float) - photo
        shift.append(np.abs(d[still].mean(axis=0)).max())
        contrast.append((d[core].mean() - d[ring].mean()))  # the shadow against the skin around it, grey levels
    assert shift[0] > 3 and shift[1] < 1  # the still skin's colour: the drift kept before, removed now
    assert contrast[1] < -10 and abs(contrast[1] - contrast[0]) < 2  # the shadow is kept as it was


def test_a_small_motion_copies_the_photos_pixels_with_snap():
    """Below the snap distance the photo is moved by whole pixels: every moved pixel is one of the photo's own
    (no resampling softens its texture), where without snap most are interpolated values. (Only the warp:
    nothing from the edit is added.)"""
    from mien.detail import DetailSettings

    photo = textured_photo(8)
    original = align.warp_to_crop(photo, MATRIX)
    edited = remap(original, bump_flow(128, 0.6))  # at most 2.4 photo px
    box = (slice(230, 330), slice(200, 320))
    shifts = [np.roll(photo, (dy, dx), axis=(0, 1))[box] for dy in range(-3, 4) for dx in range(-3, 4)]

    def copied(out):  # share of pixels equal to the photo at some whole-pixel offset of at most 3 px
        return np.mean(np.any([np.all(out[box] == s, axis=2) for s in shifts], axis=0))

    warp_only = dict(residual_floor=255.0, structure_floor=255.0, new_content=(1e3, 2e3), stretch=(1e3, 2e3))
    snapped = transfer_detail(photo, edited, MATRIX, keep="none", settings=DetailSettings(snap=3.0, **warp_only))
    plain = transfer_detail(photo, edited, MATRIX, keep="none", settings=DetailSettings(snap=0.0, **warp_only))
    assert not np.array_equal(snapped[box], photo[box])  # it moved
    assert copied(snapped) > 0.95 and copied(plain) < 0.6


def test_where_the_edit_is_taken_the_photos_fine_texture_stays_with_photo_detail():
    """New content (a dark opened mouth) is the edit's; with photo_detail the photo's texture finer than the crop
    can hold is laid over it, without changing what the edit put there."""
    from mien.detail import DetailSettings

    photo = textured_photo(9)
    original = align.warp_to_crop(photo, MATRIX)
    edited = original.copy()
    edited[92:104, 54:74] = 40
    inner = (slice(92 * 4 + 12, 104 * 4 - 12), slice(54 * 4 + 12, 74 * 4 - 12))
    lap = lambda a: cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)[inner].var()
    plain = transfer_detail(photo, edited, MATRIX, keep="none", settings=DetailSettings(photo_detail=0.0))
    detailed = transfer_detail(photo, edited, MATRIX, keep="none", settings=DetailSettings(photo_detail=1.0))
    assert plain[inner].mean() < 60 and abs(detailed[inner].mean() - plain[inner].mean()) < 3
    assert lap(plain) < 0.1 * lap(photo) and lap(detailed) > 0.4 * lap(photo)


def test_the_garrote_carries_a_broad_change_nearly_whole():
    """A broad shading change of 10 grey levels over a cheek: the soft floor takes 3 off it, the garrote under 1."""
    from mien.detail import DetailSettings

    photo = textured_photo(10)
    original = align.warp_to_crop(photo, MATRIX)
    y, x = np.mgrid[0:128, 0:128]
    blob = 10.0 * np.exp(-((x - 40) ** 2 + (y - 75) ** 2) / (2 * 8.0**2))
    edited = np.clip(original + blob[..., None], 0, 255).astype(np.uint8)
    centre = (slice(73 * 4, 77 * 4), slice(38 * 4, 42 * 4))
    gain = lambda s: (transfer_detail(photo, edited, MATRIX, keep="none", settings=s)[centre].astype(float)
                      - photo[centre]).mean()  # fmt: skip
    soft, garrote = gain(DetailSettings(shrink="soft")), gain(DetailSettings(shrink="garrote"))
    assert 5.5 < soft < 8 and garrote > 8.5


def test_an_eye_the_edit_closes_is_the_edits_with_the_feature_rule():
    """The edit closes an eye (skin where the photo has a dark, finely textured iris). With the feature rule the
    eye opening from the landmarks is the upsampled edit without the photo's fine band, so the old iris does
    not show through the lid; without it the photo's fine iris texture stays on the edit (photo_detail). Away from the eyes
    the rule changes nothing."""
    from mien.detail import EYES, FACE_OVAL, TEMPLATE_OVAL_128, DetailSettings

    rng = np.random.default_rng(11)
    photo = textured_photo(11).astype(np.float32)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    centres = [(84.0, 56.0), (44.0, 56.0)]  # crop px, in the order of EYES
    iris_fine = cv2.GaussianBlur(rng.normal(0, 40, (SIZE, SIZE)).astype(np.float32), (0, 0), 1.0)
    eyes = np.zeros((SIZE, SIZE), bool)
    for cx, cy in centres:
        eyes |= ((x - 4 * cx) / 36) ** 2 + ((y - 4 * cy) / 16) ** 2 <= 1
    photo[eyes] = 50 + iris_fine[eyes][:, None]  # a dark iris with fine texture
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    lm = np.zeros((478, 3))
    lm[list(FACE_OVAL), :2] = TEMPLATE_OVAL_128 * 4  # this photo's face: the template oval
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    for (cx, cy), idx in zip(centres, EYES):
        lm[list(idx), 0], lm[list(idx), 1] = 4 * cx + 36 * np.cos(t), 4 * cy + 16 * np.sin(t)
    original = align.warp_to_crop(photo, MATRIX)
    skin = align.warp_to_crop(textured_photo(11), MATRIX)
    edited = original.copy()
    shut = cv2.warpAffine(eyes.astype(np.float32), MATRIX, (128, 128)) > 0.5
    edited[shut] = cv2.GaussianBlur(skin, (0, 0), 3.0)[shut]  # the lid closed: smooth skin over the eye

    on = transfer_detail(photo, edited, MATRIX, keep="none", landmarks=lm,
                         settings=DetailSettings(feature_regions="eyes"))  # fmt: skip
    off = transfer_detail(photo, edited, MATRIX, keep="none", landmarks=lm,
                          settings=DetailSettings(feature_regions=""))  # fmt: skip
    core = cv2.erode(eyes.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)

    def iris_left(out):  # correlation of the output's fine band with the photo's iris texture, in the eye
        g = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32)
        fine = g - cv2.GaussianBlur(g, (0, 0), 2.0)
        return float(np.corrcoef(fine[core], iris_fine[core])[0, 1])

    assert iris_left(off) > 0.15 and iris_left(on) < 0.05  # (0.20 and -0.06 when written)
    assert abs(on[core].mean() - photo[core].mean()) > 40  # the lid is there, not the iris
    far = cv2.dilate(eyes.astype(np.uint8), np.ones((41, 41), np.uint8)) == 0
    assert np.array_equal(on[far], off[far])


def test_photo_detail_adds_nothing_to_a_face_the_photo_shows_no_finer_than_the_crop():
    """A small face (one crop pixel per photo pixel or less): the upsampled edit holds every detail the photo can
    show, so photo_detail leaves it as it is; a large face (4 photo pixels per crop pixel) gets the whole band."""
    from mien.detail import DetailSettings, photo_detail_weight

    assert photo_detail_weight(MATRIX) == 1.0
    assert photo_detail_weight(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])) == 0.0
    assert photo_detail_weight(np.array([[1 / 1.25, 0.0, 0.0], [0.0, 1 / 1.25, 0.0]])) == pytest.approx(0.5)
    small = np.array([[1.25, 0.0, 0.0], [0.0, 1.25, 0.0]])  # a 102 px face region fills the 128 px crop
    photo = cv2.resize(textured_photo(12), (110, 110), interpolation=cv2.INTER_AREA)
    original = align.warp_to_crop(photo, small)
    edited = original.copy()
    edited[92:104, 54:74] = 40  # new content: the edit is taken there
    run = lambda pd: transfer_detail(photo, edited, small, keep="none", settings=DetailSettings(photo_detail=pd))  # noqa: E731
    assert np.array_equal(run(1.0), run(0.0))


def test_a_feature_moved_into_the_kept_regions_soft_edge_arrives_whole_with_keep_full():
    """The model blends its edit into the kept region over a soft edge (brows raised into it, a dropped chin);
    with keep_full 0.5 (the default) a motion there is carried as if nothing were kept where the model's weight is at least
    0.5, rather than attenuated by that weight a second time, while still pixels at the edge keep the weight."""
    from mien.detail import DetailSettings
    from mien.paste import editable_region

    photo = textured_photo(7)
    original = align.warp_to_crop(photo, MATRIX)
    edited = remap(original, bump_flow(128, 3.0, centre=(64.0, 36.0), sigma=6.0))  # a brow raised into the edge
    assert 0.5 < editable_region("background")[36, 64] < 0.9
    free = transfer_detail(photo, edited, MATRIX, keep="none")
    old = transfer_detail(photo, edited, MATRIX, keep="background", settings=DetailSettings(keep_full=1.0))
    new = transfer_detail(photo, edited, MATRIX, keep="background")  # the default, keep_full 0.5
    box = (slice(33 * 4, 40 * 4), slice(56 * 4, 72 * 4))  # the moved region where editable >= 0.5
    off = lambda out: np.abs(out[box].astype(float) - free[box]).mean()  # noqa: E731
    assert off(old) > 3 and off(new) < 0.25 * off(old)
    still = (slice(22 * 4, 40 * 4), slice(24 * 4, 40 * 4))  # the same soft edge away from the motion
    assert np.array_equal(new[still], old[still])


def test_a_sub_pixel_motion_on_a_small_face_does_not_tear_its_lines():
    """On a small face (1.1 photo px per crop px) most motions are under a photo pixel. Rounding those of 0.5-1 px to a
    whole pixel (snap 1, the rule before) tears the photo by a pixel where a smooth flow crosses half a pixel: its
    lines (lids, brows) step, and the output is sharper than the photo. With the default (under half a pixel: not
    moved, above it resampled) the moved lines keep the photo's sharpness. (Only the warp: nothing from the edit.)"""
    from mien.detail import DetailSettings

    small = np.array([[1 / 1.1, 0.0, 0.0], [0.0, 1 / 1.1, 0.0]])
    photo = cv2.resize(textured_photo(8), (141, 141), interpolation=cv2.INTER_AREA).astype(int)
    for y0 in range(40, 110, 6):
        photo[y0 : y0 + 2, 30:110] -= 80  # dark lines, 2 photo px thick
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    edited = remap(align.warp_to_crop(photo, small), bump_flow(128, 1.0, sigma=16.0))  # at most 1.1 photo px
    box = (slice(50, 100), slice(45, 95))
    lap = lambda a: cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)[box].var()
    warp_only = dict(residual_floor=255.0, structure_floor=255.0, new_content=(1e3, 2e3), stretch=(1e3, 2e3))
    ratio = lambda snap: lap(transfer_detail(photo, edited, small, keep="none",  # noqa: E731
                                             settings=DetailSettings(snap=snap, **warp_only))) / lap(photo)  # fmt: skip
    assert ratio(1.0) > 1.06 and 0.97 < ratio(DetailSettings().snap) < 1.03  # (1.10 and 1.01 when written)


def small_face_with_eyes(scale):
    """A textured face at ``scale`` photo px per crop px: the photo, its photo -> crop matrix, and landmarks (the
    template oval, two eye openings as 18 x 8 crop px ellipses)."""
    from mien.detail import EYES, FACE_OVAL, TEMPLATE_OVAL_128

    n = int(round(128 * scale))
    photo = cv2.resize(textured_photo(13), (n, n), interpolation=cv2.INTER_AREA)
    lm = np.zeros((478, 3))
    lm[list(FACE_OVAL), :2] = TEMPLATE_OVAL_128 * scale
    t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    for (cx, cy), idx in zip([(84.0, 56.0), (44.0, 56.0)], EYES):
        lm[list(idx), 0], lm[list(idx), 1] = scale * (cx + 9 * np.cos(t)), scale * (cy + 4 * np.sin(t))
    return photo, np.array([[1 / scale, 0.0, 0.0], [0.0, 1 / scale, 0.0]]), lm


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_the_small_face_rule_takes_the_edits_features_only_where_the_crop_holds_the_photos_detail(scale):
    """The edit softens and darkens an eye (8 grey levels, under every threshold of the other rules) and softens a
    cheek patch. On a face the crop samples at the photo's resolution (1 photo px per crop px) the eye is the
    upsampled edit, and the cheek's texture gives way to the edit's (small_face_mid); without the rule the photo's
    texture stays on both. On a large face (4 photo px per crop px) the rule changes nothing."""
    from mien.detail import DetailSettings

    photo, m, lm = small_face_with_eyes(scale)
    original = align.warp_to_crop(photo, m)
    y, x = np.mgrid[0:128, 0:128]
    eye = ((x - 44) / 9.0) ** 2 + ((y - 56) / 4.0) ** 2 <= 1
    cheek = (slice(80, 96), slice(56, 72))
    soft = cv2.GaussianBlur(original, (0, 0), 1.5).astype(np.float32)
    edited = original.astype(np.float32)
    edited[eye], edited[cheek] = soft[eye] - 8, soft[cheek]
    edited = np.clip(np.rint(edited), 0, 255).astype(np.uint8)
    def run(**kw):
        return transfer_detail(photo, edited, m, keep="none", landmarks=lm, settings=DetailSettings(**kw))

    on, off = run(), run(small_face_features="", small_face_mid=0.0)
    if scale > 1.5:
        assert np.array_equal(on, off)
        return
    up = cv2.warpAffine(edited, m, photo.shape[1::-1], flags=cv2.WARP_INVERSE_MAP | cv2.INTER_CUBIC).astype(float)
    core = cv2.erode(eye.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # (scale 1: crop px = photo px)
    from_edit = lambda out: np.abs(out[core].astype(float) - up[core]).mean()  # noqa: E731
    assert from_edit(on) < 0.5 and from_edit(off) > 2.0  # (0.0 and 2.6 when written)
    inner = (slice(82, 94), slice(58, 70))
    lap = lambda a: cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F)[inner].var()
    assert lap(on) < 0.1 * lap(photo) and lap(off) > 0.8 * lap(photo)
    assert lap(run(small_face_mid=0.0)) > 0.8 * lap(photo)  # the cheek is small_face_mid's, not the features'


def test_feature_polygons_name_their_regions_and_refuse_unknown_ones():
    from mien.detail import BROWS, EYES, feature_polygons

    lm = np.random.default_rng(0).uniform(0, 500, (478, 3))
    assert len(feature_polygons(lm, MATRIX, "eyes+brows+lips")) == len(EYES) + len(BROWS) + 1
    assert len(feature_polygons(lm, MATRIX, "eyes+mouth")) == len(EYES) + 1
    assert feature_polygons(None, MATRIX, "eyes") == []
    with pytest.raises(ValueError, match="unknown feature region"):
        feature_polygons(lm, MATRIX, "eyes+nose")


def test_the_kept_regions_soft_edge_limits_the_mask_once_with_keep_after_feather():
    """The model's soft weight of what it may redraw is soft already; eroded by the feather together with the oval
    (the rule before) it moved the kept region's edge inward by the feather's width, and a change the edit made there
    without motion (forehead shading, a shadow under the chin) arrived weaker than the model's own weight. With
    keep_after_feather the weight limits the mask once, after the feather: the change arrives at that weight, the
    face's fully redrawn centre is bit for bit as before, and outside the grown face oval nothing changes."""
    from mien.detail import DetailSettings, face_oval, plan_for
    from mien.paste import editable_region

    photo = textured_photo(9)
    original = align.warp_to_crop(photo, MATRIX)
    y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    shade = 20.0 * np.exp(-((x - 64) ** 2 / (2 * 10.0**2) + (y - 30) ** 2 / (2 * 5.0**2)))  # a forehead shadow
    edited = np.clip(original - shade[..., None], 0, 255).astype(np.uint8)
    before, after = DetailSettings(), DetailSettings(keep_after_feather=True)
    old = transfer_detail(photo, edited, MATRIX, keep="background", settings=before)
    new = transfer_detail(photo, edited, MATRIX, keep="background", settings=after)
    alpha_old, alpha_new = (plan_for(photo, edited, MATRIX, "background", None, s)["alpha"] for s in (before, after))
    weight = editable_region("background")
    edge = (slice(26, 36), slice(58, 70))  # the shadow in the kept region's soft edge (weight 0.25-0.65)
    assert 0.25 <= weight[edge].min() and weight[edge].max() <= 0.65
    assert np.allclose(alpha_new[edge], weight[edge], atol=0.02)  # the model's weight, once
    assert (alpha_old[edge] < weight[edge] - 0.05).all()  # eroded: less than that weight
    dark = lambda out: float(photo[136:144, 240:272].astype(float).mean() - out[136:144, 240:272].mean())  # noqa: E731
    assert dark(new) > 1.15 * dark(old) > 0  # photo rows 136-144: crop rows 34-36, weight 0.6-0.7
    centre = (slice(50 * 4, 100 * 4), slice(40 * 4, 88 * 4))  # weight 1, far from the oval's edge
    assert np.array_equal(new[centre], old[centre])
    oval = cv2.fillPoly(np.zeros((128, 128), np.uint8), [np.round(face_oval(None, MATRIX)).astype(np.int32)], 1)
    grown = cv2.dilate(oval, np.ones((9, 9), np.uint8))  # the oval grown past its margin and feather (crop px)
    outside = cv2.resize(grown, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST) == 0
    assert np.array_equal(new[outside], photo[outside]) and np.array_equal(old[outside], photo[outside])


def test_a_shading_in_the_kept_regions_soft_edge_limits_the_mask_as_motion_does_with_keep_shading():
    """With keep_shading, where the edit's low band changes the luminance without motion (a forehead shadow in the
    kept region's soft edge) the mask there is limited as where the flow moves the face: min(1, weight / keep_full)
    before the feather, so the shadow arrives darker; a cast that leaves the luminance as it was (a tint of zero
    grey-axis mean) leaves the mask as without the option, and outside the grown face oval nothing changes."""
    from mien.detail import DetailSettings, plan_for
    from mien.paste import editable_region

    photo = textured_photo(9)
    original = align.warp_to_crop(photo, MATRIX).astype(np.float32)
    y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    blob = np.exp(-((x - 64) ** 2 / (2 * 10.0**2) + (y - 30) ** 2 / (2 * 5.0**2)))[..., None]  # forehead, soft edge
    shaded = np.clip(np.rint(original - 20.0 * blob), 0, 255).astype(np.uint8)
    tinted = np.clip(np.rint(original + blob * [8.0, -4.0, -4.0]), 0, 255).astype(np.uint8)  # chroma only
    before, after = DetailSettings(), DetailSettings(keep_shading=(4.0, 8.0))
    alpha = lambda edited, s: plan_for(photo, edited, MATRIX, "background", None, s)["alpha"]  # noqa: E731
    edge = (slice(28, 34), slice(60, 68))
    weight = editable_region("background")
    assert 0.25 <= weight[edge].min() and weight[edge].max() <= 0.65
    assert (alpha(shaded, after)[edge] > alpha(shaded, before)[edge] + 0.1).all()
    assert np.allclose(alpha(tinted, after), alpha(tinted, before), atol=1e-6)
    old, new = (transfer_detail(photo, shaded, MATRIX, keep="background", settings=s) for s in (before, after))
    dark = lambda out: float(photo[120:136, 240:272].astype(float).mean() - out[120:136, 240:272].mean())  # noqa: E731
    assert dark(new) > 1.3 * dark(old) > 0
    far = np.ones((SIZE, SIZE), bool)
    far[8 * 4 : 120 * 4, 8 * 4 : 120 * 4] = False
    assert np.array_equal(new[far], photo[far])


def decoded(original, seed=0):
    """A stand-in for the decoder's reconstruction of ``original``: softer, with a colour cast that is not one colour
    for the whole face (a tint on the forehead, as the decoder gives some), which colour drift removal cannot take out."""
    y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    tint = np.exp(-((x - 64) ** 2 / (2 * 18.0**2) + (y - 40) ** 2 / (2 * 8.0**2)))[..., None] * [10.0, -6.0, 8.0]
    soft = cv2.GaussianBlur(original.astype(np.float32), (0, 0), 0.8)
    return np.clip(np.rint(soft + tint + [2.0, 1.0, -2.0]), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("reference", ["decoded", "decoded-residual"])
def test_with_the_decoders_reconstruction_as_reference_its_error_is_not_pasted(reference):
    """An edit that changes nothing is the decoder's reconstruction of the crop, error and all; compared with that
    reconstruction (``reference``), nothing changes in the photo, where compared with the photo's crop the
    decoder's forehead tint arrives."""
    from mien.detail import DetailSettings

    photo = textured_photo(11)
    original = align.warp_to_crop(photo, MATRIX)
    recon = decoded(original)
    out = transfer_detail(photo, recon, MATRIX, keep="background", settings=DetailSettings(reference=reference),
                          reconstruction=recon)  # fmt: skip
    assert np.abs(out.astype(int) - photo).max() <= 1
    # one colour removed for the whole face (the default removes part of the tint's chroma per region: 2.7 in red)
    before = transfer_detail(photo, recon, MATRIX, keep="background", settings=DetailSettings(drift_chroma_sigma=0.0))
    forehead = (slice(35 * 4, 45 * 4), slice(54 * 4, 74 * 4))
    assert (before[forehead].astype(float) - photo[forehead]).mean(axis=(0, 1))[0] > 3  # the tint, in red


@pytest.mark.parametrize("reference", ["decoded", "decoded-residual"])
def test_with_the_decoders_reconstruction_as_reference_a_change_still_arrives(reference):
    """A brightening the edit makes over the reconstruction (a cheek lit by a smile) arrives in the photo at its
    size, and the photo's texture stays."""
    from mien.detail import DetailSettings

    photo = textured_photo(12)
    original = align.warp_to_crop(photo, MATRIX)
    recon = decoded(original)
    y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    light = 15.0 * np.exp(-((x - 40) ** 2 + (y - 80) ** 2) / (2 * 6.0**2))
    edited = np.clip(np.rint(recon + light[..., None]), 0, 255).astype(np.uint8)
    out = transfer_detail(photo, edited, MATRIX, keep="background", settings=DetailSettings(reference=reference),
                          reconstruction=recon)  # fmt: skip
    cheek = (slice(78 * 4, 82 * 4), slice(38 * 4, 42 * 4))
    gain = float((out[cheek].astype(float) - photo[cheek]).mean())
    assert 11 < gain < 17
    diff = out.astype(float) - photo
    assert np.abs(diff[cheek] - diff[cheek].mean(axis=(0, 1))).mean() < 2  # the photo's texture under the light
    forehead = (slice(35 * 4, 45 * 4), slice(54 * 4, 74 * 4))
    assert np.abs(diff[forehead]).max() <= 1  # the decoder's tint stays out


def test_the_decoded_reference_needs_the_reconstruction():
    from mien.detail import DetailSettings

    photo = textured_photo(13)
    with pytest.raises(ValueError, match="reconstruction"):
        transfer_detail(photo, align.warp_to_crop(photo, MATRIX), MATRIX, settings=DetailSettings(reference="decoded"))
    with pytest.raises(ValueError, match="unknown reference"):
        transfer_detail(photo, align.warp_to_crop(photo, MATRIX), MATRIX, settings=DetailSettings(reference="x"))


def test_the_editor_decodes_the_reconstruction_exactly_when_the_default_paste_uses_it():
    from mien.paste import paste_detail

    photo = textured_photo(13)
    crop = align.warp_to_crop(photo, MATRIX)
    if paste_detail.uses_reconstruction:  # then pasting without it fails
        with pytest.raises(ValueError, match="reconstruction"):
            paste_detail(photo, crop, MATRIX, "background")
    else:  # and without the flag, the paste works without it
        assert paste_detail(photo, crop, MATRIX, "background").shape == photo.shape


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_small_face_whole_takes_the_edits_faint_shading_on_a_small_face_only(scale):
    """The edit darkens a cheek patch by 1.5 grey levels per channel (2.6 in RGB), under the residual's floor (3), which
    detail transfer drops as decoder noise. With ``small_face_whole`` 1 a face the crop samples at the photo's
    resolution takes the edit itself over the whole mask, so the cheek comes out darker by about that; off (the
    default) the photo's cheek stays. On a large face (4 photo px per crop px) the setting changes nothing."""
    from mien.detail import DetailSettings

    photo, m, lm = small_face_with_eyes(scale)
    original = align.warp_to_crop(photo, m)
    edited = original.astype(np.float32)
    edited[76:100, 52:76] -= 1.5
    edited = np.clip(np.rint(edited), 0, 255).astype(np.uint8)
    def run(**kw):
        return transfer_detail(photo, edited, m, keep="none", landmarks=lm, settings=DetailSettings(**kw))

    on, off = run(small_face_whole=1.0), run()
    if scale > 1.5:
        assert np.array_equal(on, off)
        return
    cheek = (slice(80, 96), slice(56, 72))  # (scale 1: crop px = photo px)
    darker = lambda out: float(photo[cheek].mean() - out[cheek].astype(float).mean())  # noqa: E731
    assert darker(on) > 1.0 and abs(darker(off)) < 0.3


def test_an_interlaced_photos_comb_is_removed_inside_the_mask_with_deinterlace():
    """A video frame whose odd rows (one field) were taken after the face moved 3 px sideways: its comb measure is
    well above ``deinterlace_comb``, and with ``deinterlace`` (the default "vertical", and "fields") a zero edit's
    output inside the face is de-interlaced (its comb below 1), while outside the mask every pixel is the photo's. A
    progressive photo comes out bit for bit as with the setting off."""
    from mien.detail import FACE_OVAL, TEMPLATE_OVAL_128, DetailSettings, comb, face_box, plan_for

    progressive = textured_photo(5)
    interlaced = progressive.copy()
    interlaced[1::2] = np.roll(progressive, 3, axis=1)[1::2]
    lm = np.zeros((478, 3))
    lm[list(FACE_OVAL), :2] = TEMPLATE_OVAL_128 * 4
    box = face_box(lm, MATRIX, progressive.shape[:2])
    assert comb(progressive, box) < 1.02 and comb(interlaced, box) > 3.0  # (1.00 and 3.59 when written)

    def run(photo, **kw):
        edited = align.warp_to_crop(photo, MATRIX)
        return transfer_detail(photo, edited, MATRIX, keep="none", landmarks=lm, settings=DetailSettings(**kw))

    assert DetailSettings().deinterlace == "vertical"  # the default
    assert np.array_equal(run(progressive), run(progressive, deinterlace=""))
    inner = (180, 200, 330, 330)  # inside the face, photo px
    for kind in ("vertical", "fields"):
        on, off = run(interlaced, deinterlace=kind), run(interlaced, deinterlace="")
        assert comb(on, inner) < 1.0 and comb(off, inner) > 3.0  # ("vertical" 0.86 when written)
        alpha = plan_for(interlaced, align.warp_to_crop(interlaced, MATRIX), MATRIX, "none", lm)["alpha"]
        mask = cv2.warpAffine(alpha, MATRIX, on.shape[1::-1], flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR) > 0
        outside = ~cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert np.array_equal(on[outside], interlaced[outside]) and (on != off).any(axis=2)[mask].mean() > 0.3
