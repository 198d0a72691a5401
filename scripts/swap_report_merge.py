"""The report ring's figures for one paste with some labels' swaps replaced by a later run of those labels (docs/swap.md).

    python scripts/swap_report_merge.py docs/history/eval-runs/swap/report30_builtin.jsonl NEW.jsonl [NEW.jsonl ...] \
        [--config NAME] [--paste crop|detail] [--real SUMMARY.json]

BASE: a ring run's per-swap scores (one JSON line a swap with ``real_b`` and a ``crop`` and a ``detail`` row, as
docs/history/eval-runs/swap/report30_builtin.jsonl). NEW: ``scripts/tune_swap.py`` lines on the same ring with the
same paste as ``--paste`` (default ``crop``; tune_swap's config key ``paste``), of one config (``--config``, default
the only one); a packed line (one config and label, every other field a list with a value per swap, as
docs/history stores a run compactly) counts as its swaps. Every swap of NEW replaces BASE's swap of the same
item; the rest are BASE's (their generation is unchanged where a change touches only NEW's labels, so they are the
same outputs). Prints the summary over BASE's items both ways: verified as A, impostor, impostor on the pairs whose
real photos stay apart (``real_b`` 0), pose error and face-api's rate per label, against the real-photo rates;
then the merged figures per scene source. The real-photo rates are ``real_rate`` per label of a
`mien evaluate --swap` run's ``summary.json`` on the same benchmark (``--real``; by default the report ring's,
:data:`REAL_SUMMARY`, docs/swap.md). Several NEW files (runs of other seeds, ``tune_swap.py --seed``): each merged
as above, then per label that any of them has, its swaps pooled over the files that have it (:func:`pooled`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mien.evaluate.swap import DLIB_THRESHOLD, LABELS, summarise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune_swap import read_lines  # noqa: E402  (a packed line unpacked into its swaps)

# the report ring's summary.json, pruned to the real-photo rates (face-api's rate per label on the benchmark's
# labelled photos, mien.evaluate.swap.real_rates; docs/swap.md says how it was made)
REAL_SUMMARY = Path(__file__).resolve().parents[1] / "docs/history/eval-runs/swap/report30_real_summary.json"


def real_rates(summary: Path, paste: str = "crop") -> dict[str, float]:
    """{label: face-api's rate on the real photos} of a swap run's ``summary.json`` (its ``paste`` section)."""
    per_label = json.loads(Path(summary).read_text())[paste]["per_label"]
    return {lab: per_label[lab]["real_rate"] for lab in LABELS}


def rows_of(base: list[dict], new: dict[str, dict], paste: str = "crop") -> list[dict]:
    """One row a BASE item: its scores with ``paste``, or NEW's where NEW has the item; ``real_b`` always BASE's;
    the verification and label flags as :func:`mien.evaluate.swap.score_output` sets them."""
    out = []
    for b in base:
        row, label = new.get(b["item"], b[paste]), b["item"].rsplit(":", 1)[1]
        out.append({"item": b["item"], "label": label, "real_b": b["real_b"], "dist_a": row["dist_a"],
                    "dist_b": row["dist_b"], "pose_err": row["pose_err"], "faceapi": row["faceapi"],
                    "verified_a": row["dist_a"] < DLIB_THRESHOLD, "verified_b": row["dist_b"] < DLIB_THRESHOLD,
                    "label_ok": row["faceapi"] == label})  # fmt: skip
    return out


def scene_source(row: dict) -> str:
    """The scene person's source, the prefix of its id ("A>essex:3:happy" -> "essex")."""
    return row["item"].split(">", 1)[1].split(":", 1)[0]


def summary(rows: list[dict], real: dict[str, float]) -> str:
    """One line of :func:`mien.evaluate.swap.summarise`'s figures of ``rows``, with the labels meeting the aim
    (face-api's rate at least 0.8 of the ``real`` photos'; a label without swaps is not met)."""
    s = summarise(rows, real)
    rate = {lab: s["per_label"][lab]["faceapi_rate"] for lab in LABELS}
    met = sum(r is not None and r >= 0.8 * real[lab] for lab, r in rate.items())
    two = lambda x: "nan" if x is None else f"{x:.2f}"  # noqa: E731
    return (f"n {s['ok']} verified_a {two(s['verified_a'])} impostor {two(s['impostor_b'])} "
            f"apart {two(s['impostor_b_apart'])} ({s['n_apart']}) pose {s['pose_mae']:.1f} | "
            + " ".join(f"{lab} {two(rate[lab])}" for lab in LABELS)
            + f" | mean {np.mean([r for r in rate.values() if r is not None]):.2f} met {met}")


def pooled(runs: list[list[dict]], real: dict[str, float]) -> list[str]:
    """One line a label of the swaps of several runs pooled (``runs``: per run the rows of its own swaps, as
    :func:`rows_of` gives them): per run face-api's count of the label, then over all of them the rate against the
    ``real`` rate (and whether it is at least 0.8 of it), verified as A, impostor (as B), and impostor on the pairs
    whose real photos stay apart (``real_b`` 0). A run counts for the labels it has swaps of."""
    lines = []
    for lab in [lab for lab in LABELS if any(r["label"] == lab for run in runs for r in run)]:
        per = [[r for r in run if r["label"] == lab] for run in runs]
        rows = [r for run in per for r in run]
        apart = [r for r in rows if r["real_b"] == 0]
        rate = float(np.mean([r["label_ok"] for r in rows]))
        counts = " ".join(f"{sum(r['label_ok'] for r in run)}/{len(run)}" if run else "-" for run in per)
        lines.append(f"  pooled {lab:<9} {counts} | n {len(rows)} rate {rate:.3f} real {real[lab]:.3f} "
                     f"ratio {rate / real[lab]:.2f} ({'meets' if rate >= 0.8 * real[lab] else 'misses'} 0.8) "
                     f"verified_a {np.mean([r['verified_a'] for r in rows]):.3f} "
                     f"impostor {np.mean([r['verified_b'] for r in rows]):.3f} "
                     f"apart {np.mean([r['verified_b'] for r in apart]):.3f} ({len(apart)})")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path)
    ap.add_argument("new", type=Path, nargs="+", help="one or more runs (several: also pooled per label)")
    ap.add_argument("--config", help="the config of NEW's lines to take (default: its only one)")
    ap.add_argument("--paste", choices=("crop", "detail"), default="crop",
                    help="BASE's paste whose rows NEW's replace (NEW must have been run with the same paste)")
    ap.add_argument("--real", type=Path, default=REAL_SUMMARY,
                    help="a `mien evaluate --swap` summary.json of the same benchmark: the real-photo rates "
                         "(default: the report ring's)")
    args = ap.parse_args()
    real = real_rates(args.real, args.paste)
    base = [json.loads(line) for line in args.base.read_text().splitlines()]
    runs = []
    for path in args.new:
        if len(args.new) > 1:
            print(f"== {path}")
        runs.append(merge_one(base, path, args.config, args.paste, real))
    if len(runs) > 1:
        print(f"pooled over {len(runs)} runs (per run the label's count, then over all):")
        print("\n".join(pooled(runs, real)))


