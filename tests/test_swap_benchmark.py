"""The swap benchmark's mechanics (mien.evaluate.swap): pairs, the paste footprint, the seam and the summary."""

import numpy as np
import pytest
import yaml
from PIL import Image

from mien.evaluate import benchmark as bm
from mien.evaluate.swap import LABELS, footprint, pairs, seam, summarise
from mien.paste import PASTES


def test_pairs_put_each_person_into_the_next_persons_photo_and_score_against_other_photos(tmp_path):
    for name in "a1 a2 b1 b2 b3 c1 c2".split():
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{name}.png")
    doc = {"requests": [{"label": "happy"}], "identities": [{"id": p, "identity_photos": [f"{p}1.png"],
                           "scoring_photos": [f"{p}{k}.png" for k in range(2, 4 if p == "b" else 3)]}
                          for p in "abc"]}  # fmt: skip
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(doc))
    ps = pairs(bm.load(tmp_path / "bench.yaml"))
    assert [(p.a, p.b) for p in ps] == [("a", "b"), ("b", "c"), ("c", "a")]  # always two different people
    first = ps[0]
    assert str(first.selfie) == "a1.png" and str(first.scene) == "b1.png"
    assert [str(p) for p in first.a_scoring] == ["a2.png"] and [str(p) for p in first.b_scoring] == ["b2.png", "b3.png"]
    assert len(pairs(bm.load(tmp_path / "bench.yaml"), limit=2)) == 2


def test_footprint_and_seam_of_the_paste():
    rng = np.random.default_rng(0)
    photo = np.full((200, 160, 3), 100, np.uint8)
    m = np.array([[0.8, 0.0, -10.0], [0.0, 0.8, -20.0]])  # photo -> crop
    w = footprint(photo, m)
    assert w.shape == photo.shape[:2] and w.max() > 0.99 and w.min() == 0.0
    face = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    out = PASTES["crop"](photo, face, m, "background")  # the crop paste changes nothing outside the face box
    assert np.array_equal(out[w <= 0], photo[w <= 0]) and not np.array_equal(out, photo)
    assert seam(photo, photo) == 0.0
    hard = photo.copy()
    hard[50:150, 40:120] = 200  # a hard-edged paste adds edges at its border
    soft = photo.copy()
    soft[50:150, 40:120] = 200 - np.abs(np.linspace(-100, 100, 80)).astype(np.uint8)[None, :, None].clip(0, 99)
    assert seam(hard, photo) > seam(soft, photo) >= 0


def test_summary_counts_failures_and_rates():
    ok = {"label": "happy", "no_face": False, "dist_a": 0.5, "dist_b": 0.7, "verified_a": True, "verified_b": False,
          "pose_err": 2.0, "outside_max": 0, "seam": 1.0, "label_ok": True}
    items = [ok, {**ok, "verified_a": False, "label_ok": False, "pose_err": 4.0, "outside_max": 3},
             {"label": "sad", "no_face": True, "outside_max": 0, "seam": 0.0}, {"item": "x", "error": "no face"}]
    s = summarise(items, {"happy": 0.9})
    assert (s["items"], s["ok"], s["no_face"], s["errors"]) == (4, 2, 1, 1)
    assert s["verified_a"] == 0.5 and s["impostor_b"] == 0.0 and s["pose_mae"] == 3.0
    assert s["outside_identical"] == 2 / 3 and s["per_label"]["happy"] == {"n": 2, "faceapi_rate": 0.5, "real_rate": 0.9}


def test_summary_of_an_interrupted_run_reads_its_finished_items(tmp_path):
    import json

    from mien.evaluate.swap import summary_of

    row = {"label": "sad", "no_face": False, "dist_a": 0.7, "dist_b": 0.5, "verified_a": False, "verified_b": True,
           "pose_err": 1.0, "outside_max": 0, "seam": 0.0, "label_ok": True}
    items = [{"item": "a>b:sad", "pastes": {"crop": row, "detail": {**row, "verified_a": True}}}]
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\n")
    s = summary_of(tmp_path, {"sad": 0.5})
    assert s["crop"]["verified_a"] == 0.0 and s["detail"]["verified_a"] == 1.0 and s["crop"]["impostor_b"] == 1.0
    assert s["detail"]["per_label"]["sad"] == {"n": 1, "faceapi_rate": 1.0, "real_rate": 0.5}


