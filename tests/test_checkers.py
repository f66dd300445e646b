"""Hand-written cases for the offline IFEval checkers in stages/lib/checkers.py."""
from __future__ import annotations

import pytest

from stages.lib.checkers import (
    SUPPORTED_IDS,
    Score,
    UnknownInstructionError,
    accuracy,
    check_loose,
    check_strict,
    score,
    sentences,
    validate_kwargs,
    words,
)
from stages.lib.errors import UserError

# (instruction id, kwargs, a response that passes strictly, a response that fails strictly and loosely)
CASES = [
    ("keywords:existence", {"keywords": ["river", "Bridge"]},
     "We crossed the BRIDGE over the river.", "We crossed the bridge over the road."),
    ("keywords:frequency", {"keyword": "tea", "frequency": 3, "relation": "at least"},
     "Tea first, tea second, and tea again.", "Tea first, tea second, then coffee."),
    ("keywords:frequency", {"keyword": "tea", "frequency": 2, "relation": "less than"},
     "Just one cup of tea.", "Tea and more tea."),
    ("keywords:forbidden_words", {"forbidden_words": ["cat", "dog"]},
     "A category of birds.", "My Dog sleeps all day."),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "at least"},
     "Zany jazz.", "Zero fun."),
    ("keywords:letter_frequency", {"letter": "e", "let_frequency": 3, "let_relation": "less than"},
     "Blue sky.", "Everyone here."),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "Dr. Smith arrived. She sat down.", "One. Two. Three."),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"},
     "It rained! Was it cold?", "Mr. Brown ate e.g. apples and pears."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2},
     "First paragraph.\n\n***\n\nSecond paragraph.\n", "First.\n\n***\n\n***\n\nThird."),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "Don't stop now, friend.", "One two three four five."),
    ("length_constraints:number_words", {"num_words": 4, "relation": "at least"},
     "Paris is very pretty.", "Paris is pretty."),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "Summer"},
     "Spring is mild.\n\n\"Summer's heat is strong.\"", "Spring is mild.\n\nWinter is cold."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2},
     "Send it to [name] at [address].", "Send it to [name]; see [the docs](https://example.com)."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."},
     "Thanks for reading.\n\nP.S. Bring snacks.", "Thanks for reading. PS bring snacks."),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"},
     "Hi.\n\np.p.s see you", "Hi.\n\nP.S. see you"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2},
     "Shopping:\n* milk\n  - eggs\n", "Shopping:\n* milk\n* eggs\n* bread\n---\n*note* done"),
    ("detectable_format:constrained_response", {},
     "My answer is maybe.", "My answer is probably."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "This is *important* and **urgent**.", "* item one *\n* item two\nOnly *one*."),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nIntro.\nSECTION 2\nBody.", "Section 1\nIntro.\nSection 2\nBody."),
    ("detectable_format:json_format", {},
     '```json\n{"a": [1, 2]}\n```', '{"a": 1,}'),
    ("detectable_format:title", {},
     "<<Ode to Rain>>\nRain falls.", "<< >>\nRain falls."),
    ("combination:two_responses", {},
     "First answer.\n******\nSecond answer.", "Same answer.\n******\nSame answer."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a haiku about the sea."},
     "write a haiku about the sea. Waves fold into foam.", "Here is a haiku about the sea."),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "That is all. any other questions?", "Any other questions? That is all."),
    ("startend:quotation", {},
     '"Wrapped in quotes."', 'Not "wrapped" in quotes.'),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "The NASA and ESA teams met.", "The NASA team met."),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "The NASA team met.", "NASA and ESA met."),
    ("change_case:english_capital", {},
     "HELLO WORLD, 2024!", "HELLO World"),
    ("change_case:english_lowercase", {},
     "hello world, 2024!", "hello World"),
    ("punctuation:no_comma", {},
     "No commas here. None at all.", "Well, here is one."),
]


def _case_id(case):
    return f"{case[0]}|{case[1]}"


def test_every_supported_id_has_cases():
    assert {case[0] for case in CASES} == SUPPORTED_IDS


def test_language_detection_is_not_supported():
    assert "language:response_language" not in SUPPORTED_IDS
    assert len(SUPPORTED_IDS) == 24


@pytest.mark.parametrize("instruction_id,kwargs,good,bad", CASES, ids=map(_case_id, CASES))
def test_passing_response(instruction_id, kwargs, good, bad):
    assert check_strict(instruction_id, good, kwargs)
    assert check_loose(instruction_id, good, kwargs)


@pytest.mark.parametrize("instruction_id,kwargs,good,bad", CASES, ids=map(_case_id, CASES))
def test_failing_response(instruction_id, kwargs, good, bad):
    assert not check_strict(instruction_id, bad, kwargs)
    assert not check_loose(instruction_id, bad, kwargs)


