"""One evaluation run: generate every benchmark item, analyse it, score it, write the results.

    results = evaluate(benchmark, generator, Options(out=Path("/tmp/eval")))

writes into ``out``:
  items.jsonl    one line per finished item (its analysis inline), so an interrupted run resumes
  outputs/       every generated image as PNG
  results.json   every number with its definition, the benchmark, generator, versions and seeds
  report.html    self-contained: tables, plots and image grids as embedded PNG

Design notes
* This module only orchestrates: analyses are cached by content in :mod:`mien.evaluate.cache`,
  scored in :mod:`mien.evaluate.scoring` and drawn by :mod:`mien.evaluate.report`.
"""

from __future__ import annotations

import json
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
from mien.errors import MienError
from mien.evaluate import metrics as M
from mien.evaluate.benchmark import Benchmark, Identity, Request
from mien.evaluate.cache import AnalysisCache, analyzer_fingerprint, default_cache_dir, image_sha
from mien.evaluate.generators import Condition, Generator, Unsupported, guidance_scales
from mien.evaluate.report import write_report
from mien.evaluate.realism import realism_scores
from mien.evaluate.scoring import DEFINITIONS, Context, counts, expression_change, identity_scores, predicted, score

SCHEMA = "mien.evaluate/1"
# Documented top-level keys of results.json (tests check them).
RESULT_KEYS = ("schema", "benchmark", "generator", "model_hash", "seed", "versions", "created",
               "wall_time_s", "counts", "notes", "metrics")


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
    metrics.update({k: {"value": v, "definition": DEFINITIONS[k]}
                    for k, v in realism_scores(benchmark, items, out, options.seed).items()})
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
        "counts": counts(items, real),
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


def output_name(identity: str, request_id: str, seed: int) -> str:
    """The file name of an item's output image (in ``outputs/``; what ``--generator images`` reads)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", f"{identity}__{request_id}__s{seed}") + ".png"


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
                if key not in done or done[key]["status"] == "error":  # a failed item is retried on resume
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
    name = output_name(ident.id, cond.request.id, seed)
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
        ctx = Context(sub, real, recs)
        idm = identity_scores(ctx, recs)
        points.append({"scale": float(scale), "expression_change": M.nanmean(expression_change(ctx, recs)),
                       "faceapi_cosine": idm["faceapi_cosine"], "verification_rate": idm["verification_rate"],
                       "faceapi_accuracy": M.accuracy(*predicted(recs, "faceapi", None)), "n": len(recs)})
    return points


def versions() -> dict:
    from mien.machine import cpu_kind

    # the CPU kind: outputs agree bit for bit only within one (mien.machine)
    out = {"mien": __version__, "python": platform.python_version(), "platform": platform.platform(),
           "cpu": cpu_kind()}
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
