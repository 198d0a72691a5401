"""Darkened eyes and under-eyes of a `mien evaluate` run, on the tuning or the report people.

The people are split as docs/fullres.md splits the London and Essex dev people (scripts/bench_fullres.py:
every fourth in key order, and london_001, is a tuning person; the rest are report people); ``--split all``
keeps every person of the run (a benchmark that is a report split already). Per request it
counts the outputs flagged by each darkened-eye measure of :mod:`mien.evaluate.realism`
(``artefacts.dark_eyes``, ``artefacts.dark_under_eyes``: darkened with open eyes) and those darkened with eyes
squeezed nearly shut, and lists both with their value and eye closure.
``--show ID REQUEST`` prints, for one output, each box's luminance as a share of the identity photo's.

    python scripts/dark_eyes_rates.py RUN_DIR --benchmark BENCH.yaml --split report --raw /tmp/raw [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_fullres, the split's one definition

from bench_fullres import people, split_people  # noqa: E402

from mien.evaluate import benchmark as bm  # noqa: E402
from mien.evaluate import critic as C  # noqa: E402
from mien.evaluate.realism import realism_scores  # noqa: E402

MEASURES = {"dark_eyes": ("eye_darkening", C.DARK_EYES_THRESHOLD),
            "dark_under_eyes": ("under_eye_darkening", C.DARK_UNDER_EYES_THRESHOLD)}


def rates(items: list[dict], chosen: set[str]) -> dict:
    """Outputs of the ``chosen`` people, those flagged by either measure, and per measure: how many are flagged
    (darkened with open eyes), per request, and which, and how many are darkened with eyes squeezed nearly shut
    (``squeezed``, mien.evaluate.critic.SQUEEZED_EYES_CLOSURE), and which."""
    scored = [r for r in items if r.get("artefacts") and r["identity"].replace(":", "_") in chosen]
    requests = sorted({r["request"] for r in scored})
    shut = lambda r: (r["artefacts"]["eye_closure"] or 0.0) >= C.SQUEEZED_EYES_CLOSURE  # noqa: E731  (unknown: open)
    dark = lambda r, key, t: r["artefacts"][key] < t  # noqa: E731
    out = {"people": len({r["identity"] for r in scored}), "outputs": len(scored),
           "squeezed_closure": C.SQUEEZED_EYES_CLOSURE,
           "flagged_by_either": sum(any(dark(r, k, t) for k, t in MEASURES.values()) and not shut(r) for r in scored),
           "squeezed_by_either": sum(any(dark(r, k, t) for k, t in MEASURES.values()) and shut(r) for r in scored)}
    for name, (key, threshold) in MEASURES.items():
        bad = [r for r in scored if dark(r, key, threshold) and not shut(r)]
        sq = [r for r in scored if dark(r, key, threshold) and shut(r)]
        out[name] = {"threshold": threshold, "flagged": len(bad), "rate": round(len(bad) / max(len(scored), 1), 4),
                     "by_request": {q: sum(r["request"] == q for r in bad) for q in requests},
                     "outputs": sorted(_row(r, key) for r in bad),
                     "squeezed": len(sq), "squeezed_by_request": {q: sum(r["request"] == q for r in sq) for q in requests},
                     "squeezed_outputs": sorted(_row(r, key) for r in sq)}
    return out


def _row(r: dict, key: str) -> list:
    """An output's identity, request, darkening and eye closure (None where its analysis found no face)."""
    closure = r["artefacts"]["eye_closure"]
    return [r["identity"], r["request"], round(r["artefacts"][key], 3), None if closure is None else round(closure, 3)]


def show(run: Path, bench, items: list[dict], ident: str, request: str) -> None:
    """Each darkened-eye box's mean luminance in one output as a share of that in the identity photo."""
    from mien.io.image import load_rgb

    item = next((r for r in items if r["identity"] == ident and r["request"] == request and r.get("image")), None)
    if item is None:
        raise SystemExit(f"dark_eyes_rates: no output of {ident} for {request} in {run}/items.jsonl")
    out = C.to_template(load_rgb(run / item["image"]))
    photo = C.to_template(bench.image(next(i for i in bench.identities if i.id == ident).identity_photos[0]))
    for name in ("EYE_BOXES", "CHEEK_BOXES", "UNDER_EYE_BOXES", "OUTER_CHEEK_BOXES"):
        boxes = getattr(C, name)
        share = sum(C._luminance(out)[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in boxes) / sum(
            C._luminance(photo)[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in boxes)
        print(f"{ident} {request} {name} {boxes}: {share:.2f} of the photo's luminance")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="the --out folder of a mien evaluate run")
    ap.add_argument("--benchmark", required=True, help="the benchmark file the run used")
    ap.add_argument("--split", choices=("tune", "report", "all"), default="report")
    ap.add_argument("--raw", type=Path, help="folder with the dev split's *.raw.jpg (the split's people; not for all)")
    ap.add_argument("--json", type=Path, help="write the figures here (compact JSON)")
    ap.add_argument("--seed", type=int, default=0, help="the run's realism split seed")
    ap.add_argument("--show", nargs=2, metavar=("ID", "REQUEST"), help="also print one output's box luminances, "
                    "e.g. london:001 label:angry@1")
    args = ap.parse_args()
    items = [json.loads(line) for line in (args.run / "items.jsonl").read_text().splitlines() if line.strip()]
    if args.show:
        show(args.run, bm.load(args.benchmark), items, *args.show)
    realism_scores(bm.load(args.benchmark), items, args.run, args.seed)
    if args.split == "all":
        chosen = {r["identity"].replace(":", "_") for r in items}
    elif args.raw is None:
        ap.error("--raw is needed to split the people (extract the raw photos from dev.tar, docs/fullres.md)")
    else:
        chosen = {p for p, _ in split_people(people(args.raw), args.split, 10**6)}
    res = {"split": args.split, **rates(items, chosen)}
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, separators=(",", ":")))


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
