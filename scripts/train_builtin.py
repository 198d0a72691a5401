"""Train mien's built-in model (a thin CLI over ``mien.train.loop.train``).

Every TrainConfig field is a flag (``--batch-size 256``, ``--no-bf16``); ``--preset`` picks the
model size from ``mien.builtin.config.PRESETS``. Running again with the same ``--out`` resumes from
its ``checkpoint.pt``, so a long run can be split over several calls on the lent GPU:

    python scripts/train_builtin.py --pack runs/pack --out runs/small --time-budget 540
    python scripts/train_builtin.py --synthetic 4096 --preset tiny --steps 50 --out /tmp/t  # smoke test
    python scripts/train_builtin.py --preset small --dry-run     # print the resolved configs

Outputs in --out: checkpoint.pt, loss.csv, loss.png, model_config.json, train_config.json and, when
all steps are done, model/ (EMA weights, fp16 safetensors + config.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
import torch

from mien.builtin.config import EXPRESSION_DIM, IDENTITY_DIM, PRESETS, ModelConfig, TrainConfig, load_json, to_dict
from mien.errors import MienError
from mien.train.data import TrainTensors


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=sorted(PRESETS), help="model size (default: small)")
    p.add_argument("--out", default="runs/builtin", help="run folder; an existing checkpoint there is resumed")
    p.add_argument("--train-config", help="a train_config.json to start from (flags override it)")
    p.add_argument("--synthetic", type=int, metavar="N", help="train on N random samples instead of a pack")
    p.add_argument("--time-budget", type=float, metavar="S", help="checkpoint and stop before S seconds")
    p.add_argument("--stop-after", type=int, metavar="STEP", help="checkpoint and stop at this step")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configs and model size, then exit")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=_help(f))
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=None, metavar=f.name.upper(), help=_help(f))
    return p.parse_args(argv)


def _help(f: dataclasses.Field) -> str:
    text = f"{f.metadata.get('help', '')} (default {f.default!r})"
    return text.replace("%", "%%")  # argparse formats help with %


def resolve(args) -> tuple[ModelConfig, TrainConfig]:
    base = load_json(TrainConfig, args.train_config) if args.train_config else TrainConfig()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    train_cfg = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    return ModelConfig.from_preset(args.preset), train_cfg


def synthetic_tensors(n: int, seed: int = 0) -> TrainTensors:
    """Random tensors with the pack's shapes, people of 4 photos each: for smoke tests and speed."""
    g = torch.Generator().manual_seed(seed)
    people = np.arange(n) // 4
    return TrainTensors(
        latents=torch.randn(n, 32, 16, 16, generator=g).half(),
        mask=torch.ones(n, 1, 16, 16).half(),
        identity=torch.nn.functional.normalize(torch.randn(n, IDENTITY_DIM, generator=g), dim=1).half(),
        expression=torch.rand(n, EXPRESSION_DIM, generator=g).half(),
        ref_candidates=[np.flatnonzero((people == people[i]) & (np.arange(n) != i)) for i in range(n)],
    )


def load_tensors(args, train_cfg: TrainConfig) -> TrainTensors:
    if args.synthetic:
        return synthetic_tensors(args.synthetic, train_cfg.seed)
    if not train_cfg.pack:
        raise MienError("give --pack PATH (a training pack) or --synthetic N")
    try:
        from mien.train.pack import load_pack
    except ImportError as e:
        raise MienError("this checkout has no training-pack reader (mien.train.pack) yet; use --synthetic N") from e
    return load_pack(train_cfg.pack)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model_cfg, train_cfg = resolve(args)
        if args.dry_run:
            from mien.builtin.model import MienModel

            n = MienModel(model_cfg).num_parameters()
            print(json.dumps({"model": to_dict(model_cfg), "train": to_dict(train_cfg), "out": args.out,
                              "parameters": n, "fp16_mb": round(n * 2 / 1e6, 2)}, indent=2))  # fmt: skip
            return 0
        from mien.train.loop import train

        tensors = load_tensors(args, train_cfg)
        print(train(model_cfg, train_cfg, tensors, args.out, args.time_budget, args.stop_after))
        return 0
    except MienError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
