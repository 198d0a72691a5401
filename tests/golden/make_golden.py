"""Golden outputs of the shipped model: a fixed set of requests covering every edit method and guidance
kind, generated on the bundled London Set example photo (CC BY 4.0, src/mien/assets/examples/ATTRIBUTION.md)
with one CPU thread. tests/test_golden.py regenerates them and asserts they are identical, so any
refactoring of the generation path that changes an output fails there.

Regenerate (only when an output is meant to change, and say why in the commit):

    OMP_NUM_THREADS=1 python tests/golden/make_golden.py            # golden.npz, the reference recording
    OMP_NUM_THREADS=1 python tests/golden/make_golden.py --this-machine   # golden-<cpu kind>.npz

Float sums differ between CPU kinds (vendor and the vector instructions PyTorch's kernels use), and the
guidance that reads the decoded face through a network at every late step (blendshape guidance) amplifies
a one-ulp difference into a different picture: on an AMD EPYC of family 25 (AVX512) the reference recording's
fearful case differs by 2.1 grey levels on average, every other case by at most 2 levels; on one of family 26,
by up to 3 levels (angry). So each CPU kind (golden-AuthenticAMD-25-AVX512.npz, golden-AuthenticAMD-26-AVX512.npz)
may keep its own recording, which the test compares bit for bit; on a kind without one, the test compares
with the reference recording within the tolerances of tests/test_golden.py.

Each case is (name, request spec, settings, n); settings are keyword arguments of
:class:`mien.settings.GenerationSettings` (None = the per-label default). Every case runs critic guidance in
float32 (``critic_precision``): its default follows the CPU (bfloat16 where the CPU has bfloat16 instructions,
docs/performance.md), and the recordings must not depend on that; tests/test_recogniser_guidance.py checks the
bfloat16 step. Every case also names its recogniser critic, the decoded face (``recogniser_critic``), as the
recordings were made with it: the default is now the hybrid critic (the shipped latent reader early, the decoded
face on the last two guided steps; docs/performance.md, "A hybrid critic"), whose outputs differ, and the recording
of one CPU kind (family 25) cannot be remade where the default changed. tests/test_latent_reader.py checks the
hybrid critic's steps (the latent critic's up to the switch, the decoded one's from it, bit for bit) and
tests/test_pipeline.py runs the shipped model at the defaults.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).with_name("golden.npz")
SEED = 0

# (name, request, settings, n); request: {"expression": label or term, "intensity", "au", "like": "smiling"}
CASES: list[tuple[str, dict, dict, int]] = [
    ("happy_default", {"expression": "happy"}, {}, 2),  # flowedit + recogniser 0.15
    ("angry_default", {"expression": "angry"}, {}, 1),  # + contrast 1.5, recogniser 0.3
    ("fearful_default", {"expression": "fearful"}, {}, 1),  # + blendshape guidance 1
    ("au_request", {"au": "AU12=3,AU6=2"}, {}, 1),
    ("term_elation", {"expression": "elation", "intensity": 0.6}, {}, 1),
    ("like_smiling", {"like": "smiling"}, {}, 1),
    ("sdedit_08_g6_3", {"expression": "happy"},
     {"method": "sdedit", "strength": 0.8, "guidance_identity": 6.0, "guidance_expression": 3.0}, 1),
    ("sdedit_1_keep_none", {"expression": "surprised"}, {"method": "sdedit", "strength": 1.0, "keep": "none"}, 1),
    ("recogniser_off", {"expression": "sad"}, {"recogniser_guidance": 0.0}, 1),
    ("guidance_until_05", {"expression": "surprised"}, {"guidance_expression": 2.0, "guidance_until": 0.5}, 1),
    ("heun_sdedit", {"expression": "disgusted"},
     {"method": "sdedit", "strength": 0.8, "sampler": "heun", "steps": 10}, 1),
]


def example(name: str) -> Path:
    from importlib import resources

    return Path(str(resources.files("mien") / "assets" / "examples" / f"london_001_{name}.jpg"))


def build_request(pipe, spec: dict):
    from mien.expression.aus import parse_au_spec
    from mien.expression.targets import ExpressionRequest
    from mien.expression.vocabulary import Vocabulary
    from mien.io.image import load_rgb

    mix, aus = {}, {}
    if "expression" in spec:
        recipe = Vocabulary.load().resolve(spec["expression"])
        mix, aus = dict(recipe.basic), dict(recipe.aus)
    if "au" in spec:
        aus.update(parse_au_spec(spec["au"]))
    like = pipe.reference_blendshapes(load_rgb(example(spec["like"]))) if "like" in spec else None
    return ExpressionRequest(mix=mix, aus=aus, like=like, intensity=spec.get("intensity", 1.0))


def generate_case(pipe, identity, spec: dict, settings: dict, n: int) -> np.ndarray:
    """(n, 128, 128, 3) uint8 outputs of one case with today's pipeline API."""
    from mien.settings import GenerationSettings

    settings = {"critic_precision": "float32", "recogniser_critic": "decoded", **settings}  # as recorded (docstring)
    out = pipe(identity, build_request(pipe, spec), GenerationSettings(**settings), n=n, seed=SEED)
    return np.stack(out.images)


def generate_all(pipe) -> dict[str, np.ndarray]:
    from mien.io.image import load_rgb

    identity = pipe.prepare_identity([load_rgb(example("neutral"))])
    return {name: generate_case(pipe, identity, spec, settings, n) for name, spec, settings, n in CASES}


def machine_key() -> str:
    """The CPU kind outputs are reproducible within (:func:`mien.machine.cpu_kind`)."""
    from mien.machine import cpu_kind

    return cpu_kind()


def machine_golden() -> Path:
    return GOLDEN.with_name(f"golden-{machine_key()}.npz")


def main() -> int:
    import torch

    from mien.pipeline import MienPipeline

    torch.set_num_threads(1)
    pipe = MienPipeline.from_pretrained()
    try:
        outputs = generate_all(pipe)
    finally:
        pipe.close()
    path = machine_golden() if "--this-machine" in sys.argv[1:] else GOLDEN
    np.savez_compressed(path, **outputs)
    print(f"{path}: {len(outputs)} cases, {path.stat().st_size / 1024:.0f} KiB, model {pipe.model_hash}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
