"""Swap into a scene photo (`mien generate --into`, mien.edit.Editor.swap): mechanics on tiny random
components; the CLI's bad-input contract with the model loader refused (tests/test_generate_cli.py)."""

import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import tiny_aligned
from test_generate_cli import EX, generate, no_model_load, photos  # noqa: F401 - fixtures

from mien.cli.analyze import example_path
from mien.cli.main import main
from mien.edit import Editor
from mien.errors import MienError, NoFaceError
from mien.expression.targets import ExpressionRequest, parse_request
from mien.io.image import load_rgb
from mien.settings import GenerationSettings as S


@pytest.fixture(scope="module")
def photo():
    return load_rgb(example_path())  # a London Set photo (CC BY 4.0, see the README)


def scene_of(editor, rgb):
    return editor.subject([rgb], tiny_aligned(rgb))


@contextmanager
def conditions_seen(editor, *keys):
    """Each model call's conditions ``keys`` (cloned), in a list filled while the block runs."""
    seen, model = [], editor.pipeline.model
    original = model.velocity

    def spy(x, t, cond, **kw):
        seen.append({k: cond[k].clone() for k in keys})
        return original(x, t, cond, **kw)

    model.velocity = spy
    try:
        yield seen
    finally:
        del model.velocity


def test_swapping_a_person_into_their_own_photo_with_its_own_expression_returns_the_scene(editor, photo):
    """Selfie = scene photo (prepared separately) and no expression asked: source and target rows are
    the same person and expression, so FlowEdit's velocity difference is zero and nothing moves."""
    subject, scene = scene_of(editor, photo), scene_of(editor, photo)
    plain = S(steps=4, recogniser_guidance=0)
    result = editor.edit(subject, editor.scene_request(None, scene), plain, n=2, seed=1, into=scene)
    start = scene.identity.latent
    for z in result.generation.latents:  # the edit's latents (TAEF2's): the scene face's own, to float rounding
        assert torch.allclose(z, start, atol=1e-5)
    assert np.array_equal(result.photos[0][:20, :20], photo[:20, :20])
    # with the default recogniser guidance (toward the selfie, here the scene's own person) the only move is
    # its bounded critic step: RMS at most scale x the flow time it acts over (mien.guidance.gradient)
    guided = editor.edit(subject, editor.scene_request(ExpressionRequest(), scene), S(steps=10), seed=1, into=scene)
    assert guided.metadata[0]["request"] == "the scene face's own expression"  # no reference photo to be like
    s = guided.generation.settings
    norm = editor.pipeline.model.normalize
    rms = (norm(guided.generation.latents[:1]) - norm(start[None])).pow(2).mean().sqrt()
    assert rms <= s.recogniser_guidance * s.recogniser_guidance_until + 1e-4, rms


def test_a_plain_swap_is_described_as_its_dry_run_describes_it(editor, photo, no_model_load, capsys):
    """A swap asking no expression saved "like reference" in its metadata and on its sheet, with no reference
    photo anywhere, while the dry run said it keeps the scene face's own expression; both say the latter."""
    assert main(["generate", "--identity", EX, "--into", EX, "--dry-run"]) == 0
    said = json.loads(capsys.readouterr().out)["request"]
    subject, scene = scene_of(editor, photo), scene_of(editor, photo)
    for request in (None, parse_request(None, 0.5)):  # none, or only an --intensity
        result = editor.edit(subject, editor.scene_request(request, scene), S(steps=1, recogniser_guidance=0),
                             seed=0, into=scene)  # fmt: skip
        assert result.metadata[0]["request"] == said == "the scene face's own expression"
    asked = editor.scene_request(parse_request("happy"), scene)  # an expression asked for is named as before
    assert asked.describe() == "happy 1.00"


def test_a_swap_moves_the_scene_face_toward_the_selfie_and_keeps_the_scene_outside_it(editor, photo):
    """Another person (the photo mirrored and recoloured: another identity vector and reference) put in: the
    face changes, the scene photo away from the face box stays exactly as it was, and the target rows are
    conditioned on the selfie while the source rows keep the scene's."""
    other = np.ascontiguousarray(photo[:, ::-1, ::-1])
    subject, scene = scene_of(editor, other), scene_of(editor, photo)
    with conditions_seen(editor, "identity", "reference") as seen:
        result = editor.edit(subject, parse_request("happy"), S(steps=3, recogniser_guidance=0), seed=0, into=scene)
    ident = seen[0]["identity"]
    assert torch.allclose(ident[0], scene.identity.vector) and torch.allclose(ident[1], subject.identity.vector)
    assert torch.equal(seen[0]["reference"][0], scene.identity.latent)
    assert torch.equal(seen[0]["reference"][1], subject.identity.latent)
    assert (result.generation.latents[0] - scene.identity.latent).abs().mean() > 1e-3  # the face moved
    assert result.photos[0].shape == photo.shape and np.array_equal(result.photos[0][:20, :20], photo[:20, :20])
    assert result.scene is scene and result.metadata[0]["into_face"] == 0


