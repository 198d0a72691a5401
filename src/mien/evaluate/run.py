"""One evaluation run: generate every benchmark item, analyse it, score it, write the results.

    results = evaluate(benchmark, generator, Options(out=Path("/tmp/eval")))

writes into ``out``:
  items.jsonl    one line per finished item (its analysis inline), so an interrupted run resumes
  outputs/       every generated image as PNG
  results.json   every number with its definition, the benchmark, generator, versions and seeds
  report.html    self-contained: tables, plots and image grids as embedded PNG

Design notes
* Every image, real or generated, goes through one :class:`~mien.analysis.FaceAnalyzer` call, and
  analyses are cached by image content plus a fingerprint of the analysis code and weights
  (:class:`AnalysisCache`, persistent in the user cache by default). So real photos are analysed
  once across runs, a ``copy`` output is the identical record of its identity photo (expression
  change exactly 0), and a rerun that needs nothing new never loads the models.
* Scoring (``score``) is a pure function of the real-photo analyses and the item records; it reads
  the formulas from :mod:`mien.evaluate.metrics` and the definitions from ``DEFINITIONS``.
* Averages over identities are macro averages (each identity counts once): the dev groups have 2 to
  43 photos per person, and pooling pairs would let three Taiwanese performers dominate.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mien import __version__
from mien.errors import MienError, NoFaceError
from mien.evaluate import metrics as M
from mien.evaluate.benchmark import LABELS, Benchmark, Identity, Request
from mien.evaluate.generators import Condition, Generator, Unsupported, guidance_scales
from mien.expression.aus import AU_NAMES

SCHEMA = "mien.evaluate/1"
AU_NOTE = ("Action Unit values are estimates derived from MediaPipe blendshapes (mien.expression.aus), "
           "not from an image-to-AU model: none is available here.")
# Documented top-level keys of results.json (tests check them).
RESULT_KEYS = ("schema", "benchmark", "generator", "model_hash", "seed", "versions", "created",
               "wall_time_s", "counts", "notes", "metrics")
# The analysis code and weights whose change invalidates cached analyses.
_ANALYSIS_MODULES = ("mien.analysis", "mien.face.align", "mien.face.landmarker", "mien.face.pose",
                     "mien.models.faceapi_recognition", "mien.models.faceapi_expression", "mien.models.tfjs",
                     "mien.models.mobilefacenet", "mien.models.tflite_graph", "mien.models.tflite_ops",
                     "mien.models.blendshapes")
_ANALYSIS_WEIGHTS = ("face_landmarker", "faceapi_recognition", "faceapi_expression", "mobilefacenet")


@dataclass
class Options:
    out: Path
    seed: int = 0  # for the realism split and subsampling; generation seeds come from the benchmark
    cache_dir: Path | None = None  # persistent analysis cache; None: default_cache_dir()
    use_cache: bool = True
    fresh: bool = False  # discard finished items in ``out`` instead of resuming
    device: str = "cpu"
    model_hash: str | None = None  # overrides the generator's own
    grid_per_group: int = 2  # identities per group shown in the report's image grid
    sweep_identities: int = 8  # identities in the guidance sweep (generators with guidance scales)
    progress: bool = True


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mien" / "evaluate"


# ----------------------------------------------------------------------------------------------
# analysis, cached by content


def analyzer_fingerprint() -> str:
    """Hash of the analysis source files and weight checksums: cached analyses are valid while it holds."""
    from mien.weights import FILES

    h = hashlib.sha256(__version__.encode())
    for name in _ANALYSIS_MODULES:
        h.update(Path(importlib.util.find_spec(name).origin).read_bytes())
    for name in _ANALYSIS_WEIGHTS:
        h.update(FILES[name].sha256.encode())
    return h.hexdigest()[:16]


def image_sha(rgb: np.ndarray) -> str:
    rgb = np.ascontiguousarray(rgb)
    return hashlib.sha256(repr(rgb.shape).encode() + rgb.tobytes()).hexdigest()


def to_record(face) -> dict:
    """A :class:`~mien.analysis.FaceAnalysis` as plain lists (labels in ``LABELS`` order)."""
    r6 = lambda v: [round(float(x), 6) for x in v]  # noqa: E731
    return {
        "faceapi": r6(face.faceapi),
        "mobilefacenet": r6(face.mobilefacenet),
        "expression": r6(face.expression[lab] for lab in LABELS),
        "blendshapes": r6(face.blendshapes.values()),
        "pose": [round(float(face.pose[k]), 3) for k in ("yaw", "pitch", "roll")],
    }


class AnalysisCache:
    """``cache(rgb) -> record``: a record dict, or ``{"error": ...}`` when no face is found.

    In memory always; also appended to ``<dir>/analyses.jsonl`` when a folder is given. The analyzer
    is built on the first miss only.
    """

    def __init__(self, folder: Path | None, make_analyzer: Callable[[], object], fingerprint: str):
        self.fingerprint, self._make, self._analyzer = fingerprint, make_analyzer, None
        self._mem: dict[str, dict] = {}
        self._file = None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "analyses.jsonl"
            if path.exists():
                self._mem.update(_read_cache(path, fingerprint))
            self._file = path.open("a", encoding="utf-8")
        self.hits = self.misses = 0

    def __call__(self, rgb: np.ndarray, sha: str | None = None) -> dict:
        key = f"{self.fingerprint}:{sha or image_sha(rgb)}"
        rec = self._mem.get(key)
        if rec is not None:
            self.hits += 1
            return rec
        self.misses += 1
        if self._analyzer is None:
            self._analyzer = self._make()
        try:
            rec = to_record(self._analyzer.analyze(rgb)[0])
        except NoFaceError as e:
            rec = {"error": str(e)}
        self._mem[key] = rec
        if self._file is not None:
            self._file.write(json.dumps({"key": key, "record": rec}) + "\n")
            self._file.flush()
        return rec

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._analyzer is not None and hasattr(self._analyzer, "close"):
            self._analyzer.close()


def _read_cache(path: Path, fingerprint: str) -> dict[str, dict]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interrupted run
            continue
        if d.get("key", "").startswith(fingerprint + ":"):
            out[d["key"]] = d["record"]
    return out


# ----------------------------------------------------------------------------------------------
# running


def evaluate(benchmark: Benchmark, generator: Generator, options: Options,
             make_analyzer: Callable[[], object] | None = None) -> dict:
    """Run, score and write results.json and report.html; returns the results document."""
    start = time.time()
    out = Path(options.out)
    fingerprint = analyzer_fingerprint()
    _prepare_out(out, benchmark, generator, options, fingerprint)
    if make_analyzer is None:
        def make_analyzer():
            from mien.analysis import FaceAnalyzer

            return FaceAnalyzer(options.device)
    folder = (options.cache_dir or default_cache_dir()) if options.use_cache else None
    cache = AnalysisCache(folder, make_analyzer, fingerprint)
    try:
        real = analyse_real(benchmark, cache, options.progress)
        items = run_items(benchmark, generator, cache, out, options.progress)
        sweep = guidance_sweep(benchmark, generator, cache, real, options)
    finally:
        cache.close()
    metrics, notes = score(benchmark, real, items, options.seed, sweep)
    results = {
        "schema": SCHEMA,
        "benchmark": {"name": benchmark.name, "source": benchmark.source, "sha256": benchmark.sha256,
                      "identities": len(benchmark.identities), "items": benchmark.n_items(),
                      "seeds": sorted({s for i in benchmark.identities for s in i.seeds})},
        "generator": {"name": generator.name, "description": generator.description},
        "model_hash": options.model_hash or getattr(generator, "model_hash", None),
        "seed": options.seed,
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - start, 1),
        "counts": _counts(items, real),
        "notes": notes,
        "metrics": metrics,
    }
    (out / "results.json").write_text(json.dumps(_clean(results), indent=1))
    write_report(out, _clean(results), benchmark, real, items, options.grid_per_group)
    return _clean(results)


def _prepare_out(out: Path, benchmark: Benchmark, generator: Generator, options: Options, fingerprint: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "outputs").mkdir(exist_ok=True)
    # Items are keyed by (identity, request, seed), so runs with different --limit share one folder;
    # the analyses inside them are only valid for the same analysis code (fingerprint).
    header = {"benchmark_sha256": benchmark.sha256, "generator": generator.name,
              "settings": generator.description,
              "model_hash": options.model_hash or getattr(generator, "model_hash", None), "analyzer": fingerprint}
    run_file, items_file = out / "run.json", out / "items.jsonl"
    if run_file.exists() and items_file.exists() and not options.fresh:
        old = json.loads(run_file.read_text())
        if {k: old.get(k) for k in header} != header:
            raise MienError(f"{out} holds a run of another benchmark, generator, model, settings or analysis code; "
                            "choose another --out or pass --fresh to discard it")
    if options.fresh and items_file.exists():
        items_file.unlink()
    run_file.write_text(json.dumps(header))


def analyse_real(benchmark: Benchmark, cache: AnalysisCache, progress: bool) -> dict[str, dict]:
    """ref → {"photo", "sha", "record"} for every real photo the benchmark names."""
    real = {}
    for photo in tqdm(benchmark.photos(), desc="real photos", unit="img", file=sys.stderr, disable=not progress):
        rgb = benchmark.image(photo)
        sha = image_sha(rgb)
        real[photo.ref] = {"photo": photo, "sha": sha, "record": cache(rgb, sha)}
    return real


def item_key(identity: str, request_id: str, seed: int) -> str:
    return f"{identity}|{request_id}|{seed}"


def run_items(benchmark: Benchmark, generator: Generator, cache: AnalysisCache, out: Path,
              progress: bool) -> list[dict]:
    """Generate and analyse every item not already in ``out/items.jsonl``; all item records, in order."""
    path = out / "items.jsonl"
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[item_key(d["identity"], d["request"], d["seed"])] = d
    records = []
    vocab = _Vocab()
    with path.open("a", encoding="utf-8") as f, tqdm(total=benchmark.n_items(), desc=f"generating ({generator.name})",
                                                      unit="item", file=sys.stderr, disable=not progress) as bar:
        for ident in benchmark.identities:
            images = None
            for request, seed in ident.items():
                key = item_key(ident.id, request.id, seed)
                if key not in done:
                    images = images or [benchmark.image(p) for p in ident.identity_photos]
                    cond = condition(benchmark, ident, request, vocab)
                    done[key] = _run_item(generator, images, cond, ident, seed, cache, out)
                    f.write(json.dumps(done[key]) + "\n")
                    f.flush()
                records.append(done[key])
                bar.update()
    return records


class _Vocab:
    def __init__(self):
        self._v = None

    def resolve(self, term: str):
        if self._v is None:
            from mien.expression.vocabulary import Vocabulary

            self._v = Vocabulary.load()
        return self._v.resolve(term)


def condition(benchmark: Benchmark, ident: Identity, request: Request, vocab: _Vocab) -> Condition:
    if request.kind == "label":
        return Condition(request, ident.id, basic={request.label: request.intensity})
    if request.kind == "term":
        recipe = vocab.resolve(request.term)
        return Condition(request, ident.id, basic=dict(recipe.basic), aus=dict(recipe.aus))
    if request.kind == "aus":
        return Condition(request, ident.id, aus=dict(request.aus))
    return Condition(request, ident.id, reference=benchmark.image(request.like), reference_label=request.like.label)


def _run_item(generator: Generator, images: list[np.ndarray], cond: Condition, ident: Identity, seed: int,
              cache: AnalysisCache, out: Path) -> dict:
    rec = {"identity": ident.id, "group": ident.group, "request": cond.request.id, "kind": cond.request.kind,
           "label": cond.label, "seed": seed, "status": "ok", "reason": None, "image": None, "sha": None,
           "analysis": None}
    t = time.time()
    try:
        rgb = generator.generate(images, cond, seed)
    except Unsupported as e:
        return {**rec, "status": "unsupported", "reason": str(e)}
    except MienError as e:
        return {**rec, "status": "error", "reason": str(e)}
    rec["seconds"] = round(time.time() - t, 3)
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise MienError(f"generator '{generator.name}' returned {type(rgb).__name__} "
                        f"{getattr(rgb, 'shape', '')} {getattr(rgb, 'dtype', '')}; it must return uint8 RGB (H, W, 3)")
    name = re.sub(r"[^A-Za-z0-9._=-]+", "_", f"{ident.id}__{cond.request.id}__s{seed}") + ".png"
    Image.fromarray(rgb).save(out / "outputs" / name)
    rec["sha"] = image_sha(rgb)
    rec["image"] = f"outputs/{name}"
    analysis = cache(rgb, rec["sha"])
    if "error" in analysis:
        return {**rec, "status": "no_face", "reason": analysis["error"]}
    return {**rec, "analysis": analysis}


def guidance_sweep(benchmark: Benchmark, generator: Generator, cache: AnalysisCache, real: dict,
                   options: Options) -> list[dict] | None:
    """Trade-off curve over the generator's guidance scales: label requests (not neutral), first seed,
    the first ``sweep_identities`` identities. None when the generator has no scales."""
    scales = guidance_scales(generator)
    if not scales or options.sweep_identities <= 0:
        return None
    idents = benchmark.identities[: options.sweep_identities]
    points = []
    for scale in tqdm(scales, desc="guidance sweep", file=sys.stderr, disable=not options.progress):
        g = generator.with_guidance(scale)
        recs = []
        for ident in idents:
            images = [benchmark.image(p) for p in ident.identity_photos]
            for request in (r for r in ident.requests if r.kind == "label" and r.label != "neutral"):
                cond = condition(benchmark, ident, request, _Vocab())
                try:
                    rgb = g.generate(images, cond, ident.seeds[0])
                except Unsupported:
                    continue
                rec = {"identity": ident.id, "group": ident.group, "request": request.id, "kind": "label",
                       "label": request.label, "seed": ident.seeds[0], "sha": image_sha(rgb)}
                a = cache(rgb, rec["sha"])
                recs.append({**rec, "status": "no_face" if "error" in a else "ok",
                             "analysis": None if "error" in a else a})
        sub = Benchmark(benchmark.name, "", idents, benchmark.source, benchmark.sha256)
        ctx = _Context(sub, real, recs)
        idm = _identity_scores(ctx, recs)
        points.append({"scale": float(scale), "expression_change": M.nanmean(_expression_change(ctx, recs)),
                       "faceapi_cosine": idm["faceapi_cosine"], "verification_rate": idm["verification_rate"],
                       "faceapi_accuracy": M.accuracy(*_predicted(recs, "faceapi", None)), "n": len(recs)})
    return points


# ----------------------------------------------------------------------------------------------
# scoring

DEFINITIONS = {
    "identity.faceapi_cosine": "cosine similarity between the 128-D face-api/dlib descriptor of each output and of each "
    "of the person's scoring photos (other real photos, never an identical image); mean over pairs per identity, "
    "then mean over identities",
    "identity.mobilefacenet_cosine": "as identity.faceapi_cosine with the 192-D MobileFaceNet embedding",
    "identity.verification_rate": "share of (output, scoring photo) pairs whose 128-D descriptors are closer than "
    "the dlib threshold 0.6 (same person); per identity, then mean over identities",
    "identity.verification_rate_with_failures": "as identity.verification_rate, with outputs where no face was "
    "found counted as rejected pairs",
    "identity.by_group": "the three identity figures per benchmark group",
    "identity.ceiling.identity_photo_pairs": "the identity figures for the real pairs (identity photo, scoring photo): "
    "exactly the pairs a copy of the identity photo is scored on",
    "identity.ceiling.all_real_pairs": "the identity figures for every pair of distinct real photos of each person "
    "(identity and scoring photos): the real-photo ceiling",
    "identity.verification_ratio": "identity.verification_rate / identity.ceiling.all_real_pairs verification rate",
    "expression.faceapi": "label requests: the face-api.js classifier's top label on each output against the requested "
    "label (accuracy overall, per label, confusion matrix rows=requested, columns=predicted); real_accuracy: its "
    "accuracy on the benchmark's real photos with that label; normalised: per-label accuracy / real_accuracy, and their "
    "mean",
    "expression.blendshape": "as expression.faceapi with mien's blendshape classifier (52 MediaPipe blendshapes -> 7 "
    "labels, mien.expression.classifier)",
    "expression.terms": "vocabulary-term requests: each classifier's top label against the term recipe's dominant "
    "basic label",
    "expression.by_group": "face-api accuracy on label requests per benchmark group",
    "aus": "AU requests: requested vs measured AU intensities (0-5; unlisted AUs requested as 0). mae = mean |requested "
    "- measured|; pearson = Pearson's r; icc31 = ICC(3,1) of Shrout & Fleiss 1979 (two-way mixed, consistency, single "
    "rater) with requested and measured as the two raters; overall over all (item, AU) pairs and per AU. Measured AUs "
    "are blendshape-derived estimates",
    "reference.blendshape_distance": "like requests: Euclidean distance between the 52 blendshapes of the reference "
    "photo and of the output (0 = same measured movement), mean over items",
    "reference.identity_photo_distance": "the same distance from the reference to the identity photo: the starting "
    "point (what a copy scores)",
    "reference.faceapi_cosine": "like requests: identity.faceapi_cosine restricted to these outputs (identity to the "
    "target person while copying someone else's expression)",
    "reference.verification_rate": "like requests: identity.verification_rate restricted to these outputs",
    "tradeoff.expression_change": "Euclidean distance between the blendshapes of each output and of the closest "
    "identity photo (a copy scores 0), mean over outputs; per request kind in by_kind",
    "tradeoff.joint_success": "non-neutral label requests: share of outputs (no-face outputs count as failures) whose "
    "face-api label is the requested one and whose mean descriptor distance to the scoring photos is below 0.6",
    "tradeoff.curve": "per guidance scale: expression change, identity and face-api accuracy on non-neutral label "
    "requests, first seed, first identities (only for generators with guidance scales)",
    "realism.frechet": "Fréchet distance (Heusel et al. 2017) between Gaussians fitted to embeddings, per space "
    "(faceapi 128-D, mobilefacenet 192-D, blendshapes 52-D). Identities are split in two halves A/B (per group, seeded); "
    "generated = mean of FD(outputs of A, real photos of B) and FD(outputs of B, real of A), outputs subsampled to the "
    "real half's size; floor = FD(real A, real B). Unreliable when n is below the dimension",
    "realism.diversity": "spread across seeds: mean pairwise Euclidean distance between the outputs of the same "
    "(identity, request) over seeds, in blendshapes and in MobileFaceNet embedding; mean over (identity, request)",
    "failures": "no_face: outputs in which no usable face was found; unsupported: requests the generator cannot serve; "
    "error: requests the generator rejected; real_no_face: real photos without a usable face (left out of scoring)",
}


class _Context:
    """Lookups shared by the scorers: each identity's analysed real photos, and records' vectors."""

    def __init__(self, benchmark: Benchmark, real: dict, items: list[dict]):
        self.benchmark = benchmark
        self.ident = {i.id: i for i in benchmark.identities}
        self.ok_real = {ref: r for ref, r in real.items() if "error" not in r["record"]}
        self.real = real

    def photos(self, ident: str, which: str) -> list[dict]:
        return [self.ok_real[p.ref] for p in getattr(self.ident[ident], which) if p.ref in self.ok_real]


def vec(rec: dict, space: str) -> np.ndarray:
    return np.asarray(rec[space], np.float64)


def score(benchmark: Benchmark, real: dict, items: list[dict], seed: int, sweep: list[dict] | None = None
          ) -> tuple[dict, list[str]]:
    """All metrics → ({name: {"value", "definition", ...}}, notes)."""
    ctx = _Context(benchmark, real, items)
    notes = [AU_NOTE, "Averages over identities are macro averages: each identity counts once."]
    ok = [r for r in items if r["status"] == "ok"]
    values: dict[str, object] = {}
    values.update(_identity_metrics(ctx, items))
    values.update(_expression_metrics(ctx, ok, notes))
    values["aus"] = _au_metrics(ok, notes)
    values.update(_reference_metrics(ctx, ok))
    values.update(_tradeoff_metrics(ctx, items, sweep))
    values.update(_realism_metrics(ctx, ok, seed))
    values["failures"] = _failures(items, real)
    return {k: {"value": v, "definition": DEFINITIONS[k]} for k, v in values.items()}, notes


def _pairs(ctx: _Context, rec: dict) -> tuple[list[float], list[float], list[bool]]:
    """(cos128, cos192, verified) of one output against its person's scoring photos (not itself)."""
    sc = [s for s in ctx.photos(rec["identity"], "scoring_photos") if s["sha"] != rec["sha"]]
    if not sc:
        return [], [], []
    a = rec["analysis"]
    f = np.stack([vec(s["record"], "faceapi") for s in sc])
    m = np.stack([vec(s["record"], "mobilefacenet") for s in sc])
    return (M.cosine(vec(a, "faceapi"), f)[0].tolist(), M.cosine(vec(a, "mobilefacenet"), m)[0].tolist(),
            M.verified(vec(a, "faceapi"), f)[0].tolist())


