"""How far apart the (photo, other photo of the same person) pairs of a training chunk are, per source: the
pose difference (largest |yaw|, |pitch|, |roll| difference, degrees) and the face-api distance (Euclidean,
L2-normalised descriptors), and how many pairs pass the limits of mien train --other-max-pose /
--other-max-distance (mien.train.data). Pairs are unordered; "judged" is the share of samples whose
identity photo, drawn as the loader draws it (uniformly among the person's other photos), passes; "blendshapes"
the median L1 difference of the 51 movements (``_neutral`` left out) of the pairs that pass and that fail
the first limits.
Usage: python pair_stats.py CHUNK.npz [POSE DISTANCE ...]   (the limits to tabulate, in pairs)"""

import sys
from itertools import combinations

import numpy as np

SOURCES = {"celeba": "CelebA", "cfp": "CFP", "lag": "LAG", "tw": "Taiwanese"}

z = np.load(sys.argv[1])
limits = [(float(a), float(b)) for a, b in zip(sys.argv[2::2], sys.argv[3::2])] or [(10, 0.4), (15, 0.4), (10, float("inf"))]
pose = z["expression"][:, -3:].astype(np.float64) * 90  # degrees (pack.json: pose / 90)
ident = z["identity"].astype(np.float64)
moves = z["expression"][:, 1:52].astype(np.float64)  # blendshapes without _neutral
source = np.array([k.split("_")[0] for k in z["key"]])
rows: dict[str, list] = {s: [] for s in SOURCES}  # (i, j, pose difference, distance)
for g in np.unique(z["group"]):
    m = np.flatnonzero(z["group"] == g)
    for i, j in combinations(m, 2):
        rows[source[i]].append((i, j, np.abs(pose[i] - pose[j]).max(), np.linalg.norm(ident[i] - ident[j]),
                            np.abs(moves[i] - moves[j]).sum()))
print("| source | photos | pairs | pose diff. median / p90 | distance median / p90 | "
      + " | ".join(f"pairs / judged within {p:g} deg, {d:g}" for p, d in limits) + " | blendshapes pass / fail |")
print("|---" * (6 + len(limits)) + "|")
for s, name in [*SOURCES.items(), ("all", "all")]:
    r = np.array(sum(rows.values(), []) if s == "all" else rows[s])
    n_photos = len(source) if s == "all" else int((source == s).sum())
    cells = []
    for p, d in limits:
        ok = (r[:, 2] <= p) & (r[:, 3] <= d)
        # judged: per sample, the share of its other photos that pass (each pair counts for both photos)
        passed, others = np.zeros(len(source)), np.zeros(len(source))
        for col in (0, 1):
            np.add.at(passed, r[:, col].astype(int), ok)
            np.add.at(others, r[:, col].astype(int), 1)
        has = others > 0
        cells.append(f"{ok.mean():.0%} / {(passed[has] / others[has]).mean():.0%}")
    first = (r[:, 2] <= limits[0][0]) & (r[:, 3] <= limits[0][1])
    cells.append(f"{np.median(r[first, 4]):.1f} / {np.median(r[~first, 4]):.1f}")
    print(f"| {name} | {n_photos} | {len(r)} | {np.median(r[:, 2]):.0f} / {np.percentile(r[:, 2], 90):.0f} | "
          f"{np.median(r[:, 3]):.2f} / {np.percentile(r[:, 3], 90):.2f} | " + " | ".join(cells) + " |")
