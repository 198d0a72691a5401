"""Expression words → recipes: mixes of basic expressions (0–1) plus optional Action Units (0–5).

A *recipe* is what every word a user can type turns into before it becomes a blendshape target
(``mien.expression.targets``, not this module). Written as text it reads
``happy:0.5+surprised:0.6+AU6:1.5``: basic labels with an intensity in [0, 1] (1 = the label's
prototype learned from data, so a bare label means 1), and Action Units on FACS's 0–5 scale
(``mien.expression.aus``), which ask for that AU's level on top of the basic mix. ``neutral`` is the
face a mix starts from, so mixing it in adds nothing; it is there so that "neutral" can be asked for.

``resolve`` accepts, in this order:

1. a basic label (``BASIC``) → that label at 1;
2. one of the 135 vocabulary terms → its row in ``resources/expression/vocabulary.csv``, which the
   project owns and documents row by row (Shaver et al. 1987's hierarchy, ``shared/data/vocabulary``);
3. a synonym: everyday words for the labels (``LABEL_SYNONYMS``: smile → happy, scared → fearful,
   calm → neutral) and adjective forms of the terms (``WORD_FORMS``: furious → fury);
4. a compound ``<adverb> <label>`` such as "happily surprised" → both labels at ``COMPOUND_LEVEL``.
   Du, Tao & Martinez (2014, "Compound facial expressions of emotion", PNAS 111(15)) show that a
   compound face uses the Action Units of *both* basic categories with neither dominant, so the rule
   is symmetric ("surprisedly happy" = "happily surprised"), and each part gets 0.6 rather than 1
   because two full prototypes fight over the same features (brows, mouth) and would exaggerate;
5. a recipe string typed by the user, ``happy:0.7+surprised:0.3`` (``=`` works like ``:``; a space
   works too: ``happy 0.7+surprised 0.3``).

Any of these followed by a number from 0 to 1 is that expression at that intensity: ``happy 0.6``
(the README's notation) is ``happy:0.6``, ``elation 0.5`` halves the term's recipe.

Anything else is a :class:`MienError` with up to three "did you mean" suggestions.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from mien.errors import MienError
from mien.expression.aus import AU_MAX, AU_NAMES, parse_au_control

# face-api.js FACE_EXPRESSION_LABELS (src/faceExpressionNet/FaceExpressions.ts), the classifier's
# output order. Copied on purpose from mien.models.faceapi_expression.EXPRESSIONS so that reading the
# vocabulary does not need the network's code; tests/test_vocabulary.py checks that the two agree.
BASIC: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")

# Shaver, Schwartz, Kirson & O'Connor (1987): the six basic-level categories of the hierarchy.
CATEGORIES: tuple[str, ...] = ("love", "joy", "surprise", "anger", "sadness", "fear")
LEVELS: tuple[str, ...] = ("category", "subordinate")
N_TERMS = 135
COLUMNS = ("term", "category", "level", "recipe", "reason")

ADVERBS: dict[str, str] = {
    "happily": "happy", "sadly": "sad", "angrily": "angry",
    "fearfully": "fearful", "disgustedly": "disgusted", "surprisedly": "surprised",
}
COMPOUND_LEVEL = 0.6
# The 12 label pairs among Du et al.'s (2014) 15 compound categories (their other three, appalled,
# hatred and awed, are variants of these pairs). Other pairs resolve by the same rule, flagged.
DU_PAIRS = frozenset(frozenset(p.split("+")) for p in (
    "happy+surprised", "happy+disgusted", "sad+fearful", "sad+angry", "sad+surprised", "sad+disgusted",
    "fearful+angry", "fearful+surprised", "fearful+disgusted", "angry+surprised", "angry+disgusted",
    "disgusted+surprised"))

# Everyday words for the basic labels. Where a word is also a vocabulary term (happiness, anger ...),
# the term wins and its row is the same label at 1 (tests check that).
LABEL_SYNONYMS: dict[str, str] = {
    "happiness": "happy", "smile": "happy", "smiling": "happy", "smiley": "happy",
    "sadness": "sad", "tearful": "sad", "crying": "sad",
    "anger": "angry", "mad": "angry",
    "fear": "fearful", "afraid": "fearful", "scared": "fearful",
    "disgust": "disgusted", "grossed out": "disgusted",
    "surprise": "surprised",
    "calm": "neutral", "relaxed": "neutral", "expressionless": "neutral", "blank": "neutral",
}

# Adjective and participle forms of vocabulary terms, so "furious" finds "fury".
WORD_FORMS: dict[str, str] = dict(pair.split("=") for pair in """
    loving=love adoring=adoration affectionate=affection fond=fondness attracted=attraction
    tender=tenderness compassionate=compassion sentimental=sentimentality aroused=arousal
    lustful=lust passionate=passion infatuated=infatuation joyful=joy joyous=joy amused=amusement
    laughing=amusement blissful=bliss cheerful=cheerfulness gay=gaiety gleeful=glee jolly=jolliness
    jovial=joviality delighted=delight glad=gladness jubilant=jubilation elated=elation
    satisfied=satisfaction ecstatic=ecstasy euphoric=euphoria enthusiastic=enthusiasm zealous=zeal
    excited=excitement thrilled=thrill exhilarated=exhilaration content=contentment
    contented=contentment pleased=pleasure proud=pride triumphant=triumph eager=eagerness
    hopeful=hope optimistic=optimism enthralled=enthrallment enraptured=rapture relieved=relief
    amazed=amazement astonished=astonishment aggravated=aggravation irritated=irritation
    agitated=agitation annoyed=annoyance grouchy=grouchiness grumpy=grumpiness
    exasperated=exasperation frustrated=frustration enraged=rage outraged=outrage furious=fury
    wrathful=wrath hostile=hostility ferocious=ferocity bitter=bitterness hateful=hate
    scornful=scorn spiteful=spite vengeful=vengefulness resentful=resentment revolted=revulsion
    contemptuous=contempt envious=envy jealous=jealousy tormented=torment agonized=agony
    anguished=anguish depressed=depression despairing=despair hopeless=hopelessness gloomy=gloom
    glum=glumness unhappy=unhappiness grieving=grief sorrowful=sorrow woeful=woe miserable=misery
    melancholic=melancholy dismayed=dismay disappointed=disappointment displeased=displeasure
    guilty=guilt ashamed=shame regretful=regret remorseful=remorse alienated=alienation
    isolated=isolation neglected=neglect lonely=loneliness rejected=rejection homesick=homesickness
    defeated=defeat dejected=dejection insecure=insecurity embarrassed=embarrassment
    humiliated=humiliation insulted=insult pitying=pity sympathetic=sympathy alarmed=alarm
    shocked=shock frightened=fright horrified=horror terrified=terror panicked=panic
    panicky=panic hysterical=hysteria mortified=mortification anxious=anxiety nervous=nervousness
    tense=tenseness uneasy=uneasiness apprehensive=apprehension worried=worry distressed=distress
    dreading=dread
