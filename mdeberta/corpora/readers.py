"""Input discovery and readers: CC100 text (plain, .gz, .xz), JSONL, Parquet, Hugging Face datasets.

Each input shard (a file, or a slice of a Hugging Face dataset) yields raw documents in order.
A damaged shard raises ``InputError`` naming the file and what to do; a bad record inside an
otherwise good shard becomes a document with a drop reason, so it is counted, not lost.
"""

from __future__ import annotations

import gzip
import json
import lzma
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from ..manifest import file_stamp

TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")  # not .json: that is usually one JSON value, not lines
PARQUET_SUFFIXES = (".parquet",)
COMPRESSIONS = {".gz": gzip.open, ".xz": lzma.open}
HF_ROWS_PER_SHARD = 100_000
_BINARY_PROBE_BYTES = 1 << 16
_COMPRESSION_ERRORS = (EOFError, OSError, lzma.LZMAError, zlib.error)


class InputError(UserError):
    """An input that cannot be read; the message names it and says what to do."""


@dataclass(frozen=True)
class InputShard:
    index: int
    kind: str  # text | jsonl | parquet | hf
    path: str
    part: int = 0  # for hf: this slice ...
    parts: int = 1  # ... of this many

    @property
    def name(self) -> str:
        return f"{self.path}[{self.part}/{self.parts}]" if self.kind == "hf" else self.path

    def fingerprint(self) -> dict:
        if self.kind == "hf":
            return {"name": self.name}
        return {"name": self.name, **file_stamp(Path(self.path))}


@dataclass
class RawDocument:
    text: str
    invalid_bytes: int = 0  # undecodable UTF-8 bytes, replaced by U+FFFD
    overlong_chars: tuple[int, ...] = ()  # lengths of lines too long to read, skipped while reading
    drop_reason: str | None = None  # set for records that could not be read at all


def _kind_of(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSIONS else None
    base = suffixes[-1] if suffixes else None
    if base in PARQUET_SUFFIXES:
        return None if compression else "parquet"
    if base in JSONL_SUFFIXES:
        return "jsonl"
    if base in TEXT_SUFFIXES or compression:  # CC100 names its files en.txt.xz; en.xz is text too
        return "text"
    return None


def _is_saved_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in ("dataset_info.json", "dataset_dict.json", "state.json"))


def discover_inputs(paths: list[str], hf_dataset: str | None = None, hf_config: str | None = None,
                    split: str = "train", streaming: bool = False) -> list[InputShard]:
    """Expand files and folders into an ordered list of shards; the order fixes which copy of a
    duplicate counts as the first."""
    found: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"input not found: {raw}")
        if _is_saved_hf_dataset(path):
            hf_dataset = hf_dataset or str(path)
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        kinds = [(str(f), _kind_of(f)) for f in files]
        if path.is_file() and kinds[0][1] is None:
            raise InputError(f"{raw}: unsupported input type; expected .txt, .jsonl or .parquet, "
                             "optionally compressed as .gz or .xz")
        matched = [(f, kind) for f, kind in kinds if kind is not None]
        if path.is_dir() and not matched:
            raise InputError(f"{raw}: folder holds no .txt, .jsonl or .parquet files (.gz/.xz allowed)")
        found.extend(matched)
    shards = [InputShard(i, kind, f) for i, (f, kind) in enumerate(found)]
    if hf_dataset:
        parts = _hf_parts(hf_dataset, hf_config, split, streaming)
        shards += [InputShard(len(shards) + i, "hf", hf_dataset, i, parts) for i in range(parts)]
    if not shards:
        raise InputError("no inputs: give input files or folders, or --hf-dataset NAME")
    return shards


def read_documents(shard: InputShard, text_field: str = "text", max_line_chars: int = 10_000,
                   hf_config: str | None = None, split: str = "train", streaming: bool = False) -> Iterator[RawDocument]:
    if shard.kind == "hf":
        yield from _read_hf(shard, text_field, hf_config, split, streaming)
    elif shard.kind == "parquet":
        yield from _read_parquet(shard.path, text_field)
    else:
        suffix = Path(shard.path).suffix.lower()
        opener = COMPRESSIONS.get(suffix, open)
        try:
            with opener(shard.path, "rb") as f:
                if shard.kind == "jsonl":
                    yield from _read_jsonl(f, shard.path, text_field)
                else:
                    yield from _read_cc100_text(f, shard.path, max_line_chars)
        except _COMPRESSION_ERRORS as err:
            what = f"{suffix[1:]} file" if suffix in COMPRESSIONS else "file"
            raise InputError(f"{shard.path}: damaged or truncated {what} ({err}); "
                             "re-download or recompress it, the other shards are unaffected") from None


def _decode(line: bytes) -> tuple[str, int]:
    try:
        return line.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = line.decode("utf-8", errors="replace")
        return text, text.count("\ufffd") - line.count("\ufffd".encode())


def _check_no_nul(path: str, position: int, line: bytes) -> None:
    """Fail fast on a file that is not text, e.g. an unsupported compression or a model file."""
    if b"\x00" in line:
        raise InputError(f"{path}: binary data (NUL byte near byte {position + line.index(0)}), not text; "
                         "is it compressed with an unsupported format? (.gz and .xz are read)")


