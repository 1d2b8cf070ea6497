"""Per-document work of the corpus stage: normalise, filter, identify the language, hash.

Runs in worker processes on batches of raw documents. Deduplication needs the whole corpus in
order, so here every kept paragraph only gets its 64-bit key; ``dedup`` decides later.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from dataclasses import dataclass, field

from .filters import ParagraphFilter
from .langid import LanguageIdentifier
from .normalize import normalize_paragraphs
from .readers import RawDocument
from .settings import CorpusSettings
from .stats import UNKNOWN_LANGUAGE, Tally

_DROPPED_FOR_KEY = {"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf"}


@functools.cache
def _key_table() -> dict[int, str | None]:
    """CCNet's line normalisation as one str.translate table: punctuation, symbols and spaces
    vanish, every decimal digit becomes 0 (built once per process, about 0.3 s)."""
    table: dict[int, str | None] = {}
    for code in range(0x110000):
        category = unicodedata.category(chr(code))
        if category in _DROPPED_FOR_KEY:
            table[code] = None
        elif category == "Nd":
            table[code] = "0"
    return table


def hash64(text: str) -> int:
    """First 8 bytes of SHA-1, as CCNet does."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()[:8], "little")


def paragraph_key(paragraph: str) -> int:
    """Paragraphs differing only in case, digits, punctuation or spacing share a key."""
    return hash64(paragraph.lower().translate(_key_table()))


@dataclass
class CleanBatch:
    """Column-wise output of one batch (what the intermediate Parquet file holds)."""

    id: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    lang: list[str] = field(default_factory=list)
    lang_score: list[float] = field(default_factory=list)
    paragraph_keys: list[list[int]] = field(default_factory=list)
    doc_hash: list[int] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)

    def append(self, doc_id: str, paragraphs: list[str], lang: str, score: float) -> None:
        text = "\n".join(paragraphs)
        self.id.append(doc_id)
        self.text.append(text)
        self.lang.append(lang)
        self.lang_score.append(score)
        self.paragraph_keys.append([paragraph_key(p) for p in paragraphs])
        self.doc_hash.append(hash64(text))


def _chars(paragraphs: list[str]) -> int:
    return sum(map(len, paragraphs))


class DocumentCleaner:
    def __init__(self, settings: CorpusSettings, langs: list[str]):
        self.settings = settings
        self.filter = ParagraphFilter(settings)
        self.lid = LanguageIdentifier(settings.lid_model)
        self.langs = set(langs)
        _key_table()

    def clean(self, source: str, first_index: int, documents: list[RawDocument]) -> CleanBatch:
        batch = CleanBatch()
        for offset, raw in enumerate(documents):
            self._clean_one(batch, f"{source}#{first_index + offset}", raw)
        return batch

    def _clean_one(self, batch: CleanBatch, doc_id: str, raw: RawDocument) -> None:
        tally = batch.tally
        tally.notes["documents_read"] += 1
        if raw.drop_reason:
            tally.add(UNKNOWN_LANGUAGE, "read", raw.drop_reason, documents=1)
            return
        tally.notes["bytes_read"] += len(raw.text.encode("utf-8", "surrogatepass"))
        tally.notes["invalid_utf8_bytes"] += raw.invalid_bytes
        paragraphs, removed = normalize_paragraphs(raw.text, self.settings.strip_joiners)
        tally.notes["invisible_characters_removed"] += removed
        verdicts = [self.filter.paragraph_verdict(p) for p in paragraphs]
        reasons = [reason for reason, _ in verdicts]
        kept = [p for p, reason in zip(paragraphs, reasons) if reason is None]
        dropped = [(reason, len(p)) for p, reason in zip(paragraphs, reasons) if reason]
        dropped += [("line_too_long", length) for length in raw.overlong_chars]

        kept_words = sum(words for reason, words in verdicts if reason is None)
        doc_reason = self.filter.document_reason(kept, kept_words)
        lang = UNKNOWN_LANGUAGE
        if doc_reason is None and self.settings.lid_level == "document":
            # Short paragraphs (headings, captions) leave the output but are still evidence of
            # the language; junk and boilerplate are not.
            evidence = [p for p, reason in zip(paragraphs, reasons) if reason in (None, "line_too_short")]
            lang, score = self.lid.predict(self._lid_sample(" ".join(evidence)))
        for reason, length in dropped:
            tally.add(lang, "filter", reason, paragraphs=1, characters=length)
        if doc_reason:
            tally.add(lang, "filter", doc_reason, documents=1, paragraphs=len(kept), characters=_chars(kept))
        elif self.settings.lid_level == "document":
            reason = self._language_reason(lang, score)
            if reason:
                tally.add(lang, "langid", reason, documents=1, paragraphs=len(kept), characters=_chars(kept))
            else:
                batch.append(doc_id, kept, lang, score)
        else:
            self._route_paragraphs(batch, doc_id, kept)

    def _lid_sample(self, text: str) -> str:
        """The first ``lid_max_chars`` characters, cut at a space so no word is split."""
        limit = self.settings.lid_max_chars
        if not limit or len(text) <= limit:
            return text
        cut = text.rfind(" ", 0, limit + 1)
        return text[:cut if cut > limit // 2 else limit]

    def _language_reason(self, lang: str, score: float) -> str | None:
        if score < self.settings.lid_thresholds.get(lang, self.settings.lid_threshold):
            return "lid_low_score"
        if self.langs and lang not in self.langs:
            return "lang_not_selected"
        return None

    def _route_paragraphs(self, batch: CleanBatch, doc_id: str, paragraphs: list[str]) -> None:
        """CC100-style: each paragraph goes to its own language; a document becomes one record
        per language it contains (paragraph order kept)."""
        tally = batch.tally
        routed: dict[str, tuple[list[str], list[float]]] = {}
        reasons = []
        for paragraph in paragraphs:
            lang, score = self.lid.predict(self._lid_sample(paragraph))
            reason = self._language_reason(lang, score)
            if reason:
                tally.add(lang, "langid", reason, paragraphs=1, characters=len(paragraph))
                reasons.append((lang, reason))
                continue
            texts, scores = routed.setdefault(lang, ([], []))
            texts.append(paragraph)
            scores.append(score)
        if not routed:
            lang, reason = reasons[0]
            tally.add(lang, "langid", reason, documents=1)
        for lang, (texts, scores) in routed.items():
            if self.filter.too_short(texts):
                tally.add(lang, "filter", "doc_too_short", documents=1, paragraphs=len(texts), characters=_chars(texts))
                continue
            weights = list(map(len, texts))
            score = sum(s * w for s, w in zip(scores, weights)) / sum(weights)
            batch.append(f"{doc_id}/{lang}", texts, lang, score)
