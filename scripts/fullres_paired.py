"""Paired per-image comparison of face-api's expression reading in scripts/bench_fullres.py results
(docs/fullres.md): for each JSON, the full-resolution outputs (detail transfer, the crop paste) against the 128 px
crop: images lost (the crop reads the requested label, the output not) and gained, the accuracy difference, and
its 90 % interval from a bootstrap over people (2,000 draws, seed 0; images of one person are drawn together).
``--versus BEFORE AFTER``: two settings on the same images, detail transfer's figures per image (expression lost
and gained, the mean differences of p(requested) and of the still-face colour shift with their intervals, the
share of images whose colour shift is within 2 grey levels, and the still-region PSNR's paired median difference and
the images more than 1 dB worse and better).

    python scripts/fullres_paired.py docs/fullres/report_london_keepfull.json docs/fullres/report_essex_keepfull.json
    python scripts/fullres_paired.py --versus docs/fullres/report_london_smallface.json docs/fullres/report_london_drift05.json
"""

import json
import sys

import numpy as np


def paired(rows: list[dict], out: str, ref: str = "crop128", draws: int = 2000) -> dict:
    both = [r for r in rows if f"{ref}_expression_ok" in r and f"{out}_expression_ok" in r]
    lost = sum(r[f"{ref}_expression_ok"] and not r[f"{out}_expression_ok"] for r in both)
    gained = sum(r[f"{out}_expression_ok"] and not r[f"{ref}_expression_ok"] for r in both)
    diff = {p: [float(r[f"{out}_expression_ok"]) - float(r[f"{ref}_expression_ok"]) for r in both if r["person"] == p]
            for p in sorted({r["person"] for r in both})}  # fmt: skip
    return {"n": len(both), "lost": int(lost), "gained": int(gained), "diff": (gained - lost) / len(both),
            "interval90": bootstrap_people(diff, draws, 3)}  # fmt: skip


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
    if sys.argv[1:2] == ["--versus"]:
        before, after = (json.load(open(path))["rows"] for path in sys.argv[2:4])
        print(json.dumps(versus(before, after)))
        return
    for path in sys.argv[1:]:
        rows = json.load(open(path))["rows"]
        for out in ("detail", "crop"):
            r = paired(rows, out)
            print(f"{path} {out} vs crop128: n {r['n']} lost {r['lost']} gained {r['gained']} "
                  f"diff {r['diff']:+.3f} 90% [{r['interval90'][0]:+.3f}, {r['interval90'][1]:+.3f}]")  # fmt: skip


if __name__ == "__main__":
    main()
