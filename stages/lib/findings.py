"""What the checker found wrong with a response, in words a model can act on.

Critique-and-revise shows the base model its own failing draft with these findings ("The response has 85
words; it must have less than 60.") and asks for a revised response. A finding names what is wrong and what
the instruction requires, never how it was measured internally.
"""
from __future__ import annotations

import re

from . import checkers


def _quoted(words: list[str]) -> str:
    return ", ".join(f'"{w}"' for w in words)


def finding(instruction_id: str, kwargs: dict, response: str) -> str:
    """One sentence about one constraint the response fails."""
    kw = {k: v for k, v in (kwargs or {}).items() if v is not None}
    text = response
    if instruction_id == "punctuation:no_comma":
        return "The response uses commas; it must not contain a single comma."
    if instruction_id == "change_case:english_lowercase":
        return "The response has capital letters; every letter must be lowercase."
    if instruction_id == "change_case:english_capital":
        return "The response has lowercase letters; every letter must be a capital letter."
    if instruction_id == "change_case:capital_word_frequency":
        count = sum(1 for w in checkers.words(text) if w.isupper())
        return (f"The response has {count} words written in capital letters; it must have "
                f"{kw['capital_relation']} {kw['capital_frequency']}.")
    if instruction_id == "length_constraints:number_words":
        return f"The response has {len(checkers.words(text))} words; it must have {kw['relation']} {kw['num_words']}."
    if instruction_id == "length_constraints:number_sentences":
        return (f"The response has {len(checkers.sentences(text))} sentences; it must have "
                f"{kw['relation']} {kw['num_sentences']}.")
    if instruction_id == "length_constraints:number_paragraphs":
        return (f"The response must have exactly {kw['num_paragraphs']} paragraphs, with a line holding only *** "
                "between each two of them.")
    if instruction_id == "length_constraints:nth_paragraph_first_word":
        return (f"The response must have {kw['num_paragraphs']} paragraphs separated by blank lines, and paragraph "
                f"{kw['nth_paragraph']} must start with the word \"{kw['first_word']}\".")
    if instruction_id == "keywords:existence":
        missing = [k for k in kw["keywords"] if not re.search(re.escape(k), text, re.IGNORECASE)]
        return f"The response must include the words {_quoted(missing or kw['keywords'])}."
    if instruction_id == "keywords:frequency":
        count = len(re.findall(re.escape(kw["keyword"]), text, re.IGNORECASE))
        return (f"The word \"{kw['keyword']}\" appears {count} times; it must appear {kw['relation']} "
                f"{kw['frequency']} times.")
    if instruction_id == "keywords:forbidden_words":
        used = [w for w in kw["forbidden_words"] if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text, re.IGNORECASE)]
        return f"The response uses the forbidden words {_quoted(used or kw['forbidden_words'])}; leave them out."
    if instruction_id == "keywords:letter_frequency":
        count = text.lower().count(kw["letter"].lower())
        return (f"The letter \"{kw['letter']}\" appears {count} times; it must appear {kw['let_relation']} "
                f"{kw['let_frequency']} times.")
    if instruction_id == "detectable_content:postscript":
        return f"The response must end with a postscript that starts with \"{kw['postscript_marker']}\"."
    if instruction_id == "detectable_content:number_placeholders":
        return (f"The response must contain at least {kw['num_placeholders']} placeholders in square brackets, "
                "such as [name].")
    if instruction_id == "detectable_format:title":
        return "The response must start with a title wrapped in double angular brackets, such as <<A Title>>."
    if instruction_id == "detectable_format:number_bullet_lists":
        return (f"The response must have exactly {kw['num_bullets']} bullet points, each on its own line "
                "starting with \"* \".")
    if instruction_id == "detectable_format:number_highlighted_sections":
        return (f"The response must highlight at least {kw['num_highlights']} parts with markdown asterisks, "
                "such as *this part*.")
    if instruction_id == "detectable_format:multiple_sections":
        return (f"The response must have {kw['num_sections']} sections, each starting with "
                f"\"{kw['section_spliter']}\" and its number, such as {kw['section_spliter']} 1.")
    if instruction_id == "detectable_format:json_format":
        return "The whole response must be valid JSON, with no text outside it."
    if instruction_id == "detectable_format:constrained_response":
        return ("The response must be exactly one of \"My answer is yes.\", \"My answer is no.\" or "
                "\"My answer is maybe.\"")
    if instruction_id == "combination:two_responses":
        return "The response must give two different answers separated by a line of six asterisks: ******"
    if instruction_id == "combination:repeat_prompt":
        return f"The response must begin by repeating the request word for word: \"{kw['prompt_to_repeat']}\""
    if instruction_id == "startend:end_checker":
        return f"The response must end with the exact phrase \"{kw['end_phrase']}\", with nothing after it."
    if instruction_id == "startend:quotation":
        return "The whole response must be wrapped in double quotation marks."
    return f"The response does not follow the instruction {instruction_id}."


def findings(response: str, instruction_ids: list[str], kwargs: list[dict]) -> list[str]:
    """A finding for every constraint the response fails strictly, in the instruction's order."""
    result = checkers.score(response, instruction_ids, kwargs)
    return [finding(i, kw, response) for i, kw, ok in zip(instruction_ids, kwargs, result.strict) if not ok]
