"""The expression vocabulary: the project CSV against the shared 135-term list, the resolver's
invariants (which basic expression leads in each category, intensity ladders, compounds, recipe
strings, suggestions), broken files, and `mien expressions` end to end."""

import csv
import subprocess
import sys

import pytest

from mien.errors import MienError
from mien.expression.aus import AU_NAMES
from mien.expression.vocabulary import (
    ADVERBS,
    BASIC,
    COMPOUND_LEVEL,
    DU_PAIRS,
    LABEL_SYNONYMS,
    WORD_FORMS,
    Vocabulary,
    default_vocabulary,
    parse_recipe,
    resolve,
)

VOCAB = default_vocabulary()
ROWS = {t.term: t for t in VOCAB.terms}

# The label each Shaver et al. category's face is expected to lead with (love has none).
CATEGORY_LABEL = {"joy": "happy", "surprise": "surprised", "anger": "angry", "sadness": "sad", "fear": "fearful"}
# Deliberate exceptions, each explained in its row's reason: the disgust family filed under anger,
# embarrassment (a controlled smile), shock (mostly surprise), mortification (a shame face).
EXCEPTIONS = {
    "disgust": "disgusted", "revulsion": "disgusted", "contempt": "disgusted", "scorn": "disgusted",
    "loathing": "disgusted", "dislike": "disgusted",
    "embarrassment": "happy", "shock": "surprised", "mortification": "sad",
}


