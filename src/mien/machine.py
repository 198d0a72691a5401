"""The CPU kind a run's numbers are reproducible within.

Float sums round differently from one CPU generation to the next, so outputs (and every score of them) agree bit for
bit only within one kind: the same swaps of the report ring made on an AMD EPYC of family 25 and of family 26 differ
at the fourth decimal of face-api's distance and read another label on a few of 210 (docs/swap.md). Run records name
the kind so two runs are compared output for output only where it is the same.
"""

from __future__ import annotations

import platform


def cpu_kind() -> str:
    """Vendor, CPU family and PyTorch's CPU capability, e.g. ``AuthenticAMD-25-AVX512``. The family counts because
    one capability spans generations whose kernels round differently: an AMD EPYC of family 26 (Zen 5) differs from
    family 25's (Zen 4) golden recording by up to 2 grey levels on most cases, with the same AVX512 capability."""
    import torch

    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    vendor = info.get("vendor_id") or platform.processor() or platform.machine()
    family = info.get("cpu family", "")
    return "-".join(x for x in (vendor, family, torch.backends.cpu.get_cpu_capability()) if x).replace(" ", "_")
