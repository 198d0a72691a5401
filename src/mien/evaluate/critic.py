"""Realism measures on aligned 128 px faces: a real-versus-generated critic and the darkened-eye checks.

The critic is a classifier two-sample test (Lopez-Paz & Oquab 2017, "Revisiting Classifier Two-Sample
Tests", ICLR): a classifier is trained to tell real crops from generated ones on one half of the people
and tested on the other half; its held-out accuracy is the measure. 50 % means the two sets cannot be
told apart by it, 100 % that every output gives itself away. Splitting by person keeps the critic from
recognising people instead of artefacts.

The classifier is L2-regularised logistic regression on fixed image statistics of a region of the
template (:func:`features`): the shape of the radial power spectrum and the high-pass residual (blur,
decoder smoothing and noise show there, as in Durall et al. 2020, "Watch your up-convolution"), colour
moments, and a coarse 4×4 luminance layout (shading, dark eye sockets). Fixed features and a linear
model train in milliseconds on the 2-core CPU and cannot memorise 100-odd images the way a CNN would;
the price is that the critic only sees what these statistics see, so a low accuracy is a lower bound on
how distinguishable the sets are.

Every crop is in the faces128 template frame (:data:`mien.face.align.TEMPLATE_128`): real dev photos
are stored aligned, and mien's outputs are aligned crops, so fixed boxes select the same part of every
face.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mien.face.blendshape_names import BLENDSHAPE_NAMES

SIZE = 128
# Boxes (x0, y0, x1, y1) in the 128 px template: eyes at (44, 52) and (84, 52), nose tip (64, 75),
# mouth corners (48, 98) and (81, 98) (TEMPLATE_128).
FACE_BOX = (24, 30, 104, 118)  # the inner face: brows to chin, cheek to cheek, little background
MOUTH_BOX = (38, 84, 90, 116)
EYE_BOXES = ((33, 46, 55, 58), (73, 46, 95, 58))  # each eye with its lids and socket
CHEEK_BOXES = ((34, 66, 52, 80), (76, 66, 94, 80))  # below each eye, beside the nose
# The band between each eye box and its cheek box: the lower lid's edge (y 54-57 on London crops, MediaPipe
# landmarks 145 and 374) down to the cheekbone, where the model paints dark crescents (docs/realism.md).
UNDER_EYE_BOXES = ((33, 58, 55, 66), (73, 58, 95, 66))
# The sides of the cheeks (the still cheeks of scripts/bench_fullres.py): the under-eye band's reference. The
# cheek boxes above sit where those crescents and the creases of a frown spread, so they darken with them.
OUTER_CHEEK_BOXES = ((26, 64, 40, 82), (88, 64, 102, 82))
REGIONS = {"face": FACE_BOX, "mouth": MOUTH_BOX}


def to_template(rgb: np.ndarray) -> np.ndarray:
    """An aligned crop at 128 px (outputs of other sizes are resized; they share the template frame)."""
    if rgb.shape[:2] != (SIZE, SIZE):
        rgb = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return rgb


def _crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return rgb[y0:y1, x0:x1]


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma in [0, 1]."""
    return (rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])) / 255.0


def _radial_spectrum(gray: np.ndarray, bins: int = 12) -> np.ndarray:
    """log10 of the share of (Hann-windowed) spectral power in each of ``bins`` radial frequency bands."""
    h, w = gray.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    p = np.abs(np.fft.fftshift(np.fft.fft2((gray - gray.mean()) * win))) ** 2
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h // 2) / (h / 2), (xx - w // 2) / (w / 2))
    edges = np.linspace(0, 1, bins + 1)
    total = p[r <= 1].sum() + 1e-12
    return np.log10(np.array([p[(r >= a) & (r < b)].sum() / total for a, b in zip(edges[:-1], edges[1:])]) + 1e-9)


