"""Pixel-level realism of a run's outputs: the real-versus-generated critic and the artefact rates.

Unlike :mod:`mien.evaluate.scoring`, which works on analysis records, these measures need the images
themselves: the people's real crops (from the benchmark) and the outputs (from ``out/outputs``). Each
generated item gets an ``artefacts`` entry (its eye and under-eye darkening, its eye closure and its held-out
critic scores), which the report uses to show the worst outputs by each measure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mien.evaluate import critic as C
from mien.evaluate import metrics as M
from mien.evaluate.benchmark import Benchmark

GENERATED = ("ok", "no_face")  # statuses with an output image


def realism_scores(benchmark: Benchmark, items: list[dict], out: Path, seed: int) -> dict:
    """``{"realism.critic", "artefacts.dark_eyes", "artefacts.dark_under_eyes", "artefacts.mouth",
    "artefacts.face_lost"}`` values;
    adds ``item["artefacts"]`` to every generated item whose image is in ``out``."""
    from mien.io.image import load_rgb

    real, inputs = [], {}
    for ident in benchmark.identities:
        photos = {p.ref: p for p in ident.identity_photos + ident.scoring_photos}
        crops = [benchmark.image(p) for p in photos.values()]
        if any(im.shape[:2] != (C.SIZE, C.SIZE) for im in crops):  # whole photos: the boxes would miss
            return {"realism.critic": {"skipped": f"the benchmark's photos are not {C.SIZE} px aligned crops "
                                                  "(the dev benchmarks' are)"}}
        real += [(ident.id, im) for im in crops]
        inputs[ident.id] = crops[0]
    gen, index = [], []
    for i, r in enumerate(items):
        path = out / r["image"] if r.get("image") else None
        if r["status"] in GENERATED and path is not None and path.is_file():
            gen.append((r["identity"], load_rgb(path)))
            index.append(i)
    critic = {}
    for region in C.REGIONS:
        res = C.two_sample_test([(p, C.features(im, region)) for p, im in real],
                                [(p, C.features(im, region)) for p, im in gen], seed)
        critic[region] = res
    dark, under = [], []
    for k, (i, (person, im)) in enumerate(zip(index, gen)):
        d, u = C.eye_darkening(im, inputs[person]), C.under_eye_darkening(im, inputs[person])
        # the output's own blendshapes, from the analysis every output already has (no second MediaPipe pass)
        bs = (items[i].get("analysis") or {}).get("blendshapes")
        items[i]["artefacts"] = {"eye_darkening": d, "under_eye_darkening": u,
                                 "eye_closure": None if bs is None else C.eye_closure(bs),
                                 **{f"critic_{reg}": critic[reg].scores.get(k) for reg in C.REGIONS}}
        shut = C.squeezed(bs)
        dark.append((items[i]["request"], d < C.DARK_EYES_THRESHOLD, shut))
        under.append((items[i]["request"], u < C.DARK_UNDER_EYES_THRESHOLD, shut))
    n_lost = sum(r["status"] == "no_face" for r in items)
    n_generated = sum(r["status"] in GENERATED for r in items)
    mouth_scores = [s for s in critic["mouth"].scores.values()]
    return {
        "realism.critic": {region: res.to_dict() for region, res in critic.items()},
        "artefacts.dark_eyes": _rate(dark, C.DARK_EYES_THRESHOLD),
        "artefacts.dark_under_eyes": _rate(under, C.DARK_UNDER_EYES_THRESHOLD),
        "artefacts.mouth": {"critic_accuracy": critic["mouth"].accuracy, "mean_score": M.nanmean(mouth_scores),
                            "n": len(mouth_scores)},
        "artefacts.face_lost": {"rate": M.safe_ratio(n_lost, n_generated), "n": n_generated},
    }


def _rate(flags: list[tuple[str, bool, bool]], threshold: float) -> dict:
    """Share of ``(request, darkened, squeezed)`` outputs darkened with open eyes (``rate``), overall and per
    request, and of those darkened with eyes squeezed nearly shut (``squeezed``): a squeeze, not an artefact."""
    def share(rows, squeezed: bool) -> float:
        return M.nanmean(np.asarray([d and s == squeezed for _, d, s in rows], float))

    requests = sorted({q for q, _, _ in flags})
    return {"rate": share(flags, False), "n": len(flags), "threshold": threshold,
            "by_request": {q: share([f for f in flags if f[0] == q], False) for q in requests},
            "squeezed": share(flags, True), "squeezed_closure": C.SQUEEZED_EYES_CLOSURE}
