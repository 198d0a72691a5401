"""What ``keep_after_feather`` adds to detail transfer's output, with the photo's crop and with the decoder's
reconstruction as the reference (docs/fullres.md, "keep_after_feather with the reconstruction as the reference"):
per image the output with the option minus the output without it, once with ``reference`` "photo" and once with
"decoded-residual", over the pixels where either differs by more than 1 grey level; the root mean square and the
mean signed difference per channel, and the root mean square of the two differences' difference, averaged over
the images. If what the option lets through at the kept region's
soft edge were the decoder's own error, the second would be near zero.

    python scripts/fullres_keep_edge_source.py --raw /tmp/ec/raw --split tune --cache /tmp/ec/cache  # essex 5, london 7
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_fullres import cached_edits, people, reconstructions, source_split_arguments, split_people  # noqa: E402

from mien.detail import DetailSettings, transfer_detail  # noqa: E402


def added(d: dict, reconstruction: np.ndarray, reference: str) -> np.ndarray:
    """The output with keep_after_feather minus the output without it, with ``reference``."""
    out = [transfer_detail(d["photo"], d["crop"], d["matrix"], str(d["keep"]), d["landmarks"],
                           DetailSettings(keep_after_feather=k, reference=reference), reconstruction)
           for k in (True, False)]  # fmt: skip
    return out[0].astype(np.float32) - out[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source_split_arguments(ap)
    args = ap.parse_args()
    decoded = reconstructions(DetailSettings(reference="decoded"))
    for source, n in zip(("essex", "london"), args.people):
        rms, mean = [], []
        for _, _, d in cached_edits(args.cache, split_people(people(args.raw), args.split, n, source)):
            recon = decoded(d["photo"], d["matrix"])
            a, b = added(d, recon, "photo"), added(d, recon, "decoded-residual")
            band = (np.abs(a).max(-1) > 1) | (np.abs(b).max(-1) > 1)
            if not band.any():
                continue
            rms.append([np.sqrt((x[band] ** 2).mean()) for x in (a, b, a - b)])
            mean.append([x[band].mean(0) for x in (a, b)])
        r, m = np.mean(rms, axis=0), np.mean(mean, axis=0)
        rgb = lambda c: "/".join(f"{x:+.2f}" for x in c)  # noqa: E731
        print(f"{source}: {len(rms)} images; what keep_after_feather adds, RMS (mean R/G/B): reference photo "
              f"{r[0]:.2f} ({rgb(m[0])}), decoded-residual {r[1]:.2f} ({rgb(m[1])}); RMS of their difference "
              f"{r[2]:.2f} grey levels")


if __name__ == "__main__":
    from mien.cli import run_script

    run_script(main)
