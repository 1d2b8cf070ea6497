"""How well a tokenizer fits each language: fertility, unknown and byte-fallback rates, and the
share of the vocabulary a language uses. Any transformers tokenizer folder can be measured, so
ours can be put side by side with another (XLM-R's, mDeBERTa's).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..manifest import write_json_atomic
from ..storage import write_text_atomic

# Scripts written without spaces between words: fertility is counted per character there.
NO_SPACE_LANGUAGES = {"zh", "ja", "th", "lo", "km", "my", "bo", "yue", "wuu"}
_BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")


class ReportError(UserError):
    """A tokenizer folder that is missing or cannot be loaded."""


@dataclass
class LanguageFit:
    lang: str
    lines: int
    characters: int
    words: int
    unit: str  # "word" or "character": what fertility counts pieces per
    pieces: int
    fertility: float
    unknown_rate: float  # share of pieces that are the unknown token
    byte_rate: float  # share of pieces that are byte-fallback pieces
    vocabulary_used: float  # distinct pieces used / vocabulary size


def language_code(lang: str) -> str:
    return re.split(r"[_-]", lang)[0]


def measure(tokenizer, lines: list[str], lang: str) -> LanguageFit:
    """``tokenizer`` is a transformers tokenizer; special tokens are not counted."""
    ids = tokenizer(lines, add_special_tokens=False)["input_ids"] if lines else []
    flat = [i for row in ids for i in row]
    byte_ids = _byte_piece_ids(tokenizer)
    characters = sum(len(line.replace(" ", "")) for line in lines)
    words = sum(len(line.split()) for line in lines)
    per_character = language_code(lang) in NO_SPACE_LANGUAGES
    units = characters if per_character else words
    pieces = len(flat)
    return LanguageFit(
        lang=lang, lines=len(lines), characters=characters, words=words,
        unit="character" if per_character else "word", pieces=pieces,
        fertility=pieces / units if units else 0.0,
        unknown_rate=sum(i == tokenizer.unk_token_id for i in flat) / pieces if pieces else 0.0,
        byte_rate=sum(i in byte_ids for i in flat) / pieces if pieces else 0.0,
        vocabulary_used=len(set(flat)) / len(tokenizer))


def _byte_piece_ids(tokenizer) -> set[int]:
    return {i for token, i in tokenizer.get_vocab().items() if _BYTE_PIECE.match(token)}


def fit_table(tokenizer, lines_by_lang: dict[str, list[str]]) -> pd.DataFrame:
    rows = [asdict(measure(tokenizer, lines, lang)) for lang, lines in lines_by_lang.items()]
    table = pd.DataFrame(rows).set_index("lang")
    every = [line for lines in lines_by_lang.values() for line in lines]
    table.loc["all", "vocabulary_used"] = measure(tokenizer, every, "all").vocabulary_used
    return table


def write_report(out: Path, tables: dict[str, pd.DataFrame], lines_source: str) -> str:
    """``report.json`` and ``report.md`` in ``out``; returns the markdown. ``tables`` maps a
    tokenizer's name to its table; the first is the one being reported on."""
    names = list(tables)
    data = {"lines": lines_source, "tokenizers": {
        name: json.loads(table.reset_index().to_json(orient="records")) for name, table in tables.items()}}
    write_json_atomic(out / "report.json", data)
    markdown = render_markdown(tables) + f"\n\nLines: {lines_source}. Tokenizers: " + \
        "; ".join(f"`{name}`" for name in names) + ".\n"
    write_text_atomic(out / "report.md", markdown)
    return markdown


def render_markdown(tables: dict[str, pd.DataFrame]) -> str:
    """One row per language; fertility, byte and unknown rates and vocabulary use per tokenizer."""
    first = next(iter(tables.values()))
    frame = pd.DataFrame(index=first.index)
    frame["lines"] = first["lines"].map(lambda v: f"{v:.0f}" if pd.notna(v) else "")
    frame["unit"] = first["unit"]
    short = _short_names(list(tables))
    for name, table in tables.items():
        label = f" ({short[name]})" if len(tables) > 1 else ""
        frame[f"fertility{label}"] = table["fertility"].map(lambda v: f"{v:.3f}" if pd.notna(v) else "")
        frame[f"unknown %{label}"] = (100 * table["unknown_rate"]).map(lambda v: f"{v:.2f}" if pd.notna(v) else "")
        frame[f"bytes %{label}"] = (100 * table["byte_rate"]).map(lambda v: f"{v:.2f}" if pd.notna(v) else "")
        frame[f"vocab used %{label}"] = (100 * table["vocabulary_used"]).map(lambda v: f"{v:.1f}")
    return frame.fillna("").reset_index().to_markdown(index=False)


def _short_names(names: list[str]) -> dict[str, str]:
    short = {name: Path(name).name or name for name in names}
    if len(set(short.values())) < len(names):
        short = {name: f"{i + 1}" for i, name in enumerate(names)}
    return short


def draw_report_lines(corpus: Path, langs: list[str], lines: int, seed: int) -> dict[str, list[str]]:
    """Up to ``lines`` lines per language, uniformly from its shards, in one streaming pass."""
    import numpy as np

    from ..corpora.contract import language_shards
    from .sampling import Reservoir, read_lines

    rng = np.random.default_rng(seed)
    drawn = {}
    for lang, shards in language_shards(corpus, langs).items():
        reservoir = Reservoir(lines, rng)
        for batch in read_lines(shards):
            reservoir.add(batch)
        drawn[lang] = reservoir.lines
    return drawn


def load_tokenizer(folder: str | Path):
    """Any transformers tokenizer folder (ours, or e.g. a downloaded XLM-R one)."""
    from transformers import AutoTokenizer

    if not Path(folder).is_dir():
        raise ReportError(f"tokenizer folder not found: {folder}")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as err:
        raise ReportError(f"{folder}: not a transformers tokenizer folder ({str(err).splitlines()[0]})") from None


def run_report(tokenizer: Path, corpus: Path, compare: list[Path], langs: list[str], lines: int, seed: int,
               out: Path | None) -> str:
    tokenizers = {str(folder): load_tokenizer(folder) for folder in [tokenizer, *compare]}
    texts = draw_report_lines(Path(corpus), langs, lines, seed)
    tables = {name: fit_table(tok, texts) for name, tok in tokenizers.items()}
    out = Path(out or tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    return write_report(out, tables, f"up to {lines} lines per language from {corpus} (seed {seed})")
