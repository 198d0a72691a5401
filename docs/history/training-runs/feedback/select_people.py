"""The faces128 subset the feedback run was annotated and packed from (2026-12-06): every Taiwanese
train person (seven posed expressions each), 90 CelebA, 150 CFP and 150 LAG people and 1,200 UTKFace
photos, drawn with seed 0. Writes OUT/manifest.jsonl; link the shards beside it, then
`mien annotate --data OUT --split train --only landmarks faceapi` and
`mien data pack --data OUT --annotations ... --max-mb 11.5` (three chunks: one fits a call beside the
shipped model, the nets' weights and the wheels)."""

import json
import random
import sys
from pathlib import Path

src, out = Path(sys.argv[1]), Path(sys.argv[2])  # ../shared/data/faces128, the subset folder
rows = [json.loads(line) for line in open(src / "manifest.jsonl")]
people: dict[str, list[dict]] = {}
for d in rows:
    if d["split"] == "train":
        people.setdefault(d.get("identity") or d["key"], []).append(d)
rng = random.Random(0)


def of(source):
    return sorted(k for k, v in people.items() if v[0]["source"] == source)


chosen = of("taiwanese")
for source, n in (("celeba", 90), ("cfp", 150), ("lag", 150)):
    p = of(source)
    rng.shuffle(p)
    chosen += p[:n]
p = of("utkface")
rng.shuffle(p)
chosen += p[:1200]
keys = {d["key"] for k in chosen for d in people[k]}
out.mkdir(parents=True, exist_ok=True)
with open(out / "manifest.jsonl", "w") as f:
    f.writelines(json.dumps(d) + "\n" for d in rows if d["key"] in keys)