def _identity_scores(ctx: _Context, items: list[dict], failures_count: bool = False) -> dict:
    per: dict[str, list[list]] = {}
    for rec in items:
        if rec["status"] == "ok":
            c128, c192, ver = _pairs(ctx, rec)
        elif rec["status"] == "no_face" and failures_count:
            n = len(ctx.photos(rec["identity"], "scoring_photos"))
            c128, c192, ver = [], [], [False] * n
        else:
            continue
        acc = per.setdefault(rec["identity"], [[], [], []])
        for lst, vals in zip(acc, (c128, c192, ver)):
            lst.extend(vals)
    return {
        "faceapi_cosine": M.nanmean(M.nanmean(v[0]) for v in per.values()),
        "mobilefacenet_cosine": M.nanmean(M.nanmean(v[1]) for v in per.values()),
        "verification_rate": M.nanmean(M.nanmean(np.asarray(v[2], float)) for v in per.values()),
        "identities": sum(1 for v in per.values() if v[2]),
        "pairs": sum(len(v[2]) for v in per.values()),
    }


def _real_pairs(ctx: _Context, all_pairs: bool) -> dict:
    """Identity figures for real photo pairs, as if each identity photo (or every real photo) were an output."""
    recs = []
    for ident in ctx.benchmark.identities:
        sources = ctx.photos(ident.id, "identity_photos")
        if all_pairs:
            sources = sources + ctx.photos(ident.id, "scoring_photos")
        for s in sources:
            recs.append({"identity": ident.id, "status": "ok", "sha": s["sha"], "analysis": s["record"]})
    if not all_pairs:
        return _identity_scores(ctx, recs)
    # every unordered pair once: compare each photo only with those after it in the person's list
    per: dict[str, list[list]] = {}
    for ident in ctx.benchmark.identities:
        photos = ctx.photos(ident.id, "identity_photos") + ctx.photos(ident.id, "scoring_photos")
        uniq = list({p["sha"]: p for p in photos}.values())
        if len(uniq) < 2:
            continue
        f = np.stack([vec(p["record"], "faceapi") for p in uniq])
        m = np.stack([vec(p["record"], "mobilefacenet") for p in uniq])
        iu = np.triu_indices(len(uniq), 1)
        per[ident.id] = [M.cosine(f, f)[iu], M.cosine(m, m)[iu], M.verified(f, f)[iu]]
    return {
        "faceapi_cosine": M.nanmean(v[0].mean() for v in per.values()),
        "mobilefacenet_cosine": M.nanmean(v[1].mean() for v in per.values()),
        "verification_rate": M.nanmean(v[2].mean() for v in per.values()),
        "identities": len(per),
        "pairs": int(sum(len(v[2]) for v in per.values())),
    }


