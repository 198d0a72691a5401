"""Paired per-image comparison of face-api's expression reading in scripts/bench_fullres.py results
(docs/fullres.md): for each JSON, the full-resolution outputs (detail transfer, the crop paste) against the 128 px
crop: images lost (the crop reads the requested label, the output not) and gained, the accuracy difference, and
its 90 % interval from a bootstrap over people (2,000 draws, seed 0; images of one person are drawn together).
``--versus BEFORE AFTER``: two settings on the same images, detail transfer's figures per image (expression lost
and gained, the mean differences of p(requested) and of the still-face colour shift with their intervals, the
share of images whose colour shift is within 2 grey levels, and the still-region PSNR's paired median difference and
the images more than 1 dB worse and better). ``--pool FILE...``: the rows of all files as one set of outputs (every
source, split and seed of a run), one JSON line: for each output against the crop, besides the bootstrap interval an
exact one that treats the images as independent (McNemar's conditional binomial: given the images whose reading
changes, the gained share has a Clopper-Pearson interval), the mean difference of p(requested) with its bootstrap
interval, and each seed's accuracies (how much the crop's own reading moves from one set of edits to the next).
``--out NAME`` chooses the outputs (``detail``, ``crop``, ``detail_at128``, ``crop_at128``: the output read back at the
crop's scale with the edit's own alignment).

    python scripts/fullres_paired.py docs/fullres/report_london_keepfull.json docs/fullres/report_essex_keepfull.json
    python scripts/fullres_paired.py --versus docs/fullres/report_london_smallface.json docs/fullres/report_london_drift05.json
    python scripts/fullres_paired.py --pool /tmp/surv/res/report_*.json --out detail detail_at128
"""

import argparse
import json

import numpy as np
from scipy.stats import beta


def paired(rows: list[dict], out: str, ref: str = "crop128", draws: int = 2000) -> dict:
    both = [r for r in rows if f"{ref}_expression_ok" in r and f"{out}_expression_ok" in r]
    lost = sum(r[f"{ref}_expression_ok"] and not r[f"{out}_expression_ok"] for r in both)
    gained = sum(r[f"{out}_expression_ok"] and not r[f"{ref}_expression_ok"] for r in both)
    diff = {p: [float(r[f"{out}_expression_ok"]) - float(r[f"{ref}_expression_ok"]) for r in both if r["person"] == p]
            for p in sorted({r["person"] for r in both})}  # fmt: skip
    return {"n": len(both), "lost": int(lost), "gained": int(gained), "diff": round((gained - lost) / len(both), 4),
            "interval90": bootstrap_people(diff, draws, 3),
            "exact90": exact_paired(lost, gained, len(both))}  # fmt: skip


def exact_paired(lost: int, gained: int, n: int, level: float = 0.90) -> list[float]:
    """The ``level`` interval of the accuracy difference (gained − lost) / n with the images independent: given the
    lost + gained images whose reading changes, gained is binomial (McNemar's conditional test); its Clopper-Pearson
    interval, mapped to the difference. Clustering by person is left to :func:`bootstrap_people`."""
    m, a = lost + gained, (1 - level) / 2
    if m == 0:
        return [0.0, 0.0]
    lo = beta.ppf(a, gained, m - gained + 1) if gained > 0 else 0.0
    hi = beta.ppf(1 - a, gained + 1, m - gained) if gained < m else 1.0
    return [round(float(m / n * (2 * q - 1)), 3) for q in (lo, hi)]


def p_paired(rows: list[dict], out: str, ref: str = "crop128", draws: int = 2000) -> dict:
    """The mean difference of face-api's p(requested), output minus ``ref``, with its bootstrap interval over people."""
    diff = {}
    for r in rows:
        if f"{ref}_expression_p" in r and f"{out}_expression_p" in r:
            diff.setdefault(r["person"], []).append(r[f"{out}_expression_p"] - r[f"{ref}_expression_p"])
    return {"diff": round(float(np.mean([d for v in diff.values() for d in v])), 4),
            "interval90": bootstrap_people(diff, draws, 4)}  # fmt: skip