@pytest.mark.parametrize("reference", ["none", "scene"])
def test_swap_reference_sets_the_target_rows_reference_and_leaves_the_source_rows_alone(editor, photo, reference):
    other = np.ascontiguousarray(photo[:, ::-1, ::-1])
    subject, scene = scene_of(editor, other), scene_of(editor, photo)
    with conditions_seen(editor, "reference") as seen:
        result = editor.edit(subject, parse_request("happy"), S(steps=2, recogniser_guidance=0, guidance_identity=1.0,
                                                                swap_reference=reference), into=scene)  # fmt: skip
    source, target = seen[0]["reference"]
    assert torch.equal(source, scene.identity.latent)
    wanted = torch.zeros_like(source) if reference == "none" else scene.identity.latent
    assert torch.equal(target, wanted)
    assert result.generation.settings.swap_reference == reference
    with pytest.raises(MienError, match=f"--swap-reference {reference} works with --into"):
        editor.edit(subject, parse_request("happy"), S(steps=1, swap_reference=reference))


def test_contrast_guidance_in_a_swap_contrasts_expressions_at_the_selfie_identity(editor, photo):
    other = np.ascontiguousarray(photo[:, ::-1, ::-1])
    subject, scene = scene_of(editor, other), scene_of(editor, photo)
    with conditions_seen(editor, "identity") as seen:
        editor.edit(subject, parse_request("sad"), S(steps=1, recogniser_guidance=0, guidance_contrast=2.0,
                                                     guidance_identity=1.0), into=scene)
    rows = seen[0]["identity"]  # source, target, negative
    assert rows.shape[0] == 3 and torch.allclose(rows[0], scene.identity.vector)
    assert torch.allclose(rows[1], subject.identity.vector) and torch.allclose(rows[2], subject.identity.vector)


def test_a_swap_resolves_unset_settings_to_the_swap_defaults_and_an_edit_does_not(editor, photo):
    from mien.settings import SWAP_DEFAULTS

    other = np.ascontiguousarray(photo[:, ::-1, ::-1])
    subject, scene = scene_of(editor, other), scene_of(editor, photo)
    quick = S(steps=1, recogniser_guidance=0)
    swapped = editor.edit(subject, parse_request("surprised"), quick, into=scene).generation.settings
    edited = editor.edit(subject, parse_request("surprised"), quick).generation.settings
    for name, value in SWAP_DEFAULTS.items():
        assert getattr(swapped, name) == value
    assert edited.guidance_identity == 1.0 and edited.descriptor_guidance == 0.0 and edited.guidance_contrast == 1.0
    happy = editor.edit(subject, parse_request("happy"), quick, into=scene).generation.settings
    assert happy.guidance_contrast == 1.0  # no contrast floor on happy (mien.settings.SWAP_DEFAULTS)


def test_a_swaps_target_rows_take_the_swap_target_and_an_edits_the_edit_target(editor, photo):
    from mien.expression.basic import SWAP_LABEL_AUS
    from mien.expression.targets import blendshape_target

    label = next(iter(SWAP_LABEL_AUS))
    other = np.ascontiguousarray(photo[:, ::-1, ::-1])
    subject, scene = scene_of(editor, other), scene_of(editor, photo)
    pipe, quick = editor.pipeline, S(steps=1, recogniser_guidance=0, blendshape_guidance=0, guidance_contrast=1.0)
    want = {swap: torch.from_numpy(blendshape_target(parse_request(label), pipe.prototypes, pipe.calibration,
                                                     swap=swap)).float() for swap in (False, True)}  # fmt: skip
    assert not torch.allclose(want[False], want[True])
    for swap in (False, True):
        with conditions_seen(editor, "expression") as seen:
            editor.edit(subject, parse_request(label), quick, into=scene if swap else None)
        target_row = seen[0]["expression"][1, :52]  # rows: source, target
        assert torch.allclose(target_row, want[swap], atol=1e-6), swap


