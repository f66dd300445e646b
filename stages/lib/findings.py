"""What the checker found wrong with a response, in words a model can act on.

Critique-and-revise shows the base model its own failing draft with these findings ("The response has 85
words. It must have less than 60 words.") and asks for a revised response. A finding says what the
instruction requires, after what the checker counted where it counts something.
"""
from __future__ import annotations

import re
from typing import Callable

from . import checkers

# What each instruction requires; {name} is the instruction's kwarg (lists rendered as quoted words).
REQUIRED = {
    "punctuation:no_comma": "The response must not contain a single comma.",
    "change_case:english_lowercase": "Every letter of the response must be lowercase.",
    "change_case:english_capital": "Every letter of the response must be a capital letter.",
    "change_case:capital_word_frequency": "It must have {capital_relation} {capital_frequency} such words.",
    "length_constraints:number_words": "It must have {relation} {num_words} words.",
    "length_constraints:number_sentences": "It must have {relation} {num_sentences} sentences.",
    "length_constraints:number_paragraphs":
        "The response must have exactly {num_paragraphs} paragraphs, with a line holding only *** between "
        "each two of them.",
    "length_constraints:nth_paragraph_first_word":
        "The response must have {num_paragraphs} paragraphs separated by blank lines, and paragraph "
        "{nth_paragraph} must start with the word \"{first_word}\".",
    "keywords:existence": "The response must include the words {keywords}.",
    "keywords:frequency": "It must appear {relation} {frequency} times.",
    "keywords:forbidden_words": "The response must not use the words {forbidden_words}.",
    "keywords:letter_frequency": "It must appear {let_relation} {let_frequency} times.",
    "detectable_content:postscript": "The response must end with a postscript that starts with \"{postscript_marker}\".",
    "detectable_content:number_placeholders":
        "The response must contain at least {num_placeholders} placeholders in square brackets, such as [name].",
    "detectable_format:title": "The response must start with a title wrapped in double angular brackets, such as <<A Title>>.",
    "detectable_format:number_bullet_lists":
        "The response must have exactly {num_bullets} bullet points, each on its own line starting with \"* \".",
    "detectable_format:number_highlighted_sections":
        "The response must highlight at least {num_highlights} parts with markdown asterisks, such as *this part*.",
    "detectable_format:multiple_sections":
        "The response must have {num_sections} sections, each starting with \"{section_spliter}\" and its number, "
        "such as {section_spliter} 1.",
    "detectable_format:json_format": "The whole response must be valid JSON, with no text outside it.",
    "detectable_format:constrained_response":
        "The response must be exactly one of \"My answer is yes.\", \"My answer is no.\" or \"My answer is maybe.\"",
    "combination:two_responses": "The response must give two different answers separated by a line of six asterisks: ******",
    "combination:repeat_prompt": "The response must begin by repeating the request word for word: \"{prompt_to_repeat}\"",
    "startend:end_checker": "The response must end with the exact phrase \"{end_phrase}\", with nothing after it.",
    "startend:quotation": "The whole response must be wrapped in double quotation marks.",
    "language:response_language": "The whole response must be in the language with code \"{language}\".",
}

# What the checker counted, for the instructions that count something; said before the requirement.
COUNTED: dict[str, Callable[[str, dict], str]] = {
    "change_case:capital_word_frequency":
        lambda text, kw: f"The response has {sum(1 for w in checkers.words(text) if w.isupper())} words written in capitals.",
    "length_constraints:number_words": lambda text, kw: f"The response has {len(checkers.words(text))} words.",
    "length_constraints:number_sentences": lambda text, kw: f"The response has {len(checkers.sentences(text))} sentences.",
    "keywords:frequency": lambda text, kw: (
        f"The word \"{kw['keyword']}\" appears {len(re.findall(re.escape(kw['keyword']), text, re.IGNORECASE))} times."),
    "keywords:letter_frequency": lambda text, kw: (
        f"The letter \"{kw['letter']}\" appears {text.lower().count(kw['letter'].lower())} times."),
}


def _rendered(kwargs: dict) -> dict:
    return {k: ", ".join(f'"{w}"' for w in v) if isinstance(v, list) else v
            for k, v in (kwargs or {}).items() if v is not None}


def finding(instruction_id: str, kwargs: dict, response: str) -> str:
    """What is wrong with ``response`` for one constraint it fails."""
    required = REQUIRED.get(instruction_id, "The response must follow the instruction {id}.")
    required = required.format(id=instruction_id, **_rendered(kwargs))
    counted = COUNTED.get(instruction_id)
    return f"{counted(response, kwargs)} {required}" if counted else required


def findings(response: str, instruction_ids: list[str], kwargs: list[dict]) -> list[str]:
    """A finding for every constraint the response fails strictly, in the instruction's order."""
    result = checkers.score(response, instruction_ids, kwargs)
    return [finding(i, kw, response) for i, kw, ok in zip(instruction_ids, kwargs, result.strict) if not ok]
