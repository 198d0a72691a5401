"""An expression classifier on blendshapes: 52 MediaPipe scores → 7 basic-expression probabilities.

Why a second classifier beside face-api's: it reads the same representation mien conditions on, so
it measures whether the *movement* was produced, independent of face-api's appearance cues; and it
is tiny. Multinomial logistic regression on standardised blendshapes (L2-regularised, full-batch
L-BFGS in torch), trained by ``mien train expression-space`` on the posed labels of the train
Taiwanese performers plus confident face-api pseudo-labels from the rest of the train pool.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mien.errors import MienError
from mien.expression.basic import BASIC, _resource


@dataclass
class BlendshapeClassifier:
    mean: list[float]
    std: list[float]
    weight: list[list[float]]  # (7, 52)
    bias: list[float]
    labels: tuple[str, ...] = BASIC
    source: str = ""

    def logits(self, bs: np.ndarray) -> np.ndarray:
        z = (np.asarray(bs, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.std)
        return z @ np.asarray(self.weight).T + np.asarray(self.bias)

    def predict_proba(self, bs: np.ndarray) -> np.ndarray:
        lg = self.logits(np.atleast_2d(bs))
        e = np.exp(lg - lg.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def predict(self, bs: np.ndarray) -> np.ndarray:
        return np.asarray(self.labels)[self.predict_proba(bs).argmax(1)]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path | None = None) -> "BlendshapeClassifier":
        path = Path(path) if path else _resource("blendshape_classifier.json")
        if not path.is_file():
            raise MienError(f"blendshape classifier {path} is missing; run `mien train expression-space ANNOTATIONS.parquet`")
        d = json.loads(path.read_text())
        d["labels"] = tuple(d["labels"])
        return cls(**d)


def fit_classifier(bs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, l2: float = 1e-3,
                   source: str = "") -> BlendshapeClassifier:
    """Weighted multinomial logistic regression; ``weights`` balance sources/classes."""
    x = np.asarray(bs, dtype=np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-3
    xt = torch.tensor((x - mean) / std)
    y = torch.tensor([BASIC.index(lab) for lab in labels])
    w = torch.ones(len(y), dtype=torch.float64) if weights is None else torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    lin = torch.nn.Linear(x.shape[1], len(BASIC)).double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(lin(xt), y, reduction="none") * w).sum()
        loss = loss + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return BlendshapeClassifier(
        mean.tolist(), std.tolist(), lin.weight.detach().numpy().tolist(), lin.bias.detach().numpy().tolist(),
        BASIC, source,
    )
