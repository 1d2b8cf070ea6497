"""Paragraph and document quality rules. Each rule returns the reason it drops, or None.

Word-based rules would reject every line of Chinese, Japanese or Thai, which are written without
spaces between words; there a character counts as half a word (a Chinese word averages about two
characters), so the same thresholds serve every script.

Letter and word counts come from ``charclass``, which measures a whole batch of paragraphs in a
few numpy operations; what remains here per paragraph is the configurable boilerplate patterns and
the separator count of navigation menus.
"""

from __future__ import annotations

import re

from ..settings import SettingsError
from .charclass import ParagraphStats, paragraph_stats
from .settings import CorpusSettings

_LOREM = re.compile(r"lorem ipsum", re.IGNORECASE)
# Menus and breadcrumbs: "Home | Recipes | About us | Contact".
_SEPARATOR = re.compile(r" [|•·»›/] ")
_NAVIGATION_ITEM_CHARS = 30  # menu items are short in every script; sentences are not


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

    def verdicts(self, paragraphs: list[str], stats: ParagraphStats) -> list[tuple[str | None, float]]:
        """Per paragraph, the drop reason (None: keep) and the word count, which the document
        rule reuses (0 when a cheaper rule dropped the paragraph first)."""
        return list(map(self._verdict, paragraphs, stats.letters.tolist(), stats.visible.tolist(),
                        stats.words.tolist()))

    def _verdict(self, paragraph: str, letters: int, visible: int, words: float) -> tuple[str | None, float]:
        if len(paragraph) > self.max_chars:
            return "line_too_long", 0.0
        if any(p.search(paragraph) for p in self.boilerplate):
            return "line_boilerplate", 0.0
        if letters < self.min_letter_ratio * visible:
            return "line_few_letters", 0.0
        if words < self.min_words:
            return "line_too_short", words
        separators = len(_SEPARATOR.findall(paragraph))
        if separators >= 2 and len(paragraph) < _NAVIGATION_ITEM_CHARS * (separators + 1):
            return "line_navigation", words
        return None, words

    def paragraph_reason(self, paragraph: str) -> str | None:
        return self.verdicts([paragraph], paragraph_stats([paragraph], with_keys=False))[0][0]

    def document_reason(self, paragraphs: list[str], words: float | None = None) -> str | None:
        """``words``: the paragraphs' total word count, when the caller already has it."""
        if not paragraphs:
            return "doc_empty"
        if _LOREM.search("\n".join(paragraphs)):  # the phrase has no newline: one search per document
            return "doc_lorem_ipsum"
        if (words if words is not None else paragraph_stats(paragraphs, with_keys=False).words.sum()) < self.min_doc_words:
            return "doc_too_short"
        return None

    def too_short(self, paragraphs: list[str]) -> bool:
        return paragraph_stats(paragraphs, with_keys=False).words.sum() < self.min_doc_words