def pooled(rows: list[dict], outs: list[str]) -> dict:
    """``--pool``: every output of ``outs`` against the crop on all ``rows``, and the accuracies per seed."""
    def acc(rs: list[dict], name: str) -> float:
        return round(float(np.mean([r[f"{name}_expression_ok"] for r in rs if f"{name}_expression_ok" in r])), 4)

    seeds = sorted({r.get("seed", 0) for r in rows})
    result = {"images": len(rows), "people": len({r["person"] for r in rows}), "seeds": seeds,
              "accuracy": {name: acc(rows, name) for name in ("crop128", *outs)}}  # fmt: skip
    for out in outs:
        result[out] = {**paired(rows, out), "p": p_paired(rows, out)}
    by_seed = {s: [r for r in rows if r.get("seed", 0) == s] for s in seeds}
    result["per_seed"] = {s: {name: acc(rs, name) for name in ("crop128", *outs)} for s, rs in by_seed.items()}
    return result


def bootstrap_people(diff: dict[str, list[float]], draws: int = 2000, digits: int = 3) -> list[float]:
    """The 90 % interval of the mean of ``diff`` {person: per-image differences}, people drawn with replacement
    (a person's images together), ``draws`` draws, seed 0."""
    people = list(diff)
    rng = np.random.default_rng(0)
    boot = [np.mean([d for p in rng.choice(people, len(people)) for d in diff[p]]) for _ in range(draws)]
    return [round(float(x), digits) for x in np.percentile(boot, [5, 95])]


def versus(before: list[dict], after: list[dict], draws: int = 2000) -> dict:
    """Detail transfer's per-image figures of ``after`` against ``before`` (bench_fullres rows of the same images)."""
    pairs = list(zip(before, after))
    assert all((a["person"], a["label"]) == (b["person"], b["label"]) for a, b in pairs), "not the same images"
    ok, p, colour = "detail_expression_ok", "detail_expression_p", "detail_colour_shift"
    still = "detail_psnr_still"
    out = {"n": len(pairs), "lost": sum(a.get(ok, False) and not b.get(ok, False) for a, b in pairs),
           "gained": sum(b.get(ok, False) and not a.get(ok, False) for a, b in pairs)}  # fmt: skip
    for key in (p, colour):
        both = [(a, b) for a, b in pairs if key in a and key in b]
        diff = {}
        for a, b in both:
            diff.setdefault(a["person"], []).append(b[key] - a[key])
        out[key] = {"diff": round(float(np.mean([d for v in diff.values() for d in v])), 4),
                    "interval90": bootstrap_people(diff, draws, 4)}  # fmt: skip
    for name, rows in (("before", before), ("after", after)):
        shifts = [r[colour] for r in rows if colour in r]
        out[f"colour_within_2_{name}"] = round(float(np.mean(np.array(shifts) <= 2.0)), 3)
    psnr = np.array([b[still] - a[still] for a, b in pairs if still in a and still in b])
    out[still] = {"median_diff": round(float(np.median(psnr)), 2), "worse_1db": int(np.sum(psnr < -1)),
                  "better_1db": int(np.sum(psnr > 1))}  # fmt: skip
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="bench_fullres.py --json files")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--versus", action="store_true", help="two files: BEFORE AFTER, the same images")
    mode.add_argument("--pool", action="store_true", help="the rows of all files as one set of outputs")
    ap.add_argument("--out", nargs="+", default=["detail", "crop"], help="the outputs read against the crop")
    args = ap.parse_args()
    names = [path.rsplit("/", 1)[-1] for path in args.files]
    if args.pool:
        rows = [r for path in args.files for r in json.load(open(path))["rows"]]
        print(json.dumps({"files": names, **pooled(rows, args.out)}))
        return
    if args.versus:
        if len(args.files) != 2:
            ap.error(f"--versus takes two files, BEFORE and AFTER; got {len(args.files)}")
        before, after = (json.load(open(path))["rows"] for path in args.files)
        print(json.dumps({"files": names, **versus(before, after)}))
        return
    for path in args.files:
        rows = json.load(open(path))["rows"]
        for out in args.out:
            r = paired(rows, out)
            print(f"{path} {out} vs crop128: n {r['n']} lost {r['lost']} gained {r['gained']} "
                  f"diff {r['diff']:+.3f} 90% [{r['interval90'][0]:+.3f}, {r['interval90'][1]:+.3f}] "
                  f"exact [{r['exact90'][0]:+.3f}, {r['exact90'][1]:+.3f}]")  # fmt: skip


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
