"""Per-document work of the corpus stage: normalise, filter, identify the language, hash.

Runs in worker processes on batches of raw documents. Deduplication needs the whole corpus in
order, so here every kept paragraph only gets its 64-bit key; ``dedup`` decides later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from .charclass import hash64, paragraph_stats
from .filters import ParagraphFilter
from .langid import LanguageIdentifier
from .normalize import normalize_paragraphs
from .readers import RawDocument
from .settings import CorpusSettings
from .stats import UNKNOWN_LANGUAGE, Tally


@dataclass
class CleanBatch:
    """Column-wise output of one batch (what the intermediate Parquet file holds)."""

    id: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    lang: list[str] = field(default_factory=list)
    lang_score: list[float] = field(default_factory=list)
    paragraph_keys: list[int] = field(default_factory=list)  # all documents' keys, in order
    paragraph_offsets: list[int] = field(default_factory=lambda: [0])  # where each document's keys start
    doc_hash: list[int] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)

    def append(self, doc_id: str, paragraphs: list[str], keys: list[int], lang: str, score: float) -> None:
        text = "\n".join(paragraphs)
        self.id.append(doc_id)
        self.text.append(text)
        self.lang.append(lang)
        self.lang_score.append(score)
        self.paragraph_keys += keys
        self.paragraph_offsets.append(len(self.paragraph_keys))
        self.doc_hash.append(hash64(text))

    def table(self, schema: pa.Schema) -> pa.Table:
        keys = pa.ListArray.from_arrays(pa.array(self.paragraph_offsets, pa.int32()),
                                        pa.array(self.paragraph_keys, pa.uint64()))
        columns = {"id": self.id, "text": self.text, "lang": self.lang, "lang_score": self.lang_score,
                   "paragraph_keys": keys, "doc_hash": pa.array(self.doc_hash, pa.uint64())}
        return pa.table(columns, schema=schema)


@dataclass
class _Filtered:
    """A document after the paragraph and document rules, before language ID."""

    kept: list[str]
    kept_keys: list[int]
    dropped: list[tuple[str, int]]  # (reason, characters) per dropped paragraph
    reason: str | None = None  # why the whole document is dropped
    lid_sample: str | None = None  # what language ID reads, when it runs on the document


def _chars(paragraphs: list[str]) -> int:
    return sum(map(len, paragraphs))


class DocumentCleaner:
    def __init__(self, settings: CorpusSettings, langs: list[str]):
        self.settings = settings
        self.filter = ParagraphFilter(settings)
        self.lid = LanguageIdentifier(settings.lid_model)
        self.langs = set(langs)
        paragraph_stats(["warm up"])  # builds the character tables once, before the first batch

    def clean(self, source: str, first_index: int, documents: list[RawDocument]) -> CleanBatch:
        """Normalises the batch, measures all its paragraphs at once, filters each document,
        identifies the languages of the survivors in one call, then decides per document."""
        batch = CleanBatch()
        normalised = [self._normalise(batch.tally, raw) for raw in documents]
        flat = [p for paragraphs in normalised for p in paragraphs]
        stats = paragraph_stats(flat)
        verdicts, keys = self.filter.verdicts(flat, stats), stats.keys.tolist()
        filtered, at = [], 0
        for raw, paragraphs in zip(documents, normalised):
            end = at + len(paragraphs)
            filtered.append(self._filter(raw, paragraphs, verdicts[at:end], keys[at:end]))
            at = end
        languages = iter(self.lid.predict_many([doc.lid_sample for doc in filtered if doc.lid_sample is not None]))
        for offset, (raw, doc) in enumerate(zip(documents, filtered)):
            language = next(languages) if doc.lid_sample is not None else None
            self._decide(batch, f"{source}#{first_index + offset}", raw, doc, language)
        return batch

    def _normalise(self, tally: Tally, raw: RawDocument) -> list[str]:
        tally.notes["documents_read"] += 1
        if raw.drop_reason:
            return []
        tally.notes["bytes_read"] += len(raw.text.encode("utf-8", "surrogatepass"))
        tally.notes["invalid_utf8_bytes"] += raw.invalid_bytes
        paragraphs, removed = normalize_paragraphs(raw.text, self.settings.strip_joiners)
        tally.notes["invisible_characters_removed"] += removed
        return paragraphs

    def _filter(self, raw: RawDocument, paragraphs: list[str], verdicts: list[tuple[str | None, float]],
                keys: list[int]) -> _Filtered:
        reasons = [reason for reason, _ in verdicts]
        doc = _Filtered(kept=[p for p, reason in zip(paragraphs, reasons) if reason is None],
                        kept_keys=[k for k, reason in zip(keys, reasons) if reason is None],
                        dropped=[(reason, len(p)) for p, reason in zip(paragraphs, reasons) if reason])
        doc.dropped += [("line_too_long", length) for length in raw.overlong_chars]
        doc.reason = self.filter.document_reason(doc.kept, sum(words for reason, words in verdicts if reason is None))
        if doc.reason is None and self.settings.lid_level == "document":
            # Short paragraphs (headings, captions) leave the output but are still evidence of
            # the language; junk and boilerplate are not.
            evidence = [p for p, reason in zip(paragraphs, reasons) if reason in (None, "line_too_short")]
            doc.lid_sample = self._lid_sample(" ".join(evidence))
        return doc

    def _decide(self, batch: CleanBatch, doc_id: str, raw: RawDocument, doc: _Filtered,
                language: tuple[str, float] | None) -> None:
        tally = batch.tally
        if raw.drop_reason:
            tally.add(UNKNOWN_LANGUAGE, "read", raw.drop_reason, documents=1)
            return
        lang, score = language or (UNKNOWN_LANGUAGE, 0.0)
        for reason, length in doc.dropped:
            tally.add(lang, "filter", reason, paragraphs=1, characters=length)
        if doc.reason:
            tally.add(lang, "filter", doc.reason, documents=1, paragraphs=len(doc.kept), characters=_chars(doc.kept))
        elif self.settings.lid_level == "document":
            reason = self._language_reason(lang, score)
            if reason:
                tally.add(lang, "langid", reason, documents=1, paragraphs=len(doc.kept), characters=_chars(doc.kept))
            else:
                batch.append(doc_id, doc.kept, doc.kept_keys, lang, score)
        else:
            self._route_paragraphs(batch, doc_id, doc.kept, doc.kept_keys)

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

    def _route_paragraphs(self, batch: CleanBatch, doc_id: str, paragraphs: list[str], keys: list[int]) -> None:
        """CC100-style: each paragraph goes to its own language; a document becomes one record
        per language it contains (paragraph order kept)."""
        tally = batch.tally
        routed: dict[str, tuple[list[str], list[int], list[float]]] = {}
        reasons = []
        for paragraph, key in zip(paragraphs, keys):
            lang, score = self.lid.predict(self._lid_sample(paragraph))
            reason = self._language_reason(lang, score)
            if reason:
                tally.add(lang, "langid", reason, paragraphs=1, characters=len(paragraph))
                reasons.append((lang, reason))
                continue
            texts, text_keys, scores = routed.setdefault(lang, ([], [], []))
            texts.append(paragraph)
            text_keys.append(key)
            scores.append(score)
        if not routed:
            lang, reason = reasons[0]
            tally.add(lang, "langid", reason, documents=1)
        for lang, (texts, text_keys, scores) in routed.items():
            if self.filter.too_short(texts):
                tally.add(lang, "filter", "doc_too_short", documents=1, paragraphs=len(texts), characters=_chars(texts))
                continue
            weights = list(map(len, texts))
            score = sum(s * w for s, w in zip(scores, weights)) / sum(weights)
            batch.append(f"{doc_id}/{lang}", texts, text_keys, lang, score)
