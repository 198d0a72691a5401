"""`mien evaluate`: score a generator on a benchmark against real-photo ceilings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mien.cli.batch import EXIT_SKIPPED

from mien.cli.settings_flags import add_setting_flags, given_settings, settings_from_args

EPILOG = """\
what it measures (every definition is also written into results.json and report.html):
  identity     cosine similarity (128-D face-api, 192-D MobileFaceNet) between each output and the
               person's OTHER real photos, and the share verified as the same person (dlib
               distance < 0.6); real photo pairs give the ceiling
  expression   accuracy against the requested label with the face-api classifier and mien's
               blendshape classifier, per label, beside each classifier's accuracy on real photos
  AUs          MAE, Pearson r and ICC(3,1) between requested and measured AU intensities; measured
               AUs are estimates derived from MediaPipe blendshapes, not an AU detector
  reference    blendshape distance to a reference photo, with identity kept to the target person
  trade-off    identity against expression change away from the identity photo
  realism      Fréchet distance to real faces (identity embeddings, blendshapes), with a real-vs-real
               floor; spread across seeds
  artefacts    a real-versus-generated critic (face, mouth) and the share of outputs with newly darkened
               eyes or under-eyes, with the worst outputs by each (docs/realism.md)
  failures     outputs with no face, counted and shown

baselines: copy (returns the identity photo: perfect identity, no expression change) and
  real (a real photo of the person with the requested expression, where the data has one).

