"""Generate a benchmark's outputs on a GPU machine, score them here: `mien evaluate` in two halves.

Why: the whole dev benchmark takes about 90 minutes on a 2-core CPU, nearly all of it generation, and the
lent GPU machine cannot run MediaPipe (too large to carry), which alignment and scoring need. So:

1. here (CPU, MediaPipe): ``prepare`` aligns every identity photo and measures every reference photo of a
   benchmark exactly as ``mien evaluate --generator built-in`` does and writes the inputs the pipeline
   needs (crops, the first photo's pose and blendshapes, the requests) to a folder to carry:

       python -m mien.evaluate.gpu_generate prepare --benchmark src/mien/resources/benchmarks/dev-wild.yaml \\
           --out .carry/geval/dev-wild

2. on the GPU (device tool; carry ``.whl``, ``.carry/weights`` and the prepared folder; install as in
   docs/training.md): ``generate`` runs :class:`mien.pipeline.MienPipeline` on each item with one or more
   settings variants (``name:key=value,key=value``; keys are :class:`mien.settings.GenerationSettings`
   fields, resolved per request as everywhere else) and writes each variant's PNGs, named as
   ``mien evaluate`` names its outputs, into tar files of at most 15 MiB under $OUT:

       PYTHONPATH=src:/root/run/site MIEN_WEIGHTS=.carry/weights python3 -m mien.evaluate.gpu_generate generate \\
           --inputs .carry/geval/dev-wild --out $OUT --variant default: --variant bg0.3:blendshape_guidance=0.3

3. here: unpack and score with ``mien evaluate --benchmark ... --generator images --images DIR``.

The GPU runs the pipeline in float32 with TF32 off, to keep its images as close to the CPU's as it can;
``generate --device cpu`` reproduces ``mien evaluate``'s own images exactly (same thread count). How
close a GPU's images come to the CPU's is not measured.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

TAR_LIMIT = 15 * 2**20  # the device tool returns files of at most 16 MiB


def prepare(args) -> None:
    from tqdm import tqdm

    from mien.errors import MienError
    from mien.evaluate import benchmark as bm
    from mien.evaluate.run import _Vocab, condition, output_name
    from mien.face.landmarker import FaceLandmarker
    from mien.pipeline import align_photos, reference_blendshapes

    bench = bm.load(args.benchmark).limit(args.limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays, people, vocab = {}, [], _Vocab()
    with FaceLandmarker(num_faces=2) as lm:
        for k, ident in enumerate(tqdm(bench.identities, desc="aligning", unit="person", file=sys.stderr)):
            person = {"identity": ident.id, "requests": []}
            try:
                aligned = align_photos(lm, [bench.image(p) for p in ident.identity_photos])
                arrays[f"crops{k}"] = np.stack(aligned.crops)
                arrays[f"pose{k}"] = np.asarray(aligned.faces[0].pose, np.float32)
                arrays[f"bs{k}"] = np.asarray(aligned.faces[0].blendshapes, np.float32)
            except MienError as e:
                person["error"] = str(e)
            for request in ident.requests:
                cond = condition(bench, ident, request, vocab)
                entry = {"id": request.id, "mix": cond.basic, "aus": cond.aus, "like": None,
                         "outputs": {str(s): output_name(ident.id, request.id, s) for s in ident.seeds}}
                if cond.reference is not None:
                    try:
                        entry["like"] = reference_blendshapes(lm, cond.reference).tolist()
                    except MienError as e:
                        entry["error"] = f"reference photo: {e}"
                person["requests"].append(entry)
            people.append(person)
    np.savez_compressed(out / "inputs.npz", **arrays)
    meta = {"benchmark": bench.name, "benchmark_sha256": bench.sha256, "people": people}
    (out / "items.json").write_text(json.dumps(meta), encoding="utf-8")
    n = sum(len(p["requests"]) * len(bench.identities[0].seeds) for p in people)
    print(f"{out}: {len(people)} people, ~{n} items", file=sys.stderr)


def parse_variant(spec: str) -> tuple[str, dict]:
    """``NAME:key=value,...`` -> (NAME, {field: typed value}); keys are GenerationSettings fields. The
    values are validated by building the settings (a one-line MienError naming the flag)."""
    import dataclasses

    from mien.errors import MienError
    from mien.settings import GenerationSettings

    name, colon, rest = spec.partition(":")
    if not name or not colon:
        raise MienError(f"--variant {spec!r}: write NAME:key=value,... ('default:' for the defaults)")
    types = {f.name: str(f.type).replace(" | None", "") for f in dataclasses.fields(GenerationSettings)}
    settings = {}
    for pair in filter(None, rest.split(",")):
        key, _, value = pair.partition("=")
        if key not in types:
            raise MienError(f"--variant {name}: unknown setting {key!r}; use one of {', '.join(types)}")
        try:
            settings[key] = None if value == "None" else {"int": int, "float": float}.get(types[key], str)(value)
        except ValueError as e:
            raise MienError(f"--variant {name}: {key}={value!r} is not a {types[key]}") from e
    GenerationSettings(**settings)
    return name, settings


class _Tars:
    """PNG files into ``<prefix>-<k>.tar`` files of at most TAR_LIMIT bytes each."""

    def __init__(self, prefix: Path):
        self.prefix, self.k, self.size, self.tar = prefix, 0, 0, None

    def add(self, name: str, data: bytes) -> None:
        if self.tar is None or self.size + len(data) + 2048 > TAR_LIMIT:
            self.close()
            self.tar = tarfile.open(f"{self.prefix}-{self.k}.tar", "w")
            self.k, self.size = self.k + 1, 1024
        info = tarfile.TarInfo(name)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))
        self.size += 512 + -(-len(data) // 512) * 512

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None


class _NoLandmarker:
    """Stands in for MediaPipe, which the GPU machine lacks: ``prepare`` aligned every photo already."""

    def detect(self, rgb):
        raise RuntimeError("no landmarker on this machine: run `prepare` where MediaPipe is installed")

    def close(self) -> None:
        pass


def generate(args) -> None:
    import torch
    from PIL import Image

    from mien.errors import MienError
    from mien.expression.targets import ExpressionRequest
    from mien.pipeline import AlignedPhotos
    from mien.settings import GenerationSettings

    variants = [parse_variant(v) for v in args.variant]  # all checked before any work
    torch.backends.cuda.matmul.allow_tf32 = False  # as close to the CPU's float32 as the GPU goes
    torch.backends.cudnn.allow_tf32 = False
    inputs = Path(args.inputs)
    if not (inputs / "items.json").is_file() or not (inputs / "inputs.npz").is_file():
        raise MienError(f"{inputs} has no items.json and inputs.npz; write them with `prepare` first")
    meta = json.loads((inputs / "items.json").read_text(encoding="utf-8"))
    arrays = np.load(inputs / "inputs.npz")
    from mien.pipeline import MienPipeline

    pipe = MienPipeline.from_pretrained(args.model, device=args.device, landmarker=_NoLandmarker())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for name, settings in variants:
        tars, t0, count, errors = _Tars(out / name), time.time(), 0, []
        for k, person in enumerate(meta["people"]):
            if "error" in person:
                errors.append(f"{person['identity']}: {person['error']}")
                continue
            faces = [SimpleNamespace(pose=arrays[f"pose{k}"], blendshapes=arrays[f"bs{k}"])]
            ident = pipe.identity_input(AlignedPhotos(list(arrays[f"crops{k}"]), faces * len(arrays[f"crops{k}"])))
            for entry in person["requests"]:
                if "error" in entry:
                    errors.append(f"{person['identity']} {entry['id']}: {entry['error']}")
                    continue
                like = np.asarray(entry["like"], np.float32) if entry["like"] is not None else None
                req = ExpressionRequest(mix=entry["mix"], aus=entry["aus"], like=like)
                for seed, file in entry["outputs"].items():
                    try:
                        gen = pipe(ident, req, GenerationSettings(**settings), n=1, seed=int(seed))
                    except MienError as e:
                        errors.append(f"{file}: {e}")
                        continue
                    buf = io.BytesIO()
                    Image.fromarray(gen.images[0]).save(buf, format="PNG")
                    tars.add(file, buf.getvalue())
                    count += 1
        wall = time.time() - t0
        used = gen.settings.to_dict() if count else settings
        info = {"variant": name, "settings": settings, "resolved_settings_last_item": used, "images": count,
                "errors": errors, "wall_s": round(wall, 1), "images_per_s": round(count / wall, 2),
                "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
                "torch": torch.__version__, "model_hash": pipe.model_hash, "benchmark": meta["benchmark"],
                "benchmark_sha256": meta["benchmark_sha256"],
                "description": f"mien's built-in model on {args.device} (python -m mien.evaluate.gpu_generate), variant {name}: "
                               f"{json.dumps(settings) if settings else 'default settings'}"}
        tars.add("generate.json", json.dumps(info, indent=1).encode())
        tars.close()
        summary.append(info)
        print(f"{name}: {count} images in {wall:.0f} s ({count / wall:.2f} img/s), {len(errors)} errors", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare", help="align and measure a benchmark's inputs (needs MediaPipe)")
    a.add_argument("--benchmark", required=True)
    a.add_argument("--limit", type=int, help="only the first N identities")
    a.add_argument("--out", required=True)
    b = sub.add_parser("generate", help="run the pipeline on prepared inputs (no MediaPipe needed)")
    b.add_argument("--inputs", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="a settings variant (GenerationSettings fields); 'default:' for the defaults")
    b.add_argument("--device", default="cuda")
    b.add_argument("--model", default="default")
    args = p.parse_args(argv)
    if args.cmd == "generate" and not args.variant:
        args.variant = ["default:"]
    from mien.errors import MienError

    try:
        prepare(args) if args.cmd == "prepare" else generate(args)
    except MienError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
