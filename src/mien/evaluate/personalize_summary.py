"""The personalisation benchmark's results (:mod:`mien.evaluate.personalize`): its finished items read back,
summarised per group and K, tuning-free vs personalised, against the issue's aims (docs/personalize.md), and
written as ``summary.json`` (with every definition) and ``summary.md``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mien.evaluate.benchmark import LABELS
from mien.evaluate.metrics import DLIB_THRESHOLD

NEAR_COPY = 0.15  # face-api distance to a training photo below which an output counts as a near copy

DEFINITIONS = {
    "verified": f"share of outputs whose median face-api distance to the person's held-out photos is below {DLIB_THRESHOLD}",
    "distance": "median over outputs of each output's median face-api distance to the person's held-out photos",
    "faceapi_accuracy": "share of outputs whose face-api expression label is the requested one",
    "expression_change": "median blendshape L2 (52 MediaPipe blendshapes, the PyTorch net) from the output to the "
                         "nearest training photo's own expression",
    "nearest_train": "median face-api distance from each output to its nearest training photo (overfitting check: "
                     "a copy is near 0)",
    "nearest_train_latent": "median RMS distance of the output's TAEF2 latent to the nearest training photo's",
    "nearest_train_pixel": "median RMS pixel distance (0-255) of the output to the nearest training photo",
    "near_copies": f"share of outputs within face-api distance {NEAR_COPY} of a training photo",
    "train_s": "seconds to personalise (person tensors, prior faces and training; model loaded before), median",
    "neutral_trained": "runs whose K training photos are all neutral (labelled, or read as neutral by face-api)",
}


def finished(out: Path) -> dict[str, dict]:
    done = {}
    for f in sorted(Path(out).glob("items*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                item = json.loads(line)
            except ValueError:  # a line cut by a kill
                continue
            done[f"{item['person']}|{item['K']}"] = item
    return done


def summarise(items: list[dict], split: str = "report") -> dict:
    """Per group and K: tuning-free vs personalised figures (:data:`DEFINITIONS`); per label; the neutral-trained
    runs; time and adapter size; the issue's aims as met or not."""
    sel = [i for i in items if i["split"] == split]
    groups = sorted({i["group"] for i in sel})
    ks = sorted({i["K"] for i in sel})
    table = [_cell(g, K, [i for i in sel if i["group"] == g and i["K"] == K]) for g in groups for K in ks]
    table = [c for c in table if c is not None]
    per_label = {lab: _pair(sel, lambda r, lab=lab: r["pred"] == lab, lab, np.mean) for lab in LABELS}
    neutral = [i for i in sel if i["train_neutral"]]
    solo = [i["train_s"] for i in sel if i["processes"] == 1]
    summary = {"split": split, "people": len({i["person"] for i in sel}), "runs": len(sel), "table": table,
               "per_label_faceapi": per_label, "neutral_trained": {
                   "runs": len(neutral), "per_label_faceapi": {lab: _pair(neutral, lambda r, lab=lab: r["pred"] == lab, lab, np.mean)
                                                               for lab in LABELS},
                   "expression_change": _pair(neutral, lambda r: r["expression_change"], None, np.median)},
               "train_s_alone": {str(K): _med([i["train_s"] for i in sel if i["K"] == K and i["processes"] == 1]) for K in ks},
               "train_s_alone_all": _med(solo), "adapter_bytes": max((i["adapter_bytes"] for i in sel), default=None),
               "devices": sorted({i["device"] for i in sel}), "definitions": DEFINITIONS}  # fmt: skip
    summary["aims"] = aims(summary)
    return summary


def _med(xs):
    return float(np.median(xs)) if len(xs) else None


def _pair(items, value, label, reduce) -> dict:
    """{tuning_free, personalised, n} of ``reduce`` over the rows (of ``label`` when given)."""
    out = {}
    for mode in ("tuning_free", "personalised"):
        vals = [value(r) for i in items for r in i["rows"] if r["mode"] == mode and (label is None or r["label"] == label)]
        out[mode] = float(reduce(vals)) if vals else None
        out["n"] = len(vals)
    return out


def _cell(group: str, K: int, runs: list[dict]) -> dict | None:
    if not runs:
        return None
    cell = {"group": group, "K": K, "people": len(runs)}
    cell["verified"] = _pair(runs, lambda r: r["dist"] < DLIB_THRESHOLD, None, np.mean)
    cell["faceapi_accuracy"] = _pair(runs, lambda r: r["pred"] == r["label"], None, np.mean)
    cell["near_copies"] = _pair(runs, lambda r: r["nearest_train"] < NEAR_COPY, None, np.mean)
    for key in ("dist", "expression_change", "nearest_train", "nearest_train_latent", "nearest_train_pixel"):
        cell["distance" if key == "dist" else key] = _pair(runs, lambda r, key=key: r[key], None, np.median)
    cell["train_s"] = _med([r["train_s"] for r in runs])
    return cell