@pytest.mark.parametrize("blank", ["", "   ", "\n\n\t "])
@pytest.mark.parametrize("instruction_id,kwargs,good,bad", CASES, ids=map(_case_id, CASES))
def test_blank_response_fails_everything(instruction_id, kwargs, good, bad, blank):
    # Even "less than" relations, forbidden words and no_comma fail on an empty response.
    assert not check_strict(instruction_id, blank, kwargs)
    assert not check_loose(instruction_id, blank, kwargs)


TRAILING_WHITESPACE = [
    ("startend:end_checker", {"end_phrase": "Is there anything else?"}, "Done. Is there anything else?  \n\n"),
    ("startend:quotation", {}, '"All quoted."\n \n'),
    ("detectable_format:json_format", {}, '\n{"ok": true}\n\n  '),
    ("detectable_format:json_format", {}, '```json\n{"ok": true}\n```\n'),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "\n  Say hi. Hi!\n"),
]


@pytest.mark.parametrize("instruction_id,kwargs,response", TRAILING_WHITESPACE, ids=[c[0] for c in TRAILING_WHITESPACE])
def test_surrounding_whitespace_is_ignored(instruction_id, kwargs, response):
    assert check_strict(instruction_id, response, kwargs)


# Responses that fail strictly but pass one of IFEval's loose variants.
LOOSE_ONLY = [
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "That is all. **Any other questions?**"),
    ("startend:quotation", {}, 'Sure, here it is:\n"A quoted reply."'),
    ("detectable_format:json_format", {}, 'Sure, here it is:\n{"a": 1}'),
    ("detectable_format:json_format", {}, '{"a": 1}\nHope this helps!'),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Name a colour."},
     "Sure, here it is:\nName a colour. Blue."),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "rain"},
     "Sure, here it is:\n\nRain falls.\n\nIt stops."),
    ("change_case:english_lowercase", {}, "Sure, here it is:\nall lower case."),
    ("punctuation:no_comma", {}, "Sure, here it is:\nno commas below."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 1}, "One.\n\n***\n\nTwo."),
]


@pytest.mark.parametrize("instruction_id,kwargs,response", LOOSE_ONLY, ids=[c[0] for c in LOOSE_ONLY])
def test_loose_passes_where_strict_fails(instruction_id, kwargs, response):
    assert not check_strict(instruction_id, response, kwargs)
    assert check_loose(instruction_id, response, kwargs)


def test_end_checker_ignores_case_and_wrapping_quotes():
    kw = {"end_phrase": "Is there anything else I can help with?"}
    assert check_strict("startend:end_checker", '"Done. IS THERE ANYTHING ELSE I CAN HELP WITH?"\n', kw)
    assert check_strict("startend:quotation", '"Done. IS THERE ANYTHING ELSE I CAN HELP WITH?"\n', {})


@pytest.mark.parametrize(
    "instruction_id,response,expected",
    [
        ("change_case:english_capital", "ÉTÉ À PARIS", True),
        ("change_case:english_capital", "Été À PARIS", False),
        ("change_case:english_capital", "STRAßE", True),  # ß has no one-letter capital form
        ("change_case:english_capital", "ΣΟΦΊΑ", True),
        ("change_case:english_capital", "ΣΟΦΊα", False),
        ("change_case:english_capital", "123 !!", False),  # no letters at all
        ("change_case:english_lowercase", "straße und café", True),
        ("change_case:english_lowercase", "STRAẞE", False),
        ("change_case:english_lowercase", "istanbul İzmir", False),
        ("change_case:english_lowercase", "東京 tokyo", True),
        ("change_case:english_lowercase", "東京", False),  # no cased letter
    ],
)
def test_unicode_case(instruction_id, response, expected):
    assert check_strict(instruction_id, response, {}) is expected


def test_unicode_words_and_capital_words():
    assert words("l'été à Zürich, don't—हिन्दी भाषा") == ["l'été", "à", "Zürich", "don't", "हिन्दी", "भाषा"]
    assert words("well-known 3.14 'quoted'") == ["well", "known", "3", "14", "quoted"]
    kw = {"capital_frequency": 2, "capital_relation": "at least"}
    assert check_strict("change_case:capital_word_frequency", "ÉCOLE and STRAßE", kw)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Hello Mr. Smith. How are you? Fine!", ["Hello Mr. Smith.", "How are you?", "Fine!"]),
        ("Use e.g. apples. Pi is 3.14 here.", ["Use e.g. apples.", "Pi is 3.14 here."]),
        ("J. R. R. Tolkien wrote it. The U.S. Army read it.", ["J. R. R. Tolkien wrote it.", "The U.S. Army read it."]),
        ("1. Mix flour.\n2. Bake it.", ["1. Mix flour.", "2. Bake it."]),
        ("A Title\n\nFirst line. Wait...", ["A Title", "First line.", "Wait..."]),
        ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
        ("**Done.** Next one\n***", ["**Done.**", "Next one\n***"]),
        ("他来了。她走了！", ["他来了。", "她走了！"]),
        ("", []),
    ],
)
def test_sentence_splitting(text, expected):
    assert sentences(text) == expected


