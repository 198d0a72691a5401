"""The report ring's figures for one paste with some labels' swaps replaced by a later run of those labels (docs/swap.md).

    python scripts/swap_report_merge.py docs/history/eval-runs/swap/report30_builtin.jsonl NEW.jsonl \
        [--config NAME] [--paste crop|detail]

BASE: a ring run's per-swap scores (one JSON line a swap with ``real_b`` and a ``crop`` and a ``detail`` row, as
docs/history/eval-runs/swap/report30_builtin.jsonl). NEW: ``scripts/tune_swap.py`` lines on the same ring with the
same paste as ``--paste`` (default ``crop``; tune_swap's config key ``paste``), of one config (``--config``, default
the only one). Every swap of NEW replaces BASE's swap of the same
item; the rest are BASE's (their generation is unchanged where a change touches only NEW's labels, so they are the
same outputs). Prints the summary over BASE's items both ways: verified as A, impostor, impostor on the pairs whose
real photos stay apart (``real_b`` 0), pose error and face-api's rate per label, against the real-photo rates;
then the merged figures per scene source.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
# face-api's rate on the benchmark's real photos per label (mien.evaluate.swap.real_rates; docs/swap.md tables)
REAL = {"neutral": 1.00, "happy": 0.95, "sad": 0.50, "angry": 0.21, "fearful": 0.14, "disgusted": 0.43,
        "surprised": 0.38}
THRESHOLD = 0.6  # face-api verification (mien.evaluate.swap.DLIB_THRESHOLD)


def rows_of(base: list[dict], new: dict[str, dict], paste: str = "crop") -> list[dict]:
    """One row a BASE item: its scores with ``paste``, or NEW's where NEW has the item; ``real_b`` always BASE's."""
    out = []
    for b in base:
        row = new.get(b["item"], b[paste])
        out.append({"item": b["item"], "label": b["item"].rsplit(":", 1)[1], "real_b": b["real_b"],
                    "dist_a": row["dist_a"], "dist_b": row["dist_b"], "pose_err": row["pose_err"],
                    "faceapi": row["faceapi"]})
    return out


def scene_source(row: dict) -> str:
    """The scene person's source, the prefix of its id ("A>essex:3:happy" -> "essex")."""
    return row["item"].split(">", 1)[1].split(":", 1)[0]


def summary(rows: list[dict]) -> str:
    apart = [r for r in rows if r["real_b"] == 0]
    rate = {lab: np.mean(hits) if (hits := [r["faceapi"] == lab for r in rows if r["label"] == lab]) else np.nan
            for lab in LABELS}  # fmt: skip
    met = sum(rate[lab] >= 0.8 * REAL[lab] for lab in LABELS)  # a label without swaps is not met
    return (f"n {len(rows)} verified_a {np.mean([r['dist_a'] < THRESHOLD for r in rows]):.2f} "
            f"impostor {np.mean([r['dist_b'] < THRESHOLD for r in rows]):.2f} "
            f"apart {np.mean([r['dist_b'] < THRESHOLD for r in apart]):.2f} ({len(apart)}) "
            f"pose {np.mean([r['pose_err'] for r in rows]):.1f} | "
            + " ".join(f"{lab} {rate[lab]:.2f}" for lab in LABELS)
            + f" | mean {np.nanmean(list(rate.values())):.2f} met {met}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--config", help="the config of NEW's lines to take (default: its only one)")
    ap.add_argument("--paste", choices=("crop", "detail"), default="crop",
                    help="BASE's paste whose rows NEW's replace (NEW must have been run with the same paste)")
    args = ap.parse_args()
    base = [json.loads(line) for line in args.base.read_text().splitlines()]
    lines = [json.loads(line) for line in args.new.read_text().splitlines()]
    names = {r["config"] for r in lines}
    if args.config is None and len(names) != 1:
        raise SystemExit(f"{args.new} has configs {sorted(names)}; pick one with --config")
    name = args.config or names.pop()
    new = {r["item"]: r for r in lines if r["config"] == name}
    known = {b["item"] for b in base}
    if set(new) - known:
        raise SystemExit(f"{len(set(new) - known)} items of {args.new} are not in {args.base}")
    changed = sorted({i.rsplit(':', 1)[1] for i in new})
    pastes = {r.get("settings", {}).get("paste", "crop") for r in new.values() if "settings" in r}
    if pastes - {args.paste}:
        raise SystemExit(f"{args.new} was run with paste {sorted(pastes)}, not --paste {args.paste}")
    print(f"base  {summary(rows_of(base, {}, args.paste))}  (paste {args.paste})")
    print(f"{name:<5} {summary(rows_of(base, new, args.paste))}  ({len(new)} swaps replaced: {', '.join(changed)})")
    merged = rows_of(base, new, args.paste)
    for source in sorted({scene_source(r) for r in merged}):  # by the scene's source (cfp, essex, tw)
        print(f"  scenes {source:<6} {summary([r for r in merged if scene_source(r) == source])}")
    for lab in changed:  # the replaced swaps alone, before and after
        for tag, src in (("base", {}), (name, new)):
            rows = [r for r in rows_of(base, src, args.paste) if r["item"] in new and r["label"] == lab]
            print(f"  {lab:<9} {tag:<5} n {len(rows)} verified_a {np.mean([r['dist_a'] < THRESHOLD for r in rows]):.2f}"
                  f" impostor {np.mean([r['dist_b'] < THRESHOLD for r in rows]):.2f} mean dist_a "
                  f"{np.mean([r['dist_a'] for r in rows]):.3f} label {np.mean([r['faceapi'] == lab for r in rows]):.2f}")


if __name__ == "__main__":
    main()
