"""Offline checkers for IFEval's verifiable instructions, scored as IFEval scores them.

Ids and kwargs names follow IFEval (google-research/instruction_following_eval), and so, by default
(``scoring="ifeval"``), does every definition: words are runs of ``\\w`` ("don't" is two words),
sentences are NLTK's English Punkt sentences, capital words are ``nltk.word_tokenize`` tokens written in
capitals, markdown elements are found by IFEval's regular expressions, and the English and
response-language checks ask langdetect (seeded, so the answer repeats). NLTK's and langdetect's part
lives in ``ifeval_text``; the README lists what still differs from IFEval and why.

``scoring="markdown"`` keeps this project's earlier, stricter reading of the same instructions: words
keep their apostrophes, a blank line ends a sentence, and bullets, highlights, placeholders and
``***`` dividers must be markdown ones (a line ``*Note* text`` is not a bullet). The language checks
are the same in both modes.

Strict and loose follow IFEval's definitions. A response that is empty or only whitespace fails
every instruction, strict and loose (IFEval's evaluation skips such responses as not following).
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import ifeval_text
from .errors import UserError

SCORING_MODES = ("ifeval", "markdown")


class UnknownInstructionError(UserError):
    """An instruction id we have no checker for; it is never silently passed."""


def _mode(scoring: str) -> str:
    if scoring not in SCORING_MODES:
        raise UserError(f"scoring must be one of {list(SCORING_MODES)}, got {scoring!r}")
    return scoring


# ---------------------------------------------------------------------------------------------------
# Text units


def words(text: str, *, scoring: str = "ifeval") -> list[str]:
    """The words ``number_words`` counts. IFEval: every run of ``\\w`` characters, so "don't" and
    "well-known" are two words each. Markdown: see ``_markdown_words``."""
    if _mode(scoring) == "markdown":
        return _markdown_words(text)
    return re.findall(r"\w+", text)


def sentences(text: str, *, scoring: str = "ifeval") -> list[str]:
    """The sentences ``number_sentences`` counts. IFEval: NLTK's English Punkt model, which ends a
    sentence at . ! ? only (a blank line alone does not) and knows its abbreviations ("Mr.", "U.S.").
    Markdown: see ``_markdown_sentences``."""
    if _mode(scoring) == "markdown":
        return _markdown_sentences(text)
    return ifeval_text.punkt_sentences(text)


# Markdown-mode words: a run of letters or digits (any script), with apostrophes allowed inside it, so
# "don't" and "l'été" are one word each. Combining marks stay inside the word they follow: a regex \w
# does not match them and would cut e.g. Hindi words apart at their vowel signs.
_APOSTROPHES = "'’"


def _markdown_words(text: str) -> list[str]:
    text = unicodedata.normalize("NFC", text)
    found, current = [], []
    for i, c in enumerate(text):
        inside = bool(current) and (
            unicodedata.category(c).startswith("M")
            or (c in _APOSTROPHES and i + 1 < len(text) and text[i + 1].isalnum())
        )
        if c.isalnum() or inside:
            current.append(c)
        elif current:
            found.append("".join(current))
            current = []
    if current:
        found.append("".join(current))
    return found


# Markdown-mode sentences, a small rule of our own: a sentence ends at a run of . ! ? (or …) followed
# by whitespace or the end of the text (closing quotes, brackets and markdown emphasis may sit in
# between), at a CJK full stop, or at a blank line (a paragraph break ends a sentence even without
# punctuation, so a title line is not glued to the next sentence). Decimals ("3.14") never split
# because no whitespace follows the point. A lone "." does not end a sentence after a common title or
# Latin abbreviation ("Mr.", "Dr.", "vs."), a dotted abbreviation ("e.g.", "i.e.", "U.S.", "a.m."), a
# capital initial ("J. Smith") or a list number at the start of a line ("1. Mix"). Rarer cases (e.g.
# "etc." mid-sentence) may over-count by one. Fragments without a letter or digit (a stray "***" or
# "—") are not sentences.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]*_]*(?=\s|$)|[。！？]+|\n[ \t]*\n")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "cf", "approx", "fig"})
_DOTTED = re.compile(r"[^\W\d_](?:\.[^\W\d_])+")
_LIST_NUMBER = re.compile(r"[ \t]*\d+")
_HAS_WORD_CHAR = re.compile(r"[^\W_]")


def _is_abbreviation(text: str, end: re.Match) -> bool:
    if end.group().rstrip("\"'”’)]*_") != ".":
        return False
    # Look back at most 32 characters on the current line: abbreviations are short, and a bounded
    # look-back keeps splitting linear in the text's length.
    window = max(0, end.start() - 32)
    newline = text.rfind("\n", window, end.start())
    tail = text[newline + 1 if newline >= 0 else window : end.start()]
    if (newline >= 0 or window == 0) and _LIST_NUMBER.fullmatch(tail):
        return True
    tokens = tail.split()
    if not tokens:
        return False
    token = tokens[-1].lstrip("\"'“‘([*_")
    return token.lower() in _ABBREVIATIONS or bool(_DOTTED.fullmatch(token)) or (len(token) == 1 and token.isupper())


def _markdown_sentences(text: str) -> list[str]:
    pieces, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        if not _is_abbreviation(text, end):
            pieces.append(text[start : end.end()])
            start = end.end()
    pieces.append(text[start:])
    return [p.strip() for p in pieces if _HAS_WORD_CHAR.search(p)]


# Case of unicode letters, markdown mode. A letter counts against "all capitals" if it has a
# one-character capital form other than itself; letters without one (German "ß", ligatures like "ﬁ")
# are tolerated, since all-caps text conventionally keeps them. A letter counts against "all
# lowercase" if it changes when lowercased. Uncased scripts (CJK, digits) are neutral, but at least
# one cased letter is required, as with str.isupper (which is IFEval's test).


def _all_capitals(text: str) -> bool:
    if any(c.upper() != c and len(c.upper()) == 1 for c in text):
        return False
    return any(c.lower() != c for c in text)


def _all_lowercase(text: str) -> bool:
    return all(c.lower() == c for c in text) and any(c.upper() != c for c in text)


def _compare(count: int, relation: str, n: int) -> bool:
    return count < n if relation == "less than" else count >= n


def _in_language(text: str, language: str) -> bool:
    # As in IFEval, a text langdetect finds nothing in (no letters) is given the benefit of the doubt.
    return ifeval_text.detect_language(text) in (language, None)


# ---------------------------------------------------------------------------------------------------
# Checkers: each takes the response and the validated kwargs (only its own keys) and returns a bool.
# Where the two modes differ, the IFEval reading comes first and the markdown one follows, prefixed
# _md. The empty-response rule is applied once, in check_strict, not here.


def _keywords_existence(r: str, kw: dict) -> bool:
    # A keyword is a case-insensitive substring ("dog" is found in "dogs").
    return all(re.search(re.escape(k), r, re.IGNORECASE) for k in kw["keywords"])


def _keywords_frequency(r: str, kw: dict) -> bool:
    count = len(re.findall(re.escape(kw["keyword"].strip()), r, re.IGNORECASE))
    return _compare(count, kw["relation"], kw["frequency"])


def _forbidden_words(r: str, kw: dict) -> bool:
    # Whole words only, between regex word boundaries ("cat" is not found in "category").
    return not any(re.search(rf"\b{re.escape(w)}\b", r, re.IGNORECASE) for w in kw["forbidden_words"])


def _md_forbidden_words(r: str, kw: dict) -> bool:
    # Not next to a word character: unlike \b, this also finds words that start or end with a symbol ("c++").
    return not any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", r, re.IGNORECASE) for w in kw["forbidden_words"])


def _letter_frequency(r: str, kw: dict) -> bool:
    # Any single character, case-insensitive: IFEval's own prompts count "#" and "!".
    return _compare(r.lower().count(kw["letter"].lower()), kw["let_relation"], kw["let_frequency"])


def _number_sentences(r: str, kw: dict) -> bool:
    return _compare(len(sentences(r)), kw["relation"], kw["num_sentences"])


def _md_number_sentences(r: str, kw: dict) -> bool:
    return _compare(len(_markdown_sentences(r)), kw["relation"], kw["num_sentences"])


def _divided_into(pieces: list[str], n: int) -> bool:
    # Blank pieces at either end (a divider first or last) are ignored; a blank one in between fails.
    blank = [not p.strip() for p in pieces]
    if any(blank[1:-1]):
        return False
    return len(pieces) - blank[0] - (len(pieces) > 1 and blank[-1]) == n


# IFEval's divider is three asterisks anywhere, taking one whitespace character on each side with
# them, so "***bold***" divides too. The markdown divider stands alone between whitespace.
_IFEVAL_DIVIDER = re.compile(r"\s?\*\*\*\s?")
_DIVIDER = re.compile(r"(?<!\S)\*\*\*(?!\S)")


def _number_paragraphs(r: str, kw: dict) -> bool:
    return _divided_into(_IFEVAL_DIVIDER.split(r), kw["num_paragraphs"])


def _md_number_paragraphs(r: str, kw: dict) -> bool:
    return _divided_into(_DIVIDER.split(r), kw["num_paragraphs"])


def _number_words(r: str, kw: dict) -> bool:
    return _compare(len(words(r)), kw["relation"], kw["num_words"])


def _md_number_words(r: str, kw: dict) -> bool:
    return _compare(len(_markdown_words(r)), kw["relation"], kw["num_words"])


_FIRST_WORD_STOPS = frozenset(".,?!'\"")


def _nth_paragraph_first_word(r: str, kw: dict) -> bool:
    # IFEval: paragraphs are what "\n\n" separates, and blank ones are not counted, but the nth is
    # picked from all of them (a blank one there fails). Its first word is its first
    # whitespace-separated token, with leading single and then double quotes dropped, read up to the
    # first . , ? ! ' or " and lowercased: "Booster-like" is "booster-like", "**Summer**" stays starred.
    paragraphs = r.split("\n\n")
    count = sum(1 for p in paragraphs if p.strip())
    nth = kw["nth_paragraph"]
    if nth > count or not paragraphs[nth - 1].strip():
        return False
    token = paragraphs[nth - 1].split()[0].lstrip("'").lstrip('"')
    first = ""
    for c in token:
        if c in _FIRST_WORD_STOPS:
            break
        first += c.lower()
    return count == kw["num_paragraphs"] and first == kw["first_word"].lower()


def _first_word(text: str) -> str:
    # Markdown mode: the first run of letters/digits, lowercased: leading quotes, markdown ("**", "#")
    # and anything after an apostrophe or hyphen are ignored, so "**Summer's**" starts with "summer".
    match = re.search(r"[^\W_]+", unicodedata.normalize("NFC", text))
    return match.group().lower() if match else ""


def _md_nth_paragraph_first_word(r: str, kw: dict) -> bool:
    # Paragraphs are separated by blank lines (lines holding only whitespace count as blank).
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", r) if p.strip()]
    if len(paragraphs) != kw["num_paragraphs"] or kw["nth_paragraph"] > len(paragraphs):
        return False
    return _first_word(paragraphs[kw["nth_paragraph"] - 1]) == _first_word(kw["first_word"])


def _number_placeholders(r: str, kw: dict) -> bool:
    # IFEval: anything in square brackets on one line, even "[]" or a markdown link's "[text]".
    return len(re.findall(r"\[.*?\]", r)) >= kw["num_placeholders"]


def _md_number_placeholders(r: str, kw: dict) -> bool:
    # [address], [name]: square brackets around non-blank text on one line; a markdown link's
    # "[text](url)" is not a placeholder.
    found = [p for p in re.findall(r"\[([^\[\]\n]+)\](?!\()", r) if p.strip()]
    return len(found) >= kw["num_placeholders"]


def _postscript(r: str, kw: dict) -> bool:
    # IFEval: the marker anywhere, case-insensitive. Its two standard markers may have one whitespace
    # character after each inner dot ("P. S." is "P.S."); any other marker is matched as written.
    marker = kw["postscript_marker"].strip()
    if marker == "P.P.S":
        pattern = r"p\.\s?p\.\s?s"
    elif marker == "P.S.":
        pattern = r"p\.\s?s\."
    else:
        pattern = re.escape(marker.lower())
    return re.search(pattern, r.lower()) is not None


def _md_postscript(r: str, kw: dict) -> bool:
    # The marker anywhere, case-insensitive, a space allowed after each of its dots.
    pattern = re.escape(kw["postscript_marker"].strip().lower()).replace(r"\.", r"\.\s?")
    return re.search(pattern, r.lower()) is not None


# IFEval's bullets: a line whose first non-space character is "*" followed by anything but another
# "*" (so "*Note* text" is a bullet and "**Bold**" is not), or "-" followed by anything (so "---" is
# one). Its leading \s* may run across blank lines; a lone "*" line swallows the line after it.
_STAR_BULLET = re.compile(r"^\s*\*[^*].*$", re.MULTILINE)
_DASH_BULLET = re.compile(r"^\s*-.*$", re.MULTILINE)


def _number_bullet_lists(r: str, kw: dict) -> bool:
    return len(_STAR_BULLET.findall(r)) + len(_DASH_BULLET.findall(r)) == kw["num_bullets"]


def _md_number_bullet_lists(r: str, kw: dict) -> bool:
    # Markdown bullets: a line starting (after indentation) with "* " or "- " and some text; "---" rules
    # and "*emphasis*" at a line start are not bullets.
    return len(re.findall(r"^[ \t]*[*-][ \t]+\S", r, re.MULTILINE)) == kw["num_bullets"]


_CONSTRAINED = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _constrained_response(r: str, kw: dict) -> bool:
    # As in IFEval, the response contains one of the options verbatim.
    return any(option in r for option in _CONSTRAINED)


def _number_highlighted_sections(r: str, kw: dict) -> bool:
    # IFEval: *text* and **text** within a line, counted by two separate scans whose hits must hold
    # more than asterisks and spaces; "**bold**" counts once, "* item *" counts.
    single = [h for h in re.findall(r"\*[^\n*]*\*", r) if h[1:-1].strip()]
    double = [h for h in re.findall(r"\*\*[^\n*]*\*\*", r) if h[2:-2].strip()]
    return len(single) + len(double) >= kw["num_highlights"]


# Markdown emphasis within one line: the text inside must not start or end with a space, so
# "* item *" in a bullet line is not a highlight.
_HIGHLIGHT = re.compile(r"\*\*(?!\s)[^\n*]+?(?<!\s)\*\*|\*(?!\s)[^\n*]+?(?<!\s)\*")


def _md_number_highlighted_sections(r: str, kw: dict) -> bool:
    return len(_HIGHLIGHT.findall(r)) >= kw["num_highlights"]


def _multiple_sections(r: str, kw: dict) -> bool:
    # IFEval: the splitter word, case-sensitive, then at most one whitespace character and a number.
    marks = re.findall(re.escape(kw["section_spliter"].strip()) + r"\s?\d+", r)
    return len(marks) >= kw["num_sections"]


def _md_multiple_sections(r: str, kw: dict) -> bool:
    marks = re.findall(re.escape(kw["section_spliter"].strip()) + r"\s*\d+", r)
    return len(marks) >= kw["num_sections"]


def _json_format(r: str, kw: dict) -> bool:
    # IFEval: one markdown fence may wrap the JSON; its opening may say json, Json or JSON.
    text = r.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    return _parses_as_json(text.removesuffix("```").strip())


def _md_json_format(r: str, kw: dict) -> bool:
    text = re.sub(r"^```(?:json)?", "", r.strip(), flags=re.IGNORECASE)
    return _parses_as_json(re.sub(r"```$", "", text).strip())


def _parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _title(r: str, kw: dict) -> bool:
    # IFEval: from "<<" to the last ">>" on the line, holding more than angle brackets and spaces.
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", r))


def _md_title(r: str, kw: dict) -> bool:
    return any(t.strip() for t in re.findall(r"<<([^\n]*?)>>", r))


def _two_responses(r: str, kw: dict) -> bool:
    # Like IFEval: split on "******"; empty pieces at the ends are ignored, an empty piece between fails,
    # and there must be exactly two pieces that differ.
    pieces = r.split("******")
    kept = []
    for i, piece in enumerate(pieces):
        if piece.strip():
            kept.append(piece.strip())
        elif 0 < i < len(pieces) - 1:
            return False
    return len(kept) == 2 and kept[0] != kept[1]


def _repeat_prompt(r: str, kw: dict) -> bool:
    return r.strip().lower().startswith(kw["prompt_to_repeat"].strip().lower())


def _end_checker(r: str, kw: dict) -> bool:
    # As in IFEval, double quotes around the whole response are ignored (so it can also pass
    # startend:quotation), but a space left inside them is not.
    return r.strip().strip('"').lower().endswith(kw["end_phrase"].strip().lower())


def _md_end_checker(r: str, kw: dict) -> bool:
    return r.strip().strip('"').strip().lower().endswith(kw["end_phrase"].strip().lower())


def _quotation(r: str, kw: dict) -> bool:
    text = r.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def _capital_word_frequency(r: str, kw: dict) -> bool:
    # IFEval: nltk.word_tokenize's tokens that are upper case: "WELL-KNOWN" and "U.S." are one each,
    # "I'm" gives the capital word "I", "DON'T" gives two ("DO", "N'T").
    count = sum(1 for token in ifeval_text.word_tokens(r) if token.isupper())
    return _compare(count, kw["capital_relation"], kw["capital_frequency"])


def _md_capital_word_frequency(r: str, kw: dict) -> bool:
    count = sum(1 for w in _markdown_words(r) if _all_capitals(w))
    return _compare(count, kw["capital_relation"], kw["capital_frequency"])


def _english_capital(r: str, kw: dict) -> bool:
    return r.isupper() and _in_language(r, "en")


def _md_english_capital(r: str, kw: dict) -> bool:
    return _all_capitals(r) and _in_language(r, "en")


def _english_lowercase(r: str, kw: dict) -> bool:
    return r.islower() and _in_language(r, "en")


def _md_english_lowercase(r: str, kw: dict) -> bool:
    return _all_lowercase(r) and _in_language(r, "en")


def _response_language(r: str, kw: dict) -> bool:
    return _in_language(r, kw["language"])


def _no_comma(r: str, kw: dict) -> bool:
    return "," not in r  # IFEval: the ASCII comma only


def _md_no_comma(r: str, kw: dict) -> bool:
    return "," not in r and "，" not in r  # the ASCII comma and the full-width one


# ---------------------------------------------------------------------------------------------------
# kwargs validation: each validator returns the normalised value or raises ValueError with the reason.

_RELATIONS = ("less than", "at least")


def _positive_int(v: Any) -> int:
    if isinstance(v, float) and v.is_integer():  # JSON/pandas round trips may turn 3 into 3.0
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError("must be a positive integer")
    return v


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must be a non-empty string")
    return v


def _text_list(v: Any) -> list[str]:
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(s, str) and s.strip() for s in v):
        raise ValueError("must be a non-empty list of non-empty strings")
    return list(v)


def _relation(v: Any) -> str:
    if v not in _RELATIONS:
        raise ValueError(f"must be one of {list(_RELATIONS)}")
    return v


def _character(v: Any) -> str:
    # Any one character but whitespace (IFEval strips the letter, so a space would count nothing).
    if not isinstance(v, str) or len(v) != 1 or v.isspace():
        raise ValueError("must be a single character other than whitespace")
    return v


def _language(v: Any) -> str:
    codes = ifeval_text.detectable_languages()
    if v not in codes:
        raise ValueError(f"must be a language code langdetect can detect ({', '.join(sorted(codes))})")
    return v


@dataclass(frozen=True)
class _Spec:
    check: Callable[[str, dict], bool]  # IFEval's reading
    kwargs: dict[str, Callable[[Any], Any]]
    markdown: Optional[Callable[[str, dict], bool]] = None  # our markdown reading, where it differs

    def checker(self, scoring: str) -> Callable[[str, dict], bool]:
        return self.markdown if scoring == "markdown" and self.markdown else self.check


_REGISTRY: dict[str, _Spec] = {
    "keywords:existence": _Spec(_keywords_existence, {"keywords": _text_list}),
    "keywords:frequency": _Spec(
        _keywords_frequency, {"keyword": _text, "frequency": _positive_int, "relation": _relation}
    ),
    "keywords:forbidden_words": _Spec(_forbidden_words, {"forbidden_words": _text_list}, _md_forbidden_words),
    "keywords:letter_frequency": _Spec(
        _letter_frequency, {"letter": _character, "let_frequency": _positive_int, "let_relation": _relation}
    ),
    "language:response_language": _Spec(_response_language, {"language": _language}),
    "length_constraints:number_sentences": _Spec(
        _number_sentences, {"num_sentences": _positive_int, "relation": _relation}, _md_number_sentences
    ),
    "length_constraints:number_paragraphs": _Spec(
        _number_paragraphs, {"num_paragraphs": _positive_int}, _md_number_paragraphs
    ),
    "length_constraints:number_words": _Spec(
        _number_words, {"num_words": _positive_int, "relation": _relation}, _md_number_words
    ),
    "length_constraints:nth_paragraph_first_word": _Spec(
        _nth_paragraph_first_word,
        {"num_paragraphs": _positive_int, "nth_paragraph": _positive_int, "first_word": _text},
        _md_nth_paragraph_first_word,
    ),
    "detectable_content:number_placeholders": _Spec(
        _number_placeholders, {"num_placeholders": _positive_int}, _md_number_placeholders
    ),
    "detectable_content:postscript": _Spec(_postscript, {"postscript_marker": _text}, _md_postscript),
    "detectable_format:number_bullet_lists": _Spec(
        _number_bullet_lists, {"num_bullets": _positive_int}, _md_number_bullet_lists
    ),
    "detectable_format:constrained_response": _Spec(_constrained_response, {}),
    "detectable_format:number_highlighted_sections": _Spec(
        _number_highlighted_sections, {"num_highlights": _positive_int}, _md_number_highlighted_sections
    ),
    "detectable_format:multiple_sections": _Spec(
        _multiple_sections, {"section_spliter": _text, "num_sections": _positive_int}, _md_multiple_sections
    ),
    "detectable_format:json_format": _Spec(_json_format, {}, _md_json_format),
    "detectable_format:title": _Spec(_title, {}, _md_title),
    "combination:two_responses": _Spec(_two_responses, {}),
    "combination:repeat_prompt": _Spec(_repeat_prompt, {"prompt_to_repeat": _text}),
    "startend:end_checker": _Spec(_end_checker, {"end_phrase": _text}, _md_end_checker),
    "startend:quotation": _Spec(_quotation, {}),
    "change_case:capital_word_frequency": _Spec(
        _capital_word_frequency, {"capital_frequency": _positive_int, "capital_relation": _relation},
        _md_capital_word_frequency,
    ),
    "change_case:english_capital": _Spec(_english_capital, {}, _md_english_capital),
    "change_case:english_lowercase": _Spec(_english_lowercase, {}, _md_english_lowercase),
    "punctuation:no_comma": _Spec(_no_comma, {}, _md_no_comma),
}

SUPPORTED_IDS: frozenset[str] = frozenset(_REGISTRY)


def _spec(instruction_id: str) -> _Spec:
    spec = _REGISTRY.get(instruction_id)
    if spec is None:
        raise UnknownInstructionError(
            f"instruction {instruction_id!r} is not supported (supported: {', '.join(sorted(SUPPORTED_IDS))})"
        )
    return spec


def _validated(instruction_id: str, kwargs: Optional[dict]) -> dict:
    """The kwargs this instruction uses, checked and normalised; None-valued extras are ignored."""
    spec = _spec(instruction_id)
    kwargs = kwargs or {}
    if not isinstance(kwargs, dict):
        raise UserError(f"instruction {instruction_id!r}: kwargs must be a mapping, got {type(kwargs).__name__}")
    extras = sorted(k for k, v in kwargs.items() if k not in spec.kwargs and v is not None)
    if extras:
        expected = ", ".join(spec.kwargs) or "none"
        raise UserError(f"instruction {instruction_id!r}: unexpected kwarg {extras[0]!r} (expected: {expected})")
    out = {}
    for key, validator in spec.kwargs.items():
        if kwargs.get(key) is None:
            raise UserError(f"instruction {instruction_id!r}: missing kwarg {key!r}")
        try:
            out[key] = validator(kwargs[key])
        except ValueError as exc:
            raise UserError(f"instruction {instruction_id!r}: kwarg {key!r} {exc} (got {kwargs[key]!r})") from None
    if "nth_paragraph" in out and out["nth_paragraph"] > out["num_paragraphs"]:
        raise UserError(
            f"instruction {instruction_id!r}: kwarg 'nth_paragraph' must be at most num_paragraphs "
            f"({out['num_paragraphs']}), got {out['nth_paragraph']}"
        )
    return out


def validate_kwargs(instruction_id: str, kwargs: dict) -> None:
    """Raise UserError (UnknownInstructionError for an unknown id) naming the id and the bad kwarg."""
    _validated(instruction_id, kwargs)


def validate_instruction(instruction_id_list: list[str], kwargs_list: list[dict]) -> None:
    """Every (id, kwargs) pair of one instruction: the first one a checker cannot take raises, as validate_kwargs."""
    for instruction_id, kwargs in zip(instruction_id_list, kwargs_list):
        _validated(instruction_id, kwargs)


def _check(check: Callable[[str, dict], bool], response: str, kw: dict) -> bool:
    return bool(response.strip()) and check(response, kw)


def check_strict(instruction_id: str, response: str, kwargs: dict, prompt: str = "", *,
                 scoring: str = "ifeval") -> bool:
    """Whether the response follows the instruction as written, read the ``scoring`` way ("ifeval" or
    "markdown"). ``prompt`` is accepted for parity with IFEval's interface; no supported checker needs
    it (repeat_prompt takes kwargs' prompt_to_repeat)."""
    check = _spec(instruction_id).checker(_mode(scoring))
    return _check(check, response, _validated(instruction_id, kwargs))


def loose_variants(response: str) -> list[str]:
    """IFEval's eight loose variants: the response, without its first line, without its last line,
    without both; then the same four with every markdown asterisk removed."""
    lines = response.split("\n")
    trimmed = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return trimmed + [t.replace("*", "") for t in trimmed]


def check_loose(instruction_id: str, response: str, kwargs: dict, prompt: str = "", *,
                scoring: str = "ifeval") -> bool:
    """Whether the strict check passes on any of the loose variants (see loose_variants)."""
    check = _spec(instruction_id).checker(_mode(scoring))
    kw = _validated(instruction_id, kwargs)
    return any(_check(check, variant, kw) for variant in loose_variants(response))


# ---------------------------------------------------------------------------------------------------
# Scores


@dataclass(frozen=True)
class Score:
    """One response's results, one entry per instruction, in the order of instruction_id_list."""

    strict: tuple[bool, ...]
    loose: tuple[bool, ...]

    @property
    def prompt_strict(self) -> bool:
        return all(self.strict)

    @property
    def prompt_loose(self) -> bool:
        return all(self.loose)

    @property
    def strict_fraction(self) -> float:
        return sum(self.strict) / len(self.strict) if self.strict else 1.0


def score(response: str, instruction_id_list: list[str], kwargs_list: list[dict], prompt: str = "", *,
          scoring: str = "ifeval") -> Score:
    if len(instruction_id_list) != len(kwargs_list):
        raise UserError(
            f"kwargs_list has {len(kwargs_list)} entries but instruction_id_list has "
            f"{len(instruction_id_list)}; they must align one to one"
        )
    pairs = list(zip(instruction_id_list, kwargs_list))
    return Score(
        strict=tuple(check_strict(i, response, kw, prompt, scoring=scoring) for i, kw in pairs),
        loose=tuple(check_loose(i, response, kw, prompt, scoring=scoring) for i, kw in pairs),
    )


def accuracy(scores: list[Score]) -> dict:
    """IFEval's four numbers: prompt-level (fraction of responses passing all their instructions) and
    instruction-level (fraction of all instructions passed), each strict and loose."""
    if not scores:
        raise UserError("accuracy: no scores to aggregate")
    n_instructions = sum(len(s.strict) for s in scores)

    def per_instruction(flags: list[bool]) -> float:
        return sum(flags) / n_instructions if n_instructions else 1.0

    return {
        "prompt_strict": sum(s.prompt_strict for s in scores) / len(scores),
        "prompt_loose": sum(s.prompt_loose for s in scores) / len(scores),
        "instruction_strict": per_instruction([f for s in scores for f in s.strict]),
        "instruction_loose": per_instruction([f for s in scores for f in s.loose]),
    }