""".split())


@dataclass
class Recipe:
    """Basic-expression intensities (0–1) and AU levels (0–5), with where they came from and why."""

    basic: dict[str, float]
    aus: dict[str, float] = field(default_factory=dict)
    source: str = ""
    reason: str = ""

    def text(self) -> str:
        """The recipe in the syntax ``parse_recipe`` reads: ``happy:0.5+AU6:1.5``."""
        parts = [f"{k}:{v:g}" for k, v in self.basic.items()] + [f"{k}:{v:g}" for k, v in self.aus.items()]
        return "+".join(parts)

    def dominant(self) -> str | None:
        """The basic label with the largest intensity (None for an AU-only recipe)."""
        return max(self.basic, key=self.basic.get) if self.basic else None


@dataclass(frozen=True)
class Term:
    term: str
    category: str
    level: str
    recipe: Recipe


def parse_recipe(text: str) -> Recipe:
    """``"happy:0.5+surprised:0.6+AU6:1.5"`` → Recipe. A bare basic label means 1; AUs need a level."""
    basic: dict[str, float] = {}
    aus: dict[str, float] = {}
    for part in (p.strip() for p in text.split("+")):
        if not part:
            raise MienError(f"empty part in recipe '{text}'; write parts like happy:0.7+surprised:0.3")
        name, sep, value = part.replace("=", ":").partition(":")
        key = _normalise(name)
        if _AU_NAME.match(key):
            au = parse_au_control(name)
            if not sep:
                raise MienError(f"{au} in recipe '{text}' needs a level from 0 to {AU_MAX:g}, e.g. {au}:2")
            _add(aus, au, _number(value, au, AU_MAX, text), text)
            continue
        label = key if key in BASIC else LABEL_SYNONYMS.get(key)
        if label is None:
            raise MienError(f"'{name.strip()}' in recipe '{text}' is not a basic expression; "
                            f"recipes mix {', '.join(BASIC)} and Action Units ({', '.join(AU_NAMES)})")
        _add(basic, label, _number(value, label, 1.0, text) if sep else 1.0, text)
    return Recipe(basic, aus)


def _number(value: str, name: str, high: float, text: str) -> float:
    try:
        v = float(value)
    except ValueError:
        v = math.nan
    if not (0.0 <= v <= high):  # also rejects nan
        raise MienError(f"{name}:{value.strip()} in recipe '{text}': the intensity must be a number from 0 to {high:g}")
    return v


def _add(into: dict[str, float], key: str, value: float, text: str) -> None:
    if key in into:
        raise MienError(f"{key} appears twice in recipe '{text}'")
    into[key] = value


_AU_NAME = re.compile(r"au ?\d")  # on normalised text: "AU12", "au 12"


_SCALED = re.compile(r"^(.*[a-z].*?) ([0-9]*\.?[0-9]+)$")  # "<expression> <intensity>"
_SPACED = re.compile(r"([A-Za-z][A-Za-z0-9]*)\s+(-?[0-9]*\.?[0-9]+)")  # "happy 0.7" inside a recipe


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


class Vocabulary:
    """The 135 terms with their recipes, validated on load."""

    def __init__(self, terms: list[Term]):
        self.terms = tuple(terms)
        self._by_name = {t.term: t for t in self.terms}

    @classmethod
    def load(cls) -> "Vocabulary":
        res = resources.files("mien") / "resources" / "expression" / "vocabulary.csv"
        return cls.parse(res.read_text(encoding="utf-8"), origin="resources/expression/vocabulary.csv")

    @classmethod
    def parse(cls, text: str, origin: str = "vocabulary.csv") -> "Vocabulary":
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if tuple(header or ()) != COLUMNS:
            raise MienError(f"{origin}: the header must be {','.join(COLUMNS)}, not {','.join(header or [])}")
        terms: list[Term] = []
        for row in reader:
            where = f"{origin} line {reader.line_num}"
            terms.append(_parse_row(row, where, seen={t.term for t in terms}))
        if len(terms) != N_TERMS:
            raise MienError(f"{origin}: {len(terms)} terms, expected {N_TERMS}")
        return cls(terms)

    def __len__(self) -> int:
        return len(self.terms)

    def __contains__(self, term: str) -> bool:
        return _normalise(term) in self._by_name

    def get(self, term: str) -> Term:
        return self._by_name[_normalise(term)]

    def resolve(self, text: str) -> Recipe:
        key = _normalise(text)
        if not key:
            raise MienError("no expression given; name one, e.g. happy, elation or 'happily surprised'")
        scaled = _SCALED.match(key)
        if scaled and not any(c in key for c in ":=+") and not _AU_NAME.match(key):  # "happy 0.6": the expression at that intensity
            word, x = scaled.group(1), float(scaled.group(2))
            if not 0.0 <= x <= 1.0:
                raise MienError(f"'{text.strip()}': intensity {x:g} is out of range; use a number from 0 to 1 "
                                f"(e.g. '{word} 0.6')")
            r = self.resolve(word)
            return Recipe({k: v * x for k, v in r.basic.items()}, {k: v * x for k, v in r.aus.items()},
                          f"{r.source}, at {x:g}", r.reason)
        if key in BASIC:
            return Recipe({key: 1.0}, {}, "basic label (face-api.js)", f"the learned '{key}' prototype at full intensity")
        if key in self._by_name:
            return self._term_recipe(self._by_name[key])
        if key in LABEL_SYNONYMS:
            label = LABEL_SYNONYMS[key]
            return Recipe({label: 1.0}, {}, f"synonym of the basic label '{label}'",
                          f"the learned '{label}' prototype at full intensity")
        if key in WORD_FORMS:
            r = self._term_recipe(self._by_name[WORD_FORMS[key]])
            return Recipe(r.basic, r.aus, f"'{key}' → {r.source}", r.reason)
        compound = self._compound(key)
        if compound is not None:
            return compound
        if any(c in key for c in ":=+") or _AU_NAME.match(key):
            r = parse_recipe(_SPACED.sub(r"\1:\2", text))  # "happy 0.7+AU6 2" reads as "happy:0.7+AU6:2"
            return Recipe(r.basic, r.aus, "recipe typed by the user", "as written")
        raise MienError(self._unknown_message(text, key))

    def _term_recipe(self, t: Term) -> Recipe:
        src = f"vocabulary term '{t.term}' ({t.category}, {t.level}; Shaver et al. 1987 hierarchy)"
        return Recipe(dict(t.recipe.basic), dict(t.recipe.aus), src, t.recipe.reason)

    def _compound(self, key: str) -> Recipe | None:
        words = key.split(" ")
        if len(words) != 2 or words[0] not in ADVERBS:
            return None
        first = ADVERBS[words[0]]
        second = words[1] if words[1] in BASIC else LABEL_SYNONYMS.get(words[1])
        if second is None:
            return None
        if second == first:
            raise MienError(f"'{key}' names one expression twice; say '{first}' (or {first}:0.5 for less)")
        if "neutral" in (first, second):
            raise MienError(f"'{key}': neutral does not combine; use a single expression instead")
        studied = frozenset((first, second)) in DU_PAIRS
        src = "compound expression, Du, Tao & Martinez 2014" + ("" if studied else " rule (a pair they did not study)")
        pair = sorted((first, second), key=BASIC.index)
        return Recipe(dict.fromkeys(pair, COMPOUND_LEVEL), {}, src,
                      f"both basic expressions present, neither dominant, each at {COMPOUND_LEVEL:g}")

    def suggestions(self, text: str, n: int = 3) -> list[str]:
        """Up to n known words closest to ``text`` (difflib ratio ≥ 0.6), best first."""
        key = _normalise(text)
        words = list(BASIC) + list(self._by_name) + list(LABEL_SYNONYMS) + list(WORD_FORMS) + [
            f"{a} {b}" for a, la in ADVERBS.items() for b in BASIC[1:] if b != la]
        return difflib.get_close_matches(key, dict.fromkeys(words), n=n, cutoff=0.6)

    def _unknown_message(self, text: str, key: str) -> str:
        near = self.suggestions(key)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        return (f"unknown expression '{text.strip()}'; {hint}`mien expressions` explains what you can ask for, "
                f"`mien expressions --terms` lists all {N_TERMS} terms")


def _parse_row(row: list[str], where: str, seen: set[str]) -> Term:
    if len(row) != len(COLUMNS):
        raise MienError(f"{where}: {len(row)} fields, expected {len(COLUMNS)} ({','.join(COLUMNS)})")
    term, category, level, recipe_text, reason = (c.strip() for c in row)
    where = f"{where} ('{term}')"
    if not term or term != _normalise(term):
        raise MienError(f"{where}: a term must be non-empty and lower case")
    if term in seen:
        raise MienError(f"{where}: duplicate term")
    if category not in CATEGORIES:
        raise MienError(f"{where}: unknown category '{category}' (one of {', '.join(CATEGORIES)})")
    if level not in LEVELS or (level == "category") != (term == category):
        raise MienError(f"{where}: level '{level}' must be 'category' for the category word itself, else 'subordinate'")
    if not reason:
        raise MienError(f"{where}: the reason is empty; say why the term maps to its recipe")
    try:
        recipe = parse_recipe(recipe_text)
    except MienError as e:
        raise MienError(f"{where}: {e}") from None
    if not recipe.basic:
        raise MienError(f"{where}: the recipe '{recipe_text}' needs at least one basic expression")
    return Term(term, category, level, Recipe(recipe.basic, recipe.aus, "", reason))


@cache
def default_vocabulary() -> Vocabulary:
    return Vocabulary.load()


def resolve(text: str) -> Recipe:
    """Any expression word, compound or recipe string → Recipe (see the module docstring)."""
    return default_vocabulary().resolve(text)


__all__ = ["BASIC", "CATEGORIES", "COMPOUND_LEVEL", "Recipe", "Term", "Vocabulary", "default_vocabulary",
           "parse_recipe", "resolve"]
