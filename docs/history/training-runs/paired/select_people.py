"""The faces128 subset the paired run is annotated and packed from: every train person with at least two
photos (1,220 people: CelebA 298, CFP 450, LAG 451, Taiwanese 21), a fixed number of photos each, drawn
with seed 0 (Taiwanese: spread over the seven posed expressions, front and three-quarter views first).
The cap per person is what fits one device call beside the code, the nets' weights and the shipped model.
Usage: python select_people.py ../shared/data/faces128 OUT_DIR; then link the shards beside OUT/manifest.jsonl,
`mien annotate --data OUT --split train --only landmarks faceapi` and `mien data pack --data OUT ...`."""

import json
import random
import sys
from pathlib import Path

CAP = {"celeba": 3, "cfp": 3, "lag": 3, "taiwanese": 14}

src, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = [json.loads(line) for line in open(src / "manifest.jsonl")]
people: dict[str, list[dict]] = {}
for d in rows:
    if d["split"] == "train" and d.get("identity"):
        people.setdefault(d["identity"], []).append(d)
rng = random.Random(0)
keys = set()
for pid in sorted(people):
    photos = sorted(people[pid], key=lambda d: d["key"])
    if len(photos) < 2:
        continue
    rng.shuffle(photos)
    if photos[0]["source"] == "taiwanese":  # round-robin over expressions, profiles last
        photos.sort(key=lambda d: d.get("view") == "profile")
        by_expr: dict[str, list[dict]] = {}
        for d in photos:
            by_expr.setdefault(d.get("expression", ""), []).append(d)
        order = [lst[i] for i in range(max(map(len, by_expr.values()))) for lst in by_expr.values() if i < len(lst)]
        photos = order
    keys.update(d["key"] for d in photos[: CAP[photos[0]["source"]]])
out.mkdir(parents=True, exist_ok=True)
with open(out / "manifest.jsonl", "w") as f:
    f.writelines(json.dumps(d) + "\n" for d in rows if d["key"] in keys)
print(len(keys), "photos")