def mien(*args):
    return subprocess.run([sys.executable, "-m", "mien", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def shared_terms(shared_dir):
    with open(shared_dir / "data" / "vocabulary" / "emotion_terms_135.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- the data file -------------------------------------------------------------------------------


@pytest.mark.shared
def test_project_terms_equal_shared_list_in_order(shared_terms):
    assert [(t.term, t.category, t.level) for t in VOCAB.terms] == [
        (r["term"], r["category"], r["level"]) for r in shared_terms]


@pytest.mark.shared
def test_every_shared_term_resolves_to_its_row(shared_terms):
    for r in shared_terms:
        for spelling in (r["term"], r["term"].upper(), f"  {r['term'].title()} "):
            recipe = resolve(spelling)
            assert recipe.basic == ROWS[r["term"]].recipe.basic and recipe.aus == ROWS[r["term"]].recipe.aus
            assert r["term"] in recipe.source and recipe.reason


def test_basic_matches_face_api_label_order():
    from mien.models.faceapi_expression import EXPRESSIONS

    assert BASIC == EXPRESSIONS


def test_recipes_round_trip_through_text():
    for t in VOCAB.terms:
        again = parse_recipe(t.recipe.text())
        assert (again.basic, again.aus) == (t.recipe.basic, t.recipe.aus), t.term


def test_rows_use_canonical_names_only():
    with open(_resource_path(), newline="") as f:
        for row in csv.DictReader(f):
            for part in row["recipe"].split("+"):
                name = part.split(":")[0]
                assert name in BASIC or name in AU_NAMES, (row["term"], name)


def _resource_path():
    from importlib import resources

    return str(resources.files("mien") / "resources" / "expression" / "vocabulary.csv")


# --- design invariants ---------------------------------------------------------------------------


def test_each_category_leads_with_its_label_except_documented_exceptions():
    for t in VOCAB.terms:
        if t.category == "love":
            continue
        b = t.recipe.basic
        lead = EXCEPTIONS.get(t.term, CATEGORY_LABEL[t.category])
        assert all(b[lead] > v for k, v in b.items() if k != lead), (t.term, b)


def test_exceptions_say_why():
    for term in EXCEPTIONS:
        reason = ROWS[term].recipe.reason.lower()
        assert "filed under" in reason, term


def test_love_has_no_basic_expression_and_is_rendered_softly():
    assert "no distinct facial display" in ROWS["love"].recipe.reason
    for t in VOCAB.terms:
        if t.category == "love":
            assert set(t.recipe.basic) <= {"happy", "sad"} and max(t.recipe.basic.values()) <= 0.6, t.term


def test_words_that_name_a_basic_expression_are_its_full_prototype():
    for term, label in [("joy", "happy"), ("happiness", "happy"), ("surprise", "surprised"), ("anger", "angry"),
                        ("sadness", "sad"), ("fear", "fearful"), ("disgust", "disgusted")]:
        assert ROWS[term].recipe.basic == {label: 1.0} and not ROWS[term].recipe.aus
    for word, label in LABEL_SYNONYMS.items():  # a synonym that is also a term gives the same face
        if word in ROWS:
            assert resolve(word).basic == {label: 1.0}


@pytest.mark.parametrize("label,ladder", [
    ("angry", ["annoyance", "aggravation", "hostility", "anger", "rage"]),
    ("happy", ["contentment", "gladness", "pleasure", "elation"]),
    ("sad", ["melancholy", "unhappiness", "sorrow", "grief"]),
    ("fearful", ["nervousness", "anxiety", "dread", "terror"]),
    ("disgusted", ["dislike", "contempt", "loathing", "disgust"]),
])
def test_intensity_ladders(label, ladder):
    levels = [ROWS[t].recipe.basic[label] for t in ladder]
    assert levels == sorted(levels) and levels[0] < levels[-1], dict(zip(ladder, levels))


def test_examples_from_the_brief():
    assert ROWS["annoyance"].recipe.basic == {"angry": 0.3}
    assert ROWS["rage"].recipe.basic == {"angry": 1.0}
    assert ROWS["contentment"].recipe.basic == {"happy": 0.4}
    assert ROWS["elation"].recipe.basic == {"happy": 1.0, "surprised": 0.2}


# --- resolver ------------------------------------------------------------------------------------


def test_basic_labels_and_synonyms():
    for label in BASIC:
        assert resolve(label).basic == {label: 1.0}
    for word, label in {"smile": "happy", "smiling": "happy", "afraid": "fearful", "scared": "fearful",
                        "calm": "neutral", "Sadness": "sad", "surprise": "surprised"}.items():
        assert resolve(word).basic == {label: 1.0}, word


def test_word_forms_point_at_terms():
    for word, term in WORD_FORMS.items():
        assert term in ROWS and word not in ROWS and word not in BASIC, word
    assert resolve("furious").basic == ROWS["fury"].recipe.basic
    assert "fury" in resolve("furious").source


def test_compounds_mix_both_labels_symmetrically():
    for adverb, first in ADVERBS.items():
        for second in BASIC[1:]:
            if second == first:
                with pytest.raises(MienError, match="twice"):
                    resolve(f"{adverb} {second}")
                continue
            r = resolve(f"{adverb} {second}")
            assert r.basic == {first: COMPOUND_LEVEL, second: COMPOUND_LEVEL} and not r.aus
            assert "Du, Tao & Martinez" in r.source
            assert ("did not study" in r.source) == (frozenset((first, second)) not in DU_PAIRS)
    assert resolve("happily surprised").basic == resolve("Surprisedly-happy").basic
    assert resolve("sadly afraid").basic == {"sad": 0.6, "fearful": 0.6}


def test_recipe_strings():
    r = resolve("happy:0.7+surprised:0.3")
    assert r.basic == {"happy": 0.7, "surprised": 0.3} and r.aus == {} and r.source == "recipe typed by the user"
    r = resolve("happy:0.4 + AU6=1.5 + au26:2")
    assert r.basic == {"happy": 0.4} and r.aus == {"AU6": 1.5, "AU26": 2.0}
    assert resolve("AU12:3").basic == {} and resolve("sad+angry:0.5").basic == {"sad": 1.0, "angry": 0.5}


@pytest.mark.parametrize("text,match", [
    ("happy:1.5", "from 0 to 1"), ("AU12:6", "from 0 to 5"), ("happy:nan", "from 0 to 1"), ("happy:x", "from 0 to 1"),
    ("happy:0.3+happy:0.2", "twice"), ("AU12", "needs a level"), ("AU13:2", "unknown Action Unit"),
    ("elation:0.5", "not a basic expression"), ("happy+", "empty part"),
])
def test_bad_recipe_strings(text, match):
    with pytest.raises(MienError, match=match):
        resolve(text)


@pytest.mark.parametrize("typo,expected", [("hapy", "happy"), ("joyfull", "joyful"), ("elaton", "elation"),
                                           ("happyly surprised", "happily surprised"), ("angy", "angry")])
def test_unknown_words_get_suggestions(typo, expected):
    with pytest.raises(MienError) as e:
        resolve(typo)
    msg = str(e.value)
    assert f"did you mean {expected}" in msg and "mien expressions --terms" in msg and "\n" not in msg
    assert 1 <= len(VOCAB.suggestions(typo)) <= 3


def test_unknown_word_without_suggestions_still_points_to_the_list():
    with pytest.raises(MienError, match=r"unknown expression 'xyzzy'; `mien expressions`"):
        resolve("xyzzy")
    with pytest.raises(MienError, match="no expression given"):
        resolve("   ")


# --- broken data files ---------------------------------------------------------------------------


def _text_with(row_index: int, **changes) -> str:
    with open(_resource_path(), newline="") as f:
        rows = list(csv.DictReader(f))
    rows[row_index].update(changes)
    out = [",".join(rows[0].keys())]
    out += [",".join(f'"{v}"' for v in r.values()) for r in rows]
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("changes,match", [
    ({"recipe": "happy:1.2"}, "from 0 to 1"),
    ({"recipe": "joyful:0.5"}, "not a basic expression"),
    ({"recipe": "happy:0.5+AU7:2"}, "unknown Action Unit"),
    ({"recipe": "AU12:2"}, "at least one basic expression"),
    ({"term": "love"}, "duplicate term"),
    ({"category": "awe"}, "unknown category"),
    ({"reason": ""}, "reason is empty"),
])
def test_broken_file_names_the_row(changes, match):
    with pytest.raises(MienError, match=rf"vocabulary.csv line 3 \(.*\): .*{match}"):
        Vocabulary.parse(_text_with(1, **changes))


def test_broken_file_wrong_count_or_header():
    text = _text_with(0)
    with pytest.raises(MienError, match="134 terms, expected 135"):
        Vocabulary.parse(text.rsplit("\n", 2)[0] + "\n")
    with pytest.raises(MienError, match="header"):
        Vocabulary.parse(text.replace("recipe,reason", "mix,reason", 1))
    assert len(Vocabulary.parse(text)) == 135


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_overview_and_term():
    p = mien("expressions")
    assert p.returncode == 0 and all(label in p.stdout for label in BASIC) and "--terms" in p.stdout
    p = mien("expressions", "elation")
    assert p.returncode == 0, p.stderr
    assert "happy:1+surprised:0.2" in p.stdout and "source:" in p.stdout and "why:" in p.stdout


def test_cli_tables():
    p = mien("expressions", "--terms", "--aus")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert sum(1 for line in lines if line.split()[:1] and line.split()[0] in ROWS) >= 135
    assert "rage" in p.stdout and "angry:1+AU5:3+AU26:2" in p.stdout
    for au in AU_NAMES:
        assert any(line.startswith(au + " ") for line in lines), au
    assert "mouthSmileLeft" in p.stdout


def test_cli_unknown_term_is_one_line_error():
    p = mien("expressions", "hapy")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0 and "did you mean happy" in p.stderr


def test_cli_expressions_does_not_import_torch():
    # `mien expressions` only reads names and small JSON/CSV files; importing torch (seconds) is a regression.
    code = (
        "import contextlib, io, sys\n"
        "from mien.cli.main import main\n"
        "for argv in (['expressions'], ['expressions', 'happy'], ['expressions', 'happily', 'surprised'],\n"
        "             ['expressions', 'happy:0.5+AU6:2'], ['expressions', '--terms', '--aus']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(argv) == 0, argv\n"
        "    assert 'torch' not in sys.modules, argv\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_blendshape_names_are_reexported_by_the_model_module():
    from mien.face.blendshape_names import BLENDSHAPE_NAMES
    from mien.models.blendshapes import BLENDSHAPE_NAMES as reexported

    assert reexported is BLENDSHAPE_NAMES and len(BLENDSHAPE_NAMES) == 52
