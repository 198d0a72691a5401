"""Which pairs the consistency start "other" judges: FaceLatentDataset's other_max_pose / other_max_distance."""

import numpy as np
import pytest
import torch

from mien.builtin.config import EXPRESSION_DIM, IDENTITY_DIM
from mien.errors import MienError
from mien.train.data import FaceLatentDataset, TrainTensors


def pairs() -> TrainTensors:
    """Three people of two photos: (0, 1) 20 degrees of yaw apart, (2, 3) far apart in identity,
    (4, 5) close in both."""
    g = torch.Generator().manual_seed(0)
    expression = torch.rand(6, EXPRESSION_DIM, generator=g) * 0.1
    expression[:, -3:] = 0.0
    expression[0, -3], expression[1, -3] = 15 / 90, -5 / 90  # yaw; mirroring negates both
    expression[4, -1], expression[5, -1] = 2 / 90, -3 / 90  # roll: 5 degrees
    identity = torch.nn.functional.normalize(torch.randn(1, IDENTITY_DIM, generator=g), dim=1).repeat(6, 1)
    identity[3] = torch.nn.functional.normalize(torch.randn(IDENTITY_DIM, generator=g), dim=0)  # ~1.4 from photo 2
    latents = torch.randn(6, 32, 16, 16, generator=g).half()
    return TrainTensors(latents=latents, mask=torch.ones(6, 1, 16, 16).half(), identity=identity.half(),
                        expression=expression.half(), ref_candidates=[np.array([i ^ 1]) for i in range(6)],
                        latents_mirrored=latents.flip(-1))  # fmt: skip


def other_ok(flip_prob=0.0, **limits) -> list[bool]:
    data = FaceLatentDataset(pairs(), flip_prob=flip_prob, other_photo=True, **limits)
    return data.batch(torch.arange(6), 0)["other_ok"].tolist()


def test_pairs_beyond_the_pose_or_the_distance_limit_get_no_feedback():
    assert other_ok(other_max_pose=10) == [False, False, True, True, True, True]
    assert other_ok(other_max_distance=0.5) == [True, True, False, False, True, True]
    assert other_ok(other_max_pose=10, other_max_distance=0.5) == [False, False, False, False, True, True]
    assert other_ok(other_max_pose=25, other_max_distance=2.0) == [True] * 6


def test_mirroring_does_not_change_which_pairs_pass():
    assert other_ok(1.0, other_max_pose=10) == other_ok(0.0, other_max_pose=10)
    assert other_ok(1.0, other_max_pose=10, other_max_distance=0.5) == [False, False, False, False, True, True]


def test_no_limits_give_todays_batches():
    data = pairs()
    data.ref_candidates[5] = np.array([5])  # a person with one photo: never judged
    today = FaceLatentDataset(data, seed=3, flip_prob=0.5, other_photo=True).batch(torch.arange(6), 2)
    limited = FaceLatentDataset(data, seed=3, flip_prob=0.5, other_photo=True, other_max_pose=1e9,
                                other_max_distance=1e9).batch(torch.arange(6), 2)  # fmt: skip
    assert today["other_ok"].tolist() == [True] * 5 + [False]
    for key in ("latents", "mask", "other_latents", "other_ok"):
        assert torch.equal(today[key], limited[key]), key
    for key in today["cond"]:
        assert torch.equal(today["cond"][key], limited["cond"][key]), key


@pytest.mark.parametrize("limits", [{"other_max_pose": -1.0}, {"other_max_distance": -0.1}])
def test_negative_limits_are_refused(limits):
    with pytest.raises(MienError, match="must be >= 0"):
        FaceLatentDataset(pairs(), other_photo=True, **limits)
