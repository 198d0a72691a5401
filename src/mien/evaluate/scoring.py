"""Scoring: the analysed real photos and items → the metrics of results.json, each with its definition.

``score`` is a pure function of the real-photo analyses and the item records; it reads the formulas
from :mod:`mien.evaluate.metrics` and the definitions from ``DEFINITIONS``. Averages over identities
are macro averages (each identity counts once): the dev groups have 2 to 43 photos per person, and
pooling pairs would let three Taiwanese performers dominate.
"""

from __future__ import annotations

import numpy as np

from mien.errors import MienError
from mien.evaluate import metrics as M
from mien.evaluate.benchmark import LABELS, Benchmark
from mien.expression.aus import AU_NAMES

AU_NOTE = ("Action Unit values are estimates derived from MediaPipe blendshapes (mien.expression.aus), "
           "not from an image-to-AU model: none is available here.")


# Shared by both darkened-eye measures (mien.evaluate.realism).
_SQUEEZED = ("Outputs whose eyes are squeezed nearly shut (the mean of their MediaPipe eyeBlinkLeft and "
             "eyeBlinkRight at least squeezed_closure, chosen by scripts/tune_squeezed_eyes.py) are left out of rate "
             "and by_request: their lids darken the boxes by themselves; squeezed: the share darkened with eyes squeezed")

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
    "realism.critic": "classifier two-sample test (mien.evaluate.critic; Lopez-Paz & Oquab 2017): logistic regression "
    "on fixed image statistics (radial power spectrum, high-pass residual, colour moments, 4x4 luminance layout) of the "
    "inner face ('face') or the mouth box ('mouth') of the aligned crop, trained to tell the people's real crops "
    "(identity and scoring photos) from the outputs on one half of the people and tested on the other, both ways; "
    "classes balanced by subsampling. accuracy: held-out share right (0.5 = indistinguishable, 1 = every output gives "
    "itself away); standard_error_at_chance: sqrt(0.25 / n_test), an underestimate since photos of one person are not "
    "independent",
    "artefacts.dark_eyes": "share of outputs whose eyes are newly darkened: the eye-to-cheek luminance ratio (template "
    "eye and cheek boxes, mien.evaluate.critic) of the output below threshold x that of the first identity photo "
    "(the threshold chosen on posed dev pairs by scripts/tune_dark_eyes.py); overall and per request. " + _SQUEEZED,
    "artefacts.dark_under_eyes": "share of outputs with newly darkened under-eyes (the dark crescents the "
    "artefacts.dark_eyes ratio misses, since they reach its cheek boxes too): the luminance of the band under each "
    "template eye box over that of the outer cheeks (mien.evaluate.critic) of the output below threshold x that of "
    "the first identity photo (the threshold chosen on posed dev pairs by scripts/tune_dark_eyes.py --measure "
    "under_eyes); overall and per request. " + _SQUEEZED,
    "artefacts.mouth": "the critic on the mouth box alone: its held-out accuracy, and the mean held-out probability it "
    "gives outputs of being generated (the report shows the highest)",
    "artefacts.face_lost": "share of outputs in which the analysis found no usable face (as failures.no_face_rate)",
    "failures": "no_face: outputs in which no usable face was found; unsupported: requests the generator cannot serve; "
    "error: requests the generator rejected; real_no_face: real photos without a usable face (left out of scoring)",
}


class Context:
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
    ctx = Context(benchmark, real, items)
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


def pairs(ctx: Context, rec: dict) -> tuple[list[float], list[float], list[bool]]:
    """(cos128, cos192, verified) of one output against its person's scoring photos (not itself)."""
    sc = [s for s in ctx.photos(rec["identity"], "scoring_photos") if s["sha"] != rec["sha"]]
    if not sc:
        return [], [], []
    a = rec["analysis"]
    f = np.stack([vec(s["record"], "faceapi") for s in sc])
    m = np.stack([vec(s["record"], "mobilefacenet") for s in sc])
    return (M.cosine(vec(a, "faceapi"), f)[0].tolist(), M.cosine(vec(a, "mobilefacenet"), m)[0].tolist(),
            M.verified(vec(a, "faceapi"), f)[0].tolist())


