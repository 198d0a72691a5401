"""The swap benchmark (`mien evaluate --swap`): person A put into a photo of person B (docs/swap.md).

Pairs come from a benchmark's people (default: dev-wild.yaml, the CFP dev people and the Taiwanese
performers): person i's first identity photo is the selfie A, person i+1's (in the benchmark's order,
wrapping round) first identity photo is the scene B, so every pair is two different people and CFP photos
serve as scenes. Each pair is asked for the seven basic labels, one seed. dev-wild.yaml's ring holds the
tuning pairs (its 13th person on, :data:`TUNING_PEOPLE`) and only 11 report pairs; ``swap-report.yaml``
(:data:`REPORT_BENCHMARK`) is the report ring: dev-wild.yaml's 12 report people in the same order (so its
pairs 1-11 are those 11, same items and inputs) followed by dev.yaml's 18 Essex people, 30 pairs, no tuning
person. Generators:

  built-in  ``Editor.swap`` with the given settings, pasted into the scene photo by the editor's paste;
  copy      A's aligned face pasted into B's photo by the same paste (no model): the baseline.

Each generated face is pasted by every paste of :data:`mien.paste.PASTES` (``detail``, the default, and
``crop``), and each pasted photo is scored as its own row. Every output is the scene photo with the face
replaced (what a user gets), analysed by
:class:`mien.analysis.FaceAnalyzer`; per output (definitions also in summary.json):

  verified_a   mean face-api descriptor distance to A's scoring photos (never an input) below 0.6
  verified_b   the same against B's scoring photos (the scene photo itself excluded): the impostor rate
  pose_err     mean |yaw, pitch, roll| difference (degrees, MediaPipe's, mien.face.pose) from the scene face
  outside_max  largest pixel change outside the crop's editable face box warped into the photo (0: the scene
               outside the face is identical)
  seam         around the edge of what the paste changed, mean |gradient| of the output minus the scene's
               (pixel levels per pixel; > 0: edges added at the seam; :func:`seam`)
  label_ok     face-api's top expression is the requested label
  p_label      face-api's probability of the requested label (how strongly it reads, where label_ok is 0 or 1)
  real_b       the pair's real-photo impostor rate: the share of A's scoring photos (real, unedited) whose mean
               face-api distance to B's scoring photos is below 0.6. Where A's own photos already pass as B,
               no swap of A can fail the impostor check, so the summary also gives the impostor rate of the
               pairs whose real photos all stay apart (``impostor_b_apart``) and names the others

Finished items go to ``OUT/items.jsonl`` as they finish (a rerun resumes), outputs to ``OUT/outputs``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mien.evaluate.benchmark import LABELS, Benchmark, Photo
from mien.evaluate.metrics import DLIB_THRESHOLD

DEFINITIONS = {
    "verified_a": f"share of outputs whose mean face-api distance to A's other photos is below {DLIB_THRESHOLD}",
    "impostor_b": f"share of outputs whose mean face-api distance to B's other photos is below {DLIB_THRESHOLD}",
    "pose_mae": "mean absolute yaw/pitch/roll difference from the scene face, degrees (MediaPipe)",
    "outside_identical": "share of outputs with no pixel changed outside the crop's editable face box",
    "seam": "mean over a 2 px band around the changed region of |grad output| - |grad scene| (pixel levels)",
    "faceapi_rate": "per label: share read as the requested label by face-api; real: its rate on real photos",
    "real_impostor_b": "the impostor rate of A's own real photos: per output, the share of A's scoring photos whose "
                       f"mean face-api distance to B's photos is below {DLIB_THRESHOLD}, averaged over outputs",
    "impostor_b_apart": "impostor_b over the outputs of pairs where none of A's real photos verifies as B",
    "real_as_b": "the pairs (A>B) some of whose A photos verify as B, with that share",
}
# dev-wild.yaml's people from its 13th on: the swap defaults were chosen on ring pairs among them (docs/swap.md,
# "tuning"); no report figure may include them.
TUNING_PEOPLE = ("cfp:467", "cfp:468", "cfp:469", "cfp:470", "cfp:471", "cfp:474", "cfp:477", "cfp:482", "cfp:484",
                 "cfp:485", "cfp:486", "cfp:487", "cfp:488", "cfp:493", "cfp:498", "cfp:500")
REPORT_BENCHMARK = "swap-report.yaml"


@dataclass(frozen=True)
class Pair:
    a: str  # benchmark identity id of the selfie's person
    b: str  # of the scene's
    selfie: Photo
    scene: Photo
    a_scoring: tuple[Photo, ...]
    b_scoring: tuple[Photo, ...]


def pairs(bench: Benchmark, limit: int | None = None) -> list[Pair]:
    """Person i into person i+1's photo, for the first ``limit`` people (module docstring; None: all). A
    ``limit`` below 1 is a one-line error, as ``Benchmark.limit`` makes it for the other benchmarks."""
    from mien.errors import MienError

    if limit is not None and limit < 1:
        raise MienError(f"--limit {limit}: give a number of pairs of at least 1 (leave it out for every pair)")
    people = [i for i in bench.identities if i.identity_photos and i.scoring_photos]
    out = []
    for k, a in enumerate(people if limit is None else people[:limit]):
        b = people[(k + 1) % len(people)]
        scene = b.identity_photos[0]
        out.append(Pair(a.id, b.id, a.identity_photos[0], scene, tuple(a.scoring_photos),
                        tuple(p for p in b.scoring_photos if p.ref != scene.ref)))  # fmt: skip
    return out


def real_impostor(a_desc: np.ndarray, b_desc: np.ndarray) -> float | None:
    """Share of A's real photos (face-api descriptors ``a_desc``) whose mean distance to B's (``b_desc``) is
    below the verification threshold: how often A's own, unedited face already passes as B."""
    if not len(a_desc) or not len(b_desc):
        return None
    dist = np.linalg.norm(a_desc[:, None] - b_desc[None], axis=2).mean(1)
    return float((dist < DLIB_THRESHOLD).mean())