def _identity_metrics(ctx: _Context, items: list[dict]) -> dict:
    main = _identity_scores(ctx, items)
    ceiling_all = _real_pairs(ctx, all_pairs=True)
    groups = sorted({i.group for i in ctx.benchmark.identities})
    return {
        "identity.faceapi_cosine": main["faceapi_cosine"],
        "identity.mobilefacenet_cosine": main["mobilefacenet_cosine"],
        "identity.verification_rate": main["verification_rate"],
        "identity.verification_rate_with_failures": _identity_scores(ctx, items, True)["verification_rate"],
        "identity.by_group": {g: _identity_scores(ctx, [r for r in items if r["group"] == g]) for g in groups},
        "identity.ceiling.identity_photo_pairs": _real_pairs(ctx, all_pairs=False),
        "identity.ceiling.all_real_pairs": ceiling_all,
        "identity.verification_ratio": M.safe_ratio(main["verification_rate"], ceiling_all["verification_rate"]),
    }


def _load_blendshape_classifier(notes: list[str]):
    try:
        from mien.expression.classifier import BlendshapeClassifier

        return BlendshapeClassifier.load()
    except (ImportError, MienError, OSError, ValueError, TypeError) as e:
        notes.append(f"blendshape classifier unavailable, its metrics are skipped: {e}")
        return None