def test_a_scene_without_a_face_is_a_one_line_error(editor, photo):
    with pytest.raises(NoFaceError, match=r"^party.jpg \(the scene to swap into\): no face found") as e:
        editor.swap(scene_of(editor, photo), photo, name="party.jpg")  # the tiny pipeline's landmarker finds none
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("settings, words", [(S(method="sdedit"), "drop --method sdedit"),
                                             (S(keep="none"), "drop --keep none")])
def test_a_swap_refuses_settings_that_would_redraw_the_scene(editor, photo, settings, words):
    from mien.errors import MienError

    with pytest.raises(MienError, match=words):
        editor.edit(scene_of(editor, photo), parse_request("happy"), settings, into=scene_of(editor, photo))


# --- the command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--method", "sdedit"], "--into swaps by a FlowEdit"),
    (["--keep", "none"], "--into keeps the scene photo outside the face"),
    (["--face", "-1"], "--face -1 must be 0"),
])
def test_into_with_options_it_cannot_take(generate, args, words):  # noqa: F811
    msg = generate("--identity", EX, "--into", EX, *args)
    assert words in msg, msg


@pytest.mark.shared
def test_face_without_into_picks_the_identity_photos_face(generate):  # noqa: F811
    msg = generate("--identity", EX, "--face", "1", "--expression", "happy")
    assert "face 1 asked for, but only 1 found" in msg and "\n" not in msg.strip()


def test_missing_scene_photo(generate, photos):  # noqa: F811
    msg = generate("--identity", EX, "--into", str(photos / "nope.jpg"))
    assert "nope.jpg" in msg and "no such file" in msg


@pytest.mark.shared
def test_scene_without_a_face_is_found_before_the_model_loads(shared_dir, generate, photos):  # noqa: F811
    msg = generate("--identity", EX, "--into", str(photos / "blank.png"))
    assert msg.startswith(f"--into {photos / 'blank.png'} (the scene to swap into): no face found"), msg


@pytest.mark.shared
def test_selfie_without_a_face_is_found_before_the_model_loads(shared_dir, generate, photos):  # noqa: F811
    msg = generate("--identity", str(photos / "blank.png"), "--into", EX)
    assert "no usable face" in msg and "blank.png" in msg


def test_a_swap_pastes_the_face_itself_unless_told_otherwise():
    from types import SimpleNamespace

    from mien.cli.generate import paste_for

    assert paste_for(SimpleNamespace(paste_with=None, into=None)) == "detail"
    assert paste_for(SimpleNamespace(paste_with=None, into="scene.jpg")) == "crop"
    assert paste_for(SimpleNamespace(paste_with="detail", into="scene.jpg")) == "detail"


def test_a_two_stage_swaps_second_stage_is_an_edit_of_the_first_stages_face_as_the_selfies_person(editor, photo):
    """scripts/tune_swap.py's restage (docs/swap.md, "Two-stage swap: tuning"): every row of stage 2 is the selfie's
    person (no scene person, no identity guidance's nulled rows: the settings resolve as an edit's, not the swap's
    identity guidance 3) with the stage-1 face as the spatial reference, and it starts from that face."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "tune_swap.py"
    spec = importlib.util.spec_from_file_location("tune_swap", path)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    other = np.ascontiguousarray(photo[:, ::-1, ::-1])
    subject, scene = scene_of(editor, other), scene_of(editor, photo)
    plain = S(steps=2, recogniser_guidance=0)
    first = editor.edit(subject, editor.scene_request(None, scene), plain, into=scene, paste=False)
    assert not torch.equal(first.generation.latents[0], scene.identity.latent)  # stage 1 moved the face
    with conditions_seen(editor, "identity", "reference") as seen:
        crop = tune.restage(editor, subject, first, parse_request("fearful"), plain)
    assert seen and crop.shape == (128, 128, 3)
    for call in seen:
        assert all(torch.allclose(row, subject.identity.vector) for row in call["identity"])
        assert all(torch.equal(row, first.generation.latents[0]) for row in call["reference"])
    with conditions_seen(editor, "identity") as swap_rows:  # the swap's own settings on the same face: nulled rows
        editor.edit(subject, parse_request("fearful"), plain, into=scene, paste=False)
    assert not all(torch.allclose(row, subject.identity.vector) for call in swap_rows for row in call["identity"])

