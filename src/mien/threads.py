"""How many CPU threads mien's PyTorch work uses, chosen before torch is imported.

PyTorch's CPU kernels run on an OpenMP pool as large as the machine's logical CPUs, and GNU OpenMP
keeps idle pool threads spinning for a while (``OMP_WAIT_POLICY`` ACTIVE-like behaviour) so the next
parallel region starts fast. On a laptop or a shared machine that is already busy, every thread of
that pool competes with the other work for the same cores, and a spinning or descheduled thread
stalls the whole region: on the 2-core machine of docs/performance.md one `mien generate --example`
took 70 s with 2 threads beside other jobs against 13 s with 1. The defaults here follow those
measurements (scripts/bench_threads.py):

- one thread per physical core, less one core left free for everything else (at least 1);
- ``OMP_WAIT_POLICY=PASSIVE``: idle pool threads sleep instead of spinning (GNU and LLVM OpenMP
  read it at start-up only, so it is set before torch is first imported).

``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` set by the user win over these defaults, and ``--threads N``
(any `mien` command) wins over both.
"""

from __future__ import annotations

import os
import sys


def physical_cores() -> int:
    """Physical cores this process may run on (Linux /proc/cpuinfo; elsewhere the logical count)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cores, phys = set(), "0"
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    cores.add((phys, value.strip()))
        if cores:
            return max(1, min(len(cores), logical))
    except OSError:
        pass
    return max(1, logical)


def cpu_native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively: AVX512-BF16 or AMX among Linux's /proc/cpuinfo flags
    (elsewhere False; oneDNN then emulates bfloat16, slower than float32). Critic guidance's default number
    format follows it (mien.settings.GenerationSettings.critic_precision)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def native_bfloat16(device) -> bool:
    """Whether ``device`` (a torch device or its name) computes in bfloat16 natively: a CUDA GPU that supports it,
    or a CPU with AVX512-BF16 or AMX (:func:`cpu_native_bfloat16`). Elsewhere bfloat16 is emulated, slower than
    float32. torch is imported only for a GPU, so a CPU dry run stays light."""
    kind = str(device).split(":")[0]
    if kind == "cuda":
        import torch

        return torch.cuda.is_bf16_supported()
    return kind == "cpu" and cpu_native_bfloat16()


def default_threads() -> int:
    """Threads when neither --threads nor OMP_NUM_THREADS says: a physical core left free, at least 1."""
    return max(1, physical_cores() - 1)


def configure(threads: int | None = None) -> int:
    """Set the number of threads (``threads``; else ``$OMP_NUM_THREADS``; else :func:`default_threads`) and
    the passive wait policy; returns the number. Before torch is imported this goes through the
    environment (so the OpenMP pool is created at that size); after, through ``torch.set_num_threads``."""
    from mien.errors import MienError

    if threads is not None and threads < 1:
        raise MienError(f"--threads {threads} must be at least 1 (the default here is {default_threads()})")
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else default_threads()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads
