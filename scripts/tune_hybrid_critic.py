"""The hybrid recogniser critic (``--recogniser-critic hybrid``) on the tuning split, for a latent reader and a few N.

    MIEN_WEIGHTS=RW OMP_NUM_THREADS=1 python scripts/tune_hybrid_critic.py --steps 1 2 3 --out runs/ [--profile]

``RW`` is a weights folder holding the reader as ``mien/latent_reader.safetensors`` with its ``.sha256`` (the other
weights come from the next folders mien searches: the user cache, ``../shared/weights``). For each N it runs the
command of docs/performance.md's tuning tables,

    mien evaluate --benchmark src/mien/resources/benchmarks/dev-wild.yaml --limit 14 --sweep-identities 0
        --threads 1 --recogniser-critic hybrid --recogniser-decoded-steps N

one after another (one thread each: the machine may be shared), into ``OUT/hybrid_nN`` (``--fresh``: a new reader
in the same folder must not reuse outputs), and prints one compact JSON line per run in the format of
docs/history/eval-runs/latent_critic_tune.jsonl. ``--profile`` then runs ``scripts/profile_edit.py --repeats 2
--threads 1`` with each N and prints its lines (seconds of CPU per image, per component). ``--baselines`` adds the
decoded and latent critics' runs, to compare within the hour.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from mien.errors import MienError

ROOT = Path(__file__).resolve().parents[1]
TUNE = ["--benchmark", "src/mien/resources/benchmarks/dev-wild.yaml", "--limit", "14", "--sweep-identities", "0",
        "--threads", "1"]


def line(run: str, command: str, results: Path) -> str:
    """One compact line of latent_critic_tune.jsonl from a ``mien evaluate`` results.json."""
    r = json.loads(results.read_text())
    m = r["metrics"]
    r3 = lambda d: {k: round(v, 3) for k, v in d.items()}  # noqa: E731
    out = {"run": run, "command": command, "created": r["created"], "items": r["counts"]["items"],
           "verification": m["identity.verification_rate"]["value"],
           "verification_cfp": m["identity.by_group"]["value"]["cfp"]["verification_rate"],
           "mobilefacenet_cosine": m["identity.mobilefacenet_cosine"]["value"],
           "faceapi_accuracy": m["expression.faceapi"]["value"]["accuracy"],
           "faceapi_per_label": r3(m["expression.faceapi"]["value"]["per_label"]),
           "blendshape_per_label": r3(m["expression.blendshape"]["value"]["per_label"]),
           "dark_eyes": m["artefacts.dark_eyes"]["value"]["rate"], "no_face": r["counts"]["no_face"],
           "mouth_critic": m["realism.critic"]["value"]["mouth"]["accuracy"],
           "joint_success": m["tradeoff.joint_success"]["value"]["value"], "wall_time_s": r["wall_time_s"]}
    return json.dumps(out, separators=(",", ":"))


def call(command: list[str], env: dict, **kwargs) -> None:
    """``command`` in the checkout; a failure stops the script with one line (the child has printed its own)."""
    done = subprocess.run(command, cwd=ROOT, env=env, **kwargs)
    if done.returncode:
        what = " ".join(command[2:4]) if command[1] == "-m" else Path(command[1]).name
        raise MienError(f"{what} failed (exit {done.returncode}); its message is above")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2], help="the N of --recogniser-decoded-steps")
    ap.add_argument("--out", type=Path, required=True, help="folder for the evaluation runs")
    ap.add_argument("--profile", action="store_true", help="also profile_edit.py's CPU time per label")
    ap.add_argument("--baselines", action="store_true", help="also the decoded and the latent critic")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    reader = f"MIEN_WEIGHTS=RW({Path(os.environ.get('MIEN_WEIGHTS', '?')).name}) "
    runs = [(f"hybrid_n{n}", ["--recogniser-critic", "hybrid", "--recogniser-decoded-steps", str(n)])
            for n in args.steps]
    if args.baselines:
        runs += [("decoded", ["--recogniser-critic", "decoded"]), ("latent", ["--recogniser-critic", "latent"])]
    for name, options in runs:
        out = args.out / name
        call([sys.executable, "-m", "mien", "evaluate", *TUNE, *options, "--out", str(out), "--fresh"], env,
            stdout=subprocess.DEVNULL)
        command = ("" if name == "decoded" else reader) + " ".join(["mien evaluate", *TUNE, *options])
        print(line(f"tune14_{name}", command, out / "results.json"), flush=True)
    if args.profile:
        for name, options in runs:
            print(json.dumps({"profile": name, "options": " ".join(options)}), flush=True)
            call([sys.executable, "scripts/profile_edit.py", "--repeats", "2", "--threads", "1", *options], env)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
