"""MienPipeline end to end: tiny random components for the mechanics (no ../shared), the shipped model
and the shared face models for behaviour (``shared_dir``).
"""

import contextlib
import json

import numpy as np
import pytest
import torch

from conftest import tiny_aligned, tiny_components_pipeline

from mien.builtin import MienModel, ModelConfig
from mien.cli.analyze import example_path
from mien.expression.targets import ExpressionRequest
from mien.io.image import load_rgb
from mien.pipeline import MienPipeline
from mien.settings import GenerationSettings as S


@contextlib.contextmanager
def awake(pipe):
    """A random tiny model starts its stream attention and expression projections at zero, so it ignores the
    expression and the identity: inside the block those weights are random, after it the model is as it was."""
    saved = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    try:
        with torch.no_grad():
            for p in pipe.model.parameters():
                if not p.any():
                    p.normal_(0, 0.5)
        yield
    finally:
        pipe.model.load_state_dict(saved)


@pytest.fixture(scope="module")
def photo():
    return load_rgb(example_path())  # a London Set photo (CC BY 4.0, see the README)


@pytest.fixture(scope="module")
def tiny_pipe():
    pipe = tiny_components_pipeline()  # tiny random nets: no ../shared
    yield pipe
    pipe.close()


def test_tiny_model_end_to_end_is_seeded_and_uses_the_identity_photo(tiny_pipe, photo):
    ident = tiny_pipe.identity_input(tiny_aligned(photo))
    assert ident.latent is not None and ident.latent.shape == (32, 16, 16)
    req = ExpressionRequest(mix={"happy": 1.0})
    # sdedit from noise: the seed decides everything (the default flowedit returns the photo itself
    # when, as here, the random model ignores the expression; see the flowedit test below)
    a = tiny_pipe(ident, req, S(steps=3, method="sdedit", strength=1.0), n=2, seed=7)
    b = tiny_pipe(ident, req, S(steps=3, method="sdedit", strength=1.0), n=1, seed=8)
    assert a.seeds == [7, 8] and a.images[0].dtype == np.uint8 and a.images[0].shape == (128, 128, 3)
    # image k of a batch is seed + k on its own (up to batch-size-dependent float rounding)
    assert np.abs(a.images[1].astype(int) - b.images[0].astype(int)).max() <= 2
    assert not np.array_equal(a.images[0], a.images[1])
    assert a.model_hash == tiny_pipe.model_hash and a.metadata(7)["model_hash"] == tiny_pipe.model_hash


def test_unknown_sampler_is_a_one_line_error(tiny_pipe, photo):
    from mien.errors import MienError

    with pytest.raises(MienError, match="unknown sampler"):
        tiny_pipe(tiny_pipe.identity_input(tiny_aligned(photo)), ExpressionRequest(mix={"happy": 1.0}), S(sampler="ddim"))


@pytest.fixture(scope="module")
def shipped(shared_dir):
    pipe = MienPipeline.from_pretrained()
    yield pipe
    pipe.close()


