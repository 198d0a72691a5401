"""Shared test fixtures.

Tests that need ../shared (pretrained weights, reference outputs, the face pool) are marked
`shared` and skip, saying why, only when that folder is absent. In this project's CI it is present,
so they run.
"""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def _cache_in_tmp(tmp_path_factory):
    """Tests write only into temporary folders: the user cache (~/.cache/mien: evaluate's analyses and
    default output) points into one for the whole session. Weight files a user keeps in the real cache
    stay findable through MIEN_WEIGHTS (searched first, mien.weights)."""
    import os

    from mien import weights

    real = weights.cache_dir()
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", weights.ENV_VAR)}
    if not os.environ.get(weights.ENV_VAR) and real.is_dir():
        os.environ[weights.ENV_VAR] = str(real)
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: these tests need the project's shared weights and data")
    return SHARED


@pytest.fixture(scope="session")
def reference_dir(shared_dir) -> Path:
    return shared_dir / "reference"


@pytest.fixture(scope="session")
def example_crop(shared_dir):
    """The bundled London Set example photo aligned as the pipeline aligns it: (1, 3, 128, 128) RGB in [0, 1]."""
    import torch

    from mien.cli.analyze import example_path
    from mien.face.landmarker import FaceLandmarker
    from mien.io.image import load_rgb
    from mien.pipeline import align_photo

    with FaceLandmarker() as lm:
        crop, _ = align_photo(lm, load_rgb(example_path()))
    return torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255


# --- tiny random components: pipeline and editor mechanics without ../shared ------------------------

def tiny_components_pipeline():
    """A MienPipeline of tiny random nets: the 'tiny' model preset (with the spatial reference), a random
    TAEF2, and stand-ins for the identity encoder (face-api condition, MobileFaceNet) and the blendshape
    net (small random maps of the pooled image); its landmarker finds no face (use :func:`tiny_aligned`)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from mien.builtin import MienModel, ModelConfig
    from mien.models.taef2 import TAEF2
    from mien.pipeline import MienPipeline

    torch.manual_seed(0)

    class Pooled(nn.Module):
        def __init__(self, out: int):
            super().__init__()
            self.linear = nn.Linear(3 * 8 * 8, out)

        def forward(self, x):
            return self.linear(F.adaptive_avg_pool2d(x, 8).flatten(1))

    class StubIdentity(nn.Module):  # IdentityEncoder's interface: condition (B, 128), mobilefacenet_unit (B, 192)
        def __init__(self):
            super().__init__()
            self.faceapi, self.mobilefacenet = Pooled(128), Pooled(192)

        def condition(self, x):
            return F.normalize(self.faceapi(x / 255), dim=1)

        def mobilefacenet_unit(self, x):
            return F.normalize(self.mobilefacenet(x / 255), dim=1)

    class StubBlendshapes(nn.Module):  # AlignedBlendshapes' interface: RGB in [0, 1] -> (B, 52) in [0, 1]
        def __init__(self):
            super().__init__()
            self.net = Pooled(52)

        def forward(self, rgb):
            return torch.sigmoid(self.net(rgb))

    class NoLandmarker:
        def detect(self, rgb, max_faces=None):
            return []

        def close(self):
            pass

    model = MienModel(ModelConfig.from_preset("tiny", reference=True)).eval()
    model.sha256 = "0123456789ab" * 5 + "0123"
    taef2 = TAEF2().eval().requires_grad_(False)
    return MienPipeline(model, taef2, StubIdentity().eval(), NoLandmarker(), Path("."), torch.device("cpu"),
                        blendshapes=StubBlendshapes().eval())  # fmt: skip


@pytest.fixture(scope="module")
def editor():
    """A :class:`mien.edit.Editor` over :func:`tiny_components_pipeline`, one per test module."""
    from mien.edit import Editor

    ed = Editor(tiny_components_pipeline())
    yield ed
    ed.close()


def tiny_aligned(photo):
    """``photo`` "aligned" without a landmarker: its central square scaled to 128 px (a fixed matrix), with
    a face record of the neutral prototype's blendshapes, a frontal pose and the template face oval."""
    from types import SimpleNamespace

    import cv2
    import numpy as np

    from mien.expression.basic import Prototypes
    from mien.pipeline import AlignedPhotos

    h, w = photo.shape[:2]
    side = min(h, w)
    s = 128 / side
    m = np.array([[s, 0, -s * (w - side) / 2], [0, s, -s * (h - side) / 2]])
    crop = cv2.warpAffine(photo, m, (128, 128), flags=cv2.INTER_AREA)
    from mien.detail import FACE_OVAL, TEMPLATE_OVAL_128
    from mien.face import align

    landmarks = np.zeros((478, 3), np.float32)  # only the face oval is filled: the template's, in photo pixels
    landmarks[list(FACE_OVAL), :2] = align.apply_affine(align.invert_affine(m), TEMPLATE_OVAL_128)
    face = SimpleNamespace(pose=(0.0, 0.0, 0.0), blendshapes=np.asarray(Prototypes.load().neutral, np.float32),
                           landmarks=landmarks)
    return AlignedPhotos([crop], [face], [], [m], [0])


class Counting:
    """Counts calls of a stand-in net (which critic a guided step asked)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def walk_guided_window(guide, steps: int, strength: float, reader: Counting, decode: Counting):
    """The states of a stand-in FlowEdit of ``steps`` steps (each step a fixed random move, then ``guide``) and which
    critic scored each guided step: "reader" when ``reader`` was called, else "decoded" when ``decode`` was."""
    import torch

    from mien.sampling import flow_times

    ts = flow_times(steps, strength)
    z, states, who = torch.randn(1, 32, 16, 16), [], []
    moves = torch.Generator().manual_seed(1)
    for t, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()):
        z = z + 0.01 * torch.randn(z.shape, generator=moves)
        before = (reader.calls, decode.calls)
        z = guide(z, t, t_next)
        if (reader.calls, decode.calls) != before:
            who.append("reader" if reader.calls > before[0] else "decoded")
        states.append(z.clone())
    return states, who


TEST_THREADS = 1  # the CPU threads every test starts with (pytest_configure says why)


def pytest_configure(config):
    """One CPU thread for the whole run, whatever the machine: the float sums of batched and single calls then
    agree to the tolerances the mechanics tests state, results do not depend on how busy the machine is, and
    a 2-core machine running other jobs does not crawl (mien.threads). Tests of the thread rule set their own."""
    import torch

    torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def _threads_as_they_were():
    """Each test starts at :data:`TEST_THREADS` with mien's auto thread count off, and leaves the thread variables
    of the environment as it found them: a `mien` command run in-process (in a test or a module's fixture) turns
    the auto count on for the whole process and writes the count it chose into OMP_NUM_THREADS, which a later
    test (the golden comparisons, the batched-versus-single mechanics, scripts that read OMP_NUM_THREADS) must
    not inherit."""
    import os

    import torch

    from mien import threads

    def reset():
        threads._AUTO["on"] = False
        if torch.get_num_threads() != TEST_THREADS:
            torch.set_num_threads(TEST_THREADS)

    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", threads.AUTO_MARK)
    env = {k: os.environ.get(k) for k in names}
    reset()
    yield
    reset()
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