def features(rgb: np.ndarray, region: str = "face") -> np.ndarray:
    """Fixed statistics of one region of an aligned crop (1-D float vector; same length for every image)."""
    patch = _crop(to_template(rgb), REGIONS[region])
    gray = _luminance(patch)
    hp = gray - cv2.GaussianBlur(gray, (0, 0), 1.0)
    lap = cv2.Laplacian(gray, cv2.CV_64F)
    gx, gy = cv2.Sobel(gray, cv2.CV_64F, 1, 0), cv2.Sobel(gray, cv2.CV_64F, 0, 1)
    grad = np.hypot(gx, gy)
    hp_std = hp.std() + 1e-9
    texture = [np.log(hp_std), np.log(np.abs(lap).mean() + 1e-9), np.log(grad.mean() + 1e-9),
               np.mean(((hp - hp.mean()) / hp_std) ** 4), np.log(np.abs(hp).max() + 1e-9)]
    px = patch.reshape(-1, 3).astype(np.float64) / 255.0
    hsv = cv2.cvtColor(patch, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.float64) / 255.0
    colour = [*px.mean(0), *px.std(0), hsv[:, 1].mean(), hsv[:, 1].std()]
    layout = cv2.resize(gray, (4, 4), interpolation=cv2.INTER_AREA).ravel()
    layout = layout / (gray.mean() + 1e-9)
    return np.concatenate([_radial_spectrum(gray), texture, colour, layout])


