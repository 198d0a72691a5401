"""One GPU call of a built-in model training run (shared/GPU.md: plan a run as 2-3 calls < 10 min).

Runs on the lent machine from the repository root, e.g. (the exact commands used are in
docs/training.md):

    python3 -m pip install -q --no-index --no-deps --target /root/run/site .whl/*.whl
    PYTHONPATH=src:/root/run/site MIEN_WEIGHTS=.carry/weights python3 scripts/gpu_train.py \
        --chunks .carry/pack/chunk-00.npz .carry/pack/chunk-01.npz --minutes 8 --out $OUT

Each call encodes the chunks it carries (cached under --work, which survives while the machine stays
warm), trains on every chunk encoded so far, resuming from the checkpoint in --work, and writes the
EMA model (fp16, split into < 16 MiB parts for the return trip), the loss log and a summary to --out.
If the machine went cold, --init-from (a carried EMA model) restarts from those weights.

Consistency feedback (mien.train.loss_consistency): --expression-weight / --identity-weight > 0 turn
the losses on; their nets (TAEF2 with the model's own decoder, MediaPipe's mesh + blendshapes,
MobileFaceNet) load from MIEN_WEIGHTS. --bench N first times N steps without and N with the feedback
(separate throw-away runs from the same start) and writes bench.json: the training-time cost of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from diffusers.training_utils import EMAModel

from mien.builtin.config import ModelConfig, TrainConfig, from_dict, load_json
from mien.builtin.model import MienModel, write_checksum
from mien.models.taef2 import TAEF2
from mien.train.latents import load_chunks
from mien.train.loop import train

PART_BYTES = 15 * 2**20


def split_file(path: Path, out: Path) -> list[str]:
    data, names = path.read_bytes(), []
    for i in range(0, len(data), PART_BYTES):
        name = f"{path.name}.part{i // PART_BYTES}"
        (out / name).write_bytes(data[i: i + PART_BYTES])
        names.append(name)
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", nargs="+", type=Path, default=[])
    ap.add_argument("--work", type=Path, default=Path("/root/run"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget for this call's training")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=40_000, help="total steps of the whole run (the LR schedule's horizon)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--device", default="cuda", help="cuda on the lent machine; cpu for a local dry run")
    ap.add_argument("--init-from", default="", help="a saved model folder to start from (machine went cold, "
                    "or growing a model without a spatial reference into one with it)")
    ap.add_argument("--reference", action="store_true", help="model with the spatial identity reference (model.py)")
    ap.add_argument("--reference-pool", type=int, default=0, help="model sees the reference pooled over k x k "
                    "latent cells (ModelConfig.reference_pool; needs --reference)")
    ap.add_argument("--self-reference", type=float, default=0.0, help="chance of a sample's own latent as its "
                    "reference (TrainConfig.self_reference; needs --reference-pool)")
    ap.add_argument("--flip", type=float, default=0.5, help="mirror chance")
    ap.add_argument("--warmup", type=int, default=500, help="learning-rate warm-up steps (also after a restart)")
    ap.add_argument("--config-from-init", action="store_true", help="take the whole model config from "
                    "--init-from (its decoder too, copied into the export) instead of --preset")
    ap.add_argument("--expression-weight", type=float, default=0.0, help="TrainConfig.expression_weight")
    ap.add_argument("--identity-weight", type=float, default=0.0, help="TrainConfig.identity_weight")
    ap.add_argument("--feedback-t-max", type=float, default=0.4, help="TrainConfig.feedback_t_max")
    ap.add_argument("--feedback-samples", type=int, default=64, help="TrainConfig.feedback_samples")
    ap.add_argument("--bench", type=int, default=0, metavar="N", help="first time N steps without and with "
                    "the feedback (bench.json), then train")
    args = ap.parse_args()
    t0 = time.time()
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    # encoding needs only TAEF2's encoder; a starting model's own decoder saves carrying the published one
    own = Path(args.init_from) / "taef2_decoder.safetensors" if args.init_from else None
    taef2 = TAEF2.from_weights(decoder_path=own if own and own.is_file() else None).to(dev).eval()
    embed = None
    if args.identity_weight > 0 or args.bench:
        from mien.train.loss_consistency import mobilefacenet_embedder

        embed = mobilefacenet_embedder(dev)
    tensors, info = load_chunks(args.chunks, args.work / "cache", taef2, dev, embed=embed)
    prep_s = time.time() - t0
    print(f"data: {info} (prep {prep_s:.0f} s)", flush=True)

    model_cfg = ModelConfig.from_preset(args.preset, reference=args.reference, reference_pool=args.reference_pool)
    if args.config_from_init:
        model_cfg = load_json(ModelConfig, Path(args.init_from) / "config.json")
    if (args.work / "train" / "checkpoint.pt").exists():  # resuming: keep the run's config (its latent stats)
        model_cfg = from_dict(ModelConfig, torch.load(args.work / "train" / "checkpoint.pt", map_location="cpu",
                                                      weights_only=True)["model_config"])
    train_cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, flip_prob=args.flip,
                            checkpoint_every=2000, log_every=100, init_from=args.init_from,
                            self_reference=args.self_reference, warmup_steps=args.warmup,
                            expression_weight=args.expression_weight, identity_weight=args.identity_weight,
                            feedback_t_max=args.feedback_t_max, feedback_samples=args.feedback_samples)
    run = args.work / "train"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.bench:
        bench = benchmark(model_cfg, train_cfg, tensors, args.work / "bench", args.bench)
        (args.out / "bench.json").write_text(json.dumps(bench, indent=1))
        print("bench:", json.dumps(bench), flush=True)
    budget = args.minutes * 60 - (time.time() - t0)
    t1 = time.time()
    result = train(model_cfg, train_cfg, tensors, run, time_budget_s=budget)
    train_s = time.time() - t1

    # Export the EMA weights now (the run may continue in a later call).
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = from_dict(ModelConfig, ckpt["model_config"])
    net = MienModel(cfg)
    net.load_state_dict(ckpt["model"])
    ema = EMAModel(net.parameters())
    ema.load_state_dict(ckpt["ema"])
    ema.copy_to(net.parameters())
    export = args.work / "export"
    if cfg.decoder and args.init_from:  # the starting model's own decoder goes with its weights
        export.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(args.init_from) / cfg.decoder, export / cfg.decoder)
    net.save_pretrained(export, dtype=torch.float16)
    write_checksum(export)
    parts = split_file(export / "model.safetensors", args.out)
    shutil.copy(export / "config.json", args.out / "config.json")
    for name in ("loss.csv", "loss.png"):
        if (run / name).exists():
            shutil.copy(run / name, args.out / name)
    rows = (run / "loss.csv").read_text().splitlines()[1:] if (run / "loss.csv").exists() else []
    summary = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__, "data": info,
               "prep_s": round(prep_s, 1), "train_s": round(train_s, 1), "step": int(ckpt["step"]),
               "parts": parts, "params": net.num_parameters(), "train_config": dataclasses.asdict(train_cfg),
               "last_log": rows[-3:], "result": str(result)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps({k: v for k, v in summary.items() if k != "train_config"}, indent=1, default=str))


def benchmark(model_cfg: ModelConfig, train_cfg: TrainConfig, tensors, work: Path, steps: int) -> dict:
    """Images/s of ``steps`` training steps without and with the consistency feedback, same start and data
    (median of the logged intervals after the first, which holds the warm-up and the nets' loading)."""
    import csv
    import statistics

    result = {}
    for name, w in (("flow only", (0.0, 0.0)), ("with feedback", (train_cfg.expression_weight or 0.1,
                                                                  train_cfg.identity_weight or 0.1))):
        cfg = dataclasses.replace(train_cfg, steps=steps, log_every=max(1, steps // 6), checkpoint_every=10**9,
                                  expression_weight=w[0], identity_weight=w[1])
        shutil.rmtree(work / name.replace(" ", "_"), ignore_errors=True)
        train(model_cfg, cfg, tensors, work / name.replace(" ", "_"))
        with open(work / name.replace(" ", "_") / "loss.csv") as f:
            rows = list(csv.DictReader(f))
        result[name] = {"images_per_s": statistics.median(float(r["images_per_s"]) for r in rows[1:]),
                        "rows": rows, "weights": w, "feedback_samples": cfg.feedback_samples,
                        "batch": cfg.batch_size}
    return result


if __name__ == "__main__":
    main()
