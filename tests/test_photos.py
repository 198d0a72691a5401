"""Photos as people have them: rotated by EXIF, very large, CMYK, 16-bit, greyscale, several faces, a tiny face.
Each is a correct result or a one-line error."""

import cv2
import numpy as np
import pytest
from PIL import Image

from mien.cli.analyze import example_path
from mien.errors import FaceTooSmallError, MienError, NoFaceError
from mien.io.image import load_rgb


@pytest.fixture(scope="module")
def photo():
    return load_rgb(example_path())  # a London Set photo (CC BY 4.0, see the README)


def test_an_exif_rotated_photo_comes_out_upright(tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned 90 degrees clockwise; the viewer turns it back
    Image.fromarray(photo).rotate(-90, expand=True).save(tmp_path / "r.jpg", exif=exif, quality=98)
    got = load_rgb(tmp_path / "r.jpg")
    assert got.shape == photo.shape and np.abs(got.astype(int) - photo).mean() < 3


def test_a_20000_px_image_is_a_one_line_error_or_read_as_it_is(tmp_path):
    Image.new("L", (20000, 20000)).save(tmp_path / "huge.png")  # 400 MP: refused from the header
    with pytest.raises(MienError) as e:
        load_rgb(tmp_path / "huge.png")
    assert "MP limit" in str(e.value) and "downscale" in str(e.value) and "\n" not in str(e.value)
    Image.new("RGB", (20000, 600), (10, 20, 30)).save(tmp_path / "strip.png")  # 12 MP: read as it is
    a = load_rgb(tmp_path / "strip.png")
    assert a.shape == (600, 20000, 3) and (a[0, 0] == (10, 20, 30)).all()


def gradient():
    x = np.linspace(0, 255, 64)[None, :, None]
    g = np.broadcast_to(x, (48, 64, 3)).astype(np.uint8).copy()
    g[..., 1] //= 2  # a colour image, not grey
    return g


def test_a_cmyk_jpeg_reads_as_its_colours(tmp_path):
    Image.fromarray(gradient()).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    assert np.abs(load_rgb(tmp_path / "c.jpg").astype(int) - gradient()).mean() < 3


@pytest.mark.parametrize("channels", [3, 1])
def test_a_16_bit_png_reads_as_8_bit(tmp_path, channels):
    g16 = gradient().astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "p.png"), g16[..., ::-1] if channels == 3 else g16[..., 0])
    a = load_rgb(tmp_path / "p.png")
    want = gradient() if channels == 3 else np.repeat(gradient()[..., :1], 3, axis=2)
    assert a.dtype == np.uint8 and np.abs(a.astype(int) - want).max() <= 1


def test_a_greyscale_photo_becomes_grey_rgb(tmp_path, photo):
    Image.fromarray(photo).convert("L").save(tmp_path / "g.jpg", quality=95)
    a = load_rgb(tmp_path / "g.jpg")
    assert a.shape == photo.shape and (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


@pytest.mark.shared
def test_face_n_picks_the_nth_largest_face_and_a_tiny_face_is_refused(shared_dir, photo):
    from mien.face import align
    from mien.face.landmarker import FaceLandmarker
    from mien.pipeline import MIN_FACE_PX, align_photos

    pair = np.full((560, 1000, 3), 200, np.uint8)
    pair[:512, :512] = photo
    pair[80:380, 620:920] = cv2.resize(photo, (300, 300), interpolation=cv2.INTER_AREA)
    with FaceLandmarker(num_faces=2) as lm:
        big, small = (align_photos(lm, [pair], face=i) for i in (0, 1))
        # the same person: face 1 is face 0 at 300/512 the size, to the right
        assert align.affine_scale(small.matrices[0]) == pytest.approx(align.affine_scale(big.matrices[0]) * 512 / 300,
                                                                      rel=0.05)  # fmt: skip
        assert small.faces[0].box[0] > 600 > big.faces[0].box[2]
        with pytest.raises(NoFaceError, match="face 2 asked for, but only 2 found"):
            align_photos(lm, [pair], face=2)
        tiny = cv2.resize(photo, (110, 110), interpolation=cv2.INTER_AREA)  # the face ~50 px across
        with pytest.raises(NoFaceError) as e:
            align_photos(lm, [tiny], names=["tiny.jpg"])
        assert f"under the {MIN_FACE_PX} px" in str(e.value) and "tiny.jpg" in str(e.value)
        assert "\n" not in str(e.value)
        with pytest.raises(FaceTooSmallError):
            from mien.pipeline import align_photo_matrix

            align_photo_matrix(lm, tiny)


@pytest.mark.parametrize("fmt", ["jpg", "webp", "png"])
def test_the_edited_photo_is_written_at_its_own_size_in_the_format_asked(tmp_path, photo, fmt):
    from mien.io.output import earlier_outputs, save_numbered

    crop = cv2.resize(photo, (128, 128), interpolation=cv2.INTER_AREA)
    paths = save_numbered(tmp_path, 0, crop, photo, {"seed": 3, "request": "happy"}, photo_format=fmt)
    assert [p.name for p in paths] == ["000_seed3.png", f"000_seed3_photo.{fmt}"]
    with Image.open(paths[1]) as im:
        assert im.size == (photo.shape[1], photo.shape[0]) and im.format == {"jpg": "JPEG"}.get(fmt, fmt.upper())
    assert earlier_outputs(tmp_path) == sorted(paths)  # --overwrite finds them
