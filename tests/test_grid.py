"""The contact-sheet layout (mien.io.grid): size from rows and columns, captions drawn, mixed sizes fitted."""

import numpy as np

from mien.io.grid import LINE, PAD, grid

GREY = (120, 120, 120)


def image(w: int, h: int, colour=GREY) -> np.ndarray:
    return np.full((h, w, 3), colour, np.uint8)


def dark(a: np.ndarray) -> int:
    return int((a.min(-1) < 100).sum())


def test_the_sheet_size_follows_rows_columns_and_captions():
    rows = [[image(30, 20)] * 3, [image(30, 20)] * 2]  # the shorter row leaves its last cell empty
    bare = grid(rows)
    assert bare.size == (3 * (30 + PAD) + PAD, PAD + 2 * (20 + PAD) + PAD)
    captioned = grid(rows, [["a", "b", "c"], ["d", "two\nlines"]], title="a title")
    head = LINE + 4
    assert captioned.size == (bare.width, head + 2 * (20 + 2 * LINE + PAD) + PAD)
    assert (np.asarray(captioned)[-(20 + 2 * LINE + PAD + PAD):, 2 * (30 + PAD) + PAD:] == 255).all()  # empty cell


def test_captions_and_title_are_drawn_where_the_layout_puts_them():
    rows = [[image(64, 64, (255, 255, 255))] * 2]  # white images: every dark pixel is text
    sheet = np.asarray(grid(rows, [["left", ""]], title="the request"))
    head = LINE + 4
    assert dark(sheet[:head]) > 0  # the title
    assert dark(sheet[head:head + 64]) == 0  # nothing over the images
    band = sheet[head + 64:head + 64 + LINE]
    assert dark(band[:, : PAD + 64]) > 0 and dark(band[:, PAD + 64:]) == 0  # only the first cell has a caption
    long = grid(rows, title="word " * 60)  # wrapped to the sheet's width: more lines, a taller head
    assert long.height > grid(rows, title="word").height and long.width == grid(rows).width


def test_mixed_sizes_are_fitted_into_one_cell_size_and_centred():
    small, wide = image(32, 32, (200, 0, 0)), image(128, 96)
    sheet = np.asarray(grid([[small, wide]]))  # cell: the largest width and height, 128 x 96
    assert sheet.shape[:2] == (PAD + 96 + PAD + PAD, 2 * (128 + PAD) + PAD)
    cell = sheet[PAD:PAD + 96, PAD:PAD + 128]
    red = (cell[..., 0] > 150) & (cell[..., 1] < 50)
    ys, xs = np.nonzero(red)  # the 32 px image scaled up to 96 px, centred
    assert (ys.min(), ys.max() + 1) == (0, 96) and (xs.min(), xs.max() + 1) == (16, 112)
    assert (cell[:, :15] == 255).all() and (cell[:, 113:] == 255).all()
    fixed = np.asarray(grid([[small, wide]], tile=(64, 64)))  # a given cell size scales everything to it
    assert fixed.shape[:2] == (PAD + 64 + PAD + PAD, 2 * (64 + PAD) + PAD)
