"""face-api.js recognition and expression nets: TF.js reader, behaviour, exactness vs the originals.

References (shared/reference/README.md, section 3): face-api.js 0.22.2 (/256) and @vladmandic/face-api
1.7.15 (/255) descriptors and expression probabilities on the dlib chips, and dlib's own descriptors.
Tolerances are the README's suggestions for a float32 loader.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mien.errors import WeightsError
from mien.models.faceapi_expression import EXPRESSIONS, FaceExpressionNet
from mien.models.faceapi_recognition import FaceRecognitionNet
from mien.models.tfjs import load_tfjs_weights

# --- TF.js reader, on a hand-made manifest ---------------------------------------------------------


def _write_tfjs(tmp_path, groups):
    """groups: list of (shard byte-strings, manifest weight entries)."""
    manifest = []
    for g, (shards, weights) in enumerate(groups):
        paths = [f"g{g}s{i}.bin" for i in range(len(shards))]
        for p, data in zip(paths, shards):
            (tmp_path / p).write_bytes(data)
        manifest.append({"paths": paths, "weights": weights})
    path = tmp_path / "m-weights_manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def test_tfjs_reader_dequantises_like_tfjs(tmp_path):
    f32 = np.arange(6, dtype="<f4").reshape(2, 3) / 7
    q8 = np.array([0, 1, 128, 255], dtype=np.uint8)
    q16 = np.array([0, 7, 40000, 65535], dtype="<u2")
    f16 = np.array([0.5, -2.25, 1e-3], dtype="<f2")
    u8 = {"dtype": "uint8", "scale": 0.0123456789, "min": -1.5}
    u16 = {"dtype": "uint16", "scale": 3.3e-5, "min": -0.7}
    blob = f32.tobytes() + q8.tobytes()
    path = _write_tfjs(
        tmp_path,
        [
            ([blob], [
                {"name": "a/f32", "shape": [2, 3], "dtype": "float32"},
                {"name": "a/q8", "shape": [2, 2], "dtype": "float32", "quantization": u8},
            ]),
            # a tensor may straddle two shards of its group
            ([q16.tobytes()[:3], q16.tobytes()[3:] + f16.tobytes()], [
                {"name": "b/q16", "shape": [4], "dtype": "float32", "quantization": u16},
                {"name": "b/f16", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
            ]),
        ],
    )  # fmt: skip
    w = load_tfjs_weights(path)
    assert all(t.dtype == torch.float32 for t in w.values())
    assert torch.equal(w["a/f32"], torch.from_numpy(f32))
    # tfjs computes q*scale+min in float64 (JavaScript numbers) and stores it in a Float32Array
    want8 = (q8.astype(np.float64) * u8["scale"] + u8["min"]).astype(np.float32).reshape(2, 2)
    assert torch.equal(w["a/q8"], torch.from_numpy(want8))
    want16 = (q16.astype(np.float64) * u16["scale"] + u16["min"]).astype(np.float32)
    assert torch.equal(w["b/q16"], torch.from_numpy(want16))
    assert torch.equal(w["b/f16"], torch.from_numpy(f16.astype(np.float32)))


def test_tfjs_reader_names_the_tensor_that_does_not_fit(tmp_path):
    weights = [
        {"name": "ok", "shape": [2], "dtype": "float32"},
        {"name": "conv/filters", "shape": [3, 3], "dtype": "float32",
         "quantization": {"dtype": "uint8", "scale": 1, "min": 0}},
    ]  # fmt: skip
    path = _write_tfjs(tmp_path, [([b"\0" * 12], weights)])
    with pytest.raises(WeightsError, match="conv/filters"):
        load_tfjs_weights(path)
    path = _write_tfjs(tmp_path, [([b"\0" * 20], weights)])
    with pytest.raises(WeightsError, match="17 bytes"):
        load_tfjs_weights(path)


# --- random-weight nets: shapes, batches, gradients ------------------------------------------------


@pytest.mark.parametrize("net, size, width", [(FaceRecognitionNet, 150, 128), (FaceExpressionNet, 112, 7)])
def test_random_nets_are_differentiable_and_batch_independent(net, size, width):
    torch.manual_seed(0)
    model = net()
    x = (torch.rand(2, 3, size, size) * 255).requires_grad_()
    out = model(x)
    assert out.shape == (2, width)
    torch.testing.assert_close(model(x[1:2]), out[1:2], rtol=1e-4, atol=1e-5)
    out[0].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0].abs().sum() > 0 and x.grad[1:].abs().sum() == 0
    with pytest.raises(ValueError, match=f"{size}, {size}"):
        model(torch.zeros(1, 3, size + 1, size + 1))


# --- real weights vs the original runtimes ---------------------------------------------------------


def _read_chips(reference_dir, entries, file_key, sha_key):
    chips = []
    for e in entries:
        rgb = np.array(Image.open(reference_dir / e[file_key]).convert("RGB"))
        # same pixels as the references were computed on (README: decode with Pillow)
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == e[sha_key], e[file_key]
        chips.append(torch.from_numpy(rgb).permute(2, 0, 1).float())
    return torch.stack(chips)


@pytest.fixture(scope="module")
def faceapi_ref(reference_dir):
    return json.loads((reference_dir / "faceapi_reference.json").read_text())["images"]


@pytest.fixture(scope="module")
def names(faceapi_ref):
    return list(faceapi_ref)


@pytest.fixture(scope="module")
def chips150(reference_dir, faceapi_ref, names):
    return _read_chips(reference_dir, [faceapi_ref[n] for n in names], "chip150_file", "chip150_rgb_sha256")


@pytest.fixture(scope="module")
def descriptors(chips150):
    """Descriptors of all 16 chips with the /256 (face-api.js 0.22.2) and /255 (@vladmandic) scalings."""
    net = FaceRecognitionNet.from_weights(divisor=256.0)
    with torch.no_grad():
        d256 = net(chips150)
        net.divisor = 255.0
        d255 = net(chips150)
    return {256: d256, 255: d255}


@pytest.mark.shared
@pytest.mark.parametrize(
    "divisor, key", [(256, "descriptor_faceapijs_0_22_2"), (255, "descriptor_vladmandic_1_7_15")]
)
def test_recognition_matches_faceapi(descriptors, faceapi_ref, names, divisor, key):
    want = torch.tensor([faceapi_ref[n][key] for n in names])
    err = (descriptors[divisor] - want).abs().max().item()
    assert err <= 2e-5, f"max abs {err:.2e} vs {key}"


@pytest.mark.shared
def test_recognition_agrees_with_dlib(descriptors, reference_dir, names):
    # The face-api weights are a uint8-quantised port of dlib's; README measured min cosine 0.99965.
    dlib = json.loads((reference_dir / "dlib_descriptors.json").read_text())["images"]
    want = torch.tensor([dlib[n]["descriptor"] for n in names], dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity(descriptors[256].double(), want)
    assert cos.min() >= 0.999, cos


def _person(name: str) -> str:
    # london_001_neutral.jpg -> london_001; tw_2001a02.jpg -> performer 20 (README, Images)
    stem = name.split(".")[0]
    return stem[:10] if stem.startswith("london") else stem[:5]


@pytest.mark.shared
def test_same_person_is_closer_than_different_people(descriptors, names):
    dist = torch.cdist(descriptors[256], descriptors[256])
    i, j = names.index("london_001_neutral.jpg"), names.index("london_001_smiling.jpg")
    others = [k for k, n in enumerate(names) if n.startswith("london") and _person(n) != "london_001"]
    assert dist[i, j] < 0.6  # dlib's same-person threshold
    assert dist[[i, j]][:, others].min() > 0.6
    # Ranking over all 16: every same-person pair is closer than every different-person pair.
    # (Not every different pair exceeds 0.6: the Taiwanese performers come as close as 0.42, as in dlib.)
    pairs = list(itertools.combinations(range(len(names)), 2))
    same = [dist[a, b] for a, b in pairs if _person(names[a]) == _person(names[b])]
    diff = [dist[a, b] for a, b in pairs if _person(names[a]) != _person(names[b])]
    assert max(same) < min(diff)


@pytest.mark.shared
def test_expression_matches_faceapi(reference_dir, faceapi_ref, names):
    x = _read_chips(reference_dir, [faceapi_ref[n] for n in names], "chip112_file", "chip112_rgb_sha256")
    with torch.no_grad():
        probs = FaceExpressionNet.from_weights().predict(x)
    want = torch.tensor([[faceapi_ref[n]["expressions_chip112"][e] for e in EXPRESSIONS] for n in names])
    err = (probs - want).abs().max().item()
    assert err <= 1e-5, f"max abs {err:.2e} vs expressions_chip112"
