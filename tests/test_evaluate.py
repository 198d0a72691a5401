"""`mien evaluate`: benchmark loading, baselines, the run's bookkeeping, and the copy baseline end to end.

The fast tests use synthetic one-colour photos and a stand-in analyzer that reads identity and
expression off the colour, so the run's logic is checked without the face models. The `shared` tests
run the real stack on the dev benchmark.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from mien.errors import MienError, NoFaceError
from mien.evaluate import benchmark as bm
from mien.evaluate.compare import compare, diff
from mien.evaluate.generators import CopyGenerator, RealGenerator, Unsupported, create
from mien.evaluate.run import RESULT_KEYS, Options, condition, evaluate, _Vocab

LABELS = bm.LABELS


# ----------------------------------------------------------------------------------------------
# synthetic world: red channel = person, green = expression; black = no face


def photo(person: int, label: str, variant: int = 0) -> np.ndarray:
    """The blue channel makes a different image of the same person and expression."""
    return np.full((16, 16, 3), (40 * (person + 1), 30 * LABELS.index(label), variant), np.uint8)


class FakeAnalyzer:
    def analyze(self, rgb):
        r, g, _ = (int(v) for v in rgb[0, 0])
        if r == 0:
            raise NoFaceError("no face found")
        person, expr = r // 40 - 1, g // 30
        onehot = lambda n, i: np.eye(n)[i]  # noqa: E731
        bs = np.zeros(52)
        bs[expr] = 1.0
        return [SimpleNamespace(faceapi=onehot(128, person), mobilefacenet=onehot(192, person),
                                expression=dict(zip(LABELS, onehot(7, expr))),
                                blendshapes={f"b{i}": v for i, v in enumerate(bs)},
                                pose={"yaw": 0.0, "pitch": 0.0, "roll": 0.0})]


class GuidedGenerator:
    """Shows the requested label when the guidance scale is at least 1; black (no face) for 'sad'."""

    name, description, model_hash = "guided", "test generator", "abc123"
    guidance_scales = (0.0, 2.0)

    def __init__(self, scale=2.0):
        self.scale, self.calls = scale, 0

    def with_guidance(self, scale):
        return GuidedGenerator(scale)

    def generate(self, identity_images, request, seed):
        self.calls += 1
        if request.label == "sad":
            return np.zeros((16, 16, 3), np.uint8)
        person = int(identity_images[0][0, 0, 0]) // 40 - 1
        label = request.label if (request.label and self.scale >= 1) else "neutral"
        return photo(person, label)


@pytest.fixture
def world(tmp_path):
    """Two people, each with a neutral identity photo and labelled scoring photos, as a benchmark file."""
    for person in (0, 1):
        for label in ("neutral", "happy", "surprised"):
            Image.fromarray(photo(person, label)).save(tmp_path / f"p{person}_{label}.png")
        Image.fromarray(photo(person, "neutral", 1)).save(tmp_path / f"p{person}_neutral2.png")
    doc = {
        "name": "synthetic",
        "seeds": [0, 1],
        "requests": [{"label": "happy"}, {"label": "surprised", "intensity": 0.5}, {"label": "sad"},
                     {"aus": {"AU12": 3}}],
        "identities": [
            {"id": f"p{p}", "group": "g", "identity_photos": [f"p{p}_neutral.png"],
             "scoring_photos": [{"photo": f"p{p}_{lab}.png", "label": lab} for lab in ("happy", "surprised")]
             + [{"photo": f"p{p}_neutral2.png", "label": "neutral"}],
             "requests": [{"like": f"p{1 - p}_surprised.png"}]}
            for p in (0, 1)
        ],
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, doc


# ----------------------------------------------------------------------------------------------
# benchmark files


def test_benchmark_loads_requests_photos_and_seeds(world):
    path, _ = world
    b = bm.load(path)
    assert [i.id for i in b.identities] == ["p0", "p1"]
    ident = b.identities[0]
    assert [r.id for r in ident.requests] == ["label:happy@1", "label:surprised@0.5", "label:sad@1", "aus:AU12=3",
                                              f"like:{path.parent / 'p1_surprised.png'}"]
    assert ident.requests[3].au_vector().sum() == 3
    assert ident.scoring_photos[0].label == "happy" and not ident.scoring_photos[0].is_key
    assert b.n_items() == 2 * 5 * 2
    assert len(b.limit(1).identities) == 1


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(colour="red"), "unknown key(s) colour"),
    (lambda d: d["requests"].append({"label": "smug"}), "unknown label 'smug'"),
    (lambda d: d["requests"].append({"label": "happy", "intensity": 2}), "intensity 2 must be a number from 0 to 1"),
    (lambda d: d["requests"].append({"term": "happpy-ish"}), "unknown expression"),
    (lambda d: d["requests"].append({"aus": {"AU12": 7}}), "out of range"),
    (lambda d: d["requests"].append({"aus": {"AU99": 1}}), "unknown Action Unit"),
    (lambda d: d["requests"].append({"label": "happy", "term": "joy"}), "exactly one of"),
    (lambda d: d["requests"].append({"label": "happy"}), "listed twice"),
    (lambda d: d.update(seeds=[0, "1"]), "seeds must be a non-empty list of integers"),
    (lambda d: d["identities"].append(dict(d["identities"][0])), "appears twice"),
    (lambda d: d["identities"][0].update(identity_photos=[]), "at least one identity photo"),
    (lambda d: d["identities"][0].update(identity_photos=["nothere.png"]), "not found"),
    (lambda d: d["identities"][0]["scoring_photos"].append("p0_neutral.png"), "both an identity and a scoring photo"),
])
def test_benchmark_errors_say_what_is_wrong(world, change, message):
    path, doc = world
    change(doc)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(MienError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bm.load(path)


def test_benchmark_file_errors(tmp_path):
    with pytest.raises(MienError, match="not found"):
        bm.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("identities: [unclosed")
    with pytest.raises(MienError, match="not valid YAML"):
        bm.load(tmp_path / "bad.yaml")


# ----------------------------------------------------------------------------------------------
# generators


def test_generators_registry_and_baselines(world):
    path, _ = world
    b = bm.load(path)
    ident = b.identities[0]
    images = [b.image(p) for p in ident.identity_photos]
    cond = {r.id: condition(b, ident, r, _Vocab()) for r in ident.requests}
    assert create("copy", b).generate(images, cond["label:happy@1"], 0) is images[0]
    real = RealGenerator(b)
    assert str(real.pick(cond["label:happy@1"], 0)) == "p0_happy.png"
    # a 'like' request asks for the reference's label, shown by this person
    assert str(real.pick(cond[ident.requests[-1].id], 0)) == "p0_surprised.png"
    with pytest.raises(Unsupported, match="no real 'sad' photo of the person"):
        real.pick(cond["label:sad@1"], 0)
    with pytest.raises(Unsupported, match="Action Unit"):
        real.pick(cond["aus:AU12=3"], 0)
    with pytest.raises(MienError, match="missing"):
        create("built-in", b, model=str(path.parent / "no-such-model"))
    with pytest.raises(MienError, match="--model: generator 'copy' has no such setting"):
        create("copy", b, model="x")
    with pytest.raises(MienError, match="unknown generator"):
        create("nope", b)


# ----------------------------------------------------------------------------------------------
# the run, with the stand-in analyzer


def run(path, generator, out, **kw):
    return evaluate(bm.load(path), generator, Options(out=out, cache_dir=out.parent / "cache", progress=False, **kw),
                    make_analyzer=FakeAnalyzer)


class StubClassifier:
    """Stands in for mien.expression.classifier.BlendshapeClassifier: the label is the top blendshape."""

    labels = LABELS

    def predict_proba(self, bs):
        return np.eye(7)[np.argmax(np.asarray(bs)[:, :7], 1)]


@pytest.fixture
def expression_models(monkeypatch):
    """A fitted AU calibration and a stub blendshape classifier, whether or not the shipped ones exist."""
    from mien.expression import aus

    calib = aus.AUCalibration.fit(np.random.default_rng(0).uniform(0, 1, (200, 52)), source="test")
    monkeypatch.setattr(aus.AUCalibration, "load", classmethod(lambda cls, path=None: calib))
    try:
        from mien.expression import classifier
    except ImportError:
        pytest.skip("mien.expression.classifier is not importable yet")
    monkeypatch.setattr(classifier.BlendshapeClassifier, "load", classmethod(lambda cls, path=None: StubClassifier()))


def test_run_scores_failures_sweep_and_resumes(world, tmp_path, expression_models):
    path, _ = world
    gen = GuidedGenerator()
    res = run(path, gen, tmp_path / "guided")
    m = {k: v["value"] for k, v in res["metrics"].items()}
    assert m["expression.blendshape"]["per_label"]["happy"] == 1.0
    assert m["aus"]["n"] == 4 and set(m["aus"]["per_au"]) == set(aus_names())
    assert np.isfinite(m["aus"]["mae"]) and "blendshapes" in m["aus"]["note"]
    assert res["counts"] == {"items": 20, "ok": 16, "no_face": 4, "unsupported": 0, "error": 0, "real_photos": 8}
    assert m["failures"]["no_face"] == 4
    assert m["identity.verification_rate"] == 1.0
    # per identity and seed: 9 accepted pairs (outputs identical to a scoring photo skip that one),
    # and the no-face 'sad' output rejected against all 3 scoring photos
    assert m["identity.verification_rate_with_failures"] == pytest.approx(9 / 12)
    fa = m["expression.faceapi"]
    assert fa["per_label"]["happy"] == 1.0 and fa["per_label"]["surprised"] == 1.0
    assert fa["real_accuracy"]["per_label"]["neutral"] == 1.0 and fa["real_accuracy"]["n_per_label"]["happy"] == 2
    assert m["reference.blendshape_distance"] == 0.0 and m["reference.identity_photo_distance"] > 0
    assert m["tradeoff.expression_change"]["mean"] > 0
    assert m["tradeoff.joint_success"]["value"] == pytest.approx(4 / 6)  # sad (2 per seed) fails, no face
    curve = m["tradeoff.curve"]
    assert [p["scale"] for p in curve] == [0.0, 2.0]
    assert curve[0]["expression_change"] == 0.0 < curve[1]["expression_change"]
    assert res["model_hash"] == "abc123"
    assert all((tmp_path / "guided" / f).exists() for f in ("results.json", "report.html", "items.jsonl"))
    # Rerun: every item is read back from items.jsonl, nothing is generated again (the sweep aside).
    again = GuidedGenerator()
    again.guidance_scales = ()
    res2 = run(path, again, tmp_path / "guided")
    assert again.calls == 0 and res2["metrics"]["identity.faceapi_cosine"] == res["metrics"]["identity.faceapi_cosine"]
    with pytest.raises(MienError, match="another benchmark, generator, model, settings"):
        run(path, CopyGenerator(), tmp_path / "guided")


def test_images_generator_scores_another_runs_outputs_identically(world, tmp_path, expression_models):
    """`--generator images` reads outputs named as evaluate names its own: scoring a run's outputs/ gives
    that run's figures; an image that is missing is an item error, and a folder that is missing a one-line one."""
    from mien.evaluate.generators import ImagesGenerator

    path, _ = world
    gen = GuidedGenerator()
    gen.guidance_scales = ()
    first = run(path, gen, tmp_path / "made")
    folder = tmp_path / "made" / "outputs"
    again = run(path, create("images", bm.load(path), images=str(folder)), tmp_path / "scored")
    assert again["counts"] == first["counts"]
    assert again["metrics"] == first["metrics"]
    gone = sorted(folder.glob("p1__label_happy*"))
    for f in gone:
        f.unlink()
    part = run(path, ImagesGenerator(folder), tmp_path / "part")
    assert part["counts"]["error"] == len(gone) == 2
    with pytest.raises(MienError, match="--images .*no such folder"):
        ImagesGenerator(tmp_path / "nowhere")
    with pytest.raises(MienError, match="needs --images"):
        create("images", bm.load(path))
    with pytest.raises(MienError, match="--images: generator 'built-in' generates its own"):
        create("built-in", bm.load(path), images=str(folder))
    with pytest.raises(MienError, match="--images: generator 'copy' has no such setting"):
        create("copy", bm.load(path), images=str(folder))