def _predict(records: list[dict], which: str, clf) -> list[str]:
    if not records:
        return []
    if which == "faceapi":
        return [LABELS[int(np.argmax(r["expression"]))] for r in records]
    labels = tuple(getattr(clf, "labels", LABELS))
    proba = clf.predict_proba(np.stack([vec(r, "blendshapes") for r in records]))
    return [labels[int(i)] for i in np.argmax(proba, 1)]


def _predicted(items: list[dict], which: str, clf) -> tuple[list[str], list[str]]:
    scored = [r for r in items if r["status"] == "ok" and r["label"] is not None]
    return [r["label"] for r in scored], _predict([r["analysis"] for r in scored], which, clf)


def _classifier_scores(ctx: _Context, ok: list[dict], which: str, clf) -> dict:
    labelled = [r for r in ctx.ok_real.values() if r["photo"].label is not None]
    real_true = [r["photo"].label for r in labelled]
    real_pred = _predict([r["record"] for r in labelled], which, clf)
    true, pred = _predicted([r for r in ok if r["kind"] == "label"], which, clf)
    per = M.per_label_accuracy(true, pred, LABELS)
    real_per = M.per_label_accuracy(real_true, real_pred, LABELS)
    ratio = {lab: M.safe_ratio(per[lab], real_per[lab]) for lab in LABELS}
    return {
        "accuracy": M.accuracy(true, pred), "per_label": per, "n": len(true),
        "confusion": {"labels": list(LABELS), "matrix": M.confusion(true, pred, LABELS).tolist()},
        "real_accuracy": {"overall": M.accuracy(real_true, real_pred), "per_label": real_per,
                          "n_per_label": {lab: real_true.count(lab) for lab in LABELS}},
        "normalised": {"per_label": ratio, "mean": M.nanmean(ratio.values())},
    }