def test_the_report_ring_extends_dev_wilds_report_pairs_without_a_tuning_person():
    from mien.evaluate.swap import REPORT_BENCHMARK, TUNING_PEOPLE

    wild, dev = bm.load(bm.dev_path().with_name("dev-wild.yaml")), bm.load(bm.dev_path())
    report = bm.load(bm.dev_path().with_name(REPORT_BENCHMARK))
    ring = pairs(report)
    assert len(ring) == 30 and not {p.a for p in ring} & set(TUNING_PEOPLE)
    assert [i.id for i in wild.identities[12:]] == list(TUNING_PEOPLE)  # the tuning people: dev-wild's 13th on
    key = lambda p: (p.a, p.b, p.selfie, p.scene, p.a_scoring, p.b_scoring)  # noqa: E731
    assert [key(p) for p in ring[:11]] == [key(p) for p in pairs(wild, 11)]  # the 11 report pairs, unchanged
    essex = [i for i in dev.identities if i.group == "essex94"]
    assert [(i.id, i.identity_photos, i.scoring_photos) for i in report.identities[12:]] == \
        [(i.id, i.identity_photos, i.scoring_photos) for i in essex]  # fmt: skip
    assert [r.label for r in report.identities[0].requests] == [r.label for r in wild.identities[0].requests]


def test_real_impostor_counts_as_real_photos_that_pass_as_b():
    from mien.evaluate.swap import real_impostor

    b = np.zeros((3, 128))
    near, far = np.full(128, 0.5 / np.sqrt(128)), np.full(128, 0.7 / np.sqrt(128))  # distance 0.5 and 0.7 from b
    assert real_impostor(np.stack([near, far, far, far]), b) == 0.25
    assert real_impostor(np.stack([far]), b) == 0.0 and real_impostor(np.zeros((0, 128)), b) is None


def test_summary_gives_the_impostor_rate_apart_from_pairs_whose_real_photos_pass_as_b():
    from mien.evaluate.swap import by_scene_group, real_as_b

    row = {"label": "happy", "no_face": False, "dist_a": 0.5, "dist_b": 0.5, "verified_a": True, "verified_b": True,
           "pose_err": 1.0, "outside_max": 0, "seam": 0.0, "label_ok": True}
    twins = {**row, "real_b": 1.0}  # A's real photos already verify as B: the swap passing as B says nothing
    apart = [{**row, "real_b": 0.0}, {**row, "real_b": 0.0, "dist_b": 0.8, "verified_b": False},
             {**row, "real_b": 0.0, "dist_b": 0.8, "verified_b": False}, {**row, "real_b": 0.0, "dist_b": 0.9,
                                                                         "verified_b": False}]  # fmt: skip
    s = summarise([twins, twins, *apart], {})
    assert s["impostor_b"] == 3 / 6 and s["impostor_b_apart"] == 1 / 4 and s["n_apart"] == 4
    assert s["real_impostor_b"] == 2 / 6
    items = [{"item": "a>b:happy", "a": "a", "b": "b", "pastes": {"crop": twins}},
             {"item": "b>c:happy", "a": "b", "b": "c", "pastes": {"crop": apart[1]}}]
    assert real_as_b(items) == {"a>b": 1.0}
    groups = by_scene_group(items, {"b": "cfp", "c": "essex94"}, {})
    assert groups["crop"]["cfp"]["impostor_b"] == 1.0 and groups["crop"]["essex94"]["impostor_b"] == 0.0
    assert summarise([row], {})["real_impostor_b"] is None  # runs from before the measure: no figure, no error


