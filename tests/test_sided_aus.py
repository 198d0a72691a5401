"""One-sided Action Units (AU12L, AU43R ...) in mien.expression.aus and the side convention."""

import numpy as np
import pytest

from mien.errors import MienError
from mien.expression.aus import (AUCalibration, SIDED_AUS, aus_to_blendshapes, control_blendshapes, index_of,
                                 parse_au_control, parse_au_spec)
from mien.expression.basic import Prototypes


@pytest.fixture(scope="module")
def neutral_and_calib():
    return np.asarray(Prototypes.load().neutral, dtype=np.float64), AUCalibration.load()


def test_control_names_are_normalised_and_bad_sides_are_one_line_errors():
    assert parse_au_control("12l") == "AU12L" and parse_au_control(" au 6 r ") == "AU6R"
    assert parse_au_control("AU43") == "AU43" and parse_au_control("43R") == "AU43R"
    with pytest.raises(MienError, match="AU1 has no left and right"):
        parse_au_control("AU1L")  # browInnerUp is one blendshape
    with pytest.raises(MienError, match="unknown Action Unit"):
        parse_au_control("AU99L")
    assert set(SIDED_AUS) == {"AU2", "AU4", "AU5", "AU6", "AU9", "AU12", "AU15", "AU20", "AU25", "AU43"}
    assert control_blendshapes("AU25R") == ("mouthLowerDownRight", "mouthUpperUpRight")


def test_a_sided_control_moves_only_its_side(neutral_and_calib):
    neutral, calib = neutral_and_calib
    for au in SIDED_AUS:
        for side, other in (("L", "R"), ("R", "L")):
            out = aus_to_blendshapes({au + side: 4.0}, calib, neutral)
            moved = {int(i) for i in np.flatnonzero(out != neutral)}
            mine = {index_of(b) for b in control_blendshapes(au + side)}
            assert moved <= mine, (au, side)  # nothing outside its own side changes
            for b in control_blendshapes(au + side):
                want = calib.bs_rest[b] + 0.8 * (calib.bs_high[b] - calib.bs_rest[b])
                assert out[index_of(b)] == pytest.approx(want)


def test_both_sides_equal_the_two_sided_au_and_later_entries_win(neutral_and_calib):
    neutral, calib = neutral_and_calib
    both = aus_to_blendshapes({"AU6": 3.0}, calib, neutral)
    np.testing.assert_array_equal(aus_to_blendshapes({"AU6L": 3.0, "AU6R": 3.0}, calib, neutral), both)
    spec = parse_au_spec("AU12=1,AU12L=4")  # a lopsided smile: both corners at 1, then the left at 4
    assert list(spec) == ["AU12", "AU12L"]
    out = aus_to_blendshapes(spec, calib, neutral)
    left, right = out[index_of("mouthSmileLeft")], out[index_of("mouthSmileRight")]
    assert left > right == pytest.approx(aus_to_blendshapes({"AU12": 1.0}, calib, neutral)[index_of("mouthSmileRight")])


def test_wink_and_sided_recipes_reach_the_blendshape_target(neutral_and_calib):
    from mien.expression.targets import blendshape_target, parse_request

    neutral, calib = neutral_and_calib
    protos = Prototypes.load()
    wink = blendshape_target(parse_request(au="AU43R=5"), protos, calib)
    assert wink[index_of("eyeBlinkRight")] > 0.5 > wink[index_of("eyeBlinkLeft")]
    assert wink[index_of("eyeBlinkLeft")] == pytest.approx(neutral[index_of("eyeBlinkLeft")])
    smirk = blendshape_target(parse_request("happy:0.3+AU12L:4"), protos, calib)
    assert smirk[index_of("mouthSmileLeft")] > smirk[index_of("mouthSmileRight")] + 0.3


@pytest.mark.shared
def test_mediapipe_left_is_the_persons_own_left(shared_dir):
    """The side convention the sided AUs rely on, measured: the eye whose iris sits nearer its outer corner
    reads the higher eyeLookOut; on an unmirrored photo the person's left eye is on the image's right.
    The mirror image must swap the reading, so the check is not satisfied by a fixed bias."""
    from mien.cli.analyze import example_path
    from mien.face.blendshape_names import BLENDSHAPE_NAMES
    from mien.face.landmarker import FaceLandmarker
    from mien.io.image import load_rgb

    def outwardness(lm, inner, outer, iris):  # iris position along inner -> outer corner, 0.5 = centred
        a, b = lm[inner, :2], lm[outer, :2]
        return float(np.dot(lm[iris, :2] - a, b - a) / np.dot(b - a, b - a))

    photo = load_rgb(example_path())
    with FaceLandmarker(num_faces=1) as landmarker:
        for mirrored in (False, True):
            face = landmarker.detect(np.ascontiguousarray(photo[:, ::-1]) if mirrored else photo)[0]
            lm, bs = face.landmarks, dict(zip(BLENDSHAPE_NAMES, face.blendshapes))
            image_right = outwardness(lm, 362, 263, 473)  # MediaPipe mesh: 362/263 corners of the image-right eye
            image_left = outwardness(lm, 133, 33, 468)
            says_left_more_out = bs["eyeLookOutLeft"] > bs["eyeLookOutRight"]
            assert says_left_more_out == (image_right > image_left), mirrored
