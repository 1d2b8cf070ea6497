"""Unicode normalisation of raw web text into clean paragraphs.

Order matters for idempotence: invisible characters are removed before NFC, so that a base
letter and a combining mark that were kept apart by a zero-width space compose on the first pass.
"""

from __future__ import annotations

import re
import unicodedata

import regex

# Vertical separators become paragraph breaks, as str.splitlines would treat them (a regex: 15x
# faster than str.translate on non-ASCII text).
_LINE_BREAKS = re.compile("[\r\v\f\x1c-\x1e\x85\u2028\u2029]")
# Controls (Cc), invisible format characters (Cf: zero-width space, BOM, soft hyphen, bidi marks)
# and lone surrogates (Cs, which JSON escapes can produce and UTF-8 cannot encode).
# ZWJ and ZWNJ are kept by default: they are spelling in Persian, Indic scripts and emoji.
_INVISIBLE = regex.compile(r"[[\p{Cc}\p{Cf}\p{Cs}]--[\t\n\u200c\u200d]]", regex.V1)
_INVISIBLE_AND_JOINERS = regex.compile(r"[[\p{Cc}\p{Cf}\p{Cs}]--[\t\n]]", regex.V1)


def normalize_paragraphs(text: str, strip_joiners: bool = False) -> tuple[list[str], int]:
    """Split ``text`` into normalised, non-empty paragraphs.

    Returns the paragraphs and the number of invisible characters removed. Every paragraph is
    NFC, has no control or zero-width characters, and has single spaces between words.
    """
    removed = 0
    # Printable text has no controls, format characters, surrogates or line separators, so neither
    # pass below would change it; the check runs in C and spares most documents both passes.
    if not text.replace("\n", " ").isprintable():
        invisible = _INVISIBLE_AND_JOINERS if strip_joiners else _INVISIBLE
        text, removed = invisible.subn("", _LINE_BREAKS.sub("\n", text))
    text = unicodedata.normalize("NFC", text)
    paragraphs = [" ".join(line.split()) for line in text.split("\n")]
    return [p for p in paragraphs if p], removed