def _expression_metrics(ctx: _Context, ok: list[dict], notes: list[str]) -> dict:
    clf = _load_blendshape_classifier(notes)
    terms = [r for r in ok if r["kind"] == "term"]
    out = {"expression.faceapi": _classifier_scores(ctx, ok, "faceapi", None),
           "expression.blendshape": _classifier_scores(ctx, ok, "blendshape", clf) if clf else
           {"skipped": "blendshape classifier unavailable (see notes)"}}
    out["expression.terms"] = {"faceapi": M.accuracy(*_predicted(terms, "faceapi", None)), "n": len(terms),
                               "blendshape": M.accuracy(*_predicted(terms, "blendshape", clf)) if clf else None}
    groups = sorted({r["group"] for r in ok})
    out["expression.by_group"] = {g: M.accuracy(*_predicted([r for r in ok if r["kind"] == "label" and r["group"] == g],
                                                            "faceapi", None)) for g in groups}
    return out


def _au_metrics(ok: list[dict], notes: list[str]) -> dict:
    items = [r for r in ok if r["kind"] == "aus"]
    try:
        from mien.expression.aus import AUCalibration, blendshapes_to_aus

        calib = AUCalibration.load()
    except (MienError, OSError, ValueError, TypeError) as e:
        notes.append(f"AU calibration unavailable, AU metrics are skipped: {e}")
        return {"skipped": f"AU calibration unavailable: {e}"}
    if not items:
        return {"skipped": "no AU requests were served", "n": 0}
    req = np.stack([_parse_aus(r["request"]) for r in items])
    meas = blendshapes_to_aus(np.stack([vec(r["analysis"], "blendshapes") for r in items]), calib)
    per = {au: {"mae": M.mae(req[:, j], meas[:, j]), "pearson": M.pearson(req[:, j], meas[:, j]),
                "icc31": M.icc_3_1(np.stack([req[:, j], meas[:, j]], 1))} for j, au in enumerate(AU_NAMES)}
    return {"mae": M.mae(req, meas), "pearson": M.pearson(req, meas),
            "icc31": M.icc_3_1(np.stack([req.ravel(), meas.ravel()], 1)), "per_au": per, "n": len(items),
            "note": AU_NOTE}


def _parse_aus(request_id: str) -> np.ndarray:
    given = dict(p.split("=") for p in request_id.split(":", 1)[1].split(","))
    return np.array([float(given.get(a, 0.0)) for a in AU_NAMES])


def _reference_metrics(ctx: _Context, ok: list[dict]) -> dict:
    items = [r for r in ok if r["kind"] == "like"]
    dist, start = [], []
    for r in items:
        ref = ctx.ok_real.get(r["request"].split(":", 1)[1])
        ids = ctx.photos(r["identity"], "identity_photos")
        if ref is None:
            continue
        rb = vec(ref["record"], "blendshapes")
        dist.append(float(M.blendshape_distance(rb, vec(r["analysis"], "blendshapes"))[0]))
        if ids:
            start.append(float(min(M.blendshape_distance(rb, vec(i["record"], "blendshapes"))[0] for i in ids)))
    idm = _identity_scores(ctx, items)
    return {"reference.blendshape_distance": M.nanmean(dist), "reference.identity_photo_distance": M.nanmean(start),
            "reference.faceapi_cosine": idm["faceapi_cosine"], "reference.verification_rate": idm["verification_rate"]}


