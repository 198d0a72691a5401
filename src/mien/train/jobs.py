"""The jobs behind ``mien train`` and ``mien train decoder``: the built-in model and the TAEF2 decoder
(``mien train expression-space`` is :mod:`mien.train.expression_space`).

Each job takes resolved configs and paths (no argparse), runs to completion or to its time budget,
and returns a summary dict that the command prints and writes as ``summary.json``. The budget covers
the whole job, data preparation included, so a device call given ``--time-budget 540`` returns in
time. Training resumes from the checkpoint in the run folder: running the same command again continues
where the last call stopped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from mien.builtin.config import EXPRESSION_DIM, IDENTITY_DIM, ModelConfig, TrainConfig
from mien.errors import MienError
from mien.train.data import TrainTensors

HELD_OUT = 0.03  # share of each chunk's people kept out of decoder training, for its before/after PSNR


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def pack_chunks(pack: str | Path) -> list[Path]:
    """The chunk files of a ``mien data pack`` folder (from its pack.json), or ``pack`` itself if it is a
    chunk file."""
    pack = Path(pack)
    if pack.is_file() and pack.suffix == ".npz":
        return [pack]
    meta = pack / "pack.json"
    if not meta.is_file():
        raise MienError(f"{pack} is not a training pack (no pack.json); make one with `mien data pack`")
    try:
        files = [pack / c["file"] for c in json.loads(meta.read_text())["chunks"]]
    except (ValueError, KeyError, TypeError) as e:
        raise MienError(f"{meta} is not a pack.json written by `mien data pack` ({e}); pack again") from e
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise MienError(f"{pack}: chunk files missing: {', '.join(missing)}; copy the whole pack folder")
    return files


def check_chunks(chunks: list[Path]) -> list[Path]:
    missing = [str(c) for c in chunks if not Path(c).is_file()]
    if missing:
        raise MienError(f"chunk files not found: {', '.join(missing)}")
    return [Path(c) for c in chunks]


def synthetic_tensors(n: int, seed: int = 0) -> TrainTensors:
    """Random tensors with a pack's shapes (mirrored latents included), people of 4 photos each: for
    trying the command and timing steps without data."""
    if n < 2:
        raise MienError(f"--synthetic needs at least 2 samples, got {n}")
    g = torch.Generator().manual_seed(seed)
    people = np.arange(n) // 4
    latents = torch.randn(n, 32, 16, 16, generator=g).half()
    return TrainTensors(
        latents=latents,
        mask=torch.ones(n, 1, 16, 16).half(),
        identity=torch.nn.functional.normalize(torch.randn(n, IDENTITY_DIM, generator=g), dim=1).half(),
        expression=torch.rand(n, EXPRESSION_DIM, generator=g).half(),
        ref_candidates=[
            others if len(others := np.flatnonzero((people == people[i]) & (np.arange(n) != i))) else np.array([i])
            for i in range(n)
        ],
        latents_mirrored=latents.flip(-1),
    )


def encoded_tensors(chunks: list[Path], cache: Path, embeddings: bool = False) -> tuple[TrainTensors, dict]:
    """TAEF2 latents of the chunks' faces (cached in ``cache``) as training tensors; with ``embeddings`` also
    each photo's MobileFaceNet embedding (the consistency identity loss's targets)."""
    from mien.models.taef2 import TAEF2
    from mien.train.latents import load_chunks

    dev = _device()
    taef2 = TAEF2.from_weights(decoder=False).to(dev).eval()  # encodes only
    embed = None
    if embeddings:
        from mien.train.loss_consistency import mobilefacenet_embedder

        embed = mobilefacenet_embedder(dev)
    return load_chunks(check_chunks(chunks), cache, taef2, dev, embed=embed)


def run_model_config(model_cfg: ModelConfig, out: Path) -> ModelConfig:
    """The model config of a run: that of the checkpoint in ``out`` when resuming (its latent statistics
    come from the data of the first call, which a later call may not carry), else ``model_cfg``."""
    from mien.builtin.config import from_dict
    from mien.train.loop import CHECKPOINT

    if not (out / CHECKPOINT).is_file():
        return model_cfg
    return from_dict(ModelConfig, torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)["model_config"])


def train_builtin(model_cfg: ModelConfig, train_cfg: TrainConfig, tensors: TrainTensors | None, out: Path,
                  time_budget_s: float | None = None, stop_after: int | None = None,
                  chunks: list[Path] | None = None, cache: Path | None = None, parts_to: Path | None = None,
                  start: float | None = None, bench: int = 0) -> dict:  # fmt: skip
    """Train (or resume) the built-in model in ``out``; the data is ``tensors`` or, when None, the chunks'
    latents. Writes ``out/model`` (the EMA weights at the step reached) and ``out/summary.json``; with
    ``parts_to``, also the model split into parts of < 16 MiB, the loss log and the summary there. With
    ``bench`` N, first times N steps without and N with the consistency feedback (``bench.json``)."""
    from mien.builtin.model import write_checksum
    from mien.train.export import copy_small, export_ema, split_file
    from mien.train.loop import CHECKPOINT, FINAL, LOSS_CSV, LOSS_PNG, train

    start = time.monotonic() if start is None else start
    model_cfg = run_model_config(model_cfg, out)
    info = {"synthetic": len(tensors)} if tensors is not None else {}
    if tensors is None:
        tensors, info = encoded_tensors(chunks or [], cache or out / "latents",
                                        embeddings=train_cfg.identity_weight > 0 or bench > 0)  # fmt: skip
    if bench:
        out.mkdir(parents=True, exist_ok=True)
        result = feedback_benchmark(model_cfg, train_cfg, tensors, out / "bench", bench)
        (out / "bench.json").write_text(json.dumps(result, indent=1))
    prep_s = time.monotonic() - start
    torch.backends.cuda.matmul.allow_tf32 = True  # training only; generation keeps full float32
    torch.backends.cudnn.allow_tf32 = True
    budget = None if time_budget_s is None else time_budget_s - prep_s - _export_margin(model_cfg)
    if budget is not None and budget <= 0:
        raise MienError(f"--time-budget {time_budget_s:g} s is spent on data preparation ({prep_s:.0f} s); "
                        "give more time or fewer chunks")  # fmt: skip
    t0 = time.monotonic()
    final = train(model_cfg, train_cfg, tensors, out, budget, stop_after)
    train_s = time.monotonic() - t0
    step = export_ema(out / CHECKPOINT, out / FINAL) if final != out / FINAL else train_cfg.steps
    if model_cfg.decoder and train_cfg.init_from:  # the starting model's own decoder goes with its weights
        shutil.copy(Path(train_cfg.init_from) / model_cfg.decoder, out / FINAL / model_cfg.decoder)
    write_checksum(out / FINAL)
    rows = (out / LOSS_CSV).read_text().splitlines()[1:] if (out / LOSS_CSV).is_file() else []
    summary = {"device": _device_name(_device()), "torch": torch.__version__, "data": info,
               "prep_s": round(prep_s, 1), "train_s": round(train_s, 1), "step": step, "steps": train_cfg.steps,
               "finished": step >= train_cfg.steps, "model": str(out / FINAL), "last_log": rows[-3:]}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if parts_to is not None:
        summary["parts"] = split_file(out / FINAL / "model.safetensors", parts_to)
        copy_small([out / FINAL / "config.json", out / FINAL / "SHA256SUMS", out / LOSS_CSV, out / LOSS_PNG,
                    out / "train_config.json", out / "bench.json"], parts_to)  # fmt: skip
        (Path(parts_to) / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def feedback_benchmark(model_cfg: ModelConfig, train_cfg: TrainConfig, tensors: TrainTensors, work: Path,
                       steps: int) -> dict:  # fmt: skip
    """Images/s of ``steps`` training steps without and with the consistency feedback, same start and data
    (median of the logged intervals after the first, which holds the warm-up and the nets' loading)."""
    import csv
    import statistics

    from mien.train.loop import train

    result = {}
    for name, w in (("flow only", (0.0, 0.0)), ("with feedback", (train_cfg.expression_weight or 0.1,
                                                                  train_cfg.identity_weight or 0.1))):  # fmt: skip
        cfg = dataclasses.replace(train_cfg, steps=steps, log_every=max(1, steps // 6), checkpoint_every=10**9,
                                  expression_weight=w[0], identity_weight=w[1])  # fmt: skip
        run = work / name.replace(" ", "_")
        shutil.rmtree(run, ignore_errors=True)
        train(model_cfg, cfg, tensors, run)
        with open(run / "loss.csv") as f:
            rows = list(csv.DictReader(f))
        result[name] = {"images_per_s": statistics.median(float(r["images_per_s"]) for r in rows[1:] or rows),
                        "rows": rows, "weights": w, "feedback_samples": cfg.feedback_samples, "batch": cfg.batch_size}  # fmt: skip
    return result


def _export_margin(model_cfg: ModelConfig) -> float:
    """Seconds kept back from the loop's budget for the EMA export after it (a few for the small model)."""
    return 5.0 if model_cfg.preset != "tiny" else 0.0


def decoder_images(chunks: list[Path], cache: Path) -> dict[str, torch.Tensor]:
    """uint8 faces (N, 3, 128, 128), validity masks (N, 1, 128, 128) and person groups of the chunks,
    each chunk decoded once and cached as safetensors in ``cache``."""
    from safetensors.torch import load_file, save_file

    from mien.train.latents import decode_chunk

    cache.mkdir(parents=True, exist_ok=True)
    parts = []
    for path in check_chunks(chunks):
        c = cache / (path.stem + ".images.safetensors")
        if not c.exists():
            cond, images, masks = decode_chunk(path)
            tmp = c.with_name(c.name + ".tmp")
            save_file({"images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                       "masks": torch.from_numpy(masks.astype(np.uint8))[:, None].contiguous(),
                       "group": torch.from_numpy(cond["group"].astype(np.int64))}, tmp)  # fmt: skip
            tmp.replace(c)
        parts.append(load_file(c))
    if not parts:
        raise MienError("no chunks given: pass --pack DIR or --chunks FILE ...")
    return {k: torch.cat([p[k] for p in parts]) for k in ("images", "masks", "group")}


def held_out_people(group: torch.Tensor, share: float = HELD_OUT, seed: int = 0) -> torch.Tensor:
    """A boolean mask of the samples whose person is held out (``share`` of the people, a fixed draw)."""
    people = group.unique()
    held = people[torch.randperm(len(people), generator=torch.Generator().manual_seed(seed))[: int(len(people) * share)]]
    return torch.isin(group, held)


def train_decoder(cfg, chunks: list[Path], out: Path, time_budget_s: float | None = None,
                  cache: Path | None = None, parts_to: Path | None = None, start: float | None = None) -> dict:  # fmt: skip
    """Fine-tune TAEF2's decoder (mien.train.decoder) on the chunks' faces in ``out`` (resumable) and report
    the masked PSNR of held-out people before and after."""
    from mien.models.taef2 import TAEF2
    from mien.train.decoder import CHECKPOINT, DECODER_FILE, finetune_decoder, psnr

    start = time.monotonic() if start is None else start
    dev = _device()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # one input shape throughout
    data = decoder_images(chunks, cache or out / "images")
    held = held_out_people(data["group"])
    images, masks = data["images"].to(dev), data["masks"].to(dev)
    train_i, held_i = torch.flatnonzero(~held).to(dev), torch.flatnonzero(held).to(dev)
    if len(train_i) == 0:
        raise MienError("no training faces left after holding out people; give more chunks")
    prep_s = time.monotonic() - start
    pretrained = TAEF2.from_weights().to(dev).eval()
    before = psnr(pretrained, images[held_i], masks[held_i]).mean().item() if len(held_i) else None
    taef2 = TAEF2.from_weights().to(dev)
    budget = None if time_budget_s is None else time_budget_s - (time.monotonic() - start)
    result = finetune_decoder(taef2, images[train_i], masks[train_i], cfg, out, time_budget_s=budget)
    after = psnr(taef2.to(dev).eval(), images[held_i], masks[held_i]).mean().item() if len(held_i) else None
    summary = {"device": _device_name(dev), "torch": torch.__version__, "train_faces": len(train_i),
               "held_out_faces": len(held_i),
               "held_out_psnr_masked_db": {"pretrained": _round(before), "finetuned": _round(after)},
               "prep_s": round(prep_s, 1), **result, "config": dataclasses.asdict(cfg),
               "decoder": str(out / DECODER_FILE), "checkpoint": str(out / CHECKPOINT)}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if parts_to is not None:
        from mien.train.export import copy_small

        copy_small([out / DECODER_FILE, out / "decoder_loss.csv", out / "summary.json"], parts_to)
    return summary


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def dev_faces() -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Sources, uint8 images (N, 3, 128, 128) and validity masks (N, 1, 128, 128) of every dev face of the
    faces128 pool, in manifest (key) order."""
    from mien.data.faces128 import Faces128

    pool = Faces128(split="dev")
    keys, images, masks = [], [], []
    for sample, image in pool:
        keys.append(sample.source)
        images.append(image)
        masks.append(pool.mask(sample))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return keys, x, torch.from_numpy(np.stack(masks).astype(np.uint8))[:, None]


def decoder_dev_psnr(model: str | Path = "default") -> dict:
    """TAEF2 reconstruction PSNR on the dev faces, pretrained decoder against the model folder's own (if it
    names one): per image, the output rounded to 8 bits, over the whole crop and over its real pixels
    only (the fill region excluded), averaged overall and per source."""
    from mien.builtin.model import MienModel
    from mien.models.taef2 import TAEF2
    from mien.pipeline import default_model_dir
    from mien.train.decoder import psnr

    folder = default_model_dir() if str(model) == "default" else Path(model)
    decoder = MienModel.from_pretrained(folder).decoder_path
    keys, images, masks = dev_faces()
    sources = np.array(keys)
    result = {"faces": len(keys), "model": str(folder), "decoder": str(decoder)}
    with torch.no_grad():
        for name, path in (("pretrained", None), ("model", decoder)):
            if name == "model" and path is None:
                continue
            taef2 = TAEF2.from_weights(decoder_path=path).eval()
            row = {}
            for region, m in (("whole", None), ("real_pixels", masks)):
                p = psnr(taef2, images, m).numpy()
                row[region] = {"mean": round(float(p.mean()), 2),
                               **{s: round(float(p[sources == s].mean()), 2) for s in sorted(set(sources))}}  # fmt: skip
            result[name] = row
    return result
