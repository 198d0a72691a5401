"""MediaPipe's face mesh in PyTorch (mien.models.face_mesh): the ops it added to the TFLite interpreter, and
its landmarks and blendshapes on aligned dev crops against MediaPipe's own (shared weights and data)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mien.models.tflite_ops import max_pool_2d, pad, prelu


def test_max_pool_same_padding_never_picks_the_padding():
    x = -torch.rand(1, 5, 5, 2) - 1  # all negative: zero padding would win at the border
    out = max_pool_2d([x], {"FilterHeight": 2, "FilterWidth": 2, "StrideH": 2, "StrideW": 2, "Padding": 0,
                            "FusedActivationFunction": 0})
    assert out.shape == (1, 3, 3, 2)  # ceil(5 / 2)
    assert (out < -1 + 1e-6).all()
    assert torch.equal(out[0, 2, 2], x[0, 4, 4])  # the last window holds one real cell


def test_pad_and_prelu_follow_their_reference_kernels():
    x = torch.randn(2, 3, 4, 5)
    y = pad([x, (0, 0, 1, 2, 0, 1, 3, 0)], {})
    assert torch.equal(y, torch.from_numpy(np.pad(x.numpy(), ((0, 0), (1, 2), (0, 1), (3, 0)))))
    alpha = torch.rand(1, 1, 5)
    assert torch.equal(prelu([x, alpha], {}), torch.maximum(x, torch.zeros(())) + alpha * torch.minimum(x, torch.zeros(())))


@pytest.fixture(scope="module")
def dev_faces(shared_dir):
    from mien.data.faces128 import Faces128
    from mien.face.landmarker import FaceLandmarker

    faces = Faces128(shared_dir / "data" / "faces128", split="dev")
    crops, found = [], []
    with FaceLandmarker() as lm:
        for i in np.linspace(0, len(faces) - 1, 16).astype(int):
            crop = faces[int(i)][1]
            detected = lm.detect(crop)
            if detected:
                crops.append(crop)
                found.append(detected[0])
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    return x, found


def test_aligned_landmarks_and_blendshapes_match_mediapipe(dev_faces):
    from mien.models.face_mesh import AlignedBlendshapes

    x, found = dev_faces
    assert len(found) >= 14
    net = AlignedBlendshapes.from_weights()
    with torch.no_grad():
        points = net.mesh.aligned(x)[..., :2]
        scores = net(x)
    ref_points = torch.from_numpy(np.stack([f.landmarks[:, :2] for f in found]))
    ref_scores = torch.from_numpy(np.stack([f.blendshapes for f in found]))
    err = (points - ref_points).norm(dim=-1).mean(1)  # px of the 128 crop, per face
    assert err.max() < 1.5, err
    assert err.mean() < 0.8, err
    assert (scores - ref_scores).abs().mean() < 0.03
    # the scores follow MediaPipe's across faces: per channel, correlated where MediaPipe's vary
    varied = ref_scores.std(0) > 0.05
    corr = [np.corrcoef(scores[:, c], ref_scores[:, c])[0, 1] for c in torch.nonzero(varied).flatten().tolist()]
    assert np.median(corr) > 0.9, corr


def test_blendshapes_are_differentiable_in_the_image_at_any_size(dev_faces):
    from mien.models.face_mesh import AlignedBlendshapes

    x = dev_faces[0][:2]
    net = AlignedBlendshapes.from_weights()
    xx = x.clone().requires_grad_(True)
    net(xx)[:, 25].sum().backward()  # jawOpen
    assert xx.grad.abs().sum() > 0
    # the ROI scales with the crop: a 2x upsampled crop reads (nearly) the same
    with torch.no_grad():
        big = net(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        small = net(x)
    assert (big - small).abs().mean() < 0.03
