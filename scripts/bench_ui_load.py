"""Load test of `mien ui`: simulated users (gradio_client threads against 127.0.0.1), each asking for one image.

    python scripts/bench_ui_load.py [--users 20] [--steps 25] [--port 7899] [--out results.json]

Starts `mien ui` in a subprocess (its own models, loaded once, Gradio's queue: one job at a time), waits
until it answers, then starts ``--users`` threads at once; each user is its own gradio_client session and
asks the page's ``/edit`` endpoint for the bundled London example with its own request (a label, an
intensity, a sided AU and a seed, all different) and downloads the result. Measured per user: the wait
from submitting to having the file. Checked per user: no error, the file's metadata is that user's
request and seed, and its pixels equal the image the library makes for the same request in this process
(:class:`mien.ui.service.Service`, sequentially, after the load), so no user gets another's result.
Prints one JSON document (also written to ``--out``): counts, wait percentiles, the load average before
and after, threads, device. Run it under ``flock /work/notes/bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

LABELS = ("happy", "sad", "angry", "fearful", "disgusted", "surprised", "neutral")
SIDES = ("AU12L", "AU12R", "AU43L", "AU43R", "AU2L")


def user_request(i: int) -> dict:
    """User i's request: every user asks for something different."""
    return {"expression": LABELS[i % len(LABELS)], "intensity": round(0.4 + 0.05 * (i % 5), 2),
            "au": f"{SIDES[i % len(SIDES)]}={1 + i % 4}", "seed": 100 + i}


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"mien ui exited with {proc.returncode} before answering")
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"mien ui did not answer at {url} within {timeout:.0f} s")


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--port", type=int, default=7899)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import numpy as np
    from gradio_client import Client, handle_file
    from PIL import Image

    from mien.cli.analyze import example_path

    url = f"http://127.0.0.1:{args.port}/"
    load_before = os.getloadavg()
    server = subprocess.Popen([sys.executable, "-m", "mien", "ui", "--port", str(args.port), "--steps", str(args.steps)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    results: list[dict] = [{} for _ in range(args.users)]
    try:
        wait_for(url, server)
        go = threading.Barrier(args.users)

        def user(i: int) -> None:
            r = user_request(i)
            try:
                client = Client(url, verbose=False)
                go.wait()  # every user submits at the same moment
                t0 = time.perf_counter()
                path, meta, err = client.predict(handle_file(str(example_path())), r["expression"], r["intensity"],
                                                 r["au"], r["seed"], args.steps, api_name="/edit")  # fmt: skip
                results[i] = {**r, "wait_s": time.perf_counter() - t0, "error": err or "", "path": path, "meta": meta}
            except Exception as e:  # a failed request is counted, not fatal
                results[i] = {**r, "error": f"{type(e).__name__}: {e}"}

        threads = [threading.Thread(target=user, args=(i,)) for i in range(args.users)]
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = time.perf_counter() - t_start
    finally:
        server.terminate()
        server.wait(timeout=60)
    load_after = os.getloadavg()

    # the same requests through the library, one at a time: each user's file must be its own image
    from mien.expression.aus import parse_au_spec
    from mien.settings import GenerationSettings
    from mien.ui.service import Controls, Service

    service = Service.from_pretrained()
    photos = service.read_photos([str(example_path())])
    for r in results:
        if r.get("error"):
            continue
        want = service.generate(photos, 0, Controls(r["expression"], r["intensity"], parse_au_spec(r["au"]), {}),
                                r["seed"], GenerationSettings(steps=args.steps))  # fmt: skip
        got = np.asarray(Image.open(r["path"]).convert("RGB"))
        expected = np.asarray(Image.open(want.path).convert("RGB"))
        r["correct"] = bool(r["meta"]["seed"] == r["seed"] and r["meta"]["request"] == want.request
                            and np.array_equal(got, expected))  # fmt: skip
    service.close()

    waits = [r["wait_s"] for r in results if "wait_s" in r]
    errors = [r["error"] for r in results if r.get("error")]
    report = {
        "users": args.users, "steps": args.steps, "errors": len(errors), "error_messages": errors[:5],
        "correct": sum(bool(r.get("correct")) for r in results),
        "wait_s": {"p50": round(percentile(waits, 50), 2), "p95": round(percentile(waits, 95), 2),
                   "max": round(max(waits), 2), "mean": round(statistics.mean(waits), 2)} if waits else None,
        "all_done_s": round(total, 2), "per_image_s": round(total / max(len(waits), 1), 2),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if errors or report["correct"] != args.users:
        raise SystemExit(1)


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