def footprint(photo: np.ndarray, matrix: np.ndarray, keep: str = "background") -> np.ndarray:
    """(H, W) weight in [0, 1] of the crop's editable face box in the photo (a white face pasted into a black
    photo by :func:`mien.paste.paste_into_photo`): outside it (0) no paste may change a pixel."""
    from mien.paste import paste_into_photo

    white = np.full((128, 128, 3), 255, np.uint8)
    return paste_into_photo(np.zeros_like(photo), white, matrix, keep)[..., 0].astype(np.float32) / 255


def seam(output: np.ndarray, scene: np.ndarray, width: int = 2) -> float:
    """Mean, over the band of ``width`` pixels either side of the edge of what the paste changed, of the
    output's gradient magnitude minus the scene's (pixel levels; > 0: edges the paste added). Needs no
    knowledge of the paste's mask, so every paste is measured alike; 0 when nothing changed."""
    import cv2

    changed = (np.abs(output.astype(int) - scene.astype(int)).max(2) > 0).astype(np.uint8)
    if not changed.any():
        return 0.0
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    ring = cv2.dilate(changed, kernel).astype(bool) & ~cv2.erode(changed, kernel).astype(bool)

    def grad(im):
        gy, gx = np.gradient(im.astype(np.float32).mean(2))
        return np.hypot(gx, gy)

    return float((grad(output) - grad(scene))[ring].mean())


def score_output(analyzer, output, scene_rgb, weight, scene_face, label, a_desc, b_desc) -> dict:
    """One output's measures (module docstring); ``no_face`` when the analyzer finds none (a face lost by the
    swap, say a NaN latent decoded to black, is counted, not fatal to the run)."""
    faces = faces_of(analyzer, output)
    outside = weight <= 0
    row = {"label": label, "outside_max": int(np.abs(output.astype(int) - scene_rgb.astype(int))[outside].max(initial=0)),
           "seam": seam(output, scene_rgb)}  # fmt: skip
    if not faces:
        return {**row, "no_face": True}
    f = faces[0]
    dist = lambda d: float(np.linalg.norm(d - f.faceapi[None], axis=1).mean()) if len(d) else None  # noqa: E731
    da, db = dist(a_desc), dist(b_desc)
    pose = [abs(f.pose[k] - scene_face.pose[k]) for k in ("yaw", "pitch", "roll")]
    top = max(f.expression, key=f.expression.get)
    return {**row, "no_face": False, "dist_a": da, "dist_b": db, "verified_a": da is not None and da < DLIB_THRESHOLD,
            "verified_b": db is not None and db < DLIB_THRESHOLD, "pose_err": float(np.mean(pose)),
            "faceapi": top, "label_ok": top == label, "p_label": float(f.expression.get(label, 0.0))}  # fmt: skip


