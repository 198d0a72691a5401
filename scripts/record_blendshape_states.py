"""Real blendshape-guided states for the latent blendshape reader (:class:`mien.models.latent_reader.LatentReader`
with 52 raw outputs): the states fearful's blendshape guidance sees in edits of train people, and what the decoded
critic says of them.

    OMP_NUM_THREADS=1 python scripts/record_blendshape_states.py --people people.npz --out bs_states/ \
        [--time-budget S] [--critic-precision float32] [--first 0]
    python scripts/train_latent_reader.py --blendshapes --data bs_states/ ...

A sibling of ``record_guided_states.py`` (its people file, pipeline and incremental part files): fearful only (the
one label with blendshape guidance at the defaults), one seed per person, the train people of the people file only
(never dev people). At every blendshape-guided step it stores the step's input state ``z``, the decoded critic's 52
blendshapes of it (``blendshapes``: :class:`mien.models.face_mesh.AlignedBlendshapes` on the TAEF2 decode), the
request's target (``target``), and the gradient w.r.t. ``z`` of the guidance closeness (minus the squared distance,
``_neutral`` left out), computed by the step itself in ``--critic-precision`` (float32 by default here: the reader
is measured against float32's gradient; the edits then follow float32's steps), plus ``t`` and ``person``. The
other settings are mien's defaults (the hybrid recogniser critic included), so the paths are the edits' own.
Part files of ``--block`` people, written whole; a rerun skips the blocks on disk; ``--time-budget`` (seconds from
the start) stops before a block that would pass it.
"""

from __future__ import annotations

import argparse
import os
import runpy
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_RG = runpy.run_path(str(HERE / "record_guided_states.py"))  # its people file, pipeline, part files and recorder


class BlendshapeRecorder(_RG["Recorder"]):
    """While active, every :class:`mien.guidance.blendshape.BlendshapeGuide` step keeps its state, the critic's
    blendshapes of it, the target and the step's own gradient in float32 (the step runs once, as in mien), with
    ``label`` fearful's index."""

    critic, value, gradient_dtype = "measure", "blendshapes", "float32"

    def __init__(self):
        super().__init__()
        self.label = _RG["LABELS"].index("fearful")

    @staticmethod
    def guide_class():
        from mien.guidance.blendshape import BlendshapeGuide

        return BlendshapeGuide


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=Path, required=True, help="a people file of record_guided_states.py")
    ap.add_argument("--out", type=Path, required=True, help="folder of part files (created; a rerun resumes)")
    ap.add_argument("--block", type=int, default=8, help="people per part file")
    ap.add_argument("--first", type=int, default=0, help="the first person of the file to edit")
    ap.add_argument("--limit", type=int, default=None, help="at most N people")
    ap.add_argument("--critic-precision", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds; stop before a block that would pass it")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from tqdm import tqdm

    from mien.expression.targets import parse_request
    from mien.settings import GenerationSettings

    rg = _RG
    t0, slowest = time.monotonic(), 0.0
    args.out.mkdir(parents=True, exist_ok=True)
    people = rg["load_people"](args.people)[args.first:]
    people = people[: args.limit] if args.limit else people
    todo = rg["blocks_todo"](len(people), args.block, (0, 1), args.out)
    pipe = rg["recording_pipeline"]("cpu")
    settings = GenerationSettings(critic_precision=args.critic_precision)
    request = parse_request("fearful")
    with BlendshapeRecorder() as rec:
        for b in tqdm(todo, unit="block"):
            if args.time_budget and time.monotonic() - t0 + slowest > args.time_budget:
                print(f"stopping: the next block would pass --time-budget {args.time_budget} s", flush=True)
                break
            start = time.monotonic()
            for p in range(b * args.block, min((b + 1) * args.block, len(people))):
                rec.person = args.first + p
                pipe(rg["identity_input"](pipe, people[p]), request, settings, n=1,
                     seed=args.seed * 1_000_000 + args.first + p,
                     callback=lambda step, total, info: setattr(rec, "t", float(info["t"])))  # fmt: skip
            rg["write_part"](rg["part_path"](args.out, b), rec.take())
            slowest = max(slowest, time.monotonic() - start)
    parts = sorted(args.out.glob("part-*.safetensors"))
    print(f"{len(parts)} part files in {args.out}, {time.monotonic() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