def merge_one(base: list[dict], path: Path, config: str | None, paste: str, real: dict[str, float]) -> list[dict]:
    """Print the figures of BASE with the swaps of the run ``path`` (its ``config``, with ``paste``) merged in (the
    module docstring); return the rows of that run's own swaps."""
    lines = read_lines(path)
    names = {r["config"] for r in lines}
    if config is None and len(names) != 1:
        raise SystemExit(f"{path} has configs {sorted(names)}; pick one with --config")
    name = config or names.pop()
    new = {r["item"]: r for r in lines if r["config"] == name}
    known = {b["item"] for b in base}
    if set(new) - known:
        raise SystemExit(f"{len(set(new) - known)} items of {path} are not in the base file")
    changed = sorted({i.rsplit(':', 1)[1] for i in new})
    pastes = {r.get("settings", {}).get("paste", "crop") for r in new.values() if "settings" in r}
    if pastes - {paste}:
        raise SystemExit(f"{path} was run with paste {sorted(pastes)}, not --paste {paste}")
    merged = rows_of(base, new, paste)
    print(f"base  {summary(rows_of(base, {}, paste), real)}  (paste {paste})")
    print(f"{name:<5} {summary(merged, real)}  ({len(new)} swaps replaced: {', '.join(changed)})")
    for source in sorted({scene_source(r) for r in merged}):  # by the scene's source (cfp, essex, tw)
        print(f"  scenes {source:<6} {summary([r for r in merged if scene_source(r) == source], real)}")
    for lab in changed:  # the replaced swaps alone, before and after
        for tag, src in (("base", {}), (name, new)):
            rows = [r for r in rows_of(base, src, paste) if r["item"] in new and r["label"] == lab]
            print(f"  {lab:<9} {tag:<5} n {len(rows)} verified_a {np.mean([r['verified_a'] for r in rows]):.2f}"
                  f" impostor {np.mean([r['verified_b'] for r in rows]):.2f} mean dist_a "
                  f"{np.mean([r['dist_a'] for r in rows]):.3f} label {np.mean([r['faceapi'] == lab for r in rows]):.2f}")
    return [r for r in merged if r["item"] in new]


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
