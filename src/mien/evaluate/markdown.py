"""Markdown tables of a `mien evaluate` results.json, for model cards and status pages.

    python -m mien.evaluate.markdown RUN/results.json [--real REAL/results.json] [--copy COPY/results.json]

Every figure is read from the file(s); nothing is computed here except formatting.
"""

from __future__ import annotations

import argparse
import json

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


def f(x, nd=3) -> str:
    return "–" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--copy", help="results.json of the copy baseline on the same benchmark")
    args = ap.parse_args()
    r = json.load(open(args.results))
    m = {k: v["value"] for k, v in r["metrics"].items()}
    c = r["counts"]
    print(f"`{r['benchmark']['name']}` ({r['benchmark'].get('sha256', '')[:12]}), generator `{r['generator']['name']}`, "
          f"model `{r['model_hash']}`, created {r['created']}: {c['items']} items, {c['ok']} ok, "
          f"{c['no_face']} without a face ({f(m['failures']['no_face_rate'])}).\n")
    ident, ceil = m["identity.ceiling.all_real_pairs"], m["identity.ceiling.identity_photo_pairs"]
    rows = [("generated vs the person's other photos", m["identity.faceapi_cosine"], m["identity.mobilefacenet_cosine"],
             m["identity.verification_rate"]),
            ("real: identity photo vs other photos (ceiling)", ceil["faceapi_cosine"], ceil["mobilefacenet_cosine"],
             ceil["verification_rate"])]
    if args.copy:
        cm = {k: v["value"] for k, v in json.load(open(args.copy))["metrics"].items()}
        rows.append(("`copy` baseline (returns the identity photo)", cm["identity.faceapi_cosine"],
                     cm["identity.mobilefacenet_cosine"], cm["identity.verification_rate"]))
    print("| identity | face-api cosine | MobileFaceNet cosine | verification (dlib 0.6) |\n|---|---|---|---|")
    for name, a, b, v in rows:
        print(f"| {name} | {f(a)} | {f(b)} | {f(v)} |")
    print()
    print("| requested label | " + " | ".join(LABELS) + " | all |\n|---|" + "---|" * (len(LABELS) + 1))
    for key, name in (("expression.faceapi", "face-api"), ("expression.blendshape", "blendshape classifier")):
        e = m[key]
        print(f"| {name}: generated | " + " | ".join(f(e["per_label"].get(lab)) for lab in LABELS) + f" | {f(e['accuracy'])} |")
        print(f"| {name}: real photos | " + " | ".join(f(e["real_accuracy"]["per_label"].get(lab)) for lab in LABELS)
              + f" | {f(e['real_accuracy']['overall'])} |")
        print(f"| {name}: generated / real | " + " | ".join(f(e["normalised"]["per_label"].get(lab), 2) for lab in LABELS)
              + f" | {f(e['normalised']['mean'], 2)} |")
    print()
    au = m["aus"]
    if isinstance(au, dict) and "per_au" in au:
        names = list(au["per_au"])
        print("| AU requests (estimates from blendshapes) | " + " | ".join(names) + " | all |\n|---|" + "---|" * (len(names) + 1))
        for k in ("mae", "pearson", "icc31"):
            print(f"| {k} | " + " | ".join(f(au["per_au"][n][k], 2) for n in names) + f" | {f(au[k], 3)} |")
        print()
    ch = m["tradeoff.expression_change"]
    print(f"Expression change from the identity photo's own expression (blendshape L2): {f(ch['mean'])} "
          f"({', '.join(f'{k} {f(v)}' for k, v in ch['by_kind'].items())}); joint success (verified and "
          f"requested label read by face-api): {f(m['tradeoff.joint_success']['value'])}.")
    if isinstance(m.get("reference.blendshape_distance"), float):
        print(f"Reference-photo requests: blendshape distance to the reference {f(m['reference.blendshape_distance'])} "
              f"(identity photo to the reference: {f(m['reference.identity_photo_distance'])}), verification as the "
              f"person {f(m['reference.verification_rate'])}.")
    curve = m.get("tradeoff.curve")
    if isinstance(curve, list):
        print("\n| expression guidance | expression change | verification | face-api accuracy | n |\n|---|---|---|---|---|")
        for p in curve:
            print(f"| {p['scale']:g} | {f(p['expression_change'])} | {f(p['verification_rate'])} | {f(p['faceapi_accuracy'])} | {p['n']} |")
    fr = m["realism.frechet"]
    print("\nFréchet distance to real dev faces (generated / real-vs-real floor): " + ", ".join(
        f"{k} {f(v['generated'])} / {f(v['floor'])}" for k, v in fr.items() if isinstance(v, dict)) + ".")


if __name__ == "__main__":
    main()
