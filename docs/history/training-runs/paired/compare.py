"""One row per `mien evaluate` results.json: the issue's criteria side by side (markdown table).
Usage: python compare.py NAME=RUN_DIR_OR_JSON ..."""

import json
import sys
from pathlib import Path

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


def row(name: str, path: str) -> str:
    p = Path(path)
    d = json.loads((p / "results.json" if p.is_dir() else p).read_text())["metrics"]
    v = lambda k: d[k]["value"]  # noqa: E731
    groups = v("identity.by_group")
    fa = v("expression.faceapi")
    real = (fa.get("real_accuracy") or {}).get("per_label") or {}
    ratios = {lab: fa["per_label"][lab] / real[lab] for lab in LABELS if real.get(lab)}
    low = min(ratios.items(), key=lambda kv: kv[1]) if ratios else None
    aus = v("aus")
    critic = v("realism.critic")
    eyes = v("artefacts.dark_eyes")
    cells = [
        name,
        f"{v('identity.verification_rate'):.3f} (" + " / ".join(f"{g} {x['verification_rate']:.3f}" for g, x in groups.items()) + ")",
        f"{v('identity.mobilefacenet_cosine'):.3f}",
        " / ".join(f"{fa['per_label'][lab]:.2f}" for lab in LABELS),
        f"{fa['accuracy']:.3f}",
        f"{low[0]} {low[1]:.2f}" if low else "—",
        f"{v('expression.blendshape')['accuracy']:.3f}",
        f"{aus['overall']['mae']:.2f}" if isinstance(aus, dict) and aus.get("overall") else "—",
        f"{critic['face']['accuracy']:.3f} / {critic['mouth']['accuracy']:.3f}" if critic and "face" in critic else "—",
        f"{round(eyes['rate'] * eyes['n'])} / {eyes['n']}" if eyes else "—",
    ]
    return "| " + " | ".join(cells) + " |"


print("| model | verification (by group) | MobileFaceNet cosine | face-api: " + " / ".join(LABELS)
      + " | face-api accuracy | face-api / real, lowest | blendshape classifier | AU MAE | critic face / mouth | eyes newly darkened |")
print("|" + "---|" * 10)
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    print(row(name, path))