def test_real_baseline_reaches_the_ceiling_on_what_it_supports(world, tmp_path):
    path, _ = world
    res = run(path, RealGenerator(bm.load(path)), tmp_path / "real")
    m = {k: v["value"] for k, v in res["metrics"].items()}
    assert m["failures"]["unsupported"] == {"no real 'sad' photo of the person": 4,
                                            "no real photo has Action Unit labels": 4}
    assert m["expression.faceapi"]["normalised"]["per_label"]["happy"] == 1.0
    assert m["identity.verification_rate"] == 1.0  # never scored against itself


# ----------------------------------------------------------------------------------------------
# the dev benchmark with the real analysis stack


def aus_names():
    from mien.expression.aus import AU_NAMES

    return AU_NAMES


@pytest.mark.shared
def test_shipped_dev_benchmark_is_current(shared_dir):
    shipped = yaml.safe_load(bm.dev_path().read_text())
    from mien.data.faces128 import load_manifest

    assert shipped == bm.build_dev(load_manifest(shared_dir / "data" / "faces128"))
    groups = [i["group"] for i in shipped["identities"]]
    assert set(groups) == {"london", "taiwanese", "cfp", "essex94"}
    assert groups[0] == "london"  # --limit runs start with the quick, shareable set


@pytest.mark.shared
def test_taef2_baseline_round_trips_the_identity_photo(shared_dir):
    from mien.evaluate.generators import Condition

    bench = bm.load().limit(1)
    photo = bench.image(bench.identities[0].identity_photos[0])
    gen = create("taef2", bench)
    out = gen.generate([photo], Condition(bench.identities[0].requests[0], bench.identities[0].id), 0)
    assert out.shape == photo.shape and out.dtype == np.uint8
    mse = np.mean((out.astype(float) - photo) ** 2)
    assert 10 * np.log10(255**2 / mse) > 28  # the model's decoder reaches ~34 dB on London faces
    assert not np.array_equal(out, photo)


