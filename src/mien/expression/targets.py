"""Every expression control → one expression vector: 52 blendshapes + head pose.

The rule for combining controls given together (documented for users in docs/expressions.md):
  1. start from the reference photo's blendshapes (``--like``) if given, else the neutral prototype;
  2. add the displacement of each basic expression in the label / vocabulary term, scaled by its
     intensity (``--intensity`` multiplies the whole mix);
  3. set the blendshapes of Action Units to their levels, in this order, so later ones win: the AUs a
     label carries (``mien.expression.basic.LABEL_AUS``: surprised sets AU1, AU2, AU5, AU26 to 3,
     scaled like its movement), in a swap also the label's swap AUs (``mien.expression.basic.SWAP_LABEL_AUS``),
     a term's own AU adjustments, then ``--au`` — requested AUs come last, so they are exact;
  4. clip to [0, 1]. Head pose comes from the identity photo (expression controls never move the head).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from mien.expression.aus import AU_NAMES, AUCalibration, aus_to_blendshapes, blendshapes_to_aus
from mien.expression.basic import LABEL_AUS, SWAP_LABEL_AUS, Prototypes
from mien.face.blendshape_names import BLENDSHAPE_NAMES

POSE_SCALE = 90.0  # pose angles enter the vector in degrees / 90, so they are O(1) like blendshapes
EXPRESSION_DIM = 52 + 3
SCENE_OWN = "the scene face's own expression"  # a plain swap's request (``mien generate --into``, no expression)


def like_label(reference: str) -> str:
    """What a ``mien generate --like REFERENCE`` request is called in describe(), as its dry run shows it."""
    return f"like {reference}"


@dataclass
class ExpressionRequest:
    mix: dict[str, float] = field(default_factory=dict)  # basic label -> intensity in [0, 1]
    aus: dict[str, float] = field(default_factory=dict)  # AU name -> 0..5
    like: np.ndarray | None = None  # (52,) blendshapes of a reference photo
    intensity: float = 1.0
    like_label: str = "like reference"  # describe()'s name for ``like``: like_label(path), SCENE_OWN (plain swap)
    term: str = ""  # the words typed for ``mix`` when its numbers alone do not say them ("elation", "smile")
    term_aus: tuple[str, ...] = ()  # the AUs of ``aus`` that the term's recipe set (not --au)

    def describe(self) -> str:
        """The request in words, as the dry run, the images' metadata and the sheet show it: e.g. "elation
        (happy 1.00, surprised 0.20)", the term kept beside the recipe it resolved to."""
        recipe = [f"{k} {v * self.intensity:.2f}" for k, v in self.mix.items()]
        recipe += [f"{k}={v:g}" for k, v in self.aus.items() if self.term and k in self.term_aus]
        parts = [f"{self.term} ({', '.join(recipe)})"] if self.term else recipe
        parts += [f"{k}={v:g}" for k, v in self.aus.items() if not (self.term and k in self.term_aus)]
        if self.like is not None:
            parts.insert(0, self.like_label)
        return ", ".join(parts) or "neutral"


def scene_request(request: ExpressionRequest | None, scene_blendshapes: np.ndarray) -> ExpressionRequest:
    """A swap's request: ``request``, or the scene face's own expression (``scene_blendshapes`` (52,)), named
    SCENE_OWN, when it asks for none (no label, AU or reference)."""
    if request is None or not (request.mix or request.aus or request.like is not None):
        intensity = 1.0 if request is None else request.intensity
        return ExpressionRequest(like=scene_blendshapes, intensity=intensity, like_label=SCENE_OWN)
    return request


def blendshape_target(req: ExpressionRequest, protos: Prototypes, calib: AUCalibration,
                      swap: bool = False) -> np.ndarray:  # fmt: skip
    """(52,) blendshape target for a request, by the rule in the module docstring; ``swap``: the target of a
    swap (``mien generate --into``), which also sets the labels' :data:`SWAP_LABEL_AUS`."""
    base = np.array(req.like if req.like is not None else protos.neutral, dtype=np.float64)
    for label, x in req.mix.items():
        if label != "neutral":
            base = base + req.intensity * float(x) * np.asarray(protos.displacement[label])
    base = _label_aus(base, req, LABEL_AUS, calib)
    if swap:  # a swap's own AUs, on the labels it asks for with an intensity above 0
        base = _label_aus(base, req, SWAP_LABEL_AUS, calib, skip_zero=True)
    if req.aus:
        base = aus_to_blendshapes(req.aus, calib, base)
    return np.clip(base, 0.0, 1.0)


def _label_aus(base: np.ndarray, req: ExpressionRequest, table: dict[str, dict[str, float]], calib: AUCalibration,
               skip_zero: bool = False) -> np.ndarray:  # fmt: skip
    """``base`` with the AUs ``table`` gives each label of ``req.mix`` set, scaled by its intensity (in the
    mix's order); ``skip_zero``: labels whose scaled intensity is 0 or less set nothing (an AU set to 0 moves
    ``base`` to its rest value: the edit's LABEL_AUS does that, a swap's SWAP_LABEL_AUS does not)."""
    for label, x in req.mix.items():
        scale = req.intensity * float(x)
        if label in table and (scale > 0 or not skip_zero):
            base = aus_to_blendshapes({au: scale * v for au, v in table[label].items()}, calib, base)
    return base


