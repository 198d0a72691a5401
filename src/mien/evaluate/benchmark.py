"""Benchmarks: who is evaluated, from which photos, with which expression requests and seeds.

A benchmark is a YAML or JSON file (JSON is YAML, so one reader serves both)::

    name: my-benchmark
    seeds: [0, 1]                      # every request is generated once per seed
    requests:                          # asked of every identity
      - {label: happy, intensity: 1.0} # a basic label (intensity 0-1, default 1)
      - {term: amusement}              # any word `mien expressions` knows (135 terms, synonyms, recipes)
      - {aus: {AU12: 3, AU6: 2}}       # Action Units on FACS's 0-5 scale; unlisted AUs mean 0
      - {like: tw_2101f05}             # a reference photo whose expression should be copied
    identities:
      - id: alice
        group: friends                 # optional, for per-group tables (default: "all")
        identity_photos: [alice/1.jpg] # what the generator sees
        scoring_photos: [alice/2.jpg, {photo: alice/3.jpg, label: happy}]  # other real photos of her
        requests: [{like: bob/angry.jpg}]   # optional, in addition to the shared requests
        seeds: [0]                     # optional, replaces the shared seeds

A photo is a faces128 sample key (read from the pool, see :mod:`mien.data.faces128`) or a path to an
image file, relative to the benchmark file's folder; written as a mapping it can carry an expression
``label`` (keys take theirs from the manifest). Labelled real photos give each classifier's
real-photo accuracy, and let the ``real`` baseline answer requests.

:func:`build_dev` writes the shipped dev benchmark (``resources/benchmarks/dev.yaml``) from the
faces128 manifest: ``python -m mien.evaluate.benchmark`` regenerates it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mien.errors import MienError
from mien.expression.aus import AU_NAMES, check_intensity, parse_au_name

# face-api.js label order (mien.expression.basic.BASIC), used for every table and confusion matrix.
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
KINDS = ("label", "term", "aus", "like")
DEV = "dev.yaml"
_TOP_KEYS = {"name", "description", "seeds", "requests", "identities"}
_ID_KEYS = {"id", "group", "identity_photos", "scoring_photos", "requests", "seeds"}
_REQ_KEYS = {"label": {"label", "intensity"}, "term": {"term"}, "aus": {"aus"}, "like": {"like"}}


def dev_path() -> Path:
    return Path(str(resources.files("mien") / "resources" / "benchmarks" / DEV))


@dataclass(frozen=True)
class Photo:
    """A real photo: a faces128 key or a resolved file path, with its expression label if known."""

    ref: str  # the key, or the absolute path
    is_key: bool
    label: str | None = None

    def __str__(self) -> str:
        return self.ref if self.is_key else Path(self.ref).name


@dataclass(frozen=True)
class Request:
    """One expression request; exactly one of label / term / aus / like is set."""

    kind: str
    label: str | None = None
    intensity: float = 1.0
    term: str | None = None
    aus: tuple[tuple[str, float], ...] = ()
    like: Photo | None = None

    @property
    def id(self) -> str:
        """Stable text id, used in results and to resume a run."""
        if self.kind == "label":
            return f"label:{self.label}@{self.intensity:g}"
        if self.kind == "term":
            return f"term:{self.term}"
        if self.kind == "aus":
            return "aus:" + ",".join(f"{k}={v:g}" for k, v in self.aus)
        return f"like:{self.like.ref}"

    def au_vector(self) -> np.ndarray:
        """(12,) requested AU intensities in AU_NAMES order; unlisted AUs are 0 (FineFace's convention)."""
        given = dict(self.aus)
        return np.array([given.get(a, 0.0) for a in AU_NAMES])


@dataclass
class Identity:
    id: str
    group: str
    identity_photos: list[Photo]
    scoring_photos: list[Photo]
    requests: list[Request]
    seeds: list[int]

    def items(self) -> list[tuple[Request, int]]:
        return [(r, s) for r in self.requests for s in self.seeds]


@dataclass
class Benchmark:
    name: str
    description: str
    identities: list[Identity]
    source: str  # where it was read from
    sha256: str  # of the file's bytes
    data_dir: Path | None = None  # faces128 folder for key photos (None: the default)
    _manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    def limit(self, n: int | None) -> "Benchmark":
        """The first ``n`` identities (file order), for quick runs."""
        if n is None:
            return self
        if n < 1:
            raise MienError(f"--limit {n}: give a number of identities of at least 1")
        return Benchmark(self.name, self.description, self.identities[:n], self.source, self.sha256,
                         self.data_dir, self._manifest)

    def photos(self) -> list[Photo]:
        """Every distinct real photo the benchmark names (identity, scoring and reference photos)."""
        seen: dict[str, Photo] = {}
        for ident in self.identities:
            for p in ident.identity_photos + ident.scoring_photos:
                seen.setdefault(p.ref, p)
            for r in ident.requests:
                if r.like is not None:
                    seen.setdefault(r.like.ref, r.like)
        return list(seen.values())

    def n_items(self) -> int:
        return sum(len(i.items()) for i in self.identities)

    @cached_property
    def pool(self):
        from mien.data.faces128 import Faces128

        rows = list(self._manifest.values()) or None
        return Faces128(self.data_dir, samples=rows)

    def image(self, photo: Photo) -> np.ndarray:
        """The photo as uint8 RGB: the aligned 128 px crop for a key, the decoded file for a path."""
        if photo.is_key:
            return self.pool.image(photo.ref)
        from mien.io.image import load_rgb

        return load_rgb(photo.ref)


# ----------------------------------------------------------------------------------------------
# loading


def load(path: str | Path | None = None, data_dir: str | Path | None = None) -> Benchmark:
    """Read and validate a benchmark file (default: the shipped dev benchmark)."""
    path = Path(path) if path is not None else dev_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MienError(f"benchmark {path} not found; give a YAML or JSON file (see `mien evaluate --help`)") from None
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise MienError(f"benchmark {path} is not valid YAML/JSON: {e}") from None
    return parse(doc, path, hashlib.sha256(raw).hexdigest(), data_dir)


def parse(doc: Any, path: Path, sha256: str = "", data_dir: str | Path | None = None) -> Benchmark:
    where = str(path)
    _mapping(doc, where, _TOP_KEYS, required={"identities"})
    ids = doc["identities"]
    if not isinstance(ids, list) or not ids:
        raise MienError(f"{where}: 'identities' must be a non-empty list")
    ctx = _Context(path.parent, data_dir, _needs_manifest(doc))
    seeds = _seeds(doc.get("seeds", [0]), f"{where}: seeds")
    shared = [_request(r, f"{where}: requests[{i}]", ctx) for i, r in enumerate(doc.get("requests") or [])]
    identities = [_identity(d, f"{where}: identities[{i}]", ctx, shared, seeds) for i, d in enumerate(ids)]
    dup = _first_duplicate([i.id for i in identities])
    if dup:
        raise MienError(f"{where}: identity id '{dup}' appears twice")
    _share_labels(identities)
    data = Path(data_dir) if data_dir else None
    return Benchmark(str(doc.get("name", path.stem)), str(doc.get("description", "")), identities, where,
                     sha256, data, ctx.manifest)


def _share_labels(identities: list[Identity]) -> None:
    """A photo labelled in one place (say as a scoring photo) keeps that label where it is named bare
    (say as a reference); conflicting labels are an error."""
    labels: dict[str, str] = {}
    for ident in identities:
        for p in ident.identity_photos + ident.scoring_photos + [r.like for r in ident.requests if r.like]:
            if p.label is not None and labels.setdefault(p.ref, p.label) != p.label:
                raise MienError(f"photo {p} is labelled both {labels[p.ref]} and {p.label}")

    def fix(p: Photo) -> Photo:
        return p if p.label is not None or p.ref not in labels else Photo(p.ref, p.is_key, labels[p.ref])

    for ident in identities:
        ident.identity_photos = [fix(p) for p in ident.identity_photos]
        ident.scoring_photos = [fix(p) for p in ident.scoring_photos]
        ident.requests = [Request(r.kind, r.label, r.intensity, r.term, r.aus, fix(r.like)) if r.like else r
                          for r in ident.requests]


class _Context:
    """Resolves photo references: file paths against the benchmark's folder, keys against faces128."""

    def __init__(self, base: Path, data_dir: str | Path | None, need_manifest: bool):
        self.base = base
        self.vocabulary = None  # loaded on the first term
        self.manifest: dict[str, Any] = {}
        if need_manifest:
            from mien.data.faces128 import load_manifest

            self.manifest = {s.key: s for s in load_manifest(data_dir)}

    def photo(self, spec: Any, where: str) -> Photo:
        label = None
        if isinstance(spec, dict):
            _mapping(spec, where, {"photo", "label"}, required={"photo"})
            label = _label(spec["label"], f"{where}.label") if spec.get("label") is not None else None
            spec = spec["photo"]
        if not isinstance(spec, str) or not spec.strip():
            raise MienError(f"{where}: a photo is a faces128 key or an image path, not {spec!r}")
        if _looks_like_path(spec):
            p = (self.base / spec).resolve()
            if not p.is_file():
                raise MienError(f"{where}: photo file {p} not found (paths are relative to the benchmark file)")
            return Photo(str(p), False, label)
        sample = self.manifest.get(spec)
        if sample is None:
            raise MienError(f"{where}: '{spec}' is neither an image path nor a faces128 key")
        return Photo(spec, True, label or sample.expression)


def _looks_like_path(spec: str) -> bool:
    from mien.io.image import IMAGE_SUFFIXES

    return "/" in spec or "\\" in spec or Path(spec).suffix.lower() in IMAGE_SUFFIXES


def _needs_manifest(doc: dict) -> bool:
    def refs(x):
        if isinstance(x, dict):
            return [x.get("photo")] if "photo" in x else []
        return [x]

    names = []
    for d in doc.get("identities") or []:
        if isinstance(d, dict):
            for k in ("identity_photos", "scoring_photos"):
                names += [r for p in d.get(k) or [] for r in refs(p)]
            names += [r.get("like") for r in d.get("requests") or [] if isinstance(r, dict)]
    names += [r.get("like") for r in doc.get("requests") or [] if isinstance(r, dict)]
    return any(isinstance(n, str) and not _looks_like_path(n) for n in names)


def _identity(d: Any, where: str, ctx: _Context, shared: list[Request], seeds: list[int]) -> Identity:
    _mapping(d, where, _ID_KEYS, required={"id", "identity_photos"})
    ident = str(d["id"])
    where = f"{where} ('{ident}')"
    photos = {k: [ctx.photo(p, f"{where}.{k}[{j}]") for j, p in enumerate(_list(d.get(k), f"{where}.{k}"))]
              for k in ("identity_photos", "scoring_photos")}
    if not photos["identity_photos"]:
        raise MienError(f"{where}: list at least one identity photo")
    both = {p.ref for p in photos["identity_photos"]} & {p.ref for p in photos["scoring_photos"]}
    if both:
        raise MienError(f"{where}: {sorted(both)[0]} is both an identity and a scoring photo; scoring "
                        "photos must be *other* photos of the person")
    own = [_request(r, f"{where}.requests[{j}]", ctx) for j, r in enumerate(_list(d.get("requests"), where))]
    requests = shared + own
    if not requests:
        raise MienError(f"{where}: no requests (give shared 'requests' or the identity's own)")
    dup = _first_duplicate([r.id for r in requests])
    if dup:
        raise MienError(f"{where}: request {dup} is listed twice")
    own_seeds = _seeds(d["seeds"], f"{where}.seeds") if "seeds" in d else seeds
    return Identity(ident, str(d.get("group", "all")), photos["identity_photos"], photos["scoring_photos"],
                    requests, own_seeds)


def _request(r: Any, where: str, ctx: _Context) -> Request:
    if not isinstance(r, dict):
        raise MienError(f"{where}: a request is a mapping such as {{label: happy}}, {{term: amusement}}, "
                        "{aus: {AU12: 3}} or {like: PHOTO}")
    kinds = [k for k in KINDS if k in r]
    if len(kinds) != 1:
        raise MienError(f"{where}: give exactly one of {', '.join(KINDS)} (got {sorted(r) or 'none'})")
    kind = kinds[0]
    _mapping(r, where, _REQ_KEYS[kind], required={kind})
    if kind == "label":
        return Request("label", label=_label(r["label"], where), intensity=_intensity(r.get("intensity", 1.0), where))
    if kind == "term":
        return Request("term", term=_term(r["term"], where, ctx))
    if kind == "aus":
        return Request("aus", aus=_aus(r["aus"], where))
    return Request("like", like=ctx.photo(r["like"], f"{where}.like"))


def _label(value: Any, where: str) -> str:
    if value not in LABELS:
        raise MienError(f"{where}: unknown label {value!r}; use one of {', '.join(LABELS)}")
    return value


def _intensity(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise MienError(f"{where}: intensity {value!r} must be a number from 0 to 1")
    return float(value)


def _term(value: Any, where: str, ctx: _Context) -> str:
    if not isinstance(value, str):
        raise MienError(f"{where}: a term is text, not {value!r}")
    if ctx.vocabulary is None:
        from mien.expression.vocabulary import Vocabulary

        ctx.vocabulary = Vocabulary.load()
    try:
        ctx.vocabulary.resolve(value)  # validates now, so a typo fails before any generation
    except MienError as e:
        raise MienError(f"{where}: {e}") from None
    return value


def _aus(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(value, dict) or not value:
        raise MienError(f"{where}: aus is a mapping of Action Units to 0-5 intensities, e.g. {{AU12: 3}}")
    out = {}
    for name, v in value.items():
        try:
            au = parse_au_name(str(name))
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise MienError(f"{au}={v!r}: the intensity must be a number from 0 to 5")
            check_intensity(au, v)
        except MienError as e:
            raise MienError(f"{where}: {e}") from None
        out[au] = float(v)
    return tuple(sorted(out.items(), key=lambda kv: AU_NAMES.index(kv[0])))


def _seeds(value: Any, where: str) -> list[int]:
    if not (isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value)):
        raise MienError(f"{where}: seeds must be a non-empty list of integers, e.g. [0, 1]")
    if len(set(value)) != len(value):
        raise MienError(f"{where}: a seed is listed twice")
    return list(value)


def _mapping(d: Any, where: str, allowed: set[str], required: set[str]) -> None:
    if not isinstance(d, dict):
        raise MienError(f"{where}: expected a mapping with keys {', '.join(sorted(allowed))}")
    unknown = sorted(set(map(str, d)) - allowed)
    if unknown:
        raise MienError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(d))
    if missing:
        raise MienError(f"{where}: missing {', '.join(missing)}")


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MienError(f"{where}: expected a list")
    return value


def _first_duplicate(values: list[str]) -> str | None:
    seen = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


# ----------------------------------------------------------------------------------------------
# the dev benchmark

DEV_SEEDS = [0, 1]
# Shared requests: the seven labels at full intensity, four vocabulary terms (one per family the
# data can score: joy, surprise, sadness, anger), and three AU vectors (FineFace's AU set):
# a Duchenne smile (AU6+AU12; Ekman, Davidson & Friesen 1990), surprise (AU1+2+5+26) and sadness
# (AU1+4+15+17) after the EMFACS prototypes (Friesen & Ekman 1983).
DEV_TERMS = ("amusement", "astonishment", "disappointment", "fury")
DEV_AUS = (
    {"AU6": 3, "AU12": 4},
    {"AU1": 3, "AU2": 3, "AU5": 2, "AU26": 3},
    {"AU1": 2, "AU4": 2, "AU15": 3, "AU17": 2},
)
# Reference photos (EmojiDiff-style `like` requests): each identity gets two posed Taiwanese photos
# of *another* performer, the most intensely rated frontal one of each label.
DEV_REFERENCE_LABELS = ("surprised", "disgusted")
# London first: its 40 people may be shown publicly (CC BY 4.0) and have two photos each, so a
# `--limit` run is quick and its report shareable.
DEV_GROUP_ORDER = ("london", "taiwanese", "cfp", "essex94")


def build_dev(samples) -> dict:
    """The dev benchmark document from faces128 manifest rows (``load_manifest()``)."""
    dev = [s for s in samples if s.split == "dev" and s.identity]
    by_id: dict[str, list] = {}
    for s in sorted(dev, key=lambda s: s.key):
        by_id.setdefault(s.identity, []).append(s)
    performers = sorted(i for i in by_id if by_id[i][0].source == "taiwanese")
    refs = {p: {lab: _strongest(by_id[p], lab) for lab in DEV_REFERENCE_LABELS} for p in performers}
    identities = []
    order = sorted(by_id.items(), key=lambda kv: (DEV_GROUP_ORDER.index(kv[1][0].source), kv[0]))
    for n, (ident, rows) in enumerate(order):
        first = _identity_photo(rows)
        others = [p for p in performers if p != ident]
        donor = others[n % len(others)]
        identities.append({
            "id": ident,
            "group": rows[0].source,
            "identity_photos": [first.key],
            "scoring_photos": [s.key for s in rows if s is not first],
            "requests": [{"like": refs[donor][lab]} for lab in DEV_REFERENCE_LABELS],
        })
    requests = ([{"label": lab, "intensity": 1.0} for lab in LABELS] + [{"term": t} for t in DEV_TERMS]
                + [{"aus": dict(a)} for a in DEV_AUS])
    return {
        "name": "dev",
        "description": "faces128 dev split: London Set (neutral + smiling), three Taiwanese performers "
                       "(seven posed expressions), CFP and Essex faces94 identities. Identity photo: the "
                       "first neutral photo where labelled, else the first by key; every other photo of "
                       "the person is kept for scoring. Built by mien.evaluate.benchmark.build_dev.",
        "seeds": DEV_SEEDS,
        "requests": requests,
        "identities": identities,
    }


def _identity_photo(rows):
    neutral = [s for s in rows if s.expression == "neutral"]
    return (neutral or rows)[0]


def _strongest(rows, label: str) -> str:
    """The key of the photo posed as ``label`` that observers rated most intense for it."""
    def score(s):
        r = s.extra.get("observer_ratings") or {}
        return r.get("mean_intensity", {}).get(label, 0.0)

    posed = [s for s in rows if s.expression == label and s.extra.get("view", "front") == "front"]
    if not posed:
        raise MienError(f"no frontal {label} photo of {rows[0].identity} in the dev split")
    return max(posed, key=score).key


def write_dev(path: Path | None = None, data_dir: str | Path | None = None) -> Path:
    from mien.data.faces128 import load_manifest

    path = Path(path) if path else dev_path()
    doc = build_dev(load_manifest(data_dir))
    header = ("# The mien dev benchmark: faces128 sample keys only, no images.\n"
              "# Generated by `python -m mien.evaluate.benchmark`; edit build_dev, not this file.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=100, default_flow_style=None))
    return path


if __name__ == "__main__":
    print(f"wrote {write_dev()}")
