"""How CPU generation time holds up when the machine is not idle, per thread setting: one command.

    python scripts/bench_threads.py [--repeats 3] [--label happy] [--configs auto:unset 1:PASSIVE 2:ACTIVE ...]

For each thread configuration (threads:OMP_WAIT_POLICY, threads a number or ``auto``, mien's default of
mien.threads; default: mien's default, and PyTorch's own default of every logical CPU with OpenMP's usual
spinning) it times one image at `mien generate`'s
defaults with the models loaded (mien.edit.Editor; the first image dropped) in three situations:

  idle        nothing else of ours running;
  beside      another process generating images in a loop with the same configuration (two users);
  two-at-once two requests at the same moment in one process, on one shared Editor (the web UI's
              case; each request's own latency is timed);

and the one-shot command `mien generate --example --expression happy --n 1` from start to its first
image on disk. Each configuration runs in fresh processes, because OpenMP reads OMP_WAIT_POLICY and
the pool size once, when torch loads. Prints one JSON line per measurement, with the 1-minute load
average at its start: on a shared machine the figures include everyone else's work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args) -> None:
    """One process: load, warm up, then time images (sequentially, or two threads at once), or loop forever."""
    import statistics
    import threading

    from mien.threads import configure

    configure(args.threads)
    from mien.cli.analyze import example_path
    from mien.edit import Editor
    from mien.expression.targets import parse_request
    from mien.io.image import load_rgb

    editor = Editor.from_pretrained()
    subject = editor.prepare([load_rgb(example_path())])
    request = parse_request(args.label)
    editor.edit(subject, request, seed=0)  # warm-up
    if args.forever:
        print("ready", flush=True)
        while True:
            editor.edit(subject, request, seed=1)
    times: list[float] = []

    def one(seed: int) -> None:
        t = time.perf_counter()
        editor.edit(subject, request, seed=seed)
        times.append(time.perf_counter() - t)

    for i in range(args.repeats):
        if args.concurrent > 1:
            ts = [threading.Thread(target=one, args=(10 * i + k,)) for k in range(args.concurrent)]
            for th in ts:
                th.start()
            for th in ts:
                th.join()
        else:
            one(i)
    print(json.dumps({"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                      "max_s": round(max(times), 3), "n": len(times)}), flush=True)


def _threads(cfg: tuple[int | None, str]) -> list[str]:
    return [] if cfg[0] is None else ["--threads", str(cfg[0])]


def run_worker(cfg: tuple[int | None, str], label: str, repeats: int, concurrent: int = 1) -> dict:
    env = _env(cfg)
    cmd = [sys.executable, __file__, "--worker", *_threads(cfg), "--label", label, "--repeats", str(repeats),
           "--concurrent", str(concurrent)]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _env(cfg: tuple[int | None, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if cfg[1] != "unset":  # "unset": OpenMP's own default (mien sets none)
        env["OMP_WAIT_POLICY"] = cfg[1]
    if cfg[0] is not None:  # auto: mien chooses
        env["OMP_NUM_THREADS"] = str(cfg[0])
    return env


def oneshot(cfg: tuple[int | None, str], label: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mien", *_threads(cfg), "generate", "--example", "--expression",
                        label, "--n", "1", "--out", str(Path(tmp) / "o")], env=_env(cfg), capture_output=True,
                       check=True)  # fmt: skip
        return round(time.perf_counter() - t, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", help="threads:POLICY (threads a number or auto; POLICY PASSIVE, ACTIVE or "
                    "unset); default: mien's default (auto:unset) and PyTorch's (all logical CPUs, policy unset)")
    ap.add_argument("--label", default="happy")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scenarios", nargs="+", default=["idle", "beside", "two-at-once", "oneshot"])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--forever", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--concurrent", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.configs:
        configs = [(None if c.split(":")[0] == "auto" else int(c.split(":")[0]), c.split(":")[1]) for c in args.configs]
    else:
        configs = [(None, "unset"), (os.cpu_count() or 1, "unset")]
    for cfg in configs:
        for scenario in args.scenarios:
            row = {"threads": "auto" if cfg[0] is None else cfg[0], "omp_wait_policy": cfg[1], "scenario": scenario, "label": args.label,
                   "load1": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
            if scenario == "idle":
                row.update(run_worker(cfg, args.label, args.repeats))
            elif scenario == "two-at-once":
                row.update(run_worker(cfg, args.label, args.repeats, concurrent=2))
            elif scenario == "oneshot":
                row["oneshot_s"] = oneshot(cfg, args.label)
            elif scenario == "beside":
                bg = subprocess.Popen([sys.executable, __file__, "--worker", "--forever", *_threads(cfg),
                                       "--label", args.label], env=_env(cfg), stdout=subprocess.PIPE, text=True)
                try:
                    bg.stdout.readline()  # "ready": loaded and generating
                    row.update(run_worker(cfg, args.label, args.repeats))
                finally:
                    bg.kill()
                    bg.wait()
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
