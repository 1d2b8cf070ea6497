"""Settings of the tokenizer stage (the ``[tokenizer]`` section of a recipe)."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import SettingsError, setting

NORMALIZATIONS = ("controls", "nmt_nfkc")
RESERVED_PIECES = 4 + 256  # [PAD] [CLS] [SEP] [UNK] and the byte pieces


@dataclass
class TokenizerSettings:
    langs: list[str] = setting([], "languages of the corpus to train on (default: every <lang> folder)",
                               group="sample", metavar="A,B,...")
    alpha: float = setting(0.3, "language sampling exponent: share q_i = p_i^alpha / sum_j p_j^alpha "
                           "(1: proportional to size, 0: uniform)", group="sample")
    sentences: int = setting(1_000_000, "lines (paragraphs) in the training sample, over all languages",
                             group="sample", metavar="N")
    seed: int = setting(0, "seed of the sample draw", group="sample")
    report_lines: int = setting(1000, "lines per language, drawn apart from the sample, that the fit "
                                "report in README.md and report.md is measured on", group="sample", metavar="N")

    vocab_size: int = setting(250_000, "SentencePiece pieces, [PAD] [CLS] [SEP] [UNK] and the 256 byte "
                              "pieces included; [MASK] comes on top", group="vocabulary", metavar="N")
    character_coverage: float = setting(0.9995, "share of the sample's characters that get a piece of their "
                                        "own; rarer ones are spelled with byte pieces", group="vocabulary")
    normalization: str = setting("controls", "input normalisation compiled into spm.model: 'controls' maps "
                                 "tabs and line breaks to spaces and removes other control characters "
                                 "(transformers agrees exactly on any text); 'nmt_nfkc' is SentencePiece's "
                                 "NFKC (transformers' copy of it loses combining marks after some compatibility "
                                 "characters)", choices=NORMALIZATIONS, group="vocabulary")
    max_sentence_length: int = setting(4192, "lines longer than this many UTF-8 bytes are split at spaces "
                                       "(SentencePiece would skip them)", group="vocabulary", metavar="BYTES")
    allow_smaller_vocab: bool = setting(False, "when the sample cannot fill --vocab-size, train the largest "
                                        "vocabulary it supports and warn, instead of stopping",
                                        group="vocabulary")
    model_max_length: int = setting(512, "model_max_length written to tokenizer_config.json", group="vocabulary",
                                    metavar="TOKENS")

    max_memory: float = setting(0.0, "GiB SentencePiece may use (0: the machine's available memory)",
                                affects_output=False, group="execution", metavar="GIB")
    threads: int = setting(0, "SentencePiece training threads (0: one per available core)",
                           affects_output=False, group="execution", metavar="N")

    def __post_init__(self):
        """Values SentencePiece would reject only after the sample is drawn, refused up front."""
        if self.vocab_size <= RESERVED_PIECES:
            raise SettingsError(f"vocab_size must exceed the {RESERVED_PIECES} reserved pieces "
                                f"(4 special + 256 byte pieces), got {self.vocab_size}")
        if self.sentences < 1:
            raise SettingsError(f"sentences must be at least 1, got {self.sentences}")
        if self.alpha < 0:
            raise SettingsError(f"alpha must be >= 0, got {self.alpha}")
        if not 0 < self.character_coverage <= 1:
            raise SettingsError(f"character_coverage must be in (0, 1], got {self.character_coverage}")