def _check_utf8(path: str, invalid_bytes: int, total_bytes: int) -> None:
    if invalid_bytes > 0.1 * total_bytes:
        raise InputError(f"{path}: {invalid_bytes} of the first {total_bytes} bytes are not UTF-8; "
                         "this is not UTF-8 text (convert it with iconv first)")


def _read_cc100_text(f, path: str, max_line_chars: int) -> Iterator[RawDocument]:
    """One paragraph per line, documents separated by blank lines. A line longer than any kept
    paragraph could be (4 bytes per character) is skipped in chunks, never held in memory."""
    limit = 4 * max_line_chars + 1
    paragraphs: list[str] = []
    invalid = 0
    overlong: list[int] = []
    position = probe_invalid = 0
    probing = True  # the first bytes decide whether this is text at all
    while line := f.readline(limit):
        if probing:
            _check_no_nul(path, position, line)
        position += len(line)
        if len(line) == limit and not line.endswith(b"\n"):
            length = len(line.decode("utf-8", errors="replace"))
            while not line.endswith(b"\n") and (line := f.readline(limit)):
                position += len(line)
                length += len(line.decode("utf-8", errors="replace").rstrip("\n"))
            overlong.append(length)
            continue
        text, bad = _decode(line)
        if probing:
            probe_invalid += bad
            if position >= _BINARY_PROBE_BYTES:
                _check_utf8(path, probe_invalid, position)
                probing = False
        if text.strip():
            paragraphs.append(text.rstrip("\r\n"))
            invalid += bad
        elif paragraphs or overlong:
            yield RawDocument("\n".join(paragraphs), invalid, tuple(overlong))
            paragraphs, invalid, overlong = [], 0, []
    if probing and position:
        _check_utf8(path, probe_invalid, position)
    if paragraphs or overlong:
        yield RawDocument("\n".join(paragraphs), invalid, tuple(overlong))


def _read_jsonl(f, path: str, text_field: str) -> Iterator[RawDocument]:
    bad_lines = 0
    for number, line in enumerate(f, start=1):
        if number == 1:
            _check_no_nul(path, 0, line[:_BINARY_PROBE_BYTES])
        if not line.strip():
            continue
        text, invalid = _decode(line)
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            bad_lines += 1
            if bad_lines == number and number >= 20:
                raise InputError(f"{path}: none of the first {number} lines is JSON; is this JSONL?") from None
            yield RawDocument("", drop_reason="unreadable_record")
            continue
        value = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            if number == 1:
                fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise InputError(f"{path}:1: no string field '{text_field}' (record has: {fields}); "
                                 "set --text-field")
            yield RawDocument("", drop_reason="missing_text_field")
            continue
        yield RawDocument(value, invalid)
    if bad_lines and bad_lines == number:
        raise InputError(f"{path}: no line is valid JSON; is this JSONL?")


def _read_parquet(path: str, text_field: str) -> Iterator[RawDocument]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None
    columns = parquet.schema_arrow.names
    if text_field not in columns:
        raise InputError(f"{path}: no column '{text_field}' (columns: {', '.join(columns)}); set --text-field")
    try:
        for batch in parquet.iter_batches(columns=[text_field], batch_size=1024):
            for value in batch.column(0).to_pylist():
                yield RawDocument(value) if isinstance(value, str) else RawDocument("", drop_reason="missing_text_field")
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{path}: damaged Parquet file ({err}); re-create it, the other shards are unaffected") from None


def _load_hf(name: str, config: str | None, split: str, streaming: bool):
    import datasets

    try:
        if _is_saved_hf_dataset(Path(name)):
            dataset = datasets.load_from_disk(name)
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise InputError(f"{name}: no split '{split}' (splits: {', '.join(dataset)}); set --split")
                dataset = dataset[split]
            return dataset
        return datasets.load_dataset(name, config, split=split, streaming=streaming)
    except InputError:
        raise
    except Exception as err:  # datasets raises many types (hub, network, config); all mean "cannot load"
        raise InputError(f"--hf-dataset {name}: cannot load it ({type(err).__name__}: {err}); "
                         "offline, pass a folder saved with datasets.save_to_disk") from None


def _hf_parts(name: str, config: str | None, split: str, streaming: bool) -> int:
    dataset = _load_hf(name, config, split, streaming)
    if hasattr(dataset, "__len__"):
        return max(1, math.ceil(len(dataset) / HF_ROWS_PER_SHARD))
    return max(1, dataset.num_shards)


def _read_hf(shard: InputShard, text_field: str, config: str | None, split: str, streaming: bool) -> Iterator[RawDocument]:
    dataset = _load_hf(shard.path, config, split, streaming)
    columns = dataset.column_names or []
    if columns and text_field not in columns:
        raise InputError(f"--hf-dataset {shard.path}: no column '{text_field}' (columns: {', '.join(columns)}); "
                         "set --text-field")
    if shard.parts > 1:
        dataset = dataset.shard(num_shards=shard.parts, index=shard.part, contiguous=True)
    for record in dataset.select_columns([text_field]):
        value = record[text_field]
        yield RawDocument(value) if isinstance(value, str) else RawDocument("", drop_reason="missing_text_field")
