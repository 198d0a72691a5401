"""Plot the recorded loss of every training run of the shipped model (docs/training-runs/) as one PNG.

    python scripts/plot_training_runs.py   # writes docs/training-runs/loss.png

Steps are counted over the whole lineage: run 1 from scratch, then run 2 (spatial reference) in two
leases, each lease restarting its step counter from the previous export.
"""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "docs" / "training-runs"


def rows(path: Path) -> list[tuple[int, float]]:
    with open(path, newline="") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def main() -> None:
    segments = [("run 1 (no reference)", [ROOT / "run1" / "loss.csv"]),
                ("run 2, lease 1 (+ reference)", [ROOT / "run2" / f"loss_call{i}.csv" for i in (1, 2, 3)]),
                ("run 2, lease 2", [ROOT / "run2" / f"loss_call{i}.csv" for i in (4, 5, 6)])]
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    offset = 0
    for label, files in segments:
        pts = {}
        for f in files:  # later calls rewrite the earlier rows of the same run: keep the last
            pts.update(dict(rows(f)))
        steps = sorted(pts)
        ax.plot([offset + s for s in steps], [pts[s] for s in steps], label=label)
        offset += steps[-1]
    ax.set(xlabel="step (whole lineage)", ylabel="flow-matching loss (masked MSE)", yscale="log",
           title="training loss of the shipped model")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "loss.png")
    print(f"wrote {ROOT / 'loss.png'} ({offset} steps)")


if __name__ == "__main__":
    main()