def test_unknown_id_raises():
    for call in (
        lambda: check_strict("language:response_language", "Hi.", {"language": "en"}),
        lambda: check_loose("keywords:nonexistent", "Hi.", {}),
        lambda: validate_kwargs("keywords:nonexistent", {}),
        lambda: score("Hi.", ["keywords:nonexistent"], [{}]),
    ):
        with pytest.raises(UnknownInstructionError, match="not supported"):
            call()
    assert issubclass(UnknownInstructionError, UserError)


@pytest.mark.parametrize(
    "instruction_id,kwargs,key",
    [
        ("keywords:existence", {}, "keywords"),
        ("keywords:existence", {"keywords": "river"}, "keywords"),
        ("keywords:existence", {"keywords": []}, "keywords"),
        ("keywords:frequency", {"keyword": "tea", "frequency": 2, "relation": "more than"}, "relation"),
        ("keywords:frequency", {"keyword": "tea", "frequency": "2", "relation": "at least"}, "frequency"),
        ("keywords:letter_frequency", {"letter": "ab", "let_frequency": 1, "let_relation": "at least"}, "letter"),
        ("length_constraints:number_words", {"num_words": 0, "relation": "at least"}, "num_words"),
        ("length_constraints:number_words", {"num_words": True, "relation": "at least"}, "num_words"),
        ("length_constraints:number_words", {"num_words": 10}, "relation"),
        ("length_constraints:nth_paragraph_first_word",
         {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "x"}, "nth_paragraph"),
        ("detectable_content:postscript", {"postscript_marker": "  "}, "postscript_marker"),
        ("combination:repeat_prompt", {"prompt_to_repeat": None}, "prompt_to_repeat"),
        ("punctuation:no_comma", {"num_words": 10}, "num_words"),
    ],
)
def test_validate_kwargs_names_the_key(instruction_id, kwargs, key):
    with pytest.raises(UserError) as err:
        validate_kwargs(instruction_id, kwargs)
    assert not isinstance(err.value, UnknownInstructionError)
    assert instruction_id in str(err.value) and repr(key) in str(err.value)
    with pytest.raises(UserError):
        check_strict(instruction_id, "Some response.", kwargs)


def test_validate_kwargs_accepts_ifeval_rows():
    # IFEval rows carry every kwarg name with None for the unused ones; integral floats come from pandas.
    row = {"num_words": 3.0, "relation": "at least", "keywords": None, "language": None, "end_phrase": None}
    validate_kwargs("length_constraints:number_words", row)
    validate_kwargs("punctuation:no_comma", {"keywords": None})
    validate_kwargs("detectable_format:title", None)
    assert check_strict("length_constraints:number_words", "one two three", row)


def test_score_and_accuracy_hand_computed():
    ids = ["punctuation:no_comma", "startend:end_checker", "keywords:existence"]
    kws = [{}, {"end_phrase": "Bye."}, {"keywords": ["tea"], "language": None}]
    first = score("I like tea.\n**Bye.**", ids, kws)  # end_checker fails strictly, passes loosely
    assert first == Score(strict=(True, False, True), loose=(True, True, True))
    assert (first.prompt_strict, first.prompt_loose) == (False, True)
    assert first.strict_fraction == pytest.approx(2 / 3)

    second = score("Coffee, please.", ids[:1], kws[:1])  # comma: fails both ways
    assert second == Score(strict=(False,), loose=(False,))
    third = score("Tea time.", ["keywords:existence"], [{"keywords": ["tea"]}])
    assert third == Score(strict=(True,), loose=(True,))
    empty = score("   ", [], [])
    assert empty.prompt_strict and empty.strict_fraction == 1.0

    result = accuracy([first, second, third])
    assert result == pytest.approx(
        {
            "prompt_strict": 1 / 3,  # only the third
            "prompt_loose": 2 / 3,  # first and third
            "instruction_strict": 3 / 5,  # 2 + 0 + 1 of 5
            "instruction_loose": 4 / 5,  # 3 + 0 + 1 of 5
        }
    )


def test_score_and_accuracy_reject_bad_input():
    with pytest.raises(UserError, match="align"):
        score("Hi.", ["punctuation:no_comma"], [])
    with pytest.raises(UserError, match="no scores"):
        accuracy([])


def test_a_long_correct_answer_passes():
    """The original scored correct answers longer than 500 characters as failures, which made a fake lift.
    Only what the instructions ask is checked: a 3,000-character answer that obeys them passes."""
    body = " ".join(["the river runs past the old mill and on toward the sea"] * 50)
    response = f"{body}.\np.s. that is all."
    assert len(response) > 2500
    ids = ["punctuation:no_comma", "change_case:english_lowercase", "detectable_content:postscript",
           "length_constraints:number_words"]
    kws = [{}, {}, {"postscript_marker": "P.S."}, {"num_words": 300, "relation": "at least"}]
    assert score(response, ids, kws) == Score(strict=(True,) * 4, loose=(True,) * 4)