output: OUT/results.json, OUT/report.html (open it in a browser), OUT/outputs/*.png and
  OUT/items.jsonl; an interrupted run resumes from items.jsonl. Real-photo analyses are cached in
  ~/.cache/mien/evaluate (--no-cache to skip). The default OUT is under that cache too, so that
  face images never land in a source checkout.

exit status: 0 done; 1 some items failed (the generator could not make them, e.g. an image missing from
  --images: the first reason is printed, each is in OUT/items.jsonl, and a rerun retries them); 2 bad
  input, or no item could be scored.

examples:
  mien evaluate --generator copy --limit 3          quick look (London Set identities come first)
  mien evaluate --generator real --out /tmp/real    the ceiling on the whole dev benchmark
  mien evaluate --compare /tmp/copy/results.json /tmp/real/results.json
  mien evaluate --generator images --images runs/gen/default --out /tmp/gpu
                                                    score images made elsewhere (python -m mien.evaluate.gpu_generate)
  mien evaluate --personalize 1 3 5 --per-group 2   personalised on K photos vs tuning-free, scored on the
                                                    person's other photos (docs/personalize.md; slow on a CPU)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a generator (identity, expression, AUs, reference, realism) against real-photo ceilings",
        description="Run a generator over a benchmark (the dev benchmark by default), analyse every output "
        "and score it against the same person's other real photos and the requested expression.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--benchmark", type=Path, metavar="FILE",
                   help="benchmark YAML/JSON (default: the shipped dev benchmark, resources/benchmarks/dev.yaml)")
    # Not argparse choices: listing the registry would import torch for every `mien` command.
    p.add_argument("--generator", default="built-in", metavar="NAME",
                   help="what to evaluate: built-in (the model), copy, real or taef2 (baselines: the photo, a real photo, the photo through the autoencoder), images (PNGs made elsewhere, --images); default built-in")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder (default: ~/.cache/mien/evaluate/runs/BENCHMARK-GENERATOR)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N identities of the benchmark (with --swap: the "
                   "first N pairs); N is at least 1, leave it out for all")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                   help="print what changed between two results.json files, then exit")
    p.add_argument("--seed", type=int, default=0, help="seed of the realism split (default 0); generation "
                   "seeds come from the benchmark")
    p.add_argument("--model", metavar="DIR", help="saved model folder for --generator built-in or taef2 (default: the shipped model)")
    add_setting_flags(p, prefix="built-in: ")
    p.add_argument("--images", metavar="DIR", help="with --generator images: the folder of output PNGs to score, "
                   "named as this command names its outputs (an earlier run's outputs/, or python -m mien.evaluate.gpu_generate's)")
    p.add_argument("--sweep-identities", type=int, default=8, metavar="N",
                   help="identities in the guidance trade-off sweep (default 8; 0: no sweep)")
    p.add_argument("--model-hash", help="record this model hash in results.json (default: the generator's own)")
    p.add_argument("--fresh", action="store_true", help="discard finished items in DIR instead of resuming")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the persistent analysis cache")
    p.add_argument("--device", default="cpu", help="torch device for the analysis nets (default: cpu)")
    p.add_argument("--swap", action="store_true",
                   help="the swap benchmark instead (docs/swap.md): each person put into the next person's photo "
                        "(--benchmark default dev-wild.yaml, whose ring holds the tuning pairs; swap-report.yaml: "
                        "the report ring, 30 pairs; --limit N: the first N pairs, N at least 1) with the seven labels; "
                        "--generator built-in or copy (A's face pasted into B's photo, the baseline)")
    p.add_argument("--personalize", nargs="+", type=int, metavar="K",
                   help="the personalisation benchmark instead (docs/personalize.md): each person with more than K "
                        "photos personalised (mien personalize) on K of them, tuning-free vs personalised scored on "
                        "the others; several K: 1 3 5. Slow on a CPU: several minutes a person and K")
    p.add_argument("--per-group", type=int, metavar="N", help="--personalize: the first N people of each group")
    p.add_argument("--lora-steps", type=int, metavar="N", help="--personalize: training steps (default: mien personalize's)")
    p.add_argument("--lora-rank", type=int, metavar="R", help="--personalize: LoRA rank (default: mien personalize's)")
    p.add_argument("--lora-targets", metavar="SET",
                   help="--personalize: the UNet modules the LoRA wraps (default: mien personalize's, attention)")
    p.add_argument("--identity-weight", type=float, metavar="W",
                   help="--personalize: weight of the identity loss (default: mien personalize's)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved run (benchmark, items, output) and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.compare:
        from mien.evaluate.compare import compare

        print(compare(*args.compare))
        return 0
    from mien.cli.checks import check_critic_weights, check_device, check_out_dir, critic_default

    check_device(args.device)  # before the benchmark's photos are read
    check_critic_weights(given_settings(args).get("recogniser_critic") or critic_default(swap=bool(args.swap)),
                         given_settings(args).get("blendshape_critic"))
    if args.out is not None:
        check_out_dir(args.out)
    from mien.evaluate import benchmark as bm
    from mien.evaluate.cache import default_cache_dir
    from mien.evaluate.generators import create
    from mien.evaluate.run import Options, evaluate

    if args.swap:
        return _swap(args)
    if args.personalize:
        return _personalize(args)
    bench = bm.load(args.benchmark).limit(args.limit)
    out = args.out or default_cache_dir() / "runs" / f"{bench.name}-{args.generator}"
    if args.dry_run:
        print(f"benchmark  {bench.source} ({bench.name}, sha256 {bench.sha256[:12]})\n"
              f"identities {len(bench.identities)}  items {bench.n_items()}  real photos {len(bench.photos())}\n"
              f"generator  {args.generator}\nout        {out}\n"
              f"cache      {'off' if args.no_cache else default_cache_dir()}\nseed       {args.seed}")
        if args.generator == "built-in":  # None: resolved per request (mien.settings.LABEL_POLICY)
            print(f"settings   {json.dumps(settings_from_args(args).to_dict())}")
        else:  # the other generators are cheap to build: their name, --images and options checked as a run does
            create(args.generator, bench, model=args.model, images=args.images, **given_settings(args))
        return 0
    generator = create(args.generator, bench, model=args.model, images=args.images, **given_settings(args))
    options = Options(out=out, seed=args.seed, use_cache=not args.no_cache, fresh=args.fresh, device=args.device,
                      model_hash=args.model_hash, sweep_identities=args.sweep_identities)
    results = evaluate(bench, generator, options)
    _summary(results, out)
    return _failures(results, out)


def _swap(args: argparse.Namespace) -> int:
    from mien.evaluate import benchmark as bm
    from mien.evaluate.cache import default_cache_dir
    from mien.evaluate.swap import run_swap

    path = args.benchmark or bm.dev_path().with_name("dev-wild.yaml")
    if not path.exists() and path.name == str(path):  # a bare name: a shipped benchmark (swap-report.yaml)
        path = bm.dev_path().with_name(path.name)
    bench = bm.load(path)
    out = args.out or default_cache_dir() / "runs" / f"swap-{bench.name}-{args.generator}"
    settings = settings_from_args(args) if args.generator == "built-in" else None
    if args.dry_run:
        from mien.evaluate.swap import pairs

        chosen = pairs(bench, args.limit)
        print(f"swap benchmark {bench.source}: {len(chosen)} pairs x 7 labels, generator {args.generator}, out {out}")
        for k, p in enumerate(chosen, 1):
            print(f"  pair {k}: {p.a} ({p.selfie}) into {p.b}'s photo {p.scene}")
        return 0
    s = run_swap(bench, args.generator, out, args.limit, settings, device=args.device)
    print(json.dumps({k: v for k, v in s.items() if k != "definitions"}, indent=1))
    print(f"summary: {out / 'summary.json'}")
    return 0


def _personalize(args: argparse.Namespace) -> int:
    from mien.errors import MienError
    from mien.evaluate import benchmark as bm
    from mien.evaluate import personalize as pz
    from mien.evaluate.cache import default_cache_dir

    ks = args.personalize
    if any(k < 1 for k in ks) or (args.per_group is not None and args.per_group < 1):
        raise MienError(f"--personalize {' '.join(map(str, ks))}: every K and --per-group must be at least 1")
    config = pz.lora_config(args.lora_steps, args.lora_rank, args.identity_weight,
                            targets=args.lora_targets)  # checked before anything loads
    settings = settings_from_args(args)
    bench = bm.load(args.benchmark).limit(args.limit)
    out = args.out or default_cache_dir() / "runs" / f"personalize-{bench.name}"
    if args.dry_run:
        people = pz.eligible(bench, ks, args.per_group)
        n = sum(len(i.identity_photos) + len(i.scoring_photos) > k for i in people for k in ks)
        print(f"personalisation benchmark {bench.source}: {len(people)} people, K {ks}, {n} runs of "
              f"{config.steps} steps (rank {config.rank}, LoRA on {', '.join(config.targets)}) x 7 labels, out {out}")
        return 0
    prepared = out / "inputs"
    if not (prepared / "people.json").is_file():
        pz.prepare_here(bench, prepared, ks, args.per_group, None, args.device)
    pipe = pz.pipeline_without_landmarker(args.device)
    pz.run(prepared, out, ks, pipe, pz.Scorer.from_pipeline(pipe), config, settings)
    print(pz.markdown(pz.report(out)))
    print(f"summary: {out / 'summary.json'}; contact sheets: {out / 'sheets'}")
    return 0


def _summary(results: dict, out: Path) -> None:
    m = results["metrics"]
    ident, ceil = m["identity.verification_rate"]["value"], m["identity.ceiling.all_real_pairs"]["value"]
    fa = m["expression.faceapi"]["value"]
    c = results["counts"]
    print(f"{results['generator']['name']} on {results['benchmark']['name']}: {c['items']} items "
          f"({c['ok']} ok, {c['no_face']} no face, {c['unsupported']} unsupported, {c['error']} failed) in "
          f"{results['wall_time_s']} s")
    print(f"  identity verification {_f(ident)} (real-pair ceiling {_f(ceil['verification_rate'])}), "
          f"face-api cosine {_f(m['identity.faceapi_cosine']['value'])} (ceiling {_f(ceil['faceapi_cosine'])})")
    print(f"  expression accuracy (face-api) {_f(fa['accuracy'])} (real photos {_f(fa['real_accuracy']['overall'])})")
    print(f"  expression change from identity photo {_f(m['tradeoff.expression_change']['value']['mean'])}")
    print(f"  results: {out / 'results.json'}\n  report:  {out / 'report.html'}")


def _failures(results: dict, out: Path) -> int:
    """The batch rule for items the generator failed on (an image missing from --images, say): one line with the
    first reason, exit 1 when some items were scored, 2 when none was."""
    c = results["counts"]
    if not c["error"]:
        return 0
    items = (out / "items.jsonl").read_text(encoding="utf-8").splitlines()
    first = next(r["reason"] for r in map(json.loads, items) if r["status"] == "error")
    print(f"mien: {c['error']} of {c['items']} items failed, the first: {first} (each reason is in "
          f"{out / 'items.jsonl'})", file=sys.stderr)
    return EXIT_SKIPPED if c["ok"] else 2


def _f(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}"