def _expression_change(ctx: _Context, items: list[dict]) -> list[float]:
    out = []
    for r in items:
        ids = ctx.photos(r["identity"], "identity_photos")
        if r["status"] != "ok" or not ids:
            out.append(float("nan"))
            continue
        b = vec(r["analysis"], "blendshapes")
        out.append(min(float(M.blendshape_distance(b, vec(i["record"], "blendshapes"))[0]) for i in ids))
    return out


def _tradeoff_metrics(ctx: _Context, items: list[dict], sweep: list[dict] | None) -> dict:
    change = _expression_change(ctx, items)
    kinds = sorted({r["kind"] for r in items})
    by_kind = {k: M.nanmean(c for c, r in zip(change, items) if r["kind"] == k) for k in kinds}
    joint = []
    for r in items:
        if r["kind"] != "label" or r["label"] == "neutral" or r["status"] not in ("ok", "no_face"):
            continue
        if r["status"] == "no_face":
            joint.append(False)
            continue
        sc = [s for s in ctx.photos(r["identity"], "scoring_photos") if s["sha"] != r["sha"]]
        if not sc:
            continue
        d = M.euclidean(vec(r["analysis"], "faceapi"), np.stack([vec(s["record"], "faceapi") for s in sc]))
        label_ok = LABELS[int(np.argmax(r["analysis"]["expression"]))] == r["label"]
        joint.append(bool(label_ok and d.mean() < M.DLIB_THRESHOLD))
    return {"tradeoff.expression_change": {"mean": M.nanmean(change), "by_kind": by_kind},
            "tradeoff.joint_success": {"value": M.nanmean(np.asarray(joint, float)), "n": len(joint)},
            "tradeoff.curve": sweep if sweep is not None else "not applicable: the generator has no guidance scales"}


SPACES = ("faceapi", "mobilefacenet", "blendshapes")


