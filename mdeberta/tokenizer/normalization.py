"""Input normalisation, on both sides: the rules compiled into spm.model, and the `tokenizers`
normaliser that reproduces them in tokenizer.json.

transformers' ``Precompiled`` normaliser applies SentencePiece's character map one grapheme
cluster at a time and, when only the start of a cluster is in the map, replaces the whole
cluster with that start's mapping. With SentencePiece's NFKC map this silently drops combining
marks (a fullwidth apostrophe or an Arabic presentation form followed by a diacritic). Control
characters never share a grapheme cluster with their neighbours, so a map that only touches
them is applied identically by both libraries: that is the default, ``controls``. Unicode
composition is left to the corpus stage (NFC) and never differs between the two.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from tokenizers import Regex, normalizers

from ..storage import write_text_atomic

# Whitespace controls become spaces (then collapse like any space); the other C0/C1 controls
# are removed. NUL cannot be a key of SentencePiece's map, so it stays (and is spelled in bytes).
_WHITESPACE_CONTROLS = "\t\n\x0b\x0c\r\x85"


def control_rules() -> str:
    """The ``controls`` normalisation as a SentencePiece rule TSV (source and target code points in hex)."""
    rows = []
    for code in [*range(1, 0x20), *range(0x7F, 0xA0)]:
        assert unicodedata.category(chr(code)) == "Cc"
        target = "20" if chr(code) in _WHITESPACE_CONTROLS else ""
        rows.append(f"{code:X}\t{target}\n")
    return "".join(rows)


def spm_normalization_options(name: str, work: Path) -> dict:
    """Trainer options that select the normalisation ``name``."""
    if name == "controls":
        path = work / "normalization_rules.tsv"
        write_text_atomic(path, control_rules())
        return {"normalization_rule_tsv": str(path)}
    return {"normalization_rule_name": name}


def hf_normalizer(normalizer_spec) -> normalizers.Normalizer:
    """SentencePiece's normaliser as `tokenizers` steps: its precompiled character map, then, as
    ``remove_extra_whitespaces`` does, runs of ASCII spaces made one and those at the ends removed
    (only ASCII spaces: SentencePiece leaves other whitespace to the map)."""
    steps = []
    if normalizer_spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(normalizer_spec.precompiled_charsmap))
    if normalizer_spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Replace(Regex(r"\A | \z"), "")]
    return normalizers.Sequence(steps)
