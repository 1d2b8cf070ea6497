"""The batch measures against their definitions, written out one paragraph at a time."""

import hashlib
import re
import unicodedata

import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from mdeberta.corpora.charclass import UNSPACED_SCRIPTS, paragraph_stats
from mdeberta.corpora.normalize import normalize_paragraphs

_UNSPACED = re.compile(UNSPACED_SCRIPTS)
_NON_WORD_TOKEN = re.compile(r"^(?:[^\w\s]|[\d_])+$")
_DROPPED = ("P", "S", "Z", "Cc", "Cf")


def letters(paragraph: str) -> int:
    return len(regex.findall(r"[\p{L}\p{M}]", paragraph))


def words(paragraph: str) -> float:
    """Tokens with a letter or number that is no digit; unspaced-script characters split tokens
    and count half a word each."""
    tokens = _UNSPACED.sub(" ", paragraph).split()
    return sum(not _NON_WORD_TOKEN.match(t) for t in tokens) + len(_UNSPACED.findall(paragraph)) / 2


def key(paragraph: str) -> int:
    """CCNet: lower case, digits as 0, no punctuation, symbols, spaces or controls; SHA-1 prefix."""
    kept = ("0" if unicodedata.category(c) == "Nd" else c for c in paragraph.lower()
            if not unicodedata.category(c).startswith(_DROPPED))
    return int.from_bytes(hashlib.sha1("".join(kept).encode("utf-8", "surrogatepass")).digest()[:8], "little")


scripts = st.sampled_from(["abc XYZ", "0123", " |-#_.,!", "人人有权", "ทุกคน", "सभी को", "Ωμέγα ΣΑΣ",
                           "\u00a0\u2009", "İstanbul ß", "٣٤ مرحبا", "\U0001F469\u200d\U0001F4BB", "\U00020000\U000E0020"])
texts = st.lists(st.one_of(scripts, st.text(max_size=8)), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, max_size=6))
def test_batch_measures_match_their_definitions(raw_texts):
    paragraphs = [p for text in raw_texts for p in normalize_paragraphs(text)[0]]
    stats = paragraph_stats(paragraphs)
    assert stats.letters.tolist() == [letters(p) for p in paragraphs]
    assert stats.visible.tolist() == [len(p) - p.count(" ") for p in paragraphs]
    assert stats.words.tolist() == [words(p) for p in paragraphs]
    assert stats.keys.tolist() == [key(p) for p in paragraphs]


def test_empty_batch():
    stats = paragraph_stats([])
    assert len(stats.letters) == len(stats.words) == len(stats.keys) == 0
