"""How many CPU threads mien's PyTorch work uses: chosen before torch is imported, and, unless the user fixed
the number, again before each generation from what else the machine is running.

PyTorch's CPU kernels run on an OpenMP pool. On a machine with nothing else to do, every physical core is
fastest (on the 2-core machine of docs/performance.md, one happy image takes 0.8–1.0 s with 2 threads against
1.1–1.3 s with 1). On a laptop or a shared machine that is already busy, every thread of that pool competes
with the other work for the same cores and one descheduled thread stalls each parallel region, so the
generation slows down many times over instead of sharing the machine (70 s with 2 threads beside other
jobs against 13 s with 1). So, measured with scripts/bench_threads.py (docs/performance.md, "Threads"):

- **auto** (the default): before each generation (:func:`generating`, around each call of
  :class:`mien.pipeline.MienPipeline`) mien counts the tasks other processes have runnable at that moment
  and the generations this process is running: nothing else, and the generation takes every physical core;
  anything, and one per physical core less one left free (at least 1: :func:`default_threads`);
- idle pool threads spin briefly, then sleep (GNU OpenMP's ``GOMP_SPINCOUNT=10000``, a thirtieth of its
  default): sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) makes each of the many small parallel regions of
  a 16 x 16 latent wake its threads, and 2 threads then take 2.1 s for the happy image that takes 0.9–1.0 s
  spinning; spinning long (the default) steals the core a second generation in the same process needs
  (two requests at once: 1.9–2.2 s each against 1.5 s).

``--threads N`` (any `mien` command) or ``OMP_NUM_THREADS`` fix the number; ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` set by the user are left as they are.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading


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
    """Threads on a busy machine: a physical core left free, at least 1."""
    return max(1, physical_cores() - 1)


SPINCOUNT = 10_000  # GNU OpenMP's spins before an idle pool thread sleeps (the module's docstring says why)
_AUTO = {"on": False}  # configure() left the number to mien: fit() chooses it per generation
AUTO_MARK = "MIEN_AUTO_THREADS"  # the OMP_NUM_THREADS that auto mode set, told apart from one the user set


def others_running(looks: int = 3, gap_s: float = 0.002) -> int | None:
    """Tasks of other processes runnable now: Linux's ``procs_running`` (/proc/stat) less this process's own
    threads in state R, the median of ``looks`` looks ``gap_s`` apart (a task that runs for a moment is not a
    load; a generation beside us is runnable in every look). None where /proc cannot say."""
    import time

    counts = []
    try:
        for i in range(looks):
            if i:
                time.sleep(gap_s)
            with open("/proc/stat", encoding="ascii") as f:
                running = next(int(line.split()[1]) for line in f if line.startswith("procs_running"))
            own = 0
            for task in os.scandir("/proc/self/task"):
                try:
                    with open(os.path.join(task.path, "stat"), encoding="ascii", errors="replace") as f:
                        own += f.read().rpartition(")")[2].split()[0] == "R"  # the state follows the name
                except OSError:  # the thread ended between the listing and the read
                    pass
            counts.append(max(0, running - own))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return sorted(counts)[len(counts) // 2]


def auto_count(generations: int = 1) -> int:
    """The auto rule's count now: every physical core when nothing else runs, else :func:`default_threads`."""
    return physical_cores() if generations <= 1 and others_running() == 0 else default_threads()


def fit(generations: int = 1) -> int | None:
    """Before a generation, in auto mode (:func:`configure` without a number): every physical core when no other
    process has work runnable and this one runs no other generation (``generations``, counting this one: two
    requests at once through one library process), else :func:`default_threads`; sets torch's thread count (one
    for the process) and returns it. Outside auto mode (a number given, or a library user who never called
    :func:`configure`) it changes nothing: None."""
    if not _AUTO["on"]:
        return None
    threads = auto_count(generations)
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


_RUNNING = {"n": 0}
_LOCK = threading.Lock()


@contextlib.contextmanager
def generating(device="cpu"):
    """A generation on ``device`` runs inside: on the CPU it counts itself among this process's generations and
    :func:`fit`s the threads to them and to the machine's load."""
    cpu = str(device).split(":")[0] == "cpu"
    if cpu:
        with _LOCK:
            _RUNNING["n"] += 1
            running = _RUNNING["n"]
        fit(running)
    try:
        yield
    finally:
        if cpu:
            with _LOCK:
                _RUNNING["n"] -= 1


def configure(threads: int | None = None) -> int:
    """Set the number of threads (``threads``; else ``$OMP_NUM_THREADS``; else auto: what :func:`fit` gives at this
    moment, and :func:`fit` again before each generation) and return it. Before torch is imported this goes
    through the environment (so the OpenMP pool is created at that size); after, through ``torch.set_num_threads``."""
    from mien.errors import MienError

    if threads is not None and threads < 1:
        raise MienError(f"--threads {threads} must be at least 1 (the default here is auto: "
                        f"{physical_cores()} when the machine is otherwise idle, else {default_threads()})")
    if threads is None and os.environ.get(AUTO_MARK) != os.environ.get("OMP_NUM_THREADS"):  # the user's, not ours
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else None
    _AUTO["on"] = threads is None
    if "OMP_WAIT_POLICY" not in os.environ:  # read once, when torch loads OpenMP
        os.environ.setdefault("GOMP_SPINCOUNT", str(SPINCOUNT))
    if threads is None:
        threads = auto_count()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if _AUTO["on"]:  # so that a later configure() here, or a child process, still reads auto, not a fixed number
        os.environ[AUTO_MARK] = str(threads)
    else:
        os.environ.pop(AUTO_MARK, None)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def rule() -> str:
    """How the number is chosen, in words (`mien generate --dry-run`)."""
    if not _AUTO["on"]:
        return "fixed (--threads or OMP_NUM_THREADS)"
    return (f"auto: {physical_cores()} while no other process has work running, else {default_threads()}; "
            "looked at before each generation")
