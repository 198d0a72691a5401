"""report.html: one self-contained file of tables, plots and image grids.

Images are embedded once each as CSS background classes (a copy baseline repeats one photo dozens
of times); plots are matplotlib PNGs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from mien.evaluate import metrics as M
from mien.evaluate.benchmark import LABELS, Benchmark
from mien.evaluate.scoring import AU_NOTE, Context, expression_change, pairs

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.im{display:inline-block;width:96px;height:96px;
background-size:cover;border:1px solid #ddd}.cap{font-size:11px;width:96px;overflow-wrap:anywhere}
.grid td{vertical-align:top;text-align:center;padding:2px}.muted{color:#888}dt{font-weight:600;margin-top:.4em}"""


class _Images:
    """Embeds each distinct PNG once; ``cls(png_bytes)`` → CSS class name."""

    def __init__(self):
        self.css: dict[str, str] = {}

    def cls(self, png: bytes) -> str:
        name = "i" + hashlib.sha1(png).hexdigest()[:12]
        if name not in self.css:
            import base64

            self.css[name] = f".{name}{{background-image:url(data:image/png;base64,{base64.b64encode(png).decode()})}}"
        return name

    def tag(self, png: bytes | None, title: str = "") -> str:
        if png is None:
            return f'<span class="im muted" title="{_esc(title)}">–</span>'
        return f'<span class="im {self.cls(png)}" title="{_esc(title)}"></span>'


def _png(rgb: np.ndarray, size: int = 128) -> bytes:
    import io

    im = Image.fromarray(rgb)
    if max(im.size) > size:
        im.thumbnail((size, size), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _thumb(path: Path, size: int = 96) -> bytes | None:
    """An output PNG at the grid's display size (None if it is gone)."""
    if not path.exists():
        return None
    with Image.open(path) as im:
        return _png(np.asarray(im.convert("RGB")), size)


def _esc(s) -> str:
    import html

    return html.escape(str(s), quote=True)


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return '<span class="muted">–</span>'
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return _esc(v)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{_esc(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i == 0 else ""}">{_fmt(c)}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _plot(draw: Callable, w: float = 6, h: float = 4) -> str:
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(w, h), dpi=90)
    try:
        draw(fig, ax)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _v(results: dict, name: str):
    return results["metrics"][name]["value"]


def _headline(results: dict) -> str:
    ceil_i, ceil_a = _v(results, "identity.ceiling.identity_photo_pairs"), _v(results, "identity.ceiling.all_real_pairs")
    fa, bs = _v(results, "expression.faceapi"), _v(results, "expression.blendshape")
    rows = [[f"identity: {k.replace('_', ' ')}", _v(results, f"identity.{k}"), ceil_i[k], ceil_a[k]]
            for k in ("faceapi_cosine", "mobilefacenet_cosine", "verification_rate")]
    rows.append(["expression: face-api accuracy (label requests)", fa["accuracy"], None, fa["real_accuracy"]["overall"]])
    if "accuracy" in bs:
        rows.append(["expression: blendshape-classifier accuracy", bs["accuracy"], None, bs["real_accuracy"]["overall"]])
    ref = results["metrics"]
    rows.append(["reference: blendshape distance to reference", ref["reference.blendshape_distance"]["value"],
                 ref["reference.identity_photo_distance"]["value"], None])
    rows.append(["trade-off: expression change from identity photo", _v(results, "tradeoff.expression_change")["mean"],
                 None, None])
    rows.append(["trade-off: joint success (label right and same person)", _v(results, "tradeoff.joint_success")["value"],
                 None, None])
    for space, fr in _v(results, "realism.frechet").items():
        rows.append([f"realism: Fréchet distance, {space}", fr["generated"], None, fr["floor"]])
    return _table(["metric", "generated", "identity photo / start", "real ceiling / floor"], rows)


def _expression_tables(results: dict) -> str:
    fa, bs = _v(results, "expression.faceapi"), _v(results, "expression.blendshape")
    has_bs = "per_label" in bs
    rows = []
    for lab in LABELS:
        row = [lab, fa["per_label"][lab], fa["real_accuracy"]["per_label"][lab], fa["normalised"]["per_label"][lab]]
        if has_bs:
            row += [bs["per_label"][lab], bs["real_accuracy"]["per_label"][lab], bs["normalised"]["per_label"][lab]]
        rows.append(row + [fa["real_accuracy"]["n_per_label"][lab]])
    head = ["requested label", "face-api: generated", "real photos", "normalised"]
    head += ["blendshape clf: generated", "real photos", "normalised"] if has_bs else []
    html = _table(head + ["real photos (n)"], rows)

    def bars(fig, ax):
        x = np.arange(len(LABELS))
        series = [("face-api generated", fa["per_label"]), ("face-api real", fa["real_accuracy"]["per_label"])]
        if has_bs:
            series += [("blendshape generated", bs["per_label"]), ("blendshape real", bs["real_accuracy"]["per_label"])]
        wdt = 0.8 / len(series)
        for k, (name, d) in enumerate(series):
            ax.bar(x + k * wdt, [d[lab] if d[lab] is not None else 0 for lab in LABELS], wdt, label=name)
        ax.set_xticks(x + 0.4 - wdt / 2, LABELS, rotation=30)
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)

    html += _plot(bars, 8, 3.5)
    for name, d in (("face-api", fa), ("blendshape classifier", bs)):
        if "confusion" in d:
            html += _plot(lambda fig, ax, d=d, name=name: _confusion(ax, d["confusion"]["matrix"], name), 4.5, 4)
    return html


