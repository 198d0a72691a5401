"""How well the latent reader agrees with the decoded critic on real sampler states.

    OMP_NUM_THREADS=1 python scripts/measure_latent_reader.py [--benchmark dev-wild.yaml] [--skip 14] [--people 6]

Runs edits at mien's defaults with the decoded critic (``--recogniser-critic decoded``) for ``--people`` identities of the benchmark after the first
``--skip`` (dev people: the reader trains on train people only), every label, seed 0, and at each recogniser-
guided step compares, on the state the step sees: the reader's unit embedding against the decoded critic's
(float32), and the reader's gradient of the cosine to the person against the decoded critic's, both over the
whole latent and inside the face box the step may move (the guidance zeroes the rest). For scale, the default
step's own gradient (bfloat16 where the CPU has it natively) against float32's. Prints one JSON line per label
and one for all, with the mean and the 10th percentile of each cosine.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


def summary(values: list[float]) -> dict:
    import numpy as np

    v = np.asarray(values)
    return {"mean": round(float(v.mean()), 3), "p10": round(float(np.percentile(v, 10)), 3), "n": len(v)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", default="src/mien/resources/benchmarks/dev-wild.yaml")
    ap.add_argument("--skip", type=int, default=14, help="identities skipped first (default: the tuning split's 14)")
    ap.add_argument("--people", type=int, default=6)
    ap.add_argument("--labels", nargs="+", default=list(LABELS))
    ap.add_argument("--reader", default=None, help="weights file (default: the verified one mien finds)")
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F

    from mien.edit import Editor
    from mien.evaluate.benchmark import load
    from mien.expression.targets import parse_request
    from mien.guidance.recogniser import RecogniserGuide, latent_embedder, reader_embedder
    from mien.models.latent_reader import LatentReader
    from mien.settings import GenerationSettings

    torch.set_num_threads(1)
    editor = Editor.from_pretrained()
    pipe = editor.pipeline
    reader = reader_embedder(LatentReader.from_weights(args.reader))
    exact = latent_embedder(pipe.model, pipe.taef2, pipe.identity)
    rows = defaultdict(lambda: defaultdict(list))
    label_now = [""]
    gradient = RecogniserGuide.gradient

    def cos(a, b, region=None):
        if region is not None:
            a, b = a * region, b * region
        return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).tolist()

    def hooked(self, z, precision, score=None):
        g = gradient(self, z, precision, score)
        with torch.inference_mode(False), torch.enable_grad():
            zz = z.detach().clone().requires_grad_(True)
            e_reader = reader(zz)
            (g_reader,) = torch.autograd.grad((e_reader * self.target.clone()).sum(), zz)
            zz = z.detach().clone().requires_grad_(True)
            e_exact = exact(zz)
            (g_exact,) = torch.autograd.grad((e_exact * self.target.clone()).sum(), zz)
        r = rows[label_now[0]]
        r["embedding"] += (e_reader * e_exact).sum(1).tolist()
        r["gradient"] += cos(g_reader, g_exact)
        r["gradient_face"] += cos(g_reader, g_exact, self.region)
        r["default_vs_float32"] += cos(g, g_exact, self.region)
        return g

    RecogniserGuide.gradient = hooked
    bench = load(args.benchmark)
    settings = GenerationSettings(recogniser_critic="decoded")  # the states and steps of the decoded critic
    for ident in bench.identities[args.skip: args.skip + args.people]:
        subject = editor.prepare([bench.image(p) for p in ident.identity_photos])
        for label in args.labels:
            label_now[0] = label
            editor.edit(subject, parse_request(label), settings, n=1, seed=0)
        print(f"{ident.id} done", flush=True)
    everything = defaultdict(list)
    for label, r in rows.items():
        print(json.dumps({"label": label, **{k: summary(v) for k, v in r.items()}}), flush=True)
        for k, v in r.items():
            everything[k] += v
    print(json.dumps({"label": "all", **{k: summary(v) for k, v in everything.items()}}), flush=True)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