def identity_scores(ctx: Context, items: list[dict], failures_count: bool = False) -> dict:
    per: dict[str, list[list]] = {}
    for rec in items:
        if rec["status"] == "ok":
            c128, c192, ver = pairs(ctx, rec)
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


def _real_pairs(ctx: Context, all_pairs: bool) -> dict:
    """Identity figures for real photo pairs, as if each identity photo (or every real photo) were an output."""
    recs = []
    for ident in ctx.benchmark.identities:
        sources = ctx.photos(ident.id, "identity_photos")
        if all_pairs:
            sources = sources + ctx.photos(ident.id, "scoring_photos")
        for s in sources:
            recs.append({"identity": ident.id, "status": "ok", "sha": s["sha"], "analysis": s["record"]})
    if not all_pairs:
        return identity_scores(ctx, recs)
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


def _identity_metrics(ctx: Context, items: list[dict]) -> dict:
    main = identity_scores(ctx, items)
    ceiling_all = _real_pairs(ctx, all_pairs=True)
    groups = sorted({i.group for i in ctx.benchmark.identities})
    return {
        "identity.faceapi_cosine": main["faceapi_cosine"],
        "identity.mobilefacenet_cosine": main["mobilefacenet_cosine"],
        "identity.verification_rate": main["verification_rate"],
        "identity.verification_rate_with_failures": identity_scores(ctx, items, True)["verification_rate"],
        "identity.by_group": {g: identity_scores(ctx, [r for r in items if r["group"] == g]) for g in groups},
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


def predicted(items: list[dict], which: str, clf) -> tuple[list[str], list[str]]:
    scored = [r for r in items if r["status"] == "ok" and r["label"] is not None]
    return [r["label"] for r in scored], _predict([r["analysis"] for r in scored], which, clf)


def _classifier_scores(ctx: Context, ok: list[dict], which: str, clf) -> dict:
    labelled = [r for r in ctx.ok_real.values() if r["photo"].label is not None]
    real_true = [r["photo"].label for r in labelled]
    real_pred = _predict([r["record"] for r in labelled], which, clf)
    true, pred = predicted([r for r in ok if r["kind"] == "label"], which, clf)
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


def _expression_metrics(ctx: Context, ok: list[dict], notes: list[str]) -> dict:
    clf = _load_blendshape_classifier(notes)
    terms = [r for r in ok if r["kind"] == "term"]
    out = {"expression.faceapi": _classifier_scores(ctx, ok, "faceapi", None),
           "expression.blendshape": _classifier_scores(ctx, ok, "blendshape", clf) if clf else
           {"skipped": "blendshape classifier unavailable (see notes)"}}
    out["expression.terms"] = {"faceapi": M.accuracy(*predicted(terms, "faceapi", None)), "n": len(terms),
                               "blendshape": M.accuracy(*predicted(terms, "blendshape", clf)) if clf else None}
    groups = sorted({r["group"] for r in ok})
    out["expression.by_group"] = {g: M.accuracy(*predicted([r for r in ok if r["kind"] == "label" and r["group"] == g],
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


def _reference_metrics(ctx: Context, ok: list[dict]) -> dict:
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
    idm = identity_scores(ctx, items)
    return {"reference.blendshape_distance": M.nanmean(dist), "reference.identity_photo_distance": M.nanmean(start),
            "reference.faceapi_cosine": idm["faceapi_cosine"], "reference.verification_rate": idm["verification_rate"]}


def expression_change(ctx: Context, items: list[dict]) -> list[float]:
    out = []
    for r in items:
        ids = ctx.photos(r["identity"], "identity_photos")
        if r["status"] != "ok" or not ids:
            out.append(float("nan"))
            continue
        b = vec(r["analysis"], "blendshapes")
        out.append(min(float(M.blendshape_distance(b, vec(i["record"], "blendshapes"))[0]) for i in ids))
    return out


def _tradeoff_metrics(ctx: Context, items: list[dict], sweep: list[dict] | None) -> dict:
    change = expression_change(ctx, items)
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


def _realism_metrics(ctx: Context, ok: list[dict], seed: int) -> dict:
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


def counts(items: list[dict], real: dict) -> dict:
    statuses = ("ok", "no_face", "unsupported", "error")
    return {"items": len(items), **{s: sum(r["status"] == s for r in items) for s in statuses},
            "real_photos": len(real)}
