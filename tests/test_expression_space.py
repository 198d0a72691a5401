"""The basic-expression prototypes (mien.expression.basic): what the fit recovers and what ships."""

import numpy as np
import pytest

from mien.errors import MienError
from mien.expression.basic import BASIC, GAIN, NO_SMILE, SMILE_INDICES, Prototypes, display_spread, fit_prototypes


def _posed(seed=0, performers=4):
    """Synthetic posed faces: each performer's resting face plus x * D_true[label], x from the rating."""
    rng = np.random.default_rng(seed)
    true = {lab: rng.uniform(-0.1, 0.3, 52) for lab in BASIC[1:]}
    rest = rng.uniform(0.0, 0.2, (performers, 52))
    bs, label, performer, rating = [], [], [], []
    for p in range(performers):
        for _ in range(2):
            bs.append(rest[p])
            label.append("neutral"), performer.append(p), rating.append(np.nan)
        for lab in BASIC[1:]:
            for r in (2.0, 3.0, 4.5, 5.0, 6.0, 6.0):  # a third at the top: 95th percentile = 6, no clipping
                bs.append(rest[p] + (r / 6.0) * true[lab])  # rating 6 = full display
                label.append(lab), performer.append(p), rating.append(r)
    arrays = np.array(bs), np.array(label), np.array(performer), np.array(rating)
    return arrays, true


def test_fit_recovers_the_movement_not_the_resting_face():
    (bs, label, performer, rating), true = _posed()
    protos = fit_prototypes(bs, label, performer, rating, "synthetic", gain={})
    for lab in BASIC[1:]:
        assert protos.intensity_scale[lab] == 6.0  # intensity 1 = the 95th-percentile rating
        want = np.array(true[lab])
        if lab in NO_SMILE:
            want[list(SMILE_INDICES)] = np.minimum(want[list(SMILE_INDICES)], 0.0)
        np.testing.assert_allclose(protos.displacement[lab], want, atol=2e-6, err_msg=lab)
    assert protos.gain == {}


def test_gain_scales_only_its_labels_and_is_recorded():
    arrays, _ = _posed()
    plain = fit_prototypes(*arrays, "synthetic", gain={})
    gained = fit_prototypes(*arrays, "synthetic", gain={"angry": 2.0})
    np.testing.assert_allclose(gained.displacement["angry"], 2 * np.array(plain.displacement["angry"]), atol=2e-6)
    for lab in set(BASIC[1:]) - {"angry"}:
        assert gained.displacement[lab] == plain.displacement[lab]
    assert gained.gain == {"angry": 2.0}
    assert fit_prototypes(*arrays, "synthetic").gain == GAIN  # the default


def test_shipped_prototypes_carry_the_documented_gains():
    protos = Prototypes.load()
    assert protos.gain == GAIN
    with pytest.raises(MienError, match="out of range"):
        protos.target({"angry": 1.5})  # the gain is inside intensity 1, not an intensity above it


def test_display_spread_sees_opposite_displays_cancel():
    rest = np.full(52, 0.2)
    move = np.zeros(52)
    move[3] = 0.3
    bs = np.stack([rest, rest + move, rest - move] * 2)  # two performers, two opposite "angry" displays
    label = np.array(["neutral", "angry", "angry"] * 2)
    performer = np.array([0, 0, 0, 1, 1, 1])
    mean_len, len_mean = display_spread(bs, label, performer)["angry"]
    assert mean_len == pytest.approx(0.0, abs=1e-12) and len_mean == pytest.approx(0.3)


