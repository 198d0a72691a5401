"""load_rgb: every colour mode becomes 8-bit RGB, EXIF is honoured, bad files are one-line errors."""

import numpy as np
import pytest
from PIL import Image

from mien.errors import MienError
from mien.io.image import expand_inputs, load_rgb


def gradient(w=64, h=48):
    x = np.linspace(0, 255, w, dtype=np.float64)[None, :, None]
    return np.broadcast_to(x, (h, w, 3)).astype(np.uint8).copy()


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK", "P", "RGBA", "LA", "1", "I;16"])
def test_modes_become_uint8_rgb(tmp_path, mode):
    im = Image.fromarray(gradient())
    im = im.convert("L").convert("I;16") if mode == "I;16" else im.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    im.save(path)
    a = load_rgb(path)
    assert a.dtype == np.uint8 and a.shape == (48, 64, 3)
    if mode not in ("1", "P"):
        # left-to-right gradient survives the conversion
        assert a[:, -1].mean() > a[:, 0].mean() + 150


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert (load_rgb(tmp_path / "t.png") == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    a = gradient(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(a).rotate(90, expand=True).save(tmp_path / "r.jpg", exif=exif, quality=100)
    b = load_rgb(tmp_path / "r.jpg")
    assert b.shape == (48, 64, 3)
    assert b[:, -1].mean() > b[:, 0].mean() + 150


def test_errors_are_one_line(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "b.png").write_text("text")
    for name in ("a.jpg", "b.png", "missing.jpg"):
        with pytest.raises(MienError) as e:
            load_rgb(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)
    with pytest.raises(MienError, match="folder"):
        load_rgb(tmp_path)


def test_size_cap_checks_the_header_before_decoding(tmp_path):
    Image.new("1", (5000, 5000)).save(tmp_path / "big.png")
    with pytest.raises(MienError, match="limit"):
        load_rgb(tmp_path / "big.png", max_pixels=1_000_000)


def test_expand_inputs_walks_folders_sorted(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for n in ("d/b.jpg", "d/a.PNG", "d/e/c.webp", "d/notes.txt"):
        (tmp_path / n).write_bytes(b"")
    got = expand_inputs([str(tmp_path / "d"), "x.jpg"])
    assert [p.relative_to(tmp_path).as_posix() for p in got[:3]] == ["d/a.PNG", "d/b.jpg", "d/e/c.webp"]
    assert got[3].as_posix() == "x.jpg"  # files are passed through as given