@pytest.mark.shared
def test_copy_baseline_end_to_end(shared_dir, tmp_path, capsys):
    from mien.cli.main import main

    out = tmp_path / "copy"
    assert main(["evaluate", "--generator", "copy", "--limit", "2", "--out", str(out), "--no-cache"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert tuple(res) == RESULT_KEYS
    m = {k: v["value"] for k, v in res["metrics"].items()}
    assert all(v["definition"] for v in res["metrics"].values())
    assert res["counts"]["ok"] == res["counts"]["items"] == 2 * 16 * 2
    # Identity is scored against the person's OTHER photos: a copy scores exactly the real-pair
    # ceiling on those same pairs, and is accepted as the same person.
    ceiling = m["identity.ceiling.identity_photo_pairs"]
    for k in ("faceapi_cosine", "mobilefacenet_cosine", "verification_rate"):
        assert m[f"identity.{k}"] == pytest.approx(ceiling[k], abs=1e-6)
    assert m["identity.verification_rate"] == pytest.approx(1.0)
    assert m["tradeoff.expression_change"]["mean"] == 0.0
    assert m["realism.diversity"]["blendshapes"] == 0.0
    assert m["artefacts.dark_eyes"]["rate"] == 0.0 and m["artefacts.face_lost"]["rate"] == 0.0  # outputs = photos
    assert m["realism.critic"]["face"]["n_generated"] == 64
    html = (out / "report.html").read_text()
    assert "blendshapes" in html and "not from an image-to-AU model" in html
    assert "Worst 8 by darkest eyes" in html
    capsys.readouterr()

    changed = json.loads((out / "results.json").read_text())
    changed["metrics"]["identity.faceapi_cosine"]["value"] = 0.5
    changed["generator"]["name"] = "other"
    (tmp_path / "b.json").write_text(json.dumps(changed))
    assert main(["evaluate", "--compare", str(out / "results.json"), str(tmp_path / "b.json")]) == 0
    printed = capsys.readouterr().out
    assert "identity.faceapi_cosine" in printed and "-> 0.5" in printed and "generator.name: copy -> other" in printed
    assert diff(res, res) == [] and "no differences" in compare(out / "results.json", out / "results.json")


def test_builtin_edit_settings_are_checked_before_the_model_loads(monkeypatch):
    import mien.pipeline

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(mien.pipeline.MienPipeline, "from_pretrained", no_load)
    with pytest.raises(MienError, match="--keep hair"):
        create("built-in", None, keep="hair")
    with pytest.raises(MienError, match="--strength 0.0 is out of range"):
        create("built-in", None, strength=0.0)
    with pytest.raises(MienError, match="--method inpaint"):
        create("built-in", None, method="inpaint")
    with pytest.raises(MienError, match="--guidance-until 1.0 is out of range"):
        create("built-in", None, guidance_until=1.0)


def test_recogniser_guidance_with_sdedit_is_refused_before_the_model_loads():
    from mien.errors import MienError

    with pytest.raises(MienError, match="works with --method flowedit"):
        create("built-in", None, model="/nonexistent", method="sdedit", recogniser_guidance=0.3)
    # not asked for: sdedit simply runs without it (the model path is reached, and is missing)
    with pytest.raises(MienError, match="nonexistent"):
        create("built-in", None, model="/nonexistent", method="sdedit")


@pytest.mark.shared
def test_items_the_generator_failed_on_set_the_exit_status_and_are_retried(shared_dir, tmp_path, capsys):
    """--images naming a folder without the images scored nothing and exited 0; now: 2 with the first reason,
    and a rerun once the images are there retries the failed items (they were kept as failed)."""
    import shutil

    from mien.cli.main import main

    assert main(["evaluate", "--generator", "copy", "--limit", "1", "--out", str(tmp_path / "copy"),
                 "--sweep-identities", "0"]) == 0  # fmt: skip
    images, out = tmp_path / "images", tmp_path / "scored"
    images.mkdir()
    capsys.readouterr()
    run = ["evaluate", "--generator", "images", "--images", str(images), "--limit", "1", "--out", str(out),
           "--sweep-identities", "0"]  # fmt: skip
    assert main(run) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mien: 32 of 32 items failed, the first: no image ") and str(images) in err
    pngs = sorted((tmp_path / "copy" / "outputs").glob("*.png"))
    for p in pngs[:-1]:
        shutil.copy(p, images)
    assert main(run) == 1
    assert "1 of 32 items failed" in capsys.readouterr().err
    shutil.copy(pngs[-1], images)
    assert main(run) == 0
    assert json.loads((out / "results.json").read_text())["counts"]["ok"] == 32


@pytest.mark.parametrize("flags, message", [
    (["--generator", "foo"], "unknown generator 'foo'; choose from built-in, copy, real, taef2, images"),
    (["--generator", "images"], "--generator images needs --images DIR, the folder of output PNGs to score"),
    (["--generator", "copy", "--strength", "0.5"], "--strength: generator 'copy' has no such setting"),
])
def test_dry_run_checks_the_generator_as_a_run_does(capsys, flags, message):
    """Each was a successful dry run, then an error once run."""
    from mien.cli.main import main

    assert main(["evaluate", *flags, "--limit", "1", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"mien: error: {message}")