def _realism_metrics(ctx: _Context, ok: list[dict], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    half: dict[str, int] = {}
    for g in sorted({i.group for i in ctx.benchmark.identities}):
        ids = sorted(i.id for i in ctx.benchmark.identities if i.group == g)
        for n, j in enumerate(rng.permutation(len(ids))):
            half[ids[j]] = n % 2
    real = [[], []]
    for ident in ctx.benchmark.identities:
        photos = ctx.photos(ident.id, "identity_photos") + ctx.photos(ident.id, "scoring_photos")
        real[half[ident.id]].extend(p["record"] for p in photos)
    gen = [[r["analysis"] for r in ok if half[r["identity"]] == h] for h in (0, 1)]
    frechet = {}
    for space in SPACES:
        ra, rb = ([vec(r, space) for r in real[h]] for h in (0, 1))
        values, used = [], []
        for h, other in ((0, rb), (1, ra)):
            g = [vec(r, space) for r in gen[h]]
            if len(g) > len(real[h]):
                g = [g[i] for i in sorted(rng.choice(len(g), len(real[h]), replace=False))]
            used.append(len(g))
            values.append(M.frechet_from_samples(np.array(g), np.array(other)) if g and other else float("nan"))
        frechet[space] = {"generated": M.nanmean(values),
                          "floor": M.frechet_from_samples(np.array(ra), np.array(rb)) if ra and rb else float("nan"),
                          "n_real": [len(ra), len(rb)], "n_generated": used, "dims": len(ra[0]) if ra else None}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in ok:
        groups.setdefault((r["identity"], r["request"]), []).append(r["analysis"])
    multi = [g for g in groups.values() if len(g) > 1]
    spread = {space: M.nanmean(M.mean_pairwise_distance(np.stack([vec(a, space) for a in g])) for g in multi)
              for space in ("blendshapes", "mobilefacenet")}
    diversity = {**spread, "groups": len(multi)}
    return {"realism.frechet": frechet, "realism.diversity": diversity}


def _failures(items: list[dict], real: dict) -> dict:
    def by_reason(status):
        out: dict[str, int] = {}
        for r in items:
            if r["status"] == status:
                out[r["reason"]] = out.get(r["reason"], 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    no_face = sum(r["status"] == "no_face" for r in items)
    generated = sum(r["status"] in ("ok", "no_face") for r in items)
    return {"no_face": no_face, "no_face_rate": M.safe_ratio(no_face, generated),
            "unsupported": by_reason("unsupported"), "error": by_reason("error"),
            "real_no_face": sorted(str(r["photo"]) for r in real.values() if "error" in r["record"])}


def _counts(items: list[dict], real: dict) -> dict:
    statuses = ("ok", "no_face", "unsupported", "error")
    return {"items": len(items), **{s: sum(r["status"] == s for r in items) for s in statuses},
            "real_photos": len(real)}


def versions() -> dict:
    out = {"mien": __version__, "python": platform.python_version(), "platform": platform.platform()}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("numpy", "scipy", "torch", "mediapipe"):
        try:
            out[name] = version(name)  # from the installed metadata: no import (mediapipe's takes seconds)
        except PackageNotFoundError:
            out[name] = None
    return out


def _clean(x):
    """JSON-safe: NaN → null, numpy scalars → Python numbers."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else round(float(x), 6)
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    return x


# ----------------------------------------------------------------------------------------------
# report.html: one self-contained file. Images are embedded once each as CSS background classes
# (a copy baseline repeats one photo dozens of times); plots are matplotlib PNGs.

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.im{display:inline-block;width:96px;height:96px;
background-size:cover;border:1px solid #ddd}.cap{font-size:11px;width:96px;overflow-wrap:anywhere}
.grid td{vertical-align:top;text-align:center;padding:2px}.muted{color:#888}dt{font-weight:600;margin-top:.4em}"""


class _Images:
    """Embeds each distinct PNG once; ``cls(png_bytes)`` → CSS class name."""

    def __init__(self):
        self.css: dict[str, str] = {}

    def cls(self, png: bytes) -> str:
        name = "i" + hashlib.sha1(png).hexdigest()[:12]
        if name not in self.css:
            import base64

            self.css[name] = f".{name}{{background-image:url(data:image/png;base64,{base64.b64encode(png).decode()})}}"
        return name

    def tag(self, png: bytes | None, title: str = "") -> str:
        if png is None:
            return f'<span class="im muted" title="{_esc(title)}">–</span>'
        return f'<span class="im {self.cls(png)}" title="{_esc(title)}"></span>'


def _png(rgb: np.ndarray, size: int = 128) -> bytes:
    import io

    im = Image.fromarray(rgb)
    if max(im.size) > size:
        im.thumbnail((size, size), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _thumb(path: Path, size: int = 96) -> bytes | None:
    """An output PNG at the grid's display size (None if it is gone)."""
    if not path.exists():
        return None
    with Image.open(path) as im:
        return _png(np.asarray(im.convert("RGB")), size)


def _esc(s) -> str:
    import html

    return html.escape(str(s), quote=True)


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return '<span class="muted">–</span>'
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return _esc(v)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{_esc(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i == 0 else ""}">{_fmt(c)}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _plot(draw: Callable, w: float = 6, h: float = 4) -> str:
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(w, h), dpi=90)
    try:
        draw(fig, ax)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _v(results: dict, name: str):
    return results["metrics"][name]["value"]


def _headline(results: dict) -> str:
    ceil_i, ceil_a = _v(results, "identity.ceiling.identity_photo_pairs"), _v(results, "identity.ceiling.all_real_pairs")
    fa, bs = _v(results, "expression.faceapi"), _v(results, "expression.blendshape")
    rows = [[f"identity: {k.replace('_', ' ')}", _v(results, f"identity.{k}"), ceil_i[k], ceil_a[k]]
            for k in ("faceapi_cosine", "mobilefacenet_cosine", "verification_rate")]
    rows.append(["expression: face-api accuracy (label requests)", fa["accuracy"], None, fa["real_accuracy"]["overall"]])
    if "accuracy" in bs:
        rows.append(["expression: blendshape-classifier accuracy", bs["accuracy"], None, bs["real_accuracy"]["overall"]])
    ref = results["metrics"]
    rows.append(["reference: blendshape distance to reference", ref["reference.blendshape_distance"]["value"],
                 ref["reference.identity_photo_distance"]["value"], None])
    rows.append(["trade-off: expression change from identity photo", _v(results, "tradeoff.expression_change")["mean"],
                 None, None])
    rows.append(["trade-off: joint success (label right and same person)", _v(results, "tradeoff.joint_success")["value"],
                 None, None])
    for space, fr in _v(results, "realism.frechet").items():
        rows.append([f"realism: Fréchet distance, {space}", fr["generated"], None, fr["floor"]])
    return _table(["metric", "generated", "identity photo / start", "real ceiling / floor"], rows)


def _expression_tables(results: dict) -> str:
    fa, bs = _v(results, "expression.faceapi"), _v(results, "expression.blendshape")
    has_bs = "per_label" in bs
    rows = []
    for lab in LABELS:
        row = [lab, fa["per_label"][lab], fa["real_accuracy"]["per_label"][lab], fa["normalised"]["per_label"][lab]]
        if has_bs:
            row += [bs["per_label"][lab], bs["real_accuracy"]["per_label"][lab], bs["normalised"]["per_label"][lab]]
        rows.append(row + [fa["real_accuracy"]["n_per_label"][lab]])
    head = ["requested label", "face-api: generated", "real photos", "normalised"]
    head += ["blendshape clf: generated", "real photos", "normalised"] if has_bs else []
    html = _table(head + ["real photos (n)"], rows)

    def bars(fig, ax):
        x = np.arange(len(LABELS))
        series = [("face-api generated", fa["per_label"]), ("face-api real", fa["real_accuracy"]["per_label"])]
        if has_bs:
            series += [("blendshape generated", bs["per_label"]), ("blendshape real", bs["real_accuracy"]["per_label"])]
        wdt = 0.8 / len(series)
        for k, (name, d) in enumerate(series):
            ax.bar(x + k * wdt, [d[lab] if d[lab] is not None else 0 for lab in LABELS], wdt, label=name)
        ax.set_xticks(x + 0.4 - wdt / 2, LABELS, rotation=30)
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)

    html += _plot(bars, 8, 3.5)
    for name, d in (("face-api", fa), ("blendshape classifier", bs)):
        if "confusion" in d:
            html += _plot(lambda fig, ax, d=d, name=name: _confusion(ax, d["confusion"]["matrix"], name), 4.5, 4)
    return html


def _confusion(ax, matrix, name: str) -> None:
    m = np.asarray(matrix, float)
    ax.imshow(m / np.maximum(m.sum(1, keepdims=True), 1), vmin=0, vmax=1, cmap="Blues")
    for (i, j), c in np.ndenumerate(m):
        if c:
            ax.text(j, i, int(c), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, fontsize=7)
    ax.set_yticks(range(len(LABELS)), LABELS, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("requested")
    ax.set_title(f"{name}: confusion (row-normalised)", fontsize=9)


def _tradeoff_plot(results: dict, ctx: _Context, items: list[dict]) -> str:
    change = _expression_change(ctx, items)
    ceiling = _v(results, "identity.ceiling.all_real_pairs")["faceapi_cosine"]

    def draw(fig, ax):
        for kind in sorted({r["kind"] for r in items}):
            pts = [(c, M.nanmean(_pairs(ctx, r)[0])) for c, r in zip(change, items)
                   if r["kind"] == kind and r["status"] == "ok"]
            if pts:
                ax.scatter(*zip(*pts), s=8, alpha=0.5, label=kind)
        if ceiling is not None:
            ax.axhline(ceiling, color="k", ls="--", lw=1, label="real-pair ceiling")
        curve = _v(results, "tradeoff.curve")
        if isinstance(curve, list) and curve:
            ax.plot([p["expression_change"] for p in curve], [p["faceapi_cosine"] for p in curve], "k-o",
                    label="guidance")
        ax.set_xlabel("expression change from identity photo (blendshape L2)")
        ax.set_ylabel("identity: face-api cosine to other photos")
        ax.legend(fontsize=8)

    return _plot(draw, 7, 4.5)


def _grid(benchmark: Benchmark, real: dict, items: list[dict], out: Path, images: _Images, per_group: int) -> str:
    by_key = {(r["identity"], r["request"], r["seed"]): r for r in items}
    shown: dict[str, int] = {}
    html = []
    for ident in benchmark.identities:
        if shown.get(ident.group, 0) >= per_group:
            continue
        shown[ident.group] = shown.get(ident.group, 0) + 1
        photo = images.tag(_png(benchmark.image(ident.identity_photos[0]), 96), str(ident.identity_photos[0]))
        cells = [f"<td>{photo}<div class='cap'><b>{_esc(ident.id)}</b><br>identity photo</div></td>"]
        for request in ident.requests:
            head = images.tag(_png(benchmark.image(request.like), 96), str(request.like)) if request.like else ""
            outs = []
            for seed in ident.seeds:
                r = by_key.get((ident.id, request.id, seed))
                png = _thumb(out / r["image"]) if r and r.get("image") else None
                label = r["status"] if r else "missing"
                note = "" if label == "ok" else f"<div class='cap'>{label}</div>"
                outs.append(images.tag(png, f"seed {seed}: {label}") + note)
            cells.append(f"<td><div class='cap'>{_esc(request.id)}</div>{head}{''.join(outs)}</td>")
        html.append(f"<table class='grid'><tr>{''.join(cells)}</tr></table>")
    return "".join(html)


def _failure_grid(items: list[dict], out: Path, images: _Images, limit: int = 16) -> str:
    bad = [r for r in items if r["status"] == "no_face"]
    if not bad:
        return "<p>No output lacked a face.</p>"
    cells = [f"<td>{images.tag(_thumb(out / r['image']))}"
             f"<div class='cap'>{_esc(r['identity'])}<br>{_esc(r['request'])} s{r['seed']}</div></td>"
             for r in bad[:limit]]
    return (f"<p>{len(bad)} output(s) without a face; the first {min(limit, len(bad))}:</p>"
            f"<table class='grid'><tr>{''.join(cells)}</tr></table>")


def _aus_section(results: dict) -> str:
    a = _v(results, "aus")
    if "per_au" not in a:
        return f"<p>{_esc(a.get('skipped', 'no AU results'))}. {_esc(AU_NOTE)}</p>"
    rows = [["overall", a["mae"], a["pearson"], a["icc31"]]] + [[au, d["mae"], d["pearson"], d["icc31"]]
                                                               for au, d in a["per_au"].items()]
    return f"<p>{_esc(AU_NOTE)}</p>" + _table(["AU", "MAE", "Pearson r", "ICC(3,1)"], rows)


def write_report(out: Path, results: dict, benchmark: Benchmark, real: dict, items: list[dict],
                 grid_per_group: int = 2) -> Path:
    ctx = _Context(benchmark, real, items)
    images = _Images()
    meta = [["benchmark", f"{results['benchmark']['name']} ({results['benchmark']['source']})"],
            ["benchmark sha256", results["benchmark"]["sha256"]], ["generator", results["generator"]["name"]],
            ["model hash", results["model_hash"]], ["created", results["created"]],
            ["wall time (s)", results["wall_time_s"]], ["seed (realism split)", results["seed"]],
            ["versions", ", ".join(f"{k} {v}" for k, v in results["versions"].items())],
            ["items", ", ".join(f"{k} {v}" for k, v in results["counts"].items())]]
    by_group = _v(results, "identity.by_group")
    group_rows = [[g, d["faceapi_cosine"], d["mobilefacenet_cosine"], d["verification_rate"], d["identities"],
                   _v(results, "expression.by_group").get(g)] for g, d in by_group.items()]
    fr = _v(results, "realism.frechet")
    realism_rows = [[s, d["generated"], d["floor"], f"{d['n_generated']} / {d['n_real']}", d["dims"]]
                    for s, d in fr.items()]
    div = _v(results, "realism.diversity")
    fails = _v(results, "failures")
    body = [
        f"<h1>mien evaluate: {_esc(results['generator']['name'])} on {_esc(results['benchmark']['name'])}</h1>",
        _table(["", ""], meta),
        "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in results["notes"]) + "</ul>",
        "<h2>Headline</h2>", _headline(results),
        "<h2>Identity by group</h2>",
        _table(["group", "face-api cosine", "MobileFaceNet cosine", "verification", "identities", "face-api expr. acc."],
               group_rows),
        "<h2>Expression (label requests)</h2>", _expression_tables(results),
        "<h2>Action Units</h2>", _aus_section(results),
        "<h2>Trade-off: identity against expression change</h2>", _tradeoff_plot(results, ctx, items),
        "<h2>Realism and diversity</h2>",
        _table(["space", "Fréchet: generated", "floor (real vs real)", "n generated / n real (halves)", "dims"],
               realism_rows),
        f"<p>Spread across seeds: blendshapes {_fmt(div['blendshapes'])}, MobileFaceNet {_fmt(div['mobilefacenet'])} "
        f"over {div['groups']} (identity, request) groups.</p>",
        "<h2>Failures</h2>",
        f"<p>Unsupported: {_esc(fails['unsupported'] or 'none')}. Errors: {_esc(fails['error'] or 'none')}. "
        f"Real photos without a face: {_esc(fails['real_no_face'] or 'none')}.</p>",
        _failure_grid(items, out, images),
        "<h2>Images: identity photo | request | outputs (one per seed)</h2>",
        _grid(benchmark, real, items, out, images, grid_per_group),
        "<h2>Definitions</h2><dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v['definition'])}</dd>"
                                             for k, v in results["metrics"].items()) + "</dl>",
    ]
    style = _CSS + "\n" + "\n".join(images.css.values())
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>mien evaluate</title><style>{style}</style>"
           f"</head><body>{''.join(body)}</body></html>")
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