def faces_of(analyzer, rgb: np.ndarray) -> list:
    """The analyzer's faces of ``rgb``, [] where it finds none (it raises NoFaceError)."""
    from mien.errors import NoFaceError

    try:
        return analyzer.analyze(rgb)
    except NoFaceError:
        return []


def run_swap(bench: Benchmark, generator: str, out: Path, limit: int | None = None, settings=None,
             device: str = "cpu", progress: bool = True) -> dict:  # fmt: skip
    """Run the swap benchmark with ``generator`` ("built-in" or "copy"); returns and writes summary.json."""
    from PIL import Image

    from mien.analysis import FaceAnalyzer
    from mien.edit import Editor
    from mien.errors import MienError
    from mien.expression.targets import parse_request
    from mien.paste import PASTES

    if generator not in ("built-in", "copy"):
        raise MienError(f"--swap takes --generator built-in or copy, not {generator}")
    pairs(bench, limit)  # a bad --limit is reported before the models load
    out = Path(out)
    (out / "outputs").mkdir(parents=True, exist_ok=True)
    done_path = out / "items.jsonl"
    done = {}
    if done_path.is_file():
        for line in done_path.read_text().splitlines():
            item = json.loads(line)
            done[item["item"]] = item
    start = time.time()
    editor = Editor.from_pretrained(device=device)
    analyzer = FaceAnalyzer(device)

    def describe(photos) -> np.ndarray:  # face-api descriptors of the photos with a face
        found = [faces_of(analyzer, bench.image(p)) for p in photos]
        return np.stack([f[0].faceapi for f in found if f]) if any(found) else np.zeros((0, 128))
    try:
        for pair in pairs(bench, limit):
            todo = [lab for lab in LABELS if f"{pair.a}>{pair.b}:{lab}" not in done]
            if not todo:
                continue
            selfie, scene_rgb = bench.image(pair.selfie), bench.image(pair.scene)
            try:
                subject = editor.prepare([selfie], [str(pair.selfie)])
                scene = editor.scene(scene_rgb, 0, str(pair.scene))
            except MienError as e:  # a photo the landmarker misses: recorded, the run goes on
                for lab in todo:
                    _write(done_path, done, {"item": f"{pair.a}>{pair.b}:{lab}", "error": str(e)})
                continue
            a_desc, b_desc = describe(pair.a_scoring), describe(pair.b_scoring)
            real_b = real_impostor(a_desc, b_desc)
            scene_face = analyzer.analyze(scene_rgb)[0]
            keep = "background"
            weight = footprint(scene_rgb, scene.matrix, keep)
            for lab in todo:
                item = f"{pair.a}>{pair.b}:{lab}"
                base = item.replace(":", "_").replace(">", "_into_")
                if generator == "copy":
                    crop = subject.identity.crops[0]
                else:
                    crop = editor.edit(subject, parse_request(lab), settings, n=1, seed=0, paste=False,
                                       into=scene).crops[0]  # fmt: skip
                Image.fromarray(crop).save(out / "outputs" / f"{base}_crop128.png")
                rows = {}
                for how, paste in PASTES.items():
                    output = paste(scene_rgb, crop, scene.matrix, keep, landmarks=scene.landmarks)
                    Image.fromarray(output).save(out / "outputs" / f"{base}_{how}.png")
                    rows[how] = {**score_output(analyzer, output, scene_rgb, weight, scene_face, lab, a_desc, b_desc),
                                 "real_b": real_b}  # fmt: skip
                _write(done_path, done, {"item": item, "a": pair.a, "b": pair.b, "label": lab, "pastes": rows})
                if progress:
                    print(f"{item}: {json.dumps(rows)}", flush=True)
    finally:
        analyzer.close()
        editor.close()
    real = real_rates(bench, analyzer_factory=lambda: FaceAnalyzer(device))
    items = list(done.values())
    summary = {how: summarise([i["pastes"][how] if "pastes" in i else i for i in items], real) for how in PASTES}
    summary["real_as_b"] = real_as_b(items)
    summary["by_scene_group"] = by_scene_group(items, {i.id: i.group for i in bench.identities}, real)
    summary.update({"generator": generator, "benchmark": bench.name, "pairs": len(pairs(bench, limit)),
                    "settings": None if settings is None else settings.to_dict(),
                    "wall_time_s": round(time.time() - start, 1), "definitions": DEFINITIONS})  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def summary_of(out: Path, real: dict) -> dict:
    """The summary of a run's finished items (``OUT/items.jsonl``), one per paste, with ``real`` rates per label
    (:func:`real_rates`, or a finished run's): what an interrupted run has measured so far."""
    items = [json.loads(line) for line in (Path(out) / "items.jsonl").read_text().splitlines()]
    pastes = sorted({how for i in items for how in i.get("pastes", {})})
    return {how: summarise([i["pastes"][how] if "pastes" in i else i for i in items], real) for how in pastes}


