"""Paragraph and document quality rules. Each rule returns the reason it drops, or None.

Word-based rules would reject every line of Chinese, Japanese or Thai, which are written without
spaces between words; there a character counts as half a word (a Chinese word averages about two
characters), so the same thresholds serve every script.

The rules run on every paragraph of the corpus, so they use the cheapest primitives that are
correct: stdlib ``re`` where a plain character range does, ``regex`` only for Unicode properties.
Paragraphs reach them normalised, with single spaces between words.
"""

from __future__ import annotations

import re

import regex

from ..recipe import SettingsError
from .settings import CorpusSettings

# Han, Kana, Thai, Lao, Myanmar, Khmer, Tibetan: scripts written without spaces between words.
_UNSPACED = re.compile("[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff"
                       "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
# A whitespace-separated token without a single letter: "|", "2023", "#4471", "+++".
_NON_WORD_TOKEN = re.compile(r"(?:^| )(?:[^\w\s]|[\d_])+(?= |$)")
# Anything but letters, combining marks (Indic and Thai vowel signs) and spaces.
_NON_LETTER = regex.compile(r"[^\p{L}\p{M} ]")
_LOREM = re.compile(r"lorem ipsum", re.IGNORECASE)
# Menus and breadcrumbs: "Home | Recipes | About us | Contact".
_SEPARATOR = re.compile(r" [|•·»›/] ")
_NAVIGATION_ITEM_CHARS = 30  # menu items are short in every script; sentences are not


def word_count(paragraph: str) -> float:
    """Words with at least one letter; in unspaced scripts, half a word per character."""
    spaced, unspaced = paragraph, 0
    if _UNSPACED.search(paragraph):
        spaced, unspaced = _UNSPACED.subn(" ", paragraph)
        spaced = " ".join(spaced.split())
    words = spaced.count(" ") + 1 - len(_NON_WORD_TOKEN.findall(spaced)) if spaced.strip() else 0
    return words + unspaced / 2


class ParagraphFilter:
    """The paragraph and document rules of one settings object, compiled once per process."""

    def __init__(self, settings: CorpusSettings):
        self.max_chars = settings.max_line_chars
        self.min_words = settings.min_line_words
        self.min_letter_ratio = settings.min_letter_ratio
        self.min_doc_words = settings.min_doc_words
        try:
            self.boilerplate = [re.compile(p, re.IGNORECASE) for p in settings.boilerplate]
        except re.error as err:
            raise SettingsError(f"boilerplate: invalid regular expression {err.pattern!r}: {err}") from None

    def paragraph_verdict(self, paragraph: str) -> tuple[str | None, float]:
        """The drop reason (None: keep) and the word count, which the document rule reuses
        (0 when a cheaper rule dropped the paragraph first)."""
        if len(paragraph) > self.max_chars:
            return "line_too_long", 0.0
        if any(p.search(paragraph) for p in self.boilerplate):
            return "line_boilerplate", 0.0
        visible = len(paragraph) - paragraph.count(" ")
        if visible - _NON_LETTER.subn("", paragraph)[1] < self.min_letter_ratio * visible:
            return "line_few_letters", 0.0
        words = word_count(paragraph)
        if words < self.min_words:
            return "line_too_short", words
        separators = len(_SEPARATOR.findall(paragraph))
        if separators >= 2 and len(paragraph) < _NAVIGATION_ITEM_CHARS * (separators + 1):
            return "line_navigation", words
        return None, words

    def paragraph_reason(self, paragraph: str) -> str | None:
        return self.paragraph_verdict(paragraph)[0]

    def document_reason(self, paragraphs: list[str], words: float | None = None) -> str | None:
        """``words``: the paragraphs' total word count, when the caller already has it."""
        if not paragraphs:
            return "doc_empty"
        if any(_LOREM.search(p) for p in paragraphs):
            return "doc_lorem_ipsum"
        if (words if words is not None else sum(map(word_count, paragraphs))) < self.min_doc_words:
            return "doc_too_short"
        return None

    def too_short(self, paragraphs: list[str]) -> bool:
        return sum(map(word_count, paragraphs)) < self.min_doc_words
