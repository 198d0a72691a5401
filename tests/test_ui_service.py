"""mien.ui.service: the UI's back end on the shipped model (few steps; the page itself: test_ui_browser.py)."""

import numpy as np
import pytest

from mien.errors import MienError
from mien.settings import GenerationSettings

pytestmark = pytest.mark.shared
FAST = GenerationSettings(steps=3)


@pytest.fixture(scope="module")
def service(shared_dir, tmp_path_factory):
    from mien.ui.service import Service

    s = Service.from_pretrained(workdir=tmp_path_factory.mktemp("ui"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def photos(service):
    from mien.cli.analyze import example_path

    return service.read_photos([str(example_path())])


def test_same_seed_same_image_and_the_seed_matters(service, photos):
    from mien.ui.service import Controls

    c = Controls("surprised", 0.6)
    a, b = (service.generate(photos, 0, c, seed=3, settings=FAST) for _ in range(2))
    np.testing.assert_array_equal(a.photo, b.photo)
    other = service.generate(photos, 0, c, seed=4, settings=FAST)
    assert not np.array_equal(a.photo, other.photo)
    assert a.metadata["seed"] == 3 and a.metadata["request"] == "surprised 0.60"
    assert a.photo.shape == photos[0].shape  # the photo's full size


def test_only_moved_sliders_are_sent_and_presets_follow_the_expression(service, photos):
    from mien.ui.service import CONTROLS, Controls

    levels, line = service.preset("elation", 1.0)
    assert set(levels) == set(CONTROLS) and "elation" in line
    assert levels["AU12L"] > 1 and levels["AU12R"] > 1  # elation smiles
    assert service.preset("happy", 0.3)[0]["AU12L"] < levels["AU12L"]
    moved = dict(levels, AU43R=5.0)
    c = Controls("elation", 1.0, moved, levels)
    assert c.moved() == {"AU43R": 5.0}
    assert service.request(c).describe().endswith("AU43R=5")  # the preset levels are not re-sent


def test_from_neutral_switch_starts_from_the_photo_own_expression(service):
    """Off, the label's movement is added to the smiling photo's own expression, so the smile stays; on,
    the target is the neutral face plus the movement (the photo's smile is replaced)."""
    from mien.cli.analyze import example_path
    from mien.expression.aus import index_of
    from mien.expression.targets import blendshape_target
    from mien.ui.service import Controls

    smiling = service.read_photos([str(example_path().with_name("london_001_smiling.jpg"))])
    subject = service.prepare(smiling)
    smile = index_of("mouthSmileLeft")
    target = {}
    for on in (True, False):
        req = service.request(Controls("surprised", 1.0, from_neutral=on), subject)
        target[on] = blendshape_target(req, service.protos, service.calib)
    assert target[False][smile] > target[True][smile] + 0.3
    assert subject.identity.blendshapes[smile] > 0.3


def test_errors_are_one_line_mien_errors(service, tmp_path):
    from mien.ui.service import Controls

    with pytest.raises(MienError, match="no photo yet"):
        service.read_photos([])
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(MienError, match=r"^x.png: "):  # the name the user uploaded, not the server's path
        service.read_photos([str(bad)])
    with pytest.raises(MienError, match="did you mean"):
        service.preset("elatoin")
    with pytest.raises(MienError, match="reference photo: no face"):
        wall = tmp_path / "wall.png"
        from PIL import Image

        Image.new("RGB", (64, 64), (200, 200, 200)).save(wall)
        service.request(Controls("happy", reference=str(wall)))


def test_expression_sheet_is_the_seven_labels_from_one_start(service, photos):
    from mien.expression.basic import BASIC
    from mien.ui.service import Controls

    outs = service.sheet(photos, 0, Controls("elation", 0.5, {"AU12L": 5.0}, {}), seed=1, settings=FAST)
    assert [o.request for o in outs] == ["neutral 0.50"] + [f"{lab} 0.50" for lab in BASIC[1:]]  # sliders left out
    assert all(o.metadata["seed"] == 1 and o.path.is_file() for o in outs)
    assert len({o.photo.tobytes() for o in outs}) == len(BASIC)  # seven different images
