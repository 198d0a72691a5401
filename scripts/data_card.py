"""Statistics and plots for the data card of the faces128 pool (docs/data.md).

    python scripts/data_card.py [--annotations /work/runs/annotations/annotations.parquet]
                                [--data-dir DIR] [--out docs/data] [--json]

Reads the pool's manifest (both splits, through :mod:`mien.data.faces128`), the tar index of
``dev.tar`` (member names only, to count ``<key>.raw.jpg``) and the annotation sidecar written by
``mien annotate``; decodes no image. Writes aggregate PNG plots and ``data_card.json`` (every figure
below) into ``--out`` and prints the markdown tables to stdout (``--json``: the JSON instead).

Nothing here shows a face: every plot is a count, a histogram or a density over the pool.
Action Units are *estimates computed from MediaPipe blendshapes* (:mod:`mien.expression.aus`);
no image→AU model exists in this project.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from mien.checksums import sha256_of  # noqa: E402
from mien.data.faces128 import EXPRESSIONS as POSED, SOURCES, SPLITS, Faces128, default_data_dir, load_manifest  # noqa: E402
from mien.expression.aus import AU_NAMES, AUS  # noqa: E402
from mien.expression.basic import BASIC  # noqa: E402
from mien.expression.classifier import BlendshapeClassifier  # noqa: E402

DEFAULT_ANN = Path("/work/runs/annotations/annotations.parquet")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "data"
COLUMNS = ["key", "ok", "error", "split", "blendshapes", "expression", "aus", "yaw", "pitch", "roll"]
DPI = 100
# What the shared README (faces128/README.md) says, to check against.
README_COUNTS = {("train", "utkface"): 22831, ("train", "celeba"): 6042, ("train", "cfp"): 4410,
                 ("train", "lag"): 1856, ("train", "taiwanese"): 911, ("dev", "essex94"): 292,
                 ("dev", "cfp"): 243, ("dev", "taiwanese"): 122, ("dev", "london"): 80}
README_IDS = {("train", "celeba"): 299, ("train", "cfp"): 450, ("train", "lag"): 982, ("train", "taiwanese"): 21,
              ("dev", "essex94"): 18, ("dev", "cfp"): 25, ("dev", "taiwanese"): 3, ("dev", "london"): 40}
README_DEV_IDS = 110
COLORS = dict(zip(SOURCES, plt.get_cmap("tab10").colors))


def pct(a, q):
    return [round(float(v), 2) for v in np.percentile(a, q)] if len(a) else None


def load_sidecar(path: Path) -> dict[str, np.ndarray]:
    t = pq.read_table(path, columns=COLUMNS)
    out = {}
    for name in COLUMNS:
        col = t.column(name).combine_chunks()
        if hasattr(col.type, "list_size"):
            out[name] = np.asarray(col.flatten()).reshape(len(col), col.type.list_size)
        else:
            out[name] = np.asarray(col.to_numpy(zero_copy_only=False))
    return out


def savefig(fig, out: Path, name: str, files: dict) -> None:
    import io

    from PIL import Image

    path = out / name
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    plt.close(fig)
    # A 256-colour palette keeps the plots small; no metadata, so a rerun on the same data gives equal files.
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    files[name] = path.stat().st_size


def compute(data_dir: Path, ann_path: Path, out: Path) -> dict:
    samples = load_manifest(data_dir)
    man = {s.key: s for s in samples}
    R: dict = {"data_dir": str(data_dir), "annotations": str(ann_path), "manifest_rows": len(samples),
               "sha256": {"manifest.jsonl": sha256_of(Path(data_dir) / "manifest.jsonl"), ann_path.name: sha256_of(ann_path)}}
    pairs = [(sp, src) for sp in SPLITS for src in SOURCES if any(s.split == sp and s.source == src for s in samples)]
    R["pairs"] = [f"{sp}/{src}" for sp, src in pairs]

    # --- counts, identities, images per identity -------------------------------------------------
    count = Counter((s.split, s.source) for s in samples)
    per_id: dict = defaultdict(Counter)
    for s in samples:
        if s.identity:
            per_id[(s.split, s.source)][s.identity] += 1
    fill = defaultdict(list)
    for s in samples:
        fill[(s.split, s.source)].append(s.fill)
    table = {}
    for sp, src in pairs:
        n_img = per_id[(sp, src)]
        sizes = np.array(sorted(n_img.values())) if n_img else np.array([])
        f = np.array(fill[(sp, src)])
        table[f"{sp}/{src}"] = {
            "images": count[(sp, src)],
            "identities": len(n_img) if n_img else None,
            "unlabelled_images": sum(1 for s in samples if s.split == sp and s.source == src and not s.identity),
            "per_identity_min_median_mean_max": ([int(sizes.min()), float(np.median(sizes)), round(float(sizes.mean()), 1),
                                                  int(sizes.max())] if len(sizes) else None),
            "readme_images": README_COUNTS.get((sp, src)),
            "readme_identities": README_IDS.get((sp, src)),
            "fill_mean": round(float(f.mean()), 3),
            "fill_share_nonzero": round(float((f > 0).mean()), 3),
        }
    R["by_split_source"] = table
    bs_path = Path(data_dir) / "build_stats.json"
    if bs_path.is_file():  # photos aligned by the pool's build vs crops here (the rest: held back for evaluation)
        built = json.loads(bs_path.read_text())
        R["build_stats"] = {src: {**built.get(src, {}), "in_pool": sum(count[(sp, src)] for sp in SPLITS)}
                            for src in SOURCES}
    R["split_totals"] = {sp: {"images": sum(count[(sp, src)] for src in SOURCES),
                              "identities": len({s.identity for s in samples if s.split == sp and s.identity}),
                              "unlabelled_images": sum(1 for s in samples if s.split == sp and not s.identity)}
                         for sp in SPLITS}
    R["readme_dev_identities"] = README_DEV_IDS
    # identities disjoint across splits within a source (README claim)
    R["identities_in_both_splits"] = {src: len({i for (sp, s2), c in per_id.items() if s2 == src and sp == "train" for i in c}
                                               & {i for (sp, s2), c in per_id.items() if s2 == src and sp == "dev" for i in c})
                                      for src in SOURCES}
    # the same person under two sources' ids (README): CFP and LAG give names; CelebA gives none
    names: dict = defaultdict(set)
    for s in samples:
        if s.extra.get("name"):
            names[str(s.extra["name"]).strip().lower()].add((s.source, s.split))
    shared = [v for v in names.values() if len({src for src, _ in v}) > 1]
    R["names_in_two_sources"] = {"names": len(names), "in_cfp_and_lag": len(shared),
                                 "by_groups": {" + ".join(f"{a}/{b}" for a, b in sorted(v, key=lambda x: (x[1], x[0]))): n
                                               for v, n in Counter(frozenset(v) for v in shared).items()},
                                 "cfp_dev_people": len([v for v in names.values() if ("cfp", "dev") in v]),
                                 "cfp_dev_people_also_in_lag_train": len([v for v in shared if ("cfp", "dev") in v
                                                                          and ("lag", "train") in v])}
    R["identity_prefixes"] = {src: sorted({s.identity.split(":")[0] for s in samples if s.source == src and s.identity})
                              for src in SOURCES}

    # raw photos in dev.tar (tar index only; no decoding)
    dev = Faces128(data_dir, samples=samples, split="dev")
    raw = Counter(s.source for s in dev.samples if dev.has_raw_photo(s))
    R["dev_raw_jpg"] = {"total": sum(raw.values()), "of": len(dev.samples),
                        "by_source": {src: [raw.get(src, 0), count[("dev", src)]] for src in SOURCES if count[("dev", src)]}}
    dev.close()

    # --- posed labels and other manifest labels ---------------------------------------------------
    R["posed_labels"] = {f"{sp}/{src}": {e: sum(1 for s in samples if s.split == sp and s.source == src and s.expression == e)
                                         for e in POSED}
                         for sp, src in pairs if src in ("taiwanese", "london")}
    tw = [s for s in samples if s.source == "taiwanese"]
    R["taiwanese"] = {
        "no_expression_label": sorted(s.key for s in tw if not s.expression),
        "view": dict(Counter(str(s.extra.get("view")) for s in tw)),
        "performance": dict(Counter(str(s.extra.get("performance")) for s in tw)),
        "performance_missing_by_label": dict(Counter(str(s.expression) for s in tw if "performance" not in s.extra)),
        # observers' choice vs the posed label (observers had no "neutral" option)
        "observer_agreement": {e: [sum(1 for s in tw if s.expression == e and (s.extra.get("observer_ratings") or {})
                                       .get("rated_category") == e), sum(1 for s in tw if s.expression == e)] for e in POSED},
        "observer_category_for_neutral": dict(Counter((s.extra.get("observer_ratings") or {}).get("rated_category")
                                                      for s in tw if s.expression == "neutral")),
    }
    utk = [s for s in samples if s.source == "utkface"]
    R["utkface"] = {"missing_age_gender_race": sum(1 for s in utk if "age" not in s.extra),
                    "race": dict(Counter(str(s.extra.get("race")) for s in utk)),
                    "gender": dict(Counter(str(s.extra.get("gender")) for s in utk))}
    R["faces_found"] = dict(sorted(Counter(int(s.extra.get("faces_found", -1)) for s in samples).items()))

    # --- annotation sidecar ------------------------------------------------------------------------
    a = load_sidecar(ann_path)
    keys = a["key"]
    ok = a["ok"].astype(bool)
    src_a = np.array([man[k].source if k in man else "?" for k in keys])
    split_a = np.array([man[k].split if k in man else "?" for k in keys])
    R["sidecar"] = {
        "rows": int(len(keys)), "analysed": int(ok.sum()), "no_face": int((~ok).sum()),
        "keys_equal_manifest": set(keys.tolist()) == set(man),
        "split_column_matches_manifest": bool((a["split"] == split_a).all()),
        "errors": dict(Counter(e for e in a["error"].tolist() if e)),
        "no_face_by_split_source": {f"{sp}/{src}": int(((split_a == sp) & (src_a == src) & ~ok).sum()) for sp, src in pairs},
        "faceapi_expression_missing": int((~np.isfinite(a["expression"]).all(1)).sum()),
    }
    meta_path = ann_path.parent / "annotations.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        R["sidecar"]["meta"] = {k: meta.get(k) for k in ("mien_version", "rows", "ok", "failed", "versions")}

    # predicted expressions (MediaPipe-analysed crops only, so both classifiers see the same rows)
    fa = np.array(BASIC)[np.nan_to_num(a["expression"]).argmax(1)]
    clf = BlendshapeClassifier.load()
    bsc = np.full(len(keys), "", dtype=object)
    bsc[ok] = clf.predict(a["blendshapes"][ok])
    R["blendshape_classifier"] = clf.source
    pred = {}
    for name, p in (("faceapi", fa), ("blendshape", bsc)):
        pred[name] = {}
        for sp, src in pairs + [("all", "all")]:
            m = ok & ((split_a == sp) if sp != "all" else True) & ((src_a == src) if src != "all" else True)
            pred[name][f"{sp}/{src}"] = {e: int((p[m] == e).sum()) for e in BASIC}
    R["predicted"] = pred
    label_a = np.array([man[k].expression or "" for k in keys])
    posed_vs = {}
    for group, m in (("dev/taiwanese", (split_a == "dev") & (src_a == "taiwanese")),
                     ("train/taiwanese", (split_a == "train") & (src_a == "taiwanese")),
                     ("dev/london", (split_a == "dev") & (src_a == "london"))):
        m = m & ok & (label_a != "")
        posed_vs[group] = {"n": int(m.sum())}
        for name, p in (("faceapi", fa), ("blendshape", bsc)):
            posed_vs[group][name] = {"accuracy": round(float((p[m] == label_a[m]).mean()), 3),
                                     "confusion": {e: {q: int(((label_a == e) & m & (p == q)).sum()) for q in BASIC}
                                                   for e in BASIC if ((label_a == e) & m).any()}}
    R["posed_vs_predicted"] = posed_vs

    # AU estimates (0-5, calibrated on the train rows of this sidecar: pool median -> 0, 99.5th pct -> 5)
    aus = a["aus"][ok]
    R["aus"] = {au: {"mean": round(float(aus[:, i].mean()), 3),
                     "share_gt0": round(float((aus[:, i] > 0).mean()), 3),
                     "share_ge1": round(float((aus[:, i] >= 1).mean()), 3),
                     "share_ge3": round(float((aus[:, i] >= 3).mean()), 3),
                     "p50_p90_p99": pct(aus[:, i], [50, 90, 99])} for i, au in enumerate(AU_NAMES)}
    # raw AU scores (mean of each AU's blendshapes, 0-1 MediaPipe scale): how much signal there is
    from mien.expression.aus import index_of
    bs_ok = a["blendshapes"][ok]
    for au in AUS:
        raw_s = bs_ok[:, [index_of(b) for b in au.blendshapes]].mean(1)
        R["aus"][au.au]["raw_score_p50_p99_5_max"] = [float(f"{v:.3g}") for v in np.percentile(raw_s, [50, 99.5, 100])]
    cal_path = ann_path.parent / "au_calibration.json"
    if cal_path.is_file():
        cal = json.loads(cal_path.read_text())
        R["au_calibration_raw_range"] = {au: [cal["au_rest"][au], cal["au_high"][au]] for au in AU_NAMES}

    # head pose
    pose = {}
    for sp, src in pairs + [("all", "all")]:
        m = ok & ((split_a == sp) if sp != "all" else True) & ((src_a == src) if src != "all" else True)
        yaw, pitch, roll = a["yaw"][m], a["pitch"][m], a["roll"][m]
        pose[f"{sp}/{src}"] = {"n": int(m.sum()),
                               "yaw_p1_p50_p99": pct(yaw, [1, 50, 99]), "pitch_p1_p50_p99": pct(pitch, [1, 50, 99]),
                               "roll_p1_p50_p99": pct(roll, [1, 50, 99]),
                               "share_abs_yaw_gt30": round(float((np.abs(yaw) > 30).mean()), 4) if len(yaw) else None,
                               "share_abs_pitch_gt20": round(float((np.abs(pitch) > 20).mean()), 4) if len(yaw) else None}
    pose["all/all"]["yaw_min_max"] = [round(float(a["yaw"][ok].min()), 1), round(float(a["yaw"][ok].max()), 1)]
    pose["all/all"]["pitch_min_max"] = [round(float(a["pitch"][ok].min()), 1), round(float(a["pitch"][ok].max()), 1)]
    pose["all/all"]["roll_min_max"] = [round(float(a["roll"][ok].min()), 1), round(float(a["roll"][ok].max()), 1)]
    R["pose"] = pose

    # --- plots -------------------------------------------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, int] = {}
    labels = [f"{src} ({sp})" for sp, src in pairs]

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    y = np.arange(len(pairs))
    for j, (what, vals) in enumerate((("images", [count[p] for p in pairs]),
                                      ("identities", [len(per_id[p]) if per_id[p] else 0 for p in pairs]))):
        ax[j].barh(y, vals, color=[COLORS[src] for _, src in pairs])
        ax[j].set_xscale("log")
        ax[j].set_xlim(1, max(vals) * 6)
        for yi, v in zip(y, vals):
            ax[j].text(v * 1.1 if v else 1.1, yi, f"{v:,}" if v else "n/a (no ids)", va="center", fontsize=8)
        ax[j].set_title(f"{what} per source and split")
        ax[j].set_xlabel(f"{what} (log scale)")
    ax[0].set_yticks(y, labels, fontsize=8)
    ax[0].invert_yaxis()
    fig.tight_layout()
    savefig(fig, out, "counts.png", files)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bins = [0.5, 1.5, 2.5, 3.5, 4.5, 6.5, 8.5, 10.5, 12.5, 16.5, 20.5, 24.5, 32.5, 40.5, 48.5, 64.5]
    for sp, src in pairs:
        if per_id[(sp, src)]:
            ax.hist(list(per_id[(sp, src)].values()), bins=bins, histtype="step", lw=1.5, color=COLORS[src],
                    ls="-" if sp == "train" else "--", label=f"{src} ({sp})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([1, 2, 5, 10, 20, 50], ["1", "2", "5", "10", "20", "50"])
    ax.set_xlabel("images per identity (log)")
    ax.set_ylabel("identities (log)")
    ax.set_title("Images per identity (UTKFace has no identity labels: left out)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    savefig(fig, out, "images_per_identity.png", files)

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    groups = list(R["posed_labels"])
    w = 0.8 / len(groups)
    for g, grp in enumerate(groups):
        vals = [R["posed_labels"][grp][e] for e in POSED]
        ax.bar(np.arange(len(POSED)) + (g - (len(groups) - 1) / 2) * w, vals, w, label=grp)
    ax.set_xticks(np.arange(len(POSED)), POSED, fontsize=8)
    ax.set_ylabel("images")
    ax.set_ylim(0, max(max(v.values()) for v in R["posed_labels"].values()) * 1.25)
    ax.set_title("Posed expression labels (manifest)", fontsize=10)
    ax.legend(fontsize=8, ncol=len(groups), loc="upper center")
    fig.tight_layout()
    savefig(fig, out, "posed_labels.png", files)

    fig, ax = plt.subplots(1, 2, figsize=(9.5, 3.8), sharey=True)
    rows = [f"{sp}/{src}" for sp, src in pairs] + ["all/all"]
    cmap = plt.get_cmap("tab10")
    for j, name in enumerate(("faceapi", "blendshape")):
        left = np.zeros(len(rows))
        for e_i, e in enumerate(BASIC):
            v = np.array([pred[name][r][e] / max(1, sum(pred[name][r].values())) for r in rows])
            ax[j].barh(np.arange(len(rows)), v, left=left, color=cmap(e_i), label=e)
            left += v
        ax[j].set_xlim(0, 1)
        ax[j].set_title({"faceapi": "face-api expression net (argmax)",
                         "blendshape": "blendshape classifier (argmax)"}[name], fontsize=9)
        ax[j].set_xlabel("share of analysed crops")
    ax[0].set_yticks(np.arange(len(rows)), [r.replace("all/all", "whole pool") for r in rows], fontsize=8)
    ax[0].invert_yaxis()
    handles, names_ = ax[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles, names_, fontsize=8, loc="lower center", ncol=7, frameon=False)
    savefig(fig, out, "predicted_expression.png", files)

    fig, ax = plt.subplots(1, 2, figsize=(9.5, 4.2), sharey=True)
    conf_rows = [("dev/taiwanese", e) for e in BASIC if e in posed_vs["dev/taiwanese"]["faceapi"]["confusion"]]
    conf_rows += [("dev/london", e) for e in BASIC if e in posed_vs["dev/london"]["faceapi"]["confusion"]]
    for j, name in enumerate(("faceapi", "blendshape")):
        M = np.array([[posed_vs[g][name]["confusion"][e][q] for q in BASIC] for g, e in conf_rows], float)
        ax[j].imshow(M / M.sum(1, keepdims=True), cmap="Blues", vmin=0, vmax=1)
        for r in range(M.shape[0]):
            for c in range(M.shape[1]):
                if M[r, c]:
                    ax[j].text(c, r, int(M[r, c]), ha="center", va="center", fontsize=7,
                               color="white" if M[r, c] / M[r].sum() > 0.6 else "black")
        ax[j].set_xticks(np.arange(len(BASIC)), BASIC, rotation=45, fontsize=7)
        acc = {g: posed_vs[g][name]["accuracy"] for g in ("dev/taiwanese", "dev/london")}
        ax[j].set_title(f"{'face-api' if name == 'faceapi' else 'blendshape classifier'}: accuracy "
                        f"TW dev {acc['dev/taiwanese']:.2f}, London {acc['dev/london']:.2f}", fontsize=8)
        ax[j].set_xlabel("predicted")
    ax[0].set_yticks(np.arange(len(conf_rows)), [f"{g.split('/')[1][:6]} {e}" for g, e in conf_rows], fontsize=7)
    ax[0].set_ylabel("posed label (dev)")
    fig.tight_layout()
    savefig(fig, out, "posed_vs_predicted.png", files)

    fig, axs = plt.subplots(3, 4, figsize=(9, 5.6), sharex=True, sharey=True)
    edges = np.linspace(0, 5, 26)
    for i, (au, axx) in enumerate(zip(AUS, axs.flat)):
        axx.hist(aus[:, i], bins=edges, color="tab:blue")
        axx.set_yscale("log")
        axx.set_title(f"{au.au} {au.facs_name}", fontsize=8)
        axx.text(0.97, 0.93, f">=1: {(aus[:, i] >= 1).mean():.0%}", transform=axx.transAxes, ha="right", va="top",
                 fontsize=7)
    for axx in axs[-1]:
        axx.set_xlabel("estimated intensity (0-5)", fontsize=7)
    fig.suptitle(f"AU estimates from MediaPipe blendshapes (no image->AU model), {len(aus):,} analysed crops",
                 fontsize=9)
    fig.tight_layout()
    savefig(fig, out, "aus.png", files)

    fig, ax = plt.subplots(1, 3, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    yaw, pitch = a["yaw"][ok], a["pitch"][ok]
    H, xe, ye = np.histogram2d(yaw, pitch, bins=[np.arange(-75, 76, 2.5), np.arange(-35, 46, 2.5)])
    im = ax[0].imshow(np.ma.masked_equal(H.T, 0), origin="lower", extent=(xe[0], xe[-1], ye[0], ye[-1]),
                      norm=LogNorm(), cmap="viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax[0], label="crops (log)")
    ax[0].set_xlabel("yaw (deg)")
    ax[0].set_ylabel("pitch (deg)")
    ax[0].set_title("yaw-pitch density, whole pool", fontsize=9)
    for j, (what, arr, rng) in enumerate((("yaw", a["yaw"], np.arange(-75, 76, 2.5)),
                                          ("pitch", a["pitch"], np.arange(-35, 46, 2.5))), 1):
        for sp, src in pairs:
            m = ok & (split_a == sp) & (src_a == src)
            ax[j].hist(arr[m], bins=rng, histtype="step", density=True, color=COLORS[src],
                       ls="-" if sp == "train" else "--", label=f"{src} ({sp})")
        ax[j].set_yscale("log")
        ax[j].set_xlabel(f"{what} (deg)")
        ax[j].set_title(f"{what} per source (density, log)", fontsize=9)
    ax[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    savefig(fig, out, "pose.png", files)

    R["plots_bytes"] = files
    (out / "data_card.json").write_text(json.dumps(R, indent=1, default=str) + "\n")
    return R


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(R: dict) -> str:
    out = []
    rows = []
    for key, t in R["by_split_source"].items():
        sp, src = key.split("/")
        ids = t["identities"] if t["identities"] is not None else "— (each photo its own person)"
        pid = t["per_identity_min_median_mean_max"]
        raw = R["dev_raw_jpg"]["by_source"].get(src, [None])[0] if sp == "dev" else "—"
        rows.append([sp, src, f"{t['images']:,}", ids, " / ".join(f"{v:g}" for v in pid) if pid else "1",
                     R["sidecar"]["no_face_by_split_source"][key], raw,
                     f"{t['fill_mean']:.3f} / {t['fill_share_nonzero']:.0%}"])
    for sp in ("train", "dev"):
        tt = R["split_totals"][sp]
        nf = sum(v for k, v in R["sidecar"]["no_face_by_split_source"].items() if k.startswith(sp))
        raw = R["dev_raw_jpg"]["total"] if sp == "dev" else "—"
        rows.append([f"**{sp}**", "all", f"**{tt['images']:,}**", f"**{tt['identities']:,}** (+{tt['unlabelled_images']:,} unlabelled)",
                     "", nf, raw, ""])
    out.append(md_table(["split", "source", "images", "identities", "images/identity min / median / mean / max",
                         "no face (MediaPipe)", "raw.jpg", "fill mean / share > 0"], rows))
    out.append("")
    pl = R["posed_labels"]
    out.append(md_table(["posed label"] + list(pl),
                        [[e] + [pl[g][e] for g in pl] for e in POSED] + [["total"] + [sum(pl[g].values()) for g in pl]]))
    out.append("")
    pr = R["predicted"]
    rows = []
    for key in pr["faceapi"]:
        for name in ("faceapi", "blendshape"):
            c = pr[name][key]
            n = sum(c.values())
            rows.append([key.replace("all/all", "**whole pool**"), name, f"{n:,}"] + [f"{c[e] / n:.0%}" for e in BASIC])
    out.append(md_table(["split/source", "classifier", "n"] + list(BASIC), rows))
    out.append("")
    pv = R["posed_vs_predicted"]
    out.append(md_table(["posed labels", "n", "face-api accuracy", "blendshape classifier accuracy"],
                        [[g, v["n"], f"{v['faceapi']['accuracy']:.3f}", f"{v['blendshape']['accuracy']:.3f}"]
                         for g, v in pv.items()]))
    out.append("")
    ag = R["taiwanese"]["observer_agreement"]
    out.append(md_table(["Taiwanese posed label", "observers' majority category = posed label"],
                        [[e, f"{a}/{n} ({a / n:.0%})" if e != "neutral" else f"— (no neutral option; observers chose "
                          f"{', '.join(f'{k} {v}' for k, v in R['taiwanese']['observer_category_for_neutral'].items())})"]
                         for e, (a, n) in ag.items() if n]))
    out.append("")
    out.append(md_table(["AU", "FACS name", "mean", "share > 0", "share ≥ 1", "share ≥ 3", "p50 / p90 / p99"],
                        [[au.au, au.facs_name, f"{R['aus'][au.au]['mean']:.2f}", f"{R['aus'][au.au]['share_gt0']:.0%}",
                          f"{R['aus'][au.au]['share_ge1']:.0%}", f"{R['aus'][au.au]['share_ge3']:.1%}",
                          " / ".join(f"{v:.2f}" for v in R['aus'][au.au]['p50_p90_p99'])] for au in AUS]))
    out.append("")
    out.append(md_table(["split/source", "n", "yaw p1 / p50 / p99", "pitch p1 / p50 / p99", "roll p1 / p50 / p99",
                         "abs(yaw) > 30°", "abs(pitch) > 20°"],
                        [[k.replace("all/all", "**whole pool**"), f"{v['n']:,}"]
                         + [" / ".join(f"{x:.1f}" for x in v[f"{w}_p1_p50_p99"]) for w in ("yaw", "pitch", "roll")]
                         + [f"{v['share_abs_yaw_gt30']:.1%}", f"{v['share_abs_pitch_gt20']:.1%}"]
                         for k, v in R["pose"].items()]))
    out.append("")
    sc, raw, nn, tw = R["sidecar"], R["dev_raw_jpg"], R["names_in_two_sources"], R["taiwanese"]
    out += [
        f"- sidecar: {sc['rows']:,} rows, {sc['analysed']:,} analysed, {sc['no_face']:,} no face "
        f"({', '.join(f'{k} {v}' for k, v in sc['errors'].items())}); keys = manifest keys: {sc['keys_equal_manifest']}",
        f"- dev identities: {R['split_totals']['dev']['identities']} (README says {R['readme_dev_identities']})",
        f"- dev raw.jpg: {raw['total']} of {raw['of']} "
        f"({', '.join(f'{k} {h}/{n}' for k, (h, n) in raw['by_source'].items())})",
        f"- identity prefixes: {', '.join(f'{k} {v}' for k, v in R['identity_prefixes'].items() if v)}",
        f"- identities in both splits of one source: {R['identities_in_both_splits']}",
        f"- names in both CFP and LAG (case-insensitive): {nn['in_cfp_and_lag']} of {nn['names']}; "
        f"CFP dev people also in LAG train: {nn['cfp_dev_people_also_in_lag_train']} of {nn['cfp_dev_people']}",
        f"- Taiwanese: {len(tw['no_expression_label'])} crops without expression label; views {tw['view']}",
        f"- UTKFace rows without age/gender/race: {R['utkface']['missing_age_gender_race']}",
        "- raw AU score p50 / p99.5 / max (MediaPipe 0-1 scale): "
        + "; ".join(f"{k} {'/'.join(str(x) for x in v['raw_score_p50_p99_5_max'])}" for k, v in R["aus"].items()),
        "- build_stats (aligned / grey / no_face) vs in pool: " + "; ".join(
            f"{k} {v.get('ok', 0)}/{v.get('grey', 0)}/{v.get('no_face', 0)} vs {v['in_pool']}"
            for k, v in R.get("build_stats", {}).items()),
        f"- sha256: {R['sha256']}",
        f"- plots (bytes): {R['plots_bytes']}",
    ]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", type=Path, default=DEFAULT_ANN, help=f"sidecar Parquet (default {DEFAULT_ANN})")
    ap.add_argument("--data-dir", type=Path, default=None, help="faces128 folder (default: $MIEN_DATA or ../shared)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the PNGs and data_card.json go")
    ap.add_argument("--json", action="store_true", help="print the JSON of figures instead of markdown tables")
    args = ap.parse_args()
    R = compute(args.data_dir or default_data_dir(), args.annotations, args.out)
    sys.stdout.write(json.dumps(R, indent=1, default=str) + "\n" if args.json else markdown(R) + "\n")


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
