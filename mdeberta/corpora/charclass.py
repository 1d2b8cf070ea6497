"""Per-character measures of paragraphs, computed for many paragraphs at once.

Counting letters and words and building CCNet's dedup key one paragraph at a time (a regex pass or
a ``str.translate`` per rule and paragraph) cost more than language ID itself. Here the paragraphs
are joined into one string, turned into an array of code points, and every character's class is
looked up in a table, so a batch costs a handful of numpy operations.

The tables are filled for Unicode planes 0-3 and 14. Planes 4-13 are unassigned and planes 15-16
are private use: their characters are no letters, digits, punctuation or spaces, which is what the
tables' defaults say.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import regex

_PLANES = (0, 1, 2, 3, 14)
_LETTER = 1  # \p{L} or \p{M}: letters and the combining marks of Indic and Thai vowels
_WORD = 2  # a letter or number that is no digit (re's \w without \d and _): makes a token a word
_UNSPACED = 4  # a script written without spaces: half a word, and a word boundary

# Han, Kana, Thai, Lao, Myanmar, Khmer, Tibetan: scripts written without spaces between words.
UNSPACED_SCRIPTS = ("[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff"
                    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
# CCNet's line normalisation drops punctuation, symbols, spaces and controls, and writes digits as 0.
_DROPPED_FOR_KEY = {"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf"}
_DROP = np.uint32(0xFFFFFFFF)
_SPACE, _NEWLINE, _ZERO = 0x20, 0x0A, 0x30


@functools.cache
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(class bits per code point, key replacement per code point); built once per process."""
    codes = np.concatenate([np.arange(p << 16, (p + 1) << 16, dtype=np.uint32) for p in _PLANES])
    codes = codes[(codes < 0xD800) | (codes >= 0xE000)]
    chars = codes.tobytes().decode("utf-32-le")
    classes = np.zeros(0x110000, np.uint8)
    for pattern, bit in ((regex.compile(r"[\p{L}\p{M}]+"), _LETTER), (re.compile(r"[^\W\d_]+"), _WORD),
                         (re.compile(UNSPACED_SCRIPTS + "+"), _UNSPACED)):
        for match in pattern.finditer(chars):
            classes[codes[match.start():match.end()]] |= bit
    key_map = np.arange(0x110000, dtype=np.uint32)
    for char in chars:
        category = unicodedata.category(char)
        if category in _DROPPED_FOR_KEY:
            key_map[ord(char)] = _DROP
        elif category == "Nd":
            key_map[ord(char)] = _ZERO
    key_map[_NEWLINE] = _NEWLINE  # the separator between paragraphs survives
    return classes, key_map


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


@dataclass
class ParagraphStats:
    """One entry per paragraph."""

    letters: np.ndarray  # letters and combining marks
    visible: np.ndarray  # characters other than spaces
    words: np.ndarray  # tokens with a letter, plus half a word per character of an unspaced script
    keys: np.ndarray | None  # uint64 dedup keys, when asked for


def paragraph_stats(paragraphs: list[str], with_keys: bool = True) -> ParagraphStats:
    """Measures of normalised paragraphs (no newlines inside; spaces are the only whitespace)."""
    if not paragraphs:
        empty = np.zeros(0, np.int64)
        return ParagraphStats(empty, empty, empty.astype(float), empty.astype(np.uint64) if with_keys else None)
    classes, key_map = _tables()
    text = "\n".join(paragraphs) + "\n"  # every paragraph ends with a newline: no empty segment
    codes = _code_points(text)
    lengths = np.fromiter(map(len, paragraphs), np.int64, len(paragraphs)) + 1
    starts = np.concatenate(([0], np.cumsum(lengths[:-1])))
    bits = classes[codes]
    space = codes == _SPACE
    unspaced = (bits & _UNSPACED) != 0
    boundary = space | unspaced | (codes == _NEWLINE)
    per_paragraph = functools.partial(np.add.reduceat, indices=starts, dtype=np.int64)
    return ParagraphStats(letters=per_paragraph((bits & _LETTER) != 0),
                          visible=lengths - 1 - per_paragraph(space),
                          words=_words(bits, boundary, starts) + per_paragraph(unspaced) / 2,
                          keys=_keys(text, key_map) if with_keys else None)


def _words(bits: np.ndarray, boundary: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Tokens (runs between boundaries) with at least one word character, per paragraph: all
    tokens, less those made only of other characters ("|", "2023"), which are rare, so only
    their runs are looked at one by one."""
    after_boundary = np.empty_like(boundary)
    after_boundary[0], after_boundary[1:] = True, boundary[:-1]
    tokens = np.add.reduceat(~boundary & after_boundary, starts, dtype=np.int64)
    other = ~boundary & ((bits & _WORD) == 0)
    edges = np.flatnonzero(np.diff(other, prepend=False, append=False))  # run starts and ends, paired
    run_start, run_end = edges[0::2], edges[1::2]  # [start, end) of each run of other characters
    whole_token = after_boundary[run_start] & boundary[run_end]  # the text ends with a boundary
    paragraph = np.searchsorted(starts, run_start[whole_token], side="right") - 1
    return tokens - np.bincount(paragraph, minlength=len(starts))


def _keys(text: str, key_map: np.ndarray) -> np.ndarray:
    """CCNet: a line is lower-cased, its digits become 0, its punctuation, symbols and spaces go;
    the key is the first 8 bytes of the SHA-1 of what is left."""
    mapped = key_map[_code_points(text.lower())]
    normalised = mapped[mapped != _DROP].tobytes().decode("utf-32-le", "surrogatepass").split("\n")[:-1]
    digests = b"".join(hashlib.sha1(line.encode("utf-8", "surrogatepass")).digest()[:8] for line in normalised)
    return np.frombuffer(digests, "<u8")


def hash64(text: str) -> int:
    """First 8 bytes of SHA-1, as CCNet does."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()[:8], "little")


def word_count(paragraph: str) -> float:
    """Words with at least one letter; in unspaced scripts, half a word per character."""
    return float(paragraph_stats([paragraph], with_keys=False).words[0])


def paragraph_key(paragraph: str) -> int:
    """Paragraphs differing only in case, digits, punctuation or spacing share a key."""
    return int(paragraph_stats([paragraph]).keys[0])