def by_scene_group(items: list[dict], group: dict[str, str], real: dict) -> dict:
    """{paste: {scene person's group (cfp, essex94, taiwanese): summary of the outputs into that group's photos}}."""
    out = {}
    for i in items:
        for how, row in i.get("pastes", {}).items():
            out.setdefault(how, {}).setdefault(group.get(i["b"], "?"), []).append(row)
    return {how: {g: summarise(rows, real) for g, rows in sorted(gs.items())} for how, gs in out.items()}


def real_as_b(items: list[dict]) -> dict[str, float]:
    """{"A>B": real-photo impostor rate} of the pairs some of whose A photos verify as B (module docstring)."""
    out = {}
    for i in items:
        rate = next(iter(i.get("pastes", {}).values()), {}).get("real_b")
        if rate:
            out[f"{i['a']}>{i['b']}"] = rate
    return out


def _write(path: Path, done: dict, item: dict) -> None:
    done[item["item"]] = item
    with path.open("a") as f:
        f.write(json.dumps(item) + "\n")


def real_rates(bench: Benchmark, analyzer_factory) -> dict[str, float | None]:
    """face-api's rate of reading each label on the benchmark's real photos labelled with it."""
    labelled = [p for p in bench.photos() if p.label in LABELS]
    hits = {lab: [] for lab in LABELS}
    with analyzer_factory() as analyzer:
        for p in labelled:
            faces = analyzer.analyze(bench.image(p))
            if faces:
                hits[p.label].append(max(faces[0].expression, key=faces[0].expression.get) == p.label)
    return {lab: (float(np.mean(h)) if h else None) for lab, h in hits.items()}


def summarise(items: list[dict], real: dict) -> dict:
    ok = [i for i in items if not i.get("error") and not i.get("no_face")]
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    per_label = {lab: {"n": len(rows := [i for i in ok if i["label"] == lab]),
                       "faceapi_rate": mean([i["label_ok"] for i in rows]), "real_rate": real.get(lab)}
                 for lab in LABELS}  # fmt: skip
    return {"items": len(items), "ok": len(ok), "no_face": sum(bool(i.get("no_face")) for i in items),
            "errors": sum(bool(i.get("error")) for i in items),
            "verified_a": mean([i["verified_a"] for i in ok if i["dist_a"] is not None]),
            "impostor_b": mean([i["verified_b"] for i in ok if i["dist_b"] is not None]),
            "real_impostor_b": mean([i["real_b"] for i in ok if i.get("real_b") is not None]),
            "impostor_b_apart": mean([i["verified_b"] for i in ok if i["dist_b"] is not None and i.get("real_b") == 0]),
            "n_apart": sum(i.get("real_b") == 0 for i in ok),
            "pose_mae": mean([i["pose_err"] for i in ok]),
            "outside_identical": mean([i["outside_max"] == 0 for i in items if "outside_max" in i]),
            "seam": mean([i["seam"] for i in items if "seam" in i]), "per_label": per_label}  # fmt: skip