def test_label_aus_are_set_after_the_movement_scaled_by_intensity_and_requested_aus_win():
    from mien.expression.aus import AU_NAMES, AUCalibration, blendshapes_to_aus
    from mien.expression.basic import LABEL_AUS
    from mien.expression.targets import ExpressionRequest, blendshape_target

    protos, calib = Prototypes.load(), AUCalibration.load()
    au = lambda bs: dict(zip(AU_NAMES, blendshapes_to_aus(bs, calib)))  # noqa: E731
    for x in (1.0, 0.5):
        got = au(blendshape_target(ExpressionRequest(mix={"surprised": 1.0}, intensity=x), protos, calib))
        for name, level in LABEL_AUS["surprised"].items():
            # each blendshape is set on its own quantiles and the AU reads their mean: <= 0.15 off
            assert got[name] == pytest.approx(level * x, abs=0.2), (name, x)
    # the user's AUs come last: asking surprised with a closed jaw gives a closed jaw
    closed = au(blendshape_target(ExpressionRequest(mix={"surprised": 1.0}, aus={"AU26": 0.0}), protos, calib))
    assert closed["AU26"] == pytest.approx(0.0, abs=0.05) and closed["AU1"] == pytest.approx(3.0, abs=0.2)
    # labels without prototype AUs are untouched by them
    plain = blendshape_target(ExpressionRequest(mix={"fearful": 1.0}), protos, calib)
    want = np.clip(np.asarray(protos.neutral) + np.asarray(protos.displacement["fearful"]), 0, 1)
    np.testing.assert_allclose(plain, want)


def test_swap_label_aus_change_only_a_swaps_target_and_only_their_blendshapes():
    from mien.expression.aus import AUCalibration, control_blendshapes
    from mien.expression.basic import SWAP_LABEL_AUS
    from mien.expression.targets import ExpressionRequest, blendshape_target
    from mien.face.blendshape_names import BLENDSHAPE_NAMES

    protos, calib = Prototypes.load(), AUCalibration.load()

    def levels_set(bs, aus, scale):  # each AU's blendshapes at the inverse map of its level (mien.expression.aus)
        for name, level in aus.items():
            for b in control_blendshapes(name):
                want = calib.bs_rest[b] + level * scale / 5 * (calib.bs_high[b] - calib.bs_rest[b])
                assert bs[BLENDSHAPE_NAMES.index(b)] == pytest.approx(min(max(want, 0.0), 1.0), abs=1e-6), (name, b)

    for label, aus in SWAP_LABEL_AUS.items():
        req = ExpressionRequest(mix={label: 1.0})
        edit, swap = blendshape_target(req, protos, calib), blendshape_target(req, protos, calib, swap=True)
        touched = {BLENDSHAPE_NAMES.index(b) for name in aus for b in control_blendshapes(name)}
        moved = set(np.flatnonzero(np.abs(swap - edit) > 1e-9))
        assert moved and moved <= touched, (label, moved - touched)
        levels_set(swap, aus, 1.0)
        levels_set(blendshape_target(ExpressionRequest(mix={label: 1.0}, intensity=0.5), protos, calib, swap=True),
                   aus, 0.5)  # scaled by the intensity, as LABEL_AUS are
        asked = {n: 4.0 for n in aus}  # requested AUs still come last
        levels_set(blendshape_target(ExpressionRequest(mix={label: 1.0}, aus=asked), protos, calib, swap=True),
                   asked, 1.0)
        none = ExpressionRequest(mix={label: 1.0}, intensity=0.0)  # not asked for: the edit's (neutral) target
        np.testing.assert_array_equal(blendshape_target(none, protos, calib, swap=True),
                                      blendshape_target(none, protos, calib))
    others = ExpressionRequest(mix={lab: 1.0 for lab in ("sad", "surprised") if lab not in SWAP_LABEL_AUS})
    np.testing.assert_array_equal(blendshape_target(others, protos, calib),
                                  blendshape_target(others, protos, calib, swap=True))


def test_label_policy_takes_the_strongest_label_asked_for():
    from mien.settings import LABEL_POLICY, label_value

    assert "happy" not in LABEL_POLICY and "surprised" not in LABEL_POLICY
    assert label_value({"happy": 1.0}, "guidance_contrast") == 1.0
    assert label_value({}, "guidance_contrast") == 1.0
    assert label_value({"angry": 0.5}, "guidance_contrast") == LABEL_POLICY["angry"]["guidance_contrast"]
    assert label_value({"happy": 0.6, "sad": 0.4}, "guidance_contrast") == LABEL_POLICY["sad"]["guidance_contrast"]
    assert label_value({"angry": 0.0, "happy": 1.0}, "guidance_contrast") == 1.0
    assert label_value({"angry": 1.0}, "blendshape_guidance") == 0.0  # angry lists no blendshape guidance
    assert label_value({"angry": 1.0, "fearful": 0.2}, "blendshape_guidance") == 1.0