def varied_target(target: np.ndarray, neutral: np.ndarray, variety: float, seed: int) -> np.ndarray:
    """``target`` (52,) varied for one seed (``--variety``): its change from ``neutral`` scaled by a factor drawn
    around 1 (spread ``0.5 * variety``, at least 0), plus jitter of spread ``0.15 * variety`` on each blendshape in
    proportion to how far the request moves it, clipped to [0, 1]. The same seed always gives the same target,
    and variety 0 returns ``target`` itself."""
    if variety <= 0:
        return target
    # its own stream, apart from the sampler's noise; numpy takes no negative seed, torch's noise does (mod 2**64)
    rng = np.random.default_rng([seed % 2**64, 0x6D69656E])
    moved = np.asarray(target, np.float64) - np.asarray(neutral, np.float64)
    scale = max(0.0, 1.0 + 0.5 * variety * rng.standard_normal())
    jitter = 0.15 * variety * rng.standard_normal(moved.shape) * np.abs(moved) / max(np.abs(moved).max(), 1e-6)
    return np.clip(np.asarray(neutral) + scale * moved + jitter, 0.0, 1.0).astype(np.asarray(target).dtype)


def expression_vector(blendshapes: np.ndarray, pose_deg) -> np.ndarray:
    """(55,) conditioning vector: blendshapes then yaw, pitch, roll / 90."""
    return np.concatenate([np.asarray(blendshapes, np.float32), np.asarray(pose_deg, np.float32) / POSE_SCALE])


def describe(recipe, protos: Prototypes | None = None, calib: AUCalibration | None = None) -> list[str]:
    """Lines saying what a vocabulary recipe becomes: the blendshapes it moves and its AU estimates."""
    protos = protos or Prototypes.load()
    calib = calib or AUCalibration.load()
    req = ExpressionRequest(mix=dict(recipe.basic), aus=dict(recipe.aus))
    target = blendshape_target(req, protos, calib)
    moved = target - np.asarray(protos.neutral)
    top = np.argsort(-np.abs(moved))[:6]
    lines = ["blendshape target (change from neutral): " + ", ".join(
        f"{BLENDSHAPE_NAMES[i]} {target[i]:.2f} ({moved[i]:+.2f})" for i in top if abs(moved[i]) >= 0.01)]
    aus = blendshapes_to_aus(target, calib)
    lines.append("AU estimates of the target (0-5, from blendshapes): " + ", ".join(
        f"{a} {v:.1f}" for a, v in zip(AU_NAMES, aus) if v >= 0.5) or "none above 0.5")
    return lines


def parse_request(expression: str | None = None, intensity: float = 1.0, au: str | dict[str, float] | None = None,
                  like: np.ndarray | None = None) -> ExpressionRequest:  # fmt: skip
    """The request of the user's controls, as `mien generate` takes them: ``expression`` a basic label, a
    vocabulary term, a compound or a recipe (:mod:`mien.expression.vocabulary`), ``intensity`` in [0, 1]
    scaling it, ``au`` "AU12=3,AU6=2" (or a dict) set exactly, ``like`` a reference photo's blendshapes.
    Bad input is a one-line :class:`mien.errors.MienError`."""
    from mien.errors import MienError
    from mien.expression.aus import parse_au_spec
    from mien.expression.vocabulary import Vocabulary

    if not 0.0 <= intensity <= 1.0:  # also rejects nan
        raise MienError(f"--intensity {intensity} is out of range; use a number from 0 to 1")
    mix, aus, term, term_aus = {}, {}, "", ()
    if expression:
        recipe = Vocabulary.load().resolve(expression)
        mix, aus = dict(recipe.basic), dict(recipe.aus)
        term = "" if _says_itself(expression, recipe) else " ".join(expression.split())
    if au:
        asked = parse_au_spec(au if isinstance(au, str) else ",".join(f"{k}={v}" for k, v in au.items()))
        aus.update(asked)
    else:
        asked = {}
    if term:
        term_aus = tuple(k for k in aus if k not in asked)
    return ExpressionRequest(mix=mix, aus=aus, like=like, intensity=intensity, term=term, term_aus=term_aus)


def _says_itself(text: str, recipe) -> bool:
    """Whether ``text`` is no more than its recipe's numbers say: only the recipe's own label and AU names (a
    basic label, "happy 0.6", a typed recipe "happy:0.7+AU6:2"), so describe() need not repeat it."""
    names = {k.lower() for k in (*recipe.basic, *recipe.aus)}
    words = set(re.findall(r"[a-z][a-z0-9]*", re.sub(r"\bau\s+(?=\d)", "au", text.lower())))  # "au 12": AU12
    return not words or words <= names