def _confusion(ax, matrix, name: str) -> None:
    m = np.asarray(matrix, float)
    ax.imshow(m / np.maximum(m.sum(1, keepdims=True), 1), vmin=0, vmax=1, cmap="Blues")
    for (i, j), c in np.ndenumerate(m):
        if c:
            ax.text(j, i, int(c), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, fontsize=7)
    ax.set_yticks(range(len(LABELS)), LABELS, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("requested")
    ax.set_title(f"{name}: confusion (row-normalised)", fontsize=9)


def _tradeoff_plot(results: dict, ctx: Context, items: list[dict]) -> str:
    change = expression_change(ctx, items)
    ceiling = _v(results, "identity.ceiling.all_real_pairs")["faceapi_cosine"]

    def draw(fig, ax):
        for kind in sorted({r["kind"] for r in items}):
            pts = [(c, M.nanmean(pairs(ctx, r)[0])) for c, r in zip(change, items)
                   if r["kind"] == kind and r["status"] == "ok"]
            if pts:
                ax.scatter(*zip(*pts), s=8, alpha=0.5, label=kind)
        if ceiling is not None:
            ax.axhline(ceiling, color="k", ls="--", lw=1, label="real-pair ceiling")
        curve = _v(results, "tradeoff.curve")
        if isinstance(curve, list) and curve:
            ax.plot([p["expression_change"] for p in curve], [p["faceapi_cosine"] for p in curve], "k-o",
                    label="guidance")
        ax.set_xlabel("expression change from identity photo (blendshape L2)")
        ax.set_ylabel("identity: face-api cosine to other photos")
        ax.legend(fontsize=8)

    return _plot(draw, 7, 4.5)


# _grid and _failure_grid lay out HTML tables, not a picture: the browser places the thumbnails and their
# captions stay selectable text with a tooltip each, so they do not go through mien.io.grid (an image sheet).
def _grid(benchmark: Benchmark, real: dict, items: list[dict], out: Path, images: _Images, per_group: int) -> str:
    by_key = {(r["identity"], r["request"], r["seed"]): r for r in items}
    shown: dict[str, int] = {}
    html = []
    for ident in benchmark.identities:
        if shown.get(ident.group, 0) >= per_group:
            continue
        shown[ident.group] = shown.get(ident.group, 0) + 1
        photo = images.tag(_png(benchmark.image(ident.identity_photos[0]), 96), str(ident.identity_photos[0]))
        cells = [f"<td>{photo}<div class='cap'><b>{_esc(ident.id)}</b><br>identity photo</div></td>"]
        for request in ident.requests:
            head = images.tag(_png(benchmark.image(request.like), 96), str(request.like)) if request.like else ""
            outs = []
            for seed in ident.seeds:
                r = by_key.get((ident.id, request.id, seed))
                png = _thumb(out / r["image"]) if r and r.get("image") else None
                label = r["status"] if r else "missing"
                note = "" if label == "ok" else f"<div class='cap'>{label}</div>"
                outs.append(images.tag(png, f"seed {seed}: {label}") + note)
            cells.append(f"<td><div class='cap'>{_esc(request.id)}</div>{head}{''.join(outs)}</td>")
        html.append(f"<table class='grid'><tr>{''.join(cells)}</tr></table>")
    return "".join(html)


def _failure_grid(items: list[dict], out: Path, images: _Images, limit: int = 16) -> str:
    bad = [r for r in items if r["status"] == "no_face"]
    if not bad:
        return "<p>No output lacked a face.</p>"
    cells = [f"<td>{images.tag(_thumb(out / r['image']))}"
             f"<div class='cap'>{_esc(r['identity'])}<br>{_esc(r['request'])} s{r['seed']}</div></td>"
             for r in bad[:limit]]
    return (f"<p>{len(bad)} output(s) without a face; the first {min(limit, len(bad))}:</p>"
            f"<table class='grid'><tr>{''.join(cells)}</tr></table>")


def _artefacts_section(results: dict, benchmark: Benchmark, items: list[dict], out: Path, images: _Images,
                       worst: int = 8) -> str:
    m = results["metrics"]
    crit = m.get("realism.critic", {}).get("value", {})
    if "face" not in crit:
        return f"<p>{_esc(crit.get('skipped', 'no realism critic in these results'))}</p>"
    dark, mouth, lost = (m[k]["value"] for k in ("artefacts.dark_eyes", "artefacts.mouth", "artefacts.face_lost"))
    under = m.get("artefacts.dark_under_eyes", {}).get("value")  # absent from results made before it existed
    rows = [[f"critic accuracy, {reg} (0.5 = indistinguishable)", d["accuracy"], d["standard_error_at_chance"],
             f"{d['n_test']} held out ({d['n_real']} real, {d['n_generated']} generated)"] for reg, d in crit.items()]
    for name, d in (("eyes", dark), ("under-eyes", under)):
        if d:
            rows.append([f"{name} newly darkened (ratio < {d['threshold']} of the photo's), eyes open", d["rate"], None,
                         d["n"]])
        if d and "squeezed" in d:  # absent from results made before squeezed eyes were counted apart
            rows.append([f"{name} darkened with eyes squeezed nearly shut (closure >= {d['squeezed_closure']}): "
                         "not counted above", d["squeezed"], None, d["n"]])
    rows.append(["mouth critic: mean P(generated)", mouth["mean_score"], None, mouth["n"]])
    rows.append(["face lost", lost["rate"], None, lost["n"]])
    html = _table(["artefact measure", "value", "s.e. at chance", "n"], rows)
    by_req = dark.get("by_request", {})
    if by_req:
        under_by = (under or {}).get("by_request", {})
        html += "<p>Eyes and under-eyes newly darkened, per request:</p>" + _table(
            ["request", "eyes", "under-eyes"], [[q, v, under_by.get(q)] for q, v in by_req.items()])
    inputs = {i.id: images.tag(_png(benchmark.image(i.identity_photos[0]), 96), "identity photo")
              for i in benchmark.identities}
    scored = [r for r in items if r.get("artefacts")]
    measures = (("eye_darkening", False, "darkest eyes relative to the photo (eye/cheek ratio share)"),
                ("under_eye_darkening", False, "darkest under-eyes relative to the photo (under-eye/outer-cheek "
                 "ratio share)"),
                ("critic_face", True, "most clearly generated by the face critic (held-out P(generated))"),
                ("critic_mouth", True, "most clearly generated by the mouth critic (held-out P(generated))"))
    for key, high, title in measures:
        vals = [r for r in scored if r["artefacts"].get(key) is not None]
        vals.sort(key=lambda r: r["artefacts"][key], reverse=high)
        cells = [f"<td>{inputs.get(r['identity'], '')}{images.tag(_thumb(out / r['image']))}"
                 f"<div class='cap'>{_esc(r['identity'])} {_esc(r['request'])} s{r['seed']}: "
                 f"{r['artefacts'][key]:.2f}</div></td>" for r in vals[:worst]]
        if cells:
            html += (f"<p>Worst {len(cells)} by {_esc(title)} (identity photo | output):</p>"
                     f"<table class='grid'><tr>{''.join(cells)}</tr></table>")
    return html


def _aus_section(results: dict) -> str:
    a = _v(results, "aus")
    if "per_au" not in a:
        return f"<p>{_esc(a.get('skipped', 'no AU results'))}. {_esc(AU_NOTE)}</p>"
    rows = [["overall", a["mae"], a["pearson"], a["icc31"]]] + [[au, d["mae"], d["pearson"], d["icc31"]]
                                                               for au, d in a["per_au"].items()]
    return f"<p>{_esc(AU_NOTE)}</p>" + _table(["AU", "MAE", "Pearson r", "ICC(3,1)"], rows)


def write_report(out: Path, results: dict, benchmark: Benchmark, real: dict, items: list[dict],
                 grid_per_group: int = 2) -> Path:
    ctx = Context(benchmark, real, items)
    images = _Images()
    meta = [["benchmark", f"{results['benchmark']['name']} ({results['benchmark']['source']})"],
            ["benchmark sha256", results["benchmark"]["sha256"]], ["generator", results["generator"]["name"]],
            ["model hash", results["model_hash"]], ["created", results["created"]],
            ["wall time (s)", results["wall_time_s"]], ["seed (realism split)", results["seed"]],
            ["versions", ", ".join(f"{k} {v}" for k, v in results["versions"].items())],
            ["items", ", ".join(f"{k} {v}" for k, v in results["counts"].items())]]
    by_group = _v(results, "identity.by_group")
    group_rows = [[g, d["faceapi_cosine"], d["mobilefacenet_cosine"], d["verification_rate"], d["identities"],
                   _v(results, "expression.by_group").get(g)] for g, d in by_group.items()]
    fr = _v(results, "realism.frechet")
    realism_rows = [[s, d["generated"], d["floor"], f"{d['n_generated']} / {d['n_real']}", d["dims"]]
                    for s, d in fr.items()]
    div = _v(results, "realism.diversity")
    fails = _v(results, "failures")
    body = [
        f"<h1>mien evaluate: {_esc(results['generator']['name'])} on {_esc(results['benchmark']['name'])}</h1>",
        _table(["", ""], meta),
        "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in results["notes"]) + "</ul>",
        "<h2>Headline</h2>", _headline(results),
        "<h2>Identity by group</h2>",
        _table(["group", "face-api cosine", "MobileFaceNet cosine", "verification", "identities", "face-api expr. acc."],
               group_rows),
        "<h2>Expression (label requests)</h2>", _expression_tables(results),
        "<h2>Action Units</h2>", _aus_section(results),
        "<h2>Trade-off: identity against expression change</h2>", _tradeoff_plot(results, ctx, items),
        "<h2>Realism and diversity</h2>",
        _table(["space", "Fréchet: generated", "floor (real vs real)", "n generated / n real (halves)", "dims"],
               realism_rows),
        f"<p>Spread across seeds: blendshapes {_fmt(div['blendshapes'])}, MobileFaceNet {_fmt(div['mobilefacenet'])} "
        f"over {div['groups']} (identity, request) groups.</p>",
        "<h2>Realism critic and artefacts</h2>", _artefacts_section(results, benchmark, items, out, images),
        "<h2>Failures</h2>",
        f"<p>Unsupported: {_esc(fails['unsupported'] or 'none')}. Errors: {_esc(fails['error'] or 'none')}. "
        f"Real photos without a face: {_esc(fails['real_no_face'] or 'none')}.</p>",
        _failure_grid(items, out, images),
        "<h2>Images: identity photo | request | outputs (one per seed)</h2>",
        _grid(benchmark, real, items, out, images, grid_per_group),
        "<h2>Definitions</h2><dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v['definition'])}</dd>"
                                             for k, v in results["metrics"].items()) + "</dl>",
    ]
    style = _CSS + "\n" + "\n".join(images.css.values())
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>mien evaluate</title><style>{style}</style>"
           f"</head><body>{''.join(body)}</body></html>")
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path