# ----------------------------------------------------------------------------------------------
# the classifier


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """Weights (with bias last) of L2-regularised logistic regression by Newton's method (IRLS)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], l2)
    reg[-1] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@dataclass
class CriticResult:
    accuracy: float  # held-out accuracy over both folds, classes balanced (0.5 = indistinguishable)
    n_test: int  # held-out predictions behind it (real + generated)
    n_real: int
    n_generated: int
    scores: dict  # generated item index → held-out P(generated) (for the worst outputs)

    def to_dict(self) -> dict:
        se = float(np.sqrt(0.25 / self.n_test)) if self.n_test else float("nan")
        return {"accuracy": self.accuracy, "standard_error_at_chance": se, "n_test": self.n_test,
                "n_real": self.n_real, "n_generated": self.n_generated}


def two_sample_test(real: list[tuple[str, np.ndarray]], generated: list[tuple[str, np.ndarray]],
                    seed: int = 0, l2: float = 1.0) -> CriticResult:
    """Classifier two-sample test of ``real`` against ``generated`` feature vectors, split by person.

    Each list holds ``(person, feature vector)``. The people are split in two halves (seeded); the
    critic is trained on one half's real and generated vectors and tested on the other's, then the
    other way round. In every train and test set the larger class is subsampled to the smaller one's
    size, so chance is exactly 50 %. ``scores`` gives every generated vector's held-out P(generated).
    """
    rng = np.random.default_rng(seed)
    people = sorted({p for p, _ in real} | {p for p, _ in generated})
    half = {p: i % 2 for i, p in enumerate(rng.permutation(people))}
    correct, n_test, scores = 0, 0, {}
    for fold in (0, 1):
        tr_r = [i for i, (p, _) in enumerate(real) if half[p] != fold]
        tr_g = [i for i, (p, _) in enumerate(generated) if half[p] != fold]
        te_r = [i for i, (p, _) in enumerate(real) if half[p] == fold]
        te_g = [i for i, (p, _) in enumerate(generated) if half[p] == fold]
        if min(len(tr_r), len(tr_g), len(te_r), len(te_g)) == 0:
            continue
        tr_r, tr_g = _balance(tr_r, tr_g, rng)
        xr = np.stack([real[i][1] for i in tr_r] + [generated[i][1] for i in tr_g])
        yr = np.r_[np.zeros(len(tr_r)), np.ones(len(tr_g))]
        mu, sd = xr.mean(0), xr.std(0) + 1e-6
        w = _fit_logistic((xr - mu) / sd, yr, l2)

        def prob(v: np.ndarray) -> np.ndarray:
            z = np.hstack([(v - mu) / sd, np.ones((len(v), 1))]) @ w
            return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))

        pg_all = prob(np.stack([generated[i][1] for i in te_g]))
        scores.update({i: float(s) for i, s in zip(te_g, pg_all)})
        bal_r, bal_g = _balance(te_r, te_g, rng)
        pr = prob(np.stack([real[i][1] for i in bal_r]))
        pg = np.array([scores[i] for i in bal_g])
        correct += int((pr < 0.5).sum() + (pg >= 0.5).sum())
        n_test += len(bal_r) + len(bal_g)
    acc = correct / n_test if n_test else float("nan")
    return CriticResult(acc, n_test, len(real), len(generated), scores)


def _balance(a: list[int], b: list[int], rng: np.random.Generator) -> tuple[list[int], list[int]]:
    n = min(len(a), len(b))
    pick = lambda v: sorted(rng.choice(v, n, replace=False).tolist()) if len(v) > n else list(v)  # noqa: E731
    return pick(a), pick(b)


def critic(real: list[tuple[str, np.ndarray]], generated: list[tuple[str, np.ndarray]], region: str = "face",
           seed: int = 0) -> CriticResult:
    """:func:`two_sample_test` on :func:`features` of ``(person, aligned RGB crop)`` pairs."""
    return two_sample_test([(p, features(im, region)) for p, im in real],
                           [(p, features(im, region)) for p, im in generated], seed)


# ----------------------------------------------------------------------------------------------
# darkened eyes and under-eyes


# An output's eyes count as newly darkened when its eye-to-cheek luminance ratio falls below this
# share of the input photo's. Chosen by scripts/tune_dark_eyes.py (docs/realism.md, "Darkened eyes"):
# the 1st percentile, rounded down to 0.05, over pairs of real photos of one person in one sitting with
# different expressions (Taiwanese and Essex dev people: squints, smiles, frowns), so a real change of
# expression triggers it in at most about 1 % of pairs (0.25 % of 393 there, none of 40 London pairs).
DARK_EYES_THRESHOLD = 0.80


def _box_ratio(rgb: np.ndarray, boxes: tuple, reference: tuple) -> float:
    """Mean luminance of ``boxes`` over that of ``reference`` boxes (aligned crop)."""
    lum = _luminance(to_template(rgb))
    inner = np.mean([_crop(lum, b).mean() for b in boxes])
    outer = np.mean([_crop(lum, b).mean() for b in reference])
    return float(inner / max(outer, 1e-6))


def eye_cheek_ratio(rgb: np.ndarray) -> float:
    """Mean luminance of the two eye boxes over that of the two cheek boxes (aligned crop)."""
    return _box_ratio(rgb, EYE_BOXES, CHEEK_BOXES)


def eye_darkening(output: np.ndarray, photo: np.ndarray) -> float:
    """The output's eye-to-cheek ratio as a share of the input photo's (1 = unchanged, < 1 darker eyes)."""
    return eye_cheek_ratio(output) / max(eye_cheek_ratio(photo), 1e-6)


# An output's under-eyes count as newly darkened when its under-eye-to-outer-cheek luminance ratio falls
# below this share of the input photo's. Chosen as DARK_EYES_THRESHOLD is (scripts/tune_dark_eyes.py
# --measure under_eyes, docs/realism.md "Darkened under-eyes"): the 1st percentile over the Taiwanese and
# Essex dev pairs (0.866), rounded down to 0.05.
DARK_UNDER_EYES_THRESHOLD = 0.85


def under_eye_ratio(rgb: np.ndarray) -> float:
    """Mean luminance of the two under-eye bands over that of the two outer cheek boxes (aligned crop)."""
    return _box_ratio(rgb, UNDER_EYE_BOXES, OUTER_CHEEK_BOXES)


def under_eye_darkening(output: np.ndarray, photo: np.ndarray) -> float:
    """The output's under-eye ratio as a share of the input photo's (1 = unchanged, < 1 darker under the eyes)."""
    return under_eye_ratio(output) / max(under_eye_ratio(photo), 1e-6)


# ----------------------------------------------------------------------------------------------
# eyes squeezed nearly shut


# Eyes squeezed nearly shut darken both boxes by themselves: the lids cover the eyeball and their creases
# shade the band under the eye. An output whose eye closure (below) reaches this cut is counted as squeezed,
# apart from the darkened-eye rates. Chosen by scripts/tune_squeezed_eyes.py (docs/realism.md, "Squeezed
# eyes"): the lowest closure among the real expression changes of the Taiwanese and Essex dev people that
# the under-eye check flags (3 of 393 pairs, every one a squeeze: 0.336-0.406), rounded down to 0.05.
SQUEEZED_EYES_CLOSURE = 0.30
_BLINKS = (BLENDSHAPE_NAMES.index("eyeBlinkLeft"), BLENDSHAPE_NAMES.index("eyeBlinkRight"))


def eye_closure(blendshapes) -> float:
    """Mean of MediaPipe's eyeBlinkLeft and eyeBlinkRight scores (52 in MediaPipe's order): 0 open, 1 shut."""
    return float(np.mean([blendshapes[i] for i in _BLINKS]))


def squeezed(blendshapes) -> bool:
    """Whether a face's eyes are squeezed nearly shut (unknown, ``None``, counts as open)."""
    return blendshapes is not None and eye_closure(blendshapes) >= SQUEEZED_EYES_CLOSURE