def aims(s: dict) -> dict:
    """The issue's aims (docs/personalize.md) against the figures; None where nothing measured them."""
    def at(group, K):
        return next((c for c in s["table"] if c["group"] == group and c["K"] == K), None)

    cfp5 = at("cfp", 5)
    big_k = {}
    for c in s["table"]:
        if c["K"] >= big_k.get(c["group"], {"K": -1})["K"]:
            big_k[c["group"]] = c
    down = {g: c["distance"]["tuning_free"] - c["distance"]["personalised"] for g, c in big_k.items()}
    labels = {lab: p["personalised"] - p["tuning_free"] for lab, p in s["per_label_faceapi"].items()
              if p["personalised"] is not None}  # fmt: skip
    t5 = s["train_s_alone"].get("5")
    return {"cfp_verification_k5_ge_0.98": None if cfp5 is None else cfp5["verified"]["personalised"] >= 0.98,
            "distance_down_ge_0.05_every_group_at_largest_k": (all(d >= 0.05 for d in down.values()) if down else None),
            "distance_down_by_group": down,
            "labels_within_2_points": (all(d >= -0.02 for d in labels.values()) if labels else None),
            "label_change": labels,
            "adapter_le_4mb": None if s["adapter_bytes"] is None else s["adapter_bytes"] <= 4e6,
            "train_s_k5_alone": t5}  # fmt: skip


def markdown(s: dict) -> str:
    """summary.md: the tables of docs/personalize.md (TF = tuning-free, P = personalised)."""
    f = lambda p, nd=2: " -> ".join("–" if p[m] is None else f"{p[m]:.{nd}f}" for m in ("tuning_free", "personalised"))  # noqa: E731
    lines = [f"{s['split']} people: {s['people']}, runs: {s['runs']}, device: {', '.join(s['devices'])}", "",
             "| group | K | people | verified TF -> P | median distance TF -> P | face-api accuracy TF -> P | expression change "
             "TF -> P | nearest training photo (face-api) TF -> P | near copies TF -> P | latent RMS to nearest TF -> P "
             "| train s |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in s["table"]:
        lines.append(f"| {c['group']} | {c['K']} | {c['people']} | {f(c['verified'])} | {f(c['distance'], 3)} | "
                     f"{f(c['faceapi_accuracy'])} | {f(c['expression_change'])} | {f(c['nearest_train'], 3)} | "
                     f"{f(c['near_copies'])} | {f(c['nearest_train_latent'])} | {c['train_s']:.1f} |")  # fmt: skip
    nt = s["neutral_trained"]
    lines += ["", f"| face-api accuracy per label | all runs TF -> P | neutral-trained runs ({nt['runs']}) TF -> P |",
              "|---|---|---|"]  # fmt: skip
    for lab in LABELS:
        lines.append(f"| {lab} | {f(s['per_label_faceapi'][lab])} | {f(nt['per_label_faceapi'][lab])} |")
    size = "–" if s["adapter_bytes"] is None else f"{s['adapter_bytes'] / 1e6:.2f} MB"
    lines += ["", f"Neutral-trained runs, expression change TF -> P: {f(nt['expression_change'])}. Adapter {size}; "
              f"seconds to personalise, one process alone on the device, by K: "
              + (", ".join(f"{k}: {v:.1f}" for k, v in s["train_s_alone"].items() if v is not None) or "–") + "."]
    lines += ["", "Aims: " + ", ".join(f"{k} {v if not isinstance(v, dict) else json.dumps({a: round(b, 3) for a, b in v.items()})}"
                                      for k, v in s["aims"].items())]  # fmt: skip
    return "\n".join(lines) + "\n"


def report(out: Path) -> dict:
    """summary.json and summary.md of the finished items in ``out`` (every shard's), report people; the
    tuning people's runs, when any, in ``tune`` of the same document."""
    items = list(finished(out).values())
    s = summarise(items)
    if any(i["split"] == "tune" for i in items):
        s["tune"] = summarise(items, "tune")
    Path(out, "summary.json").write_text(json.dumps(s, indent=1) + "\n")
    Path(out, "summary.md").write_text(markdown(s))
    return s