def test_shipped_model_makes_a_detectable_face_with_the_requested_smile(shipped, photo):
    """The shipped model on a London photo: a face is found in the outputs, and asking for 'happy'
    smiles more than asking for 'neutral' from the same noise (MediaPipe mouthSmile blendshapes)."""
    from mien.models.blendshapes import BLENDSHAPE_NAMES

    ident = shipped.prepare_identity([photo])
    own = shipped.taef2.decode(ident.latent[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255

    def corner_error(im):  # mean abs difference of the two top 16 px corners, in levels
        return np.abs(np.concatenate([im[:16, :16], im[:16, -16:]]).astype(float)
                      - np.concatenate([own[:16, :16], own[:16, -16:]])).mean()

    @torch.no_grad()
    def identity_cosine(im):  # face-api descriptor of an output against the identity photo's condition
        x = torch.from_numpy(im[None]).permute(0, 3, 1, 2).float()
        return float(torch.nn.functional.normalize(shipped.identity.condition(x), dim=1)[0] @ ident.vector)

    smile = [BLENDSHAPE_NAMES.index(n) for n in ("mouthSmileLeft", "mouthSmileRight")]
    scores, outputs = {}, {}
    for label in ("neutral", "happy"):
        out = outputs[label] = shipped(ident, ExpressionRequest(mix={label: 1.0}), n=2, seed=0)
        faces = [shipped.landmarker.detect(im) for im in out.images]
        assert all(faces), f"no face found in a '{label}' output"
        scores[label] = np.mean([f[0].blendshapes[smile].mean() for f in faces])
        # the default edit keeps the photo outside the face: the top corners stay near its TAEF2 round
        # trip (not exactly: the decoder sees the whole latent grid, face included)
        for im in out.images:
            assert corner_error(im) < 8
    drawn = shipped(ident, ExpressionRequest(mix={"happy": 1.0}), S(strength=1.0, keep="none", method="sdedit")).images[0]
    assert corner_error(drawn) > 15
    assert scores["happy"] > scores["neutral"] + 0.2, scores
    # the default (flowedit) keeps the person: closer to the photo's identity than drawing anew
    assert min(identity_cosine(im) for im in outputs["happy"].images) > identity_cosine(drawn)


def test_shipped_model_config_is_the_documented_one():
    from mien.pipeline import default_model_dir

    cfg = json.loads((default_model_dir() / "config.json").read_text())
    assert cfg["reference"] is True and cfg["unet"]["in_channels"] == 64
    assert (default_model_dir() / "model.safetensors").stat().st_size <= 32 * 2**20


# --- editing the identity photo (mien.editing, mien.regions) -----------------------------------------------

def test_edit_pieces_do_what_they_say():
    from mien import editing, regions

    m = regions.keep_mask("background")[0, 0]
    y0, y1, x0, x1 = regions.FACE_BOX
    assert m[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].max() == 0 and m[0].min() == 1 and m[:, 0].min() == 1
    assert regions.keep_mask("none").max() == 0
    from mien.sampling import flow_sigmas

    s = flow_sigmas(10, start=0.8)
    assert len(s) == 11 and s[0] == pytest.approx(0.8 / 0.2) and s[-1] == 0 and (s[1:] < s[:-1]).all()
    x0_ = torch.randn(2, 32, 16, 16)
    mask = regions.keep_mask("background")
    blended = editing.kept_region_denoiser(lambda x, sigma: torch.zeros_like(x), x0_, mask)(x0_ * 3, 1.0)
    assert torch.equal(blended, mask * x0_)  # the photo where kept, the denoiser's estimate elsewhere


def test_kept_background_comes_from_the_identity_photo(tiny_pipe, photo):
    """Behaviour of sdedit, on a random tiny model: with keep='background' the latent outside the face box is
    the identity photo's, exactly; drawn from noise it is not; a weaker start stays nearer the photo.
    (Checked on latents: TAEF2's decoder sees the whole 16x16 grid, so a random model's wild face
    region reaches every pixel; the shipped-model test below checks pixels.)"""
    from mien import editing, regions

    ident = tiny_pipe.identity_input(tiny_aligned(photo))
    kept_cells = regions.keep_mask("background")[0, 0] == 1
    req = ExpressionRequest(mix={"happy": 1.0})

    def outside_error(z):
        return (z[:, :, kept_cells] - ident.latent[:, kept_cells]).abs().max().item()

    kept = tiny_pipe(ident, req, S(steps=4, strength=1.0, keep="background", method="sdedit"), n=2, seed=1)
    drawn = tiny_pipe(ident, req, S(steps=4, strength=1.0, keep="none", method="sdedit"), n=2, seed=1)
    assert outside_error(kept.latents) < 1e-4 < 0.1 < outside_error(drawn.latents)
    assert kept.settings.keep == "background" and kept.settings.strength == 1.0

    def distance(z):
        return (z - ident.latent).pow(2).mean().sqrt().item()

    weak = tiny_pipe(ident, req, S(steps=4, strength=0.2, keep="none", method="sdedit"), n=1, seed=1).latents
    strong = tiny_pipe(ident, req, S(steps=4, strength=0.9, keep="none", method="sdedit"), n=1, seed=1).latents
    assert distance(weak) < distance(strong)


def test_flowedit_to_the_photos_own_expression_returns_the_photo(tiny_pipe, photo):
    """Behaviour, on a random tiny model: FlowEdit moves the photo by the difference of the model's
    predictions for the requested and the photo's own expression, so asking for exactly the photo's own
    expression returns its latent unchanged, however poor the model; another request moves it, but
    never outside the kept background."""
    from mien import editing, regions

    ident = tiny_pipe.identity_input(tiny_aligned(photo))
    own = ExpressionRequest(like=ident.blendshapes)  # one photo: its blendshapes and pose
    same = tiny_pipe(ident, own, S(steps=5, method="flowedit", strength=1.0, keep="none", recogniser_guidance=0.0), n=2, seed=3)  # FlowEdit alone (the guidance moves the face: test below)
    assert same.settings.method == "flowedit"
    torch.testing.assert_close(same.latents, ident.latent[None].expand(2, -1, -1, -1), atol=1e-5, rtol=0)
    with awake(tiny_pipe):
        moved = tiny_pipe(ident, ExpressionRequest(mix={"surprised": 1.0}), S(steps=5, method="flowedit", strength=1.0, keep="background"), n=1, seed=3).latents[0]
    kept_cells = regions.keep_mask("background")[0, 0] == 1
    assert (moved - ident.latent)[:, ~kept_cells].abs().max() > 0.05
    assert (moved - ident.latent)[:, kept_cells].abs().max() < 1e-4


def test_recogniser_guidance_moves_the_face_toward_the_person_and_only_with_flowedit(tiny_pipe, photo):
    """Behaviour, on a random tiny model: asked for the photo's own expression, FlowEdit alone returns
    the photo; with recogniser guidance at every step the face box moves (up MobileFaceNet's similarity
    to the photos, tests/test_recogniser_guidance.py) and the background stays the photo's. sdedit
    ignores it and records 0."""
    from mien import editing, regions

    ident = tiny_pipe.identity_input(tiny_aligned(photo))
    assert ident.embedding is not None and ident.embedding.shape == (192,)
    own = ExpressionRequest(like=ident.blendshapes)
    off = tiny_pipe(ident, own, S(steps=4, recogniser_guidance=0.0), n=1, seed=3)
    on = tiny_pipe(ident, own, S(steps=4, recogniser_guidance=1.0, recogniser_guidance_until=1.0), n=1, seed=3)
    assert on.settings.recogniser_guidance == 1.0 and off.settings.recogniser_guidance == 0.0
    kept_cells = regions.keep_mask("background")[0, 0] == 1
    moved = on.latents[0] - off.latents[0]
    assert moved[:, ~kept_cells].abs().max() > 0.01 and moved[:, kept_cells].abs().max() < 1e-4
    sd = tiny_pipe(ident, own, S(steps=2, method="sdedit"), n=1, seed=3)
    assert sd.settings.recogniser_guidance == 0.0
    from mien.errors import MienError

    with pytest.raises(MienError, match="works with --method flowedit"):  # asked for explicitly: an error, not ignored
        tiny_pipe(ident, own, S(steps=2, method="sdedit", recogniser_guidance=1.0), n=1, seed=3)


def test_critic_precision_changes_nothing_without_critic_guidance(tiny_pipe, photo):
    """With no critic guidance on, --critic-precision changes not a thing; with it on, it is recorded."""
    ident = tiny_pipe.identity_input(tiny_aligned(photo))
    own = ExpressionRequest(like=ident.blendshapes)
    plain = dict(steps=4, recogniser_guidance=0.0)
    off = tiny_pipe(ident, own, S(**plain), n=1, seed=3).latents
    off_bf16 = tiny_pipe(ident, own, S(**plain, critic_precision="bfloat16"), n=1, seed=3).latents
    assert torch.equal(off, off_bf16)
    guided = dict(steps=4, recogniser_guidance=1.0, recogniser_guidance_until=1.0, critic_precision="float32")
    assert tiny_pipe(ident, own, S(**guided), n=1, seed=3).settings.critic_precision == "float32"


def test_blendshape_guidance_moves_only_the_face_with_flowedit_and_is_recorded(tiny_pipe, photo):
    """Behaviour, on a random tiny model: asked for the photo's own expression, FlowEdit alone returns the
    photo; with blendshape guidance at every step toward another expression the face box moves and the
    background stays the photo's; off by default; sdedit refuses it."""
    from mien import editing, regions
    from mien.errors import MienError

    ident = tiny_pipe.identity_input(tiny_aligned(photo))
    own = ExpressionRequest(like=ident.blendshapes, aus={"AU26": 4.0})  # the photo's own, jaw dropped
    kw = dict(steps=4, recogniser_guidance=0.0)
    off = tiny_pipe(ident, own, S(**kw), n=1, seed=3)
    assert off.settings.blendshape_guidance == 0.0
    on = tiny_pipe(ident, own, S(blendshape_guidance=1.0, blendshape_guidance_until=1.0, **kw), n=1, seed=3)
    assert on.settings.blendshape_guidance == 1.0 and on.settings.blendshape_guidance_until == 1.0
    kept_cells = regions.keep_mask("background")[0, 0] == 1
    moved = on.latents[0] - off.latents[0]
    assert moved[:, ~kept_cells].abs().max() > 0.01 and moved[:, kept_cells].abs().max() < 1e-4
    with pytest.raises(MienError, match="works with --method flowedit"):
        tiny_pipe(ident, own, S(steps=2, method="sdedit", blendshape_guidance=1.0), n=1, seed=3)
    # per label by default: fearful takes it (LABEL_POLICY), happy does not, sdedit never
    kw = dict(steps=2, recogniser_guidance=0.0)
    assert tiny_pipe(ident, ExpressionRequest(mix={"fearful": 1.0}), S(**kw), n=1, seed=3).settings.blendshape_guidance == 1.0
    assert tiny_pipe(ident, ExpressionRequest(mix={"happy": 1.0}), S(**kw), n=1, seed=3).settings.blendshape_guidance == 0.0
    assert tiny_pipe(ident, ExpressionRequest(mix={"fearful": 1.0}), S(method="sdedit", steps=2), n=1, seed=3).settings.blendshape_guidance == 0.0


def test_blendshape_guidance_loads_and_runs_under_inference_mode(shared_dir, photo, tmp_path):
    """A caller may load and run the pipeline under torch.inference_mode (scripts/bench_generate_cpu.py does);
    the guidance's nets, loaded there, must still let gradients through (the bench found they did not)."""
    torch.manual_seed(0)
    MienModel(ModelConfig.from_preset("tiny", reference=True)).save_pretrained(tmp_path)
    with torch.inference_mode():
        pipe = MienPipeline.from_pretrained(tmp_path)
        ident = pipe.prepare_identity([photo])
        out = pipe(ident, ExpressionRequest(mix={"fearful": 1.0}), S(steps=2, recogniser_guidance=0.0, blendshape_guidance_until=1.0), n=1, seed=0)
    assert out.settings.blendshape_guidance == 1.0 and out.latents.isfinite().all()
    pipe.close()


def test_contrast_guidance_follows_the_labels_and_pushes_only_what_the_request_changes(tiny_pipe, photo):
    """Per-label default (LABEL_POLICY): angry is pushed, happy is not; an explicit scale wins; sdedit
    takes none. Asked for the photo's own expression, the push is zero (the two predictions agree), so
    the output equals the unguided edit; asked for another, it differs."""
    from mien.errors import MienError
    from mien.settings import RECOGNISER_GUIDANCE, RECOGNISER_GUIDANCE_WITH_CONTRAST

    ident = tiny_pipe.identity_input(tiny_aligned(photo))
    kw = dict(steps=3, recogniser_guidance=0.0)
    assert tiny_pipe(ident, ExpressionRequest(mix={"angry": 1.0}), S(**kw), n=1, seed=3).settings.guidance_contrast == 1.5
    assert tiny_pipe(ident, ExpressionRequest(mix={"happy": 1.0}), S(**kw), n=1, seed=3).settings.guidance_contrast == 1.0
    # left at its default, recogniser guidance is larger on the contrast-guided requests
    rg = {lab: tiny_pipe(ident, ExpressionRequest(mix={lab: 1.0}), S(steps=2), n=1, seed=3).settings.recogniser_guidance
          for lab in ("angry", "happy")}  # fmt: skip
    assert rg == {"angry": RECOGNISER_GUIDANCE_WITH_CONTRAST, "happy": RECOGNISER_GUIDANCE}
    assert tiny_pipe(ident, ExpressionRequest(mix={"angry": 1.0}), S(guidance_contrast=1.0, **kw), n=1, seed=3).settings.guidance_contrast == 1.0
    with awake(tiny_pipe):
        own = ExpressionRequest(like=ident.blendshapes)
        a = tiny_pipe(ident, own, S(guidance_contrast=1.0, **kw), n=1, seed=3).latents[0]
        b = tiny_pipe(ident, own, S(guidance_contrast=3.0, **kw), n=1, seed=3).latents[0]
        assert (a - b).abs().max() < 1e-5
        sad = ExpressionRequest(mix={"sad": 1.0})
        c = tiny_pipe(ident, sad, S(guidance_contrast=1.0, **kw), n=1, seed=3).latents[0]
        d = tiny_pipe(ident, sad, S(guidance_contrast=3.0, **kw), n=1, seed=3).latents[0]
        assert (c - d).abs().max() > 1e-3
    with pytest.raises(MienError, match="guidance-contrast"):
        tiny_pipe(ident, ExpressionRequest(mix={"sad": 1.0}), S(method="sdedit", guidance_contrast=2.0, **kw), n=1, seed=3)
    with pytest.raises(MienError, match="out of range"):
        tiny_pipe(ident, ExpressionRequest(mix={"sad": 1.0}), S(guidance_contrast=0.5, **kw), n=1, seed=3)


def test_paste_into_photo_changes_only_the_face_box_it_may_redraw():
    """The generated face goes back through the inverse alignment warp: with the background kept only
    the face box (feathered) changes, away from it the photo is untouched; keep='none' pastes the crop."""
    from mien.paste import paste_into_photo

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (300, 260, 3)).astype(np.uint8)
    m = np.array([[0.5, 0.0, -1.0], [0.0, 0.5, -10.0]])  # photo -> crop: crop (x, y) = photo (2x + 2, 2y + 20)
    face = np.zeros((128, 128, 3), np.uint8)
    out = paste_into_photo(photo, face, m, "background")
    changed = np.abs(out.astype(int) - photo.astype(int)).sum(2) > 0
    ys, xs = np.nonzero(changed)
    # the face box is crop y 32-120, x 24-104 (photo y 84-260, x 50-210), softened by one latent cell
    # (8 crop px) and feathered (~12 crop px)
    assert ys.min() >= (32 - 21) * 2 + 20 and xs.min() >= (24 - 21) * 2 + 2 and xs.max() <= (104 + 21) * 2 + 2
    assert not changed[:(32 - 21) * 2 + 20].any() and not changed[:, :(24 - 21) * 2 + 2].any()
    assert (out[(76 * 2 + 20) - 5:(76 * 2 + 20) + 5, (64 * 2 + 2) - 5:(64 * 2 + 2) + 5] <= 1).all()  # box centre: the face
    whole = paste_into_photo(photo, face, m, "none")
    assert (whole[(20 * 2 + 20), (64 * 2 + 2)] <= 1).all()  # above the face box: pasted only with keep='none'


def test_progress_callback_reports_every_step_of_either_method(tiny_pipe, photo):
    ident = tiny_pipe.identity_input(tiny_aligned(photo))
    for settings in (S(steps=3), S(steps=3, method="sdedit", sampler="heun")):
        seen = []
        tiny_pipe(ident, ExpressionRequest(mix={"happy": 1.0}), settings, callback=lambda i, total, info: seen.append((i, total)))
        assert seen == [(1, 3), (2, 3), (3, 3)], settings.method


def test_several_people_in_one_batch_get_what_their_own_calls_give(tiny_pipe, photo):
    """Mechanics, on a random tiny model (woken up, so identity and expression count): a list of people is one
    batch, each person's rows with their own identity streams, photo, pose, own expression and recogniser target,
    and each person's images are those of their own call with the same seeds: exactly without critic guidance, up to
    float rounding with recogniser guidance (on the last step only: a random critic's normalised gradient
    multiplies rounding differences about a hundredfold a step)."""
    a = tiny_pipe.identity_input(tiny_aligned(photo))
    other = tiny_aligned(np.ascontiguousarray(photo[::-1, ::-1]))
    other.faces[0] = replace_face(other.faces[0], pose=(12.0, -5.0, 3.0), blendshapes=np.roll(a.blendshapes, 7))
    b = tiny_pipe.identity_input(other)
    assert not torch.allclose(a.vector, b.vector) and not torch.allclose(a.embedding, b.embedding)
    plain = dict(steps=4, guidance_contrast=1.5, blendshape_guidance=0.0, recogniser_guidance=0.0)
    guided = dict(plain, recogniser_guidance=1.0, recogniser_guidance_until=0.3, critic_precision="float32")
    req = ExpressionRequest(mix={"fearful": 1.0})
    with awake(tiny_pipe):
        runs = {}
        for name, kw in (("plain", plain), ("guided", guided)):
            both = tiny_pipe([a, b], req, S(**kw), n=2, seed=[3, 20])
            alone = [tiny_pipe(a, req, S(**kw), n=2, seed=3), tiny_pipe(b, req, S(**kw), n=2, seed=20)]
            runs[name] = both.latents, torch.cat([g.latents for g in alone])
        swapped = tiny_pipe(b, req, S(**plain), n=2, seed=3).latents  # b with a's seeds: the person decides
    assert both.seeds == [3, 4, 20, 21] and both.expression.shape == (2, 55)
    assert np.allclose(both.expression, np.stack([g.expression for g in alone]))
    torch.testing.assert_close(*runs["plain"], atol=1e-6, rtol=0)
    torch.testing.assert_close(*runs["guided"], atol=1e-4, rtol=0)
    assert (runs["guided"][0] - runs["plain"][0]).abs().flatten(1).max(1).values.min() > 0.5  # the guidance moved
    assert (swapped - runs["plain"][1][:2]).abs().max() > 0.05
    assert tiny_pipe([a, b], req, S(steps=2), n=1, seed=5).seeds == [5, 6]  # one first seed: rows count on
    from mien.errors import MienError

    with pytest.raises(MienError, match="one first seed per person"):
        tiny_pipe([a, b], req, S(steps=2), n=1, seed=[5])
    with pytest.raises(MienError, match="one person into the scene"):
        tiny_pipe([a, b], req, S(steps=2), n=1, scene=a)


def replace_face(face, **changes):
    from types import SimpleNamespace

    return SimpleNamespace(**{**vars(face), **changes})
