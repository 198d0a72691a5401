"""TFLite graphs in PyTorch: op semantics, and exactness of MobileFaceNet and MediaPipe's blendshapes.

References (shared/reference/README.md, sections 1 and 4): LiteRT 2.3.0 (XNNPACK) outputs of
``MobileFaceNet.tflite`` on the ``*_arc112.png`` chips and of ``face_blendshapes.tflite`` on the stored
``[146, 2]`` inputs, and MediaPipe 1.2.2's blendshape scores. Tolerances are the README's suggestions
for a float32 loader (cosine >= 0.99999; 5e-5 abs) and the 1e-3 the issue asks against MediaPipe.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mien.models.blendshapes import BLENDSHAPE_NAMES, LANDMARK_SUBSET, BlendshapeNet
from mien.models.mobilefacenet import MobileFaceNet
from mien.models.tflite_ops import OPS, same_padding

# --- op semantics, no weights -----------------------------------------------------------------------


def test_same_padding_puts_the_odd_pixel_after():
    assert same_padding(112, 3, 2, 1) == (0, 1)  # stride 2 on an even size: bottom/right only
    assert same_padding(7, 7, 1, 1) == (3, 3)
    assert same_padding(5, 3, 1, 2) == (2, 2)  # dilation widens the kernel to 5


def test_depthwise_conv_with_multiplier_matches_direct_sum():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 6, 5, 3), torch.randn(1, 3, 3, 3 * 2), torch.randn(6)  # C=3, M=2
    opts = {"StrideH": 1, "StrideW": 1, "DilationHFactor": 1, "DilationWFactor": 1, "Padding": 1}
    y = OPS["DEPTHWISE_CONV_2D"]([x, w, b], opts)
    windows = x.unfold(1, 3, 1).unfold(2, 3, 1)  # (N, 4, 3, C, kh, kw)
    want = torch.einsum("nijchw,hwcm->nijcm", windows, w[0].view(3, 3, 3, 2)).flatten(3) + b
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prelu_is_the_where_formula_bit_for_bit(dtype):
    # PRELU is spelled x * slope for speed (docs/performance.md); its values and gradients must stay those of
    # reference/prelu.h's where(x >= 0, x, alpha * x), zeros included, with a bfloat16 x as under autocast.
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 3).to(dtype)
    x[0, 0, 0] = 0.0
    alpha = torch.rand(1, 1, 3)
    g = torch.randn(2, 5, 4, 3)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    want = torch.where(xa >= 0, xa, xa * alpha)
    got = OPS["PRELU"]([xb, alpha], {})
    assert got.dtype == want.dtype and torch.equal(got, want)
    (ga,), (gb,) = torch.autograd.grad(want, xa, g), torch.autograd.grad(got, xb, g)
    assert torch.equal(ga, gb)


def test_strided_slice_keeps_the_batch_when_the_graph_drops_it():
    # face_blendshapes.tflite ends with [1,52] -> [52] (shrink axis 0); a batch of 3 stays (3, 52).
    opts = {"BeginMask": 2, "EndMask": 2, "ShrinkAxisMask": 1, "EllipsisMask": 0, "NewAxisMask": 0,
            "in_shape": (1, 52)}  # fmt: skip
    x = torch.randn(3, 52)
    y = OPS["STRIDED_SLICE"]([x, (0, 0), (1, 52), (1, 1)], opts)
    assert torch.equal(y, x)


# --- real weights vs the original runtimes ---------------------------------------------------------


@pytest.fixture(scope="module")
def mfn_ref(reference_dir):
    return json.loads((reference_dir / "mobilefacenet_reference.json").read_text())["images"]


@pytest.fixture(scope="module")
def mediapipe_ref(reference_dir):
    return json.loads((reference_dir / "mediapipe_face_landmarker.json").read_text())


@pytest.fixture(scope="module")
def mobilefacenet(shared_dir):
    return MobileFaceNet.from_weights()


@pytest.fixture(scope="module")
def blendshape_net(shared_dir):
    return BlendshapeNet.from_weights()


@pytest.fixture(scope="module")
def chips(reference_dir, mfn_ref):
    arrays = [np.asarray(Image.open(reference_dir / e["crop_file"]).convert("RGB")) for e in mfn_ref.values()]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.shared
def test_mobilefacenet_matches_litert(mobilefacenet, chips, mfn_ref):
    with torch.no_grad():
        got = mobilefacenet(chips).numpy()
    want = np.array([e["embedding"] for e in mfn_ref.values()], dtype=np.float32)
    assert got.shape == (16, 192)
    assert _cosine(got, want).min() >= 0.99999
    assert np.abs(got - want).max() <= 2e-4


@pytest.mark.shared
def test_mobilefacenet_rows_do_not_depend_on_batch_size(mobilefacenet, chips):
    with torch.no_grad():
        one = mobilefacenet(chips[:1])
        three = mobilefacenet(chips[:3])
    assert one.shape == (1, 192) and three.shape == (3, 192)
    torch.testing.assert_close(three[:1], one, rtol=0, atol=1e-4)


@pytest.mark.shared
def test_blendshapes_match_litert_and_mediapipe(blendshape_net, mediapipe_ref):
    images = mediapipe_ref["images"].values()
    points = torch.tensor(np.array([e["blendshape_model_input"] for e in images], dtype=np.float32))
    with torch.no_grad():
        got = blendshape_net(points).numpy()
        one = blendshape_net(points[:1]).numpy()
    litert = np.array([e["blendshape_model_output_litert_xnnpack"] for e in images], dtype=np.float32)
    mediapipe = np.array([e["blendshape_scores"] for e in images], dtype=np.float32)
    assert got.shape == (16, 52) and one.shape == (1, 52)
    assert np.abs(got - litert).max() <= 5e-5
    assert np.abs(got - mediapipe).max() <= 1e-3
    assert np.abs(one - got[:1]).max() <= 1e-5


@pytest.mark.shared
def test_blendshapes_from_landmarks_and_constants(blendshape_net, mediapipe_ref):
    assert list(BLENDSHAPE_NAMES) == mediapipe_ref["blendshape_names"]
    assert list(LANDMARK_SUBSET) == mediapipe_ref["blendshape_submodel"]["landmark_subset_indices"]
    e = mediapipe_ref["images"]["london_001_smiling.jpg"]
    landmarks = torch.tensor([e["landmarks_xyz"]], dtype=torch.float32)
    with torch.no_grad():
        got = blendshape_net.forward_landmarks(landmarks, e["image_size_wh"]).numpy()[0]
    assert np.abs(got - np.array(e["blendshape_scores"], dtype=np.float32)).max() <= 1e-3


@pytest.mark.shared
def test_blendshape_gradients_reach_the_points(blendshape_net, mediapipe_ref):
    e = mediapipe_ref["images"]["tw_2111b01.jpg"]
    points = torch.tensor([e["blendshape_model_input"]], dtype=torch.float32, requires_grad=True)
    blendshape_net(points)[0, BLENDSHAPE_NAMES.index("mouthSmileLeft")].backward()
    assert torch.isfinite(points.grad).all() and points.grad.abs().max() > 0


@pytest.mark.shared
def test_graphs_are_captured_whole_by_torch_compile(mobilefacenet, blendshape_net, chips):
    """torch.compile must see each graph as one piece (the GPU bench compiles recogniser guidance's
    MobileFaceNet): constant shapes and axes are Python ints, not arrays it would trace as data."""
    for net, inp in ((mobilefacenet, chips[:2]), (blendshape_net, torch.rand(3, 146, 2))):
        captured = torch.compile(net, fullgraph=True, backend="eager")  # fullgraph: a graph break raises
        torch.testing.assert_close(captured(inp), net(inp))