def test_swap_dry_run_finds_the_shipped_report_ring_by_name(capsys):
    from mien.cli.main import main

    assert main(["evaluate", "--swap", "--benchmark", "swap-report.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "30 pairs" in out and "pair 12: cfp:465 (cfp_465_01) into essex:0's photo" in out


def test_swap_limit_below_1_is_an_error_as_for_the_other_benchmarks(capsys, monkeypatch):
    """`mien evaluate --swap --limit 0` ran every pair (and --limit -1 all but the last) while `mien evaluate
    --limit 0` is an error: both are one-line errors now, the swap's before any model loads."""
    from mien.cli.main import main
    from mien.edit import Editor

    monkeypatch.setattr(Editor, "from_pretrained", lambda *a, **k: pytest.fail("the model loaded before the error"))
    for limit in ("0", "-1"):
        for dry in (["--dry-run"], []):
            assert main(["evaluate", "--swap", "--limit", limit, "--generator", "copy", *dry]) == 2
            err = capsys.readouterr().err.strip()
            assert err == f"mien: error: --limit {limit}: give a number of pairs of at least 1 (leave it out for " \
                          "every pair)", err
        assert main(["evaluate", "--limit", limit, "--dry-run"]) == 2
        assert capsys.readouterr().err.startswith(f"mien: error: --limit {limit}: give a number of identities")
    assert main(["evaluate", "--swap", "--limit", "1", "--dry-run"]) == 0 and "1 pairs" in capsys.readouterr().out


def test_tune_swap_configs_shape_the_request_and_the_settings():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "tune_swap.py"
    spec = importlib.util.spec_from_file_location("tune_swap", path)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    stronger = {"au": "AU1=3,AU5=2", "intensity": 0.7, "guidance_identity": 2}
    how, request, settings, mode = tune.config(stronger, "fearful")
    assert how == "crop" and request.mix == {"fearful": 1.0} and request.intensity == 0.7 and mode == "swap"
    assert request.aus == {"AU1": 3.0, "AU5": 2.0} and settings.guidance_identity == 2
    how, request, settings, mode = tune.config({"paste": "detail"}, "happy")
    assert how == "detail" and request.aus == {} and request.intensity == 1.0 and settings.guidance_identity is None
    assert tune.config({"two_stage": True}, "happy")[3] == "two_stage" and tune.config({"own": True}, "sad")[3] == "own"
    how, request, settings, mode = tune.config({"model": "runs/other", "guidance_contrast": 1}, "fearful")  # main's key
    assert mode == "swap" and settings.guidance_contrast == 1
    off = {"paste": "detail", "detail": {"deinterlace": ""}, "guidance_contrast": 1}
    how, request, settings, mode = tune.config(off, "fearful")  # the detail paste's settings: not a generation's
    assert how == "detail" and settings.guidance_contrast == 1
    # configs differing only in how they paste share a generation; the detail settings reach the paste
    assert tune.generation_key(off) == tune.generation_key({"guidance_contrast": 1})
    assert tune.generation_key(off) != tune.generation_key({"guidance_contrast": 2, "paste": "detail"})
    assert tune.paste_of({}).__name__ == "paste_into_photo"
    assert tune.paste_of({"paste": "detail"}).__name__ == "paste_detail"
    detail = tune.paste_of(off).keywords["settings"]
    assert detail.deinterlace == "" and detail.snap == 0.5  # the rest the defaults
    with pytest.raises(SystemExit):
        tune.paste_of({"detail": {"deinterlace": ""}})  # detail settings for the crop paste


def test_an_output_without_a_face_is_counted_not_fatal():
    from mien.errors import NoFaceError
    from mien.evaluate.swap import score_output

    class Blind:  # FaceAnalyzer.analyze raises where it finds no face (a swap decoded to black, say)
        def analyze(self, rgb):
            raise NoFaceError("no face found")

    black = np.zeros((128, 128, 3), np.uint8)
    row = score_output(Blind(), black, black, np.ones((128, 128)), None, "fearful", np.zeros((0, 128)), None)
    assert row["no_face"] is True and row["outside_max"] == 0
    s = summarise([row, {"label": "fearful", "no_face": False, "dist_a": 0.5, "dist_b": 0.7, "verified_a": True,
                         "verified_b": False, "pose_err": 1.0, "outside_max": 0, "seam": 0.0, "label_ok": False}], {})
    assert (s["items"], s["ok"], s["no_face"]) == (2, 1, 1)


def test_an_outputs_row_gives_the_requested_labels_probability_beside_the_top_label():
    from types import SimpleNamespace

    from mien.evaluate.swap import score_output

    face = SimpleNamespace(faceapi=np.zeros(128), pose={"yaw": 1.0, "pitch": 2.0, "roll": 3.0},
                           expression={"neutral": 0.55, "happy": 0.4, "fearful": 0.05})

    class Seeing:
        def analyze(self, rgb):
            return [face]

    scene_face = SimpleNamespace(pose={"yaw": 0.0, "pitch": 0.0, "roll": 0.0})
    rgb = np.zeros((128, 128, 3), np.uint8)
    desc = np.zeros((1, 128))
    happy = score_output(Seeing(), rgb, rgb, np.ones((128, 128)), scene_face, "happy", desc, desc)
    assert happy["faceapi"] == "neutral" and happy["label_ok"] is False and happy["p_label"] == 0.4
    assert score_output(Seeing(), rgb, rgb, np.ones((128, 128)), scene_face, "sad", desc, desc)["p_label"] == 0.0


def test_swap_report_merge_replaces_only_the_new_runs_swaps(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "swap_report_merge.py"
    spec = importlib.util.spec_from_file_location("swap_report_merge", path)
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    row = lambda a, b, label: {"dist_a": a, "dist_b": b, "pose_err": 1.0, "faceapi": label}  # noqa: E731
    base = [{"item": "x>y:happy", "real_b": 0.0, "crop": row(0.5, 0.7, "neutral")},
            {"item": "x>y:sad", "real_b": 0.0, "crop": row(0.7, 0.5, "sad")}]
    new = {"x>y:happy": {"config": "n", "item": "x>y:happy", **row(0.65, 0.8, "happy")}}
    before, after = merge.rows_of(base, {}), merge.rows_of(base, new)
    assert [r["faceapi"] for r in before] == ["neutral", "sad"] and [r["faceapi"] for r in after] == ["happy", "sad"]
    assert after[0]["dist_a"] == 0.65 and after[1] == before[1]
    text = merge.summary(after, {lab: 0.5 for lab in LABELS})
    assert "verified_a 0.00" in text and "impostor 0.50" in text and "happy 1.00" in text and "sad 1.00" in text
    assert text.endswith("met 2")  # happy and sad, the labels with swaps


def test_swap_report_merge_reads_the_real_photo_rates_from_a_run_s_summary(tmp_path):
    """The real-photo rates come from a `mien evaluate --swap` summary.json (the paste's section), by default the
    report ring's, whose rates are the docs' (docs/swap.md: 1.00 0.95 0.50 0.21 0.14 0.43 0.38)."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "swap_report_merge.py"
    spec = importlib.util.spec_from_file_location("swap_report_merge", path)
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    rates = merge.real_rates(merge.REAL_SUMMARY)
    assert [round(rates[lab], 2) for lab in LABELS] == [1.0, 0.95, 0.5, 0.21, 0.14, 0.43, 0.38]
    run = {how: {"per_label": {lab: {"n": 3, "faceapi_rate": 0.0, "real_rate": 0.1 * k} for k, lab in enumerate(LABELS)}}
           for how in ("crop", "detail")}  # fmt: skip
    run["detail"]["per_label"]["sad"]["real_rate"] = 0.9
    (tmp_path / "summary.json").write_text(json.dumps(run))
    assert merge.real_rates(tmp_path / "summary.json")["sad"] == 0.2
    assert merge.real_rates(tmp_path / "summary.json", "detail")["sad"] == 0.9


def test_swap_report_merge_takes_the_named_paste(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "swap_report_merge.py"
    spec = importlib.util.spec_from_file_location("swap_report_merge", path)
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    row = lambda a, label: {"dist_a": a, "dist_b": 0.7, "pose_err": 1.0, "faceapi": label}  # noqa: E731
    base = [{"item": "x>y:happy", "real_b": 0.0, "crop": row(0.5, "neutral"), "detail": row(0.4, "sad")},
            {"item": "x>y:sad", "real_b": 0.0, "crop": row(0.7, "sad"), "detail": row(0.55, "angry")}]
    new = {"x>y:happy": {"config": "n", "item": "x>y:happy", **row(0.65, "happy")}}
    detail = merge.rows_of(base, new, "detail")
    assert [r["faceapi"] for r in detail] == ["happy", "angry"] and [r["dist_a"] for r in detail] == [0.65, 0.55]
    assert [r["faceapi"] for r in merge.rows_of(base, {}, "detail")] == ["sad", "angry"]


def test_tune_swap_reads_a_packed_line_as_its_swaps(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "tune_swap.py"
    spec = importlib.util.spec_from_file_location("tune_swap", path)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    one = {"config": "now", "label": "fearful", "item": "a>b:fearful", "dist_a": 0.5, "faceapi": "angry"}
    packed = {"config": "now", "label": "fearful", "settings": {}, "item": ["a>b:fearful", "b>c:fearful"],
              "dist_a": [0.5, 0.7], "faceapi": ["angry", "fearful"]}
    (tmp_path / "x.jsonl").write_text(json.dumps(one) + "\n" + json.dumps(packed) + "\n")
    rows = tune.read_lines(tmp_path / "x.jsonl")
    assert rows[0] == one and rows[1] == {**one, "settings": {}}
    assert rows[2]["item"] == "b>c:fearful" and rows[2]["dist_a"] == 0.7 and rows[2]["faceapi"] == "fearful"
    tune.pack([tmp_path / "x.jsonl"], tmp_path / "packed.jsonl", ["fearful"])  # one line per config and label
    (line,) = (tmp_path / "packed.jsonl").read_text().splitlines()
    assert json.loads(line)["item"] == ["a>b:fearful", "a>b:fearful", "b>c:fearful"] and ": " not in line
    assert tune.read_lines(tmp_path / "packed.jsonl")[2]["dist_a"] == 0.7
    merge_path = path.with_name("swap_report_merge.py")  # the merge reads packed lines too
    spec = importlib.util.spec_from_file_location("swap_report_merge", merge_path)
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    assert merge.read_lines(tmp_path / "x.jsonl") == rows


def test_tune_swap_packs_each_seed_apart_and_the_merge_pools_runs(tmp_path, capsys):
    """tune_swap.py --seed N: a line of another seed than 0 says its seed; pack keeps one line a config, label and
    seed; swap_report_merge.py pools several runs' swaps per label (docs/swap.md, "Disgusted and fearful over three
    seeds")."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "tune_swap.py"
    spec = importlib.util.spec_from_file_location("tune_swap", path)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    def line(item, seed, label):
        return {"config": "v", "item": item, "label": "fearful", "dist_a": 0.5, "dist_b": 0.7, "pose_err": 1.0,
                "faceapi": label, **({"seed": seed} if seed else {})}

    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in (
        line("a>b:fearful", 0, "angry"), line("a>b:fearful", 1, "fearful"), line("b>c:fearful", 1, "sad"))) + "\n")
    tune.pack([tmp_path / "x.jsonl"], tmp_path / "p.jsonl", ["fearful"])
    packed = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p.get("seed") for p in packed] == [None, 1] and packed[1]["item"] == ["a>b:fearful", "b>c:fearful"]
    assert [r.get("seed", 0) for r in tune.read_lines(tmp_path / "p.jsonl")] == [0, 1, 1]
    tune.summary([tmp_path / "p.jsonl"], ["fearful"])  # packed lines keep no label_ok nor cosines: still a row
    row = capsys.readouterr().out.splitlines()[1].split()  # a config's swaps by item: seed 1's a>b, b>c
    assert row[:3] == ["v", "1.00", "0.00"] and row[7] == "0.50" and row[-2:] == ["sad", "1"]

    spec = importlib.util.spec_from_file_location("swap_report_merge", path.with_name("swap_report_merge.py"))
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    base = [{"item": i, "real_b": b, "crop": line(i, 0, "neutral")} for i, b in (("a>b:fearful", 0.0),
                                                                                ("b>c:fearful", 1.0))]
    seed0 = merge.rows_of(base, {"a>b:fearful": line("a>b:fearful", 0, "angry")})[:1]
    seed1 = merge.rows_of(base, {r["item"]: r for r in tune.read_lines(tmp_path / "p.jsonl") if r.get("seed") == 1})
    (text,) = merge.pooled([seed0, seed1], {lab: 0.5 for lab in LABELS})
    assert text.split()[:5] == ["pooled", "fearful", "0/1", "1/2", "|"]
    assert "n 3 rate 0.333 real 0.500 ratio 0.67 (misses 0.8)" in text and "apart 0.000 (2)" in text
