"""`mien train`: train the built-in model; `mien train decoder`: fine-tune TAEF2's decoder;
`mien train expression-space`: fit the expression space. The jobs are in :mod:`mien.train.jobs`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from mien.errors import MienError

EXAMPLES = """\
Running the same command again with the same --out resumes from OUT/checkpoint.pt, so a long run can
be split over several GPU jobs (--time-budget). Every call leaves OUT/model, the EMA
weights at the step reached (a complete model folder: mien generate --model OUT/model).

output (in --out): checkpoint.pt, loss.csv, model_config.json, train_config.json, summary.json,
  model/ (config.json + model.safetensors, fp16), latents/ (the chunks' TAEF2 latents, cached);
  when every step is done also loss.png.

examples:
  mien train --preset tiny --synthetic 256 --steps 20 --out /tmp/t    try it: random data, CPU, seconds
  mien train --dry-run                                 the resolved model and training configs
  mien train --pack .carry/pack --out runs/builtin --time-budget 540   one device call; run again to resume
  mien train --chunks pack/chunk-00.npz pack/chunk-01.npz --out /root/run/train --parts-to $OUT
                                                       the chunks one call carries; the model comes back
                                                       in parts of < 16 MiB (cat model.safetensors.part* >
                                                       model.safetensors)
  mien train --train-config runs/builtin/train_config.json --lr 1e-4 --out runs/b2
  mien train --pack .carry/pack --init-from src/mien/resources/model --config-from-init --expression-weight 0.1 \\
      --identity-weight 0.1 --bench 30 --out runs/feedback      fine-tune the shipped model with consistency
                                                       feedback, after timing its cost
"""

DECODER_EXAMPLES = """\
Trains only the decoder: the encoder, and so the latent space every built-in model is trained in, stays
the published one (mien.train.decoder says why). 3 % of each chunk's people are held out; summary.json
gives their masked PSNR before and after. Running again with the same --out resumes.

examples:
  mien train decoder --pack .carry/pack2 --out runs/decoder --time-budget 540
  mien train decoder --dev-psnr                        dev-face PSNR of the shipped model's decoder
  mien train decoder --dev-psnr runs/model --json psnr.json
"""

SPACE_EXAMPLES = """\
Writes au_calibration.json (copied from beside the annotations), prototypes.json and
blendshape_classifier.json, and prints the classifier's accuracy on the dev performers' posed labels
beside face-api's. The default --out is the installed package's expression resources, which every
command then uses: commit the change together with the figures it prints.

examples:
  mien train expression-space runs/annotations/annotations.parquet
  mien train expression-space runs/annotations/annotations.parquet --out /tmp/space
"""

INTERPOLATE_EXAMPLES = """\
The folder written is a complete model (config, fp16 weights, decoder, SHA256SUMS) with interpolation.json
naming what it was made from; use it with mien generate --model DIR or mien evaluate --model DIR.

examples:
  mien train interpolate src/mien/resources/model runs/feedback/model --alpha 0.7 --out runs/mix07
  mien train interpolate src/mien/resources/model runs/feedback/model --alpha 1 --only unet --out runs/unet
                                                       the fine-tune's backbone with the base's condition streams
"""


def _config_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One option per field of config dataclass ``cls``; left-out options stay absent (argparse.SUPPRESS),
    so the dataclass's defaults are the only ones."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = f"{f.metadata.get('help', cls.__name__ + '.' + f.name)} (default {f.default!r})".replace("%", "%%")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        elif str(f.type) == "dict[str, float]":  # repeatable NAME=VALUE, e.g. --source-weight tw=4
            text = text.replace(f"(default {f.default!r})", "(repeatable; default none)")
            parser.add_argument("--" + f.metadata.get("flag", f.name.replace("_", "-")), dest=f.name,
                                type=_name_value, action="append", default=argparse.SUPPRESS,
                                metavar="NAME=VALUE", help=text)  # fmt: skip
        else:
            kind = {"int": int, "float": float, "float | None": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=f.name.upper(), help=text)


def _name_value(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if sep and name:
            return name, float(value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not NAME=NUMBER (e.g. tw=4)")


def _given(args: argparse.Namespace, cls) -> dict:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return {k: dict(v) if isinstance(v, list) else v for k, v in given.items()}  # NAME=VALUE lists -> dicts


def register(sub: argparse._SubParsersAction) -> None:
    from mien.builtin.config import PRESETS, TrainConfig
    from mien.train.decoder_config import DecoderTrainConfig

    p = sub.add_parser("train", help="train the built-in model (resumable; also: decoder, expression-space)",
                       description="Train mien's built-in model on a training pack (mien data pack), or resume "
                       "a run. Subcommands fine-tune the TAEF2 decoder and fit the expression space.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("runs/builtin"), metavar="DIR",
                   help="run folder; a checkpoint there is resumed (default runs/builtin)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--pack", metavar="DIR", default=argparse.SUPPRESS,
                      help="a training pack folder (mien data pack): every chunk in its pack.json")
    data.add_argument("--chunks", nargs="+", type=Path, metavar="FILE", help="these chunk files of a pack only")
    data.add_argument("--synthetic", type=int, metavar="N", help="N random samples instead of a pack (to try it)")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS), help="model size (default small, the shipped one)")
    p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                   help="spatial identity reference, as the shipped model (default on)")
    p.add_argument("--reference-pool", type=int, default=0, metavar="K",
                   help="the model sees the reference pooled over K x K latent cells (default 0: as it is)")
    p.add_argument("--config-from-init", action="store_true", help="take the whole model config from --init-from's "
                   "folder (its decoder too, copied into the exported model) instead of --preset")
    p.add_argument("--train-config", type=Path, metavar="FILE", help="a train_config.json to start from (flags override it)")
    p.add_argument("--bench", type=int, default=0, metavar="N", help="first time N steps without and N with the "
                   "consistency feedback (OUT/bench.json: its training-time cost), then train")
    p.add_argument("--time-budget", type=float, metavar="S",
                   help="checkpoint, export and stop within S seconds of wall clock, data preparation included")
    p.add_argument("--stop-after", type=int, metavar="STEP", help="checkpoint and stop at this step")
    p.add_argument("--cache", type=Path, metavar="DIR", help="where the chunks' latents are cached (default OUT/latents)")
    p.add_argument("--parts-to", type=Path, metavar="DIR",
                   help="also write the model in parts of < 16 MiB, the loss log and summary.json here ($OUT of a device call)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configs and model size, then exit")
    _config_flags(p, TrainConfig, skip=("pack",))
    p.set_defaults(run=run_builtin)
    tsub = p.add_subparsers(dest="train_command", metavar="SUBCOMMAND")

    d = tsub.add_parser("decoder", help="fine-tune TAEF2's decoder on a training pack's faces (resumable)",
                        description="Fine-tune TAEF2's decoder (masked MSE after the frozen encoder, AdamW, EMA) "
                        "on the faces of a training pack.",
                        epilog=DECODER_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    d.add_argument("--out", type=Path, default=Path("runs/decoder"), metavar="DIR",
                   help="run folder; a checkpoint there is resumed (default runs/decoder)")
    ddata = d.add_mutually_exclusive_group()
    ddata.add_argument("--pack", metavar="DIR", help="a training pack folder (mien data pack)")
    ddata.add_argument("--chunks", nargs="+", type=Path, metavar="FILE", help="these chunk files of a pack only")
    ddata.add_argument("--dev-psnr", nargs="?", const="default", metavar="MODEL",
                       help="instead of training: reconstruction PSNR on the dev faces of the pretrained decoder and "
                       "of MODEL's (default: the shipped model)")  # fmt: skip
    d.add_argument("--json", type=Path, metavar="FILE", help="with --dev-psnr: also write the figures here")
    d.add_argument("--time-budget", type=float, metavar="S", help="checkpoint and stop within S seconds, data included")
    d.add_argument("--cache", type=Path, metavar="DIR", help="where the decoded faces are cached (default OUT/images)")
    d.add_argument("--parts-to", type=Path, metavar="DIR", help="also copy the decoder, loss log and summary here")
    d.add_argument("--dry-run", action="store_true", help="print the resolved config, then exit")
    _config_flags(d, DecoderTrainConfig)
    d.set_defaults(run=run_decoder)

    e = tsub.add_parser("expression-space", help="fit the expression space (prototypes, classifier) from annotations",
                        description="Fit mien's expression space from an annotated face pool (mien annotate).",
                        epilog=SPACE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    e.add_argument("annotations", type=Path, help="annotations.parquet written by mien annotate")
    e.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: the package's expression resources)")
    e.add_argument("--dry-run", action="store_true", help="print the inputs and outputs, then exit")
    e.set_defaults(run=run_expression_space)

    w = tsub.add_parser("interpolate", help="a model between the shipped one and its fine-tune (weight interpolation)",
                        description="Write a model folder whose weights lie between BASE's and TUNED's: "
                        "BASE + ALPHA (TUNED - BASE) (WiSE-FT; mien.train.interpolate says why).",
                        epilog=INTERPOLATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    w.add_argument("base", type=Path, help="the model fine-tuned from (a model folder; e.g. src/mien/resources/model)")
    w.add_argument("tuned", type=Path, help="its fine-tune (the model folder a mien train --init-from run wrote)")
    w.add_argument("--alpha", type=float, required=True, help="0: BASE, 1: TUNED, between: the line between them")
    w.add_argument("--out", type=Path, required=True, metavar="DIR", help="the model folder to write")
    w.add_argument("--only", metavar="PREFIX[,PREFIX]", default="",
                   help="move only the weights whose names start so: unet (the backbone), streams (the identity and "
                   "expression streams), stream_kv (their keys and values in every cross-attention); default all")
    w.set_defaults(run=run_interpolate)


def _chunks(args: argparse.Namespace) -> list[Path] | None:
    from mien.train.jobs import check_chunks, pack_chunks

    if getattr(args, "pack", None):
        return pack_chunks(args.pack)
    if args.chunks:
        return check_chunks(args.chunks)
    return None


def resolve_builtin(args: argparse.Namespace):
    """The model and training configs of the command line: --train-config, then the flags over it."""
    from mien.builtin.config import ModelConfig, TrainConfig, load_json

    if args.time_budget is not None and args.time_budget <= 0:
        raise MienError(f"--time-budget must be > 0 seconds, got {args.time_budget:g}")
    if args.synthetic is not None and args.synthetic < 2:
        raise MienError(f"--synthetic needs at least 2 samples, got {args.synthetic}")
    base = load_json(TrainConfig, args.train_config) if args.train_config else TrainConfig()
    given = _given(args, TrainConfig)
    if "source_weights" in given:  # the flags name sources over the file's
        given["source_weights"] = {**base.source_weights, **given["source_weights"]}
    if getattr(args, "pack", None):
        given["pack"] = str(args.pack)
    train_cfg = dataclasses.replace(base, **given)
    if args.config_from_init:
        if not train_cfg.init_from:
            raise MienError("--config-from-init needs --init-from FOLDER (a saved model)")
        model_cfg = load_json(ModelConfig, Path(train_cfg.init_from) / "config.json")
    else:
        model_cfg = ModelConfig.from_preset(args.preset, reference=args.reference, reference_pool=args.reference_pool)
    return model_cfg, train_cfg


def run_builtin(args: argparse.Namespace) -> int:
    from mien.builtin.config import to_dict

    start = time.monotonic()
    model_cfg, train_cfg = resolve_builtin(args)
    if args.dry_run:
        from mien.builtin.model import MienModel

        n = MienModel(model_cfg).num_parameters()
        data = (f"synthetic {args.synthetic}" if args.synthetic else
                [str(c) for c in args.chunks] if args.chunks else train_cfg.pack or None)  # fmt: skip
        print(json.dumps({"model": to_dict(model_cfg), "train": to_dict(train_cfg), "data": data, "out": str(args.out),
                          "time_budget_s": args.time_budget, "stop_after": args.stop_after,
                          "parameters": n, "fp16_mb": round(n * 2 / 1e6, 2)}, indent=2))  # fmt: skip
        return 0
    from mien.train.jobs import pack_chunks, synthetic_tensors, train_builtin

    chunks = _chunks(args) or (pack_chunks(train_cfg.pack) if train_cfg.pack else None)
    if args.synthetic is None and not chunks:
        raise MienError("no training data: give --pack DIR (made by mien data pack), --chunks FILE ... "
                        "or --synthetic N to try the command")  # fmt: skip
    if args.synthetic and train_cfg.identity_weight > 0:
        # random latents have no photos to embed, so the identity loss has no target
        raise MienError("--synthetic data has no identity embeddings for the identity loss: "
                        "add --identity-weight 0, or train on --pack/--chunks")  # fmt: skip
    if train_cfg.source_weights:  # unknown sources refused before the data is encoded
        from mien.train.data import SourceDraw
        from mien.train.latents import chunk_sources

        SourceDraw.of(None if args.synthetic else chunk_sources(chunks), train_cfg.source_weights)
    tensors = synthetic_tensors(args.synthetic, train_cfg.seed) if args.synthetic else None
    s = train_builtin(model_cfg, train_cfg, tensors, args.out, args.time_budget, args.stop_after, chunks=chunks,
                      cache=args.cache, parts_to=args.parts_to, start=start, bench=args.bench)  # fmt: skip
    state = "done" if s["finished"] else "stopped; run the same command again to resume"
    print(f"step {s['step']}/{s['steps']} ({state}); model: {s['model']}; summary: {args.out / 'summary.json'}")
    return 0


def run_decoder(args: argparse.Namespace) -> int:
    from mien.train.decoder_config import DecoderTrainConfig

    start = time.monotonic()
    if args.dev_psnr:
        if args.dry_run:
            print(json.dumps({"dev_psnr": args.dev_psnr, "json": str(args.json) if args.json else None}))
            return 0
        from mien.train.jobs import decoder_dev_psnr

        result = decoder_dev_psnr(args.dev_psnr)
        print(json.dumps(result, indent=1))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    if args.time_budget is not None and args.time_budget <= 0:
        raise MienError(f"--time-budget must be > 0 seconds, got {args.time_budget:g}")
    cfg = DecoderTrainConfig(**_given(args, DecoderTrainConfig))
    if args.dry_run:
        print(json.dumps({"config": dataclasses.asdict(cfg), "pack": args.pack,
                          "chunks": [str(c) for c in args.chunks or []], "out": str(args.out),
                          "time_budget_s": args.time_budget}, indent=2))  # fmt: skip
        return 0
    chunks = _chunks(args)
    if not chunks:
        raise MienError("no training data: give --pack DIR (made by mien data pack) or --chunks FILE ...")
    from mien.train.jobs import train_decoder

    s = train_decoder(cfg, chunks, args.out, args.time_budget, cache=args.cache, parts_to=args.parts_to, start=start)
    print(json.dumps(s, indent=1))
    return 0


def run_expression_space(args: argparse.Namespace) -> int:
    from mien.train.expression_space import expression_space_dir, fit_expression_space

    out = args.out or expression_space_dir()
    if args.dry_run:
        print(json.dumps({"annotations": str(args.annotations), "out": str(out),
                          "writes": ["au_calibration.json", "prototypes.json", "blendshape_classifier.json"]}))  # fmt: skip
        return 0
    for line in fit_expression_space(args.annotations, out):
        print(line)
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    from mien.train.interpolate import interpolate

    only = tuple(p for p in args.only.split(",") if p)
    print(json.dumps(interpolate(args.base, args.tuned, args.alpha, args.out, only=only), indent=1))
    return 0
