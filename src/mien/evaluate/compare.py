"""`mien evaluate --compare A.json B.json`: what changed between two runs.

Both ``results.json`` files are flattened to ``metric.path → number`` (nested per-label, per-group
and per-AU values included; lists such as confusion matrices compare as a whole), then every number
that differs is printed with its change. Differences in benchmark, generator or model come first,
since they decide whether the numbers are comparable at all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from mien.errors import MienError

_CONTEXT = (("benchmark", "name"), ("benchmark", "sha256"), ("benchmark", "identities"), ("generator", "name"),
            ("model_hash",), ("seed",), ("versions", "mien"))


def load_results(path: str | Path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MienError(f"{path} not found; give two results.json files written by `mien evaluate`") from None
    except json.JSONDecodeError as e:
        raise MienError(f"{path} is not JSON ({e}); give a results.json written by `mien evaluate`") from None
    if not isinstance(doc, dict) or "metrics" not in doc:
        raise MienError(f"{path} has no 'metrics'; it is not a results.json written by `mien evaluate`")
    return doc


def flatten(metrics: dict) -> dict[str, object]:
    """{name: {"value": ...}} → {"name.sub.key": leaf}; leaves are numbers, strings, None or lists."""
    out: dict[str, object] = {}

    def walk(prefix: str, v) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}", x)
        else:
            out[prefix] = v

    for name, entry in metrics.items():
        walk(name, entry.get("value") if isinstance(entry, dict) else entry)
    return out


def _get(doc: dict, path: tuple[str, ...]):
    for k in path:
        doc = doc.get(k) if isinstance(doc, dict) else None
    return doc


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a, b, tol: float) -> bool:
    if _num(a) and _num(b):
        return math.isclose(a, b, rel_tol=0, abs_tol=tol)
    return a == b


def diff(a: dict, b: dict, tol: float = 5e-7) -> list[str]:
    """Lines describing every difference between results ``a`` and ``b`` (empty when none)."""
    lines = []
    for path in _CONTEXT:
        va, vb = _get(a, path), _get(b, path)
        if va != vb:
            lines.append(f"{'.'.join(path)}: {va} -> {vb}")
    fa, fb = flatten(a["metrics"]), flatten(b["metrics"])
    for key in sorted(fa.keys() | fb.keys()):
        va, vb = fa.get(key, "absent"), fb.get(key, "absent")
        if _same(va, vb, tol):
            continue
        if _num(va) and _num(vb):
            lines.append(f"{key}: {va:.4g} -> {vb:.4g} ({vb - va:+.4g})")
        elif isinstance(va, list) or isinstance(vb, list):
            lines.append(f"{key}: changed")
        else:
            lines.append(f"{key}: {_short(va)} -> {_short(vb)}")
    return lines


def _short(v) -> str:
    s = "n/a" if v is None else f"{v:.4g}" if _num(v) else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def compare(path_a: str | Path, path_b: str | Path) -> str:
    a, b = load_results(path_a), load_results(path_b)
    lines = diff(a, b)
    head = f"comparing {path_a} -> {path_b}"
    if not lines:
        return f"{head}\nno differences"
    return "\n".join([head, *lines, f"{len(lines)} difference(s)"])
