"""SentencePiece unigram training with DeBERTa's special ids, byte fallback and a memory check.

The unigram trainer keeps the whole sample and a suffix array over it in memory; its peak grows
linearly with the sample's characters. The stage checks that estimate against the machine's free
memory before the sample is even drawn, since a trainer killed by the kernel after an hour
says nothing useful.
"""

from __future__ import annotations

import io
import os
import re
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from tqdm import tqdm

from ..errors import UserError
from ..storage import WriteError, write_bytes_atomic, write_text_atomic
from ..workers import available_cores
from .hf_files import CLS, PAD, SEP, UNK
from .normalization import spm_normalization_options
from .settings import TokenizerSettings

# Peak memory of the unigram trainer: a fixed part plus a part per character of the sample
# (the sentences, their suffix array and the seed-piece counts; measured with
# benchmarks/tokenizer.py, see benchmarks/RESULTS.md). 64-bit indices for very large samples
# make the per-character part larger.
BASE_MEMORY = 300 * 2**20
BYTES_PER_CHARACTER = 52
BYTES_PER_CHARACTER_LARGE = 80
# Above this many characters the trainer needs 64-bit suffix-array indices.
LARGE_CORPUS_CHARACTERS = 2**30


class MemoryLimitError(UserError):
    """The training sample would not fit into memory."""


class VocabularyTooLargeError(UserError):
    """The sample cannot support the requested number of pieces."""


class TrainingError(UserError):
    """SentencePiece refused the sample or the settings."""


@dataclass
class TrainResult:
    pieces: int
    requested: int
    extremely_large_corpus: bool
    threads: int


def available_memory() -> int:
    """Bytes the kernel says can be allocated without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def is_extremely_large(characters: int) -> bool:
    return characters > LARGE_CORPUS_CHARACTERS


def estimate_memory(characters: int) -> int:
    per_character = BYTES_PER_CHARACTER_LARGE if is_extremely_large(characters) else BYTES_PER_CHARACTER
    return BASE_MEMORY + per_character * characters


def check_memory(characters: int, sentences: int, max_memory_gib: float) -> None:
    """Refuse a sample whose estimated training peak exceeds the memory limit, naming the largest
    --sentences that fits (memory grows linearly with the lines drawn)."""
    limit = int(max_memory_gib * 2**30) if max_memory_gib > 0 else available_memory()
    needed = estimate_memory(characters)
    if needed <= limit:
        return
    per_line = max(characters / max(sentences, 1), 1.0)
    fits = max(int((limit - BASE_MEMORY) / (BYTES_PER_CHARACTER * per_line)), 0)
    source = "--max-memory" if max_memory_gib > 0 else "available memory"
    raise MemoryLimitError(
        f"training on {sentences:,} lines ({characters / 1e6:,.0f} M characters) needs about "
        f"{needed / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB of {source}; use --sentences {fits:,} "
        "or fewer, or raise --max-memory if more memory will be free")


def trainer_options(settings: TokenizerSettings, work: Path, characters: int, hard_limit: bool) -> dict:
    return {
        "model_type": "unigram",
        "vocab_size": settings.vocab_size,
        "character_coverage": settings.character_coverage,
        "byte_fallback": True,
        "pad_id": 0, "bos_id": 1, "eos_id": 2, "unk_id": 3,
        "pad_piece": PAD, "bos_piece": CLS, "eos_piece": SEP, "unk_piece": UNK,
        "input_sentence_size": 0,  # the sample is already drawn: train on all of it
        "max_sentence_length": settings.max_sentence_length,
        "num_threads": settings.threads or available_cores(),
        "train_extremely_large_corpus": is_extremely_large(characters),
        "hard_vocab_limit": hard_limit,
        **spm_normalization_options(settings.normalization, work),
    }


_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")
_SIZE = re.compile(r"\bsize=(\d+)")


def train_sentencepiece(lines: list[str], characters: int, settings: TokenizerSettings, work: Path,
                        progress: bool = True, warn: Callable[[str], None] = print) -> TrainResult:
    """Train ``work/spm.model`` on the sample; SentencePiece's log goes to ``work/spm_train.log``.
    The model comes back in memory and is written here, so a refused write is reported as such."""
    options = trainer_options(settings, work, characters, hard_limit=not settings.allow_smaller_vocab)
    model = io.BytesIO()
    try:
        with _trainer_log(work / "spm_train.log", progress):
            spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, **options)
    except RuntimeError as err:
        raise _explain(err, settings) from None
    write_bytes_atomic(work / "spm.model", _without_work_paths(model.getvalue()))
    pieces = spm.SentencePieceProcessor(model_file=str(work / "spm.model")).get_piece_size()
    if pieces < settings.vocab_size:
        warn(f"tokenizer: warning: the sample supports only {pieces:,} pieces, fewer than --vocab-size "
             f"{settings.vocab_size:,} (--allow-smaller-vocab); more lines or languages give more")
    return TrainResult(pieces, settings.vocab_size, options["train_extremely_large_corpus"], options["num_threads"])


def _without_work_paths(model: bytes) -> bytes:
    """The trainer records the path of its normalisation rules, a file of the work folder, which is
    removed; the rules themselves are compiled into the model. Without it, the same corpus and
    settings give the same file wherever the output folder is."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    proto.normalizer_spec.ClearField("normalization_rule_tsv")
    return proto.SerializeToString()


def _explain(err: RuntimeError, settings: TokenizerSettings) -> UserError:
    message = str(err)
    too_high = _TOO_HIGH.search(message)
    if too_high:
        return VocabularyTooLargeError(
            f"--vocab-size {settings.vocab_size:,} is more than this sample supports: at most {int(too_high[2]):,} "
            "pieces; lower --vocab-size, draw more --sentences, or pass --allow-smaller-vocab to train the largest "
            "vocabulary it supports")
    too_small = _TOO_SMALL.search(message)
    if too_small:
        return TrainingError(
            f"--vocab-size {settings.vocab_size:,} is too small for this sample: its characters at "
            f"--character-coverage {settings.character_coverage} and the special and byte pieces need "
            f"{int(too_small[2]):,}; raise --vocab-size or lower --character-coverage")
    return TrainingError(f"SentencePiece failed: {message.splitlines()[-1] if message else err!r}")


@contextmanager
def _trainer_log(path: Path, progress: bool):
    """SentencePiece logs from C++ to file descriptor 2. Send it to a file, and show its progress
    (the piece count shrinking towards the vocabulary size) on a bar."""
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    saved = os.dup(2)
    bar = tqdm(total=None, desc="tokenizer train", unit="step", dynamic_ncols=True, disable=None if progress else True,
               file=os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace"))

    lines: list[str] = []

    def pump():
        with open(read_end, encoding="utf-8", errors="replace") as pipe:
            for line in pipe:
                lines.append(line)
                size = _SIZE.search(line)
                if size or "Loaded all" in line or "Saving model" in line:
                    bar.update(1)
                    bar.set_postfix_str(f"pieces={size[1]}" if size else line.split(") ")[-1].strip()[:40])

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    failed = False
    try:
        yield path
    except BaseException:
        failed = True
        raise
    finally:
        os.dup2(saved, 2)  # closes the pipe's last write end, so the pump sees end of file
        os.close(saved)
        thread.join()
        bar.close()
        try:  # written here, not by the pump: a refused write must not stop it draining the pipe
            write_text_atomic(path, "".join(lines))
        except WriteError:
            if not failed:  # else the training's own error is the one to report
                raise
