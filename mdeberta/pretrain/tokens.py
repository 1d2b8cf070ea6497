"""Step 1 of pretraining: the corpus stage's shards as per-language token streams on disk.

Each language becomes one flat uint32 array, ``<out>/<lang>.bin``: its documents' SentencePiece
ids, each document followed by [SEP], so packing can cut sequences anywhere and still keep the
document boundaries. ``<lang>.idx.npy`` holds the documents' start offsets (docs + 1 of them).
A small held-out slice of documents goes to ``<out>/valid/`` in the same format.

Raw SentencePiece is used rather than the transformers tokenizer: its batch ``encode`` is several
times faster, and it never turns a literal "[MASK]" in web text into the special token.

Work is split one task per input shard over worker processes. Each task writes its shard's
streams under ``<out>/_shards`` to temporary names and renames them, its summary last, so an
interrupted run redoes only the shards without a summary. The per-language files are then
assembled from the shard outputs and ``tokens.json`` is written last: a folder with a
``tokens.json`` whose inputs are unchanged is reused without reading the corpus again.

Which documents are held out depends only on a hash of the language and the document's id, never
on worker count or order. A language with at least two documents always holds out at least one
(its smallest hash) so every language can be validated; a fraction of 0 holds out nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from itertools import chain
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sentencepiece as spm
from tqdm import tqdm

from ..console import log
from ..errors import UserError
from ..manifest import file_stamp, write_json_atomic
from ..storage import WriteError, reserve_disk, writing
from ..corpora.contract import TEXT_COLUMN, CorpusError, language_shards
from ..workers import available_cores, quiet_after_kill, start_worker

INVENTORY = "tokens.json"
VALID = "valid"
SHARDS = "_shards"
SPM_MODEL = "spm.model"
ID_COLUMN = "id"
TOKEN_DTYPE = np.uint32
OFFSET_DTYPE = np.int64
BATCH_DOCUMENTS = 1024  # documents per record batch: bounds a worker's memory on any shard size
FORMAT_VERSION = 1


class TokenizerModelError(UserError):
    """The tokenizer folder has no usable spm.model."""


class TokenSettingsError(UserError):
    """A tokenization setting is out of range."""


class TokenStreamsError(UserError):
    """A token folder is missing or not the output of this step."""


@dataclass
class LanguageTokens:
    """What one language's streams hold; every document read is in exactly one of the counts."""
    docs: int = 0  # the training split's; the held-out slice's are valid_docs
    tokens: int = 0  # [SEP]s included
    valid_docs: int = 0
    valid_tokens: int = 0
    empty_docs: int = 0  # no text, or no token after encoding: written nowhere, counted here
    text_bytes: int = 0
    shards: list[dict] = field(default_factory=list)  # source shard path (relative), bytes, mtime


@dataclass
class TokenInventory:
    """The token folder's contents, as written to ``tokens.json``."""
    out: Path
    languages: dict[str, LanguageTokens]
    vocab_size: int  # SentencePiece pieces + [MASK]
    pad_id: int
    cls_id: int
    sep_id: int
    unk_id: int
    mask_id: int
    tokenizer: dict  # spm.model fingerprint
    validation_fraction: float

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("out")
        return {"format": FORMAT_VERSION, **data}

    @classmethod
    def load(cls, out: Path) -> TokenInventory:
        out = Path(out)
        try:
            data = json.loads((out / INVENTORY).read_text(encoding="utf-8"))
            if data.pop("format") != FORMAT_VERSION:
                raise ValueError("another format version")
            data["languages"] = {lang: LanguageTokens(**row) for lang, row in data["languages"].items()}
            return cls(out=out, **data)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise TokenStreamsError(f"{out / INVENTORY}: not a finished token folder ({err}); "
                                    "run `mdeberta pretrain run` to tokenize the corpus") from None


def stream_path(out: Path, lang: str, split: str = "train") -> Path:
    return _split_folder(out, split) / f"{lang}.bin"


def index_path(out: Path, lang: str, split: str = "train") -> Path:
    return _split_folder(out, split) / f"{lang}.idx.npy"


def _split_folder(out: Path, split: str) -> Path:
    if split not in ("train", VALID):
        raise ValueError(f"split must be 'train' or '{VALID}', not {split!r}")
    return Path(out) if split == "train" else Path(out) / VALID


def _fingerprint(path: Path, root: Path) -> dict:
    return {"path": str(path.relative_to(root)), **file_stamp(path)}


def _tokenizer_fingerprint(model: Path) -> dict:
    return {"sha256": hashlib.sha256(model.read_bytes()).hexdigest(), "bytes": model.stat().st_size}


def held_out_key(lang: str, doc_id: str) -> float:
    """A uniform number in [0, 1) fixed by the document alone."""
    digest = hashlib.blake2b(f"{lang}\0{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


# --- one shard (runs in a worker process) --------------------------------------------------------

_worker: dict = {}


def _start_worker(model: str, progress_queue) -> None:
    _worker["spm"] = spm.SentencePieceProcessor(model_file=model)
    _worker["queue"] = progress_queue


def _start_worker_process(model: str, progress_queue) -> None:
    """Ctrl-C is the parent's to handle (it cancels the pool); finished shards stay finished."""
    start_worker()
    _start_worker(model, progress_queue)


@dataclass
class ShardTask:
    lang: str
    source: Path
    fingerprint: dict
    prefix: Path  # <out>/_shards/<lang>/part-NNNNN; outputs are <prefix>.<split>.bin/.idx.npy/.json
    fraction: float
    tokenizer: dict

    @property
    def summary(self) -> Path:
        return self.prefix.with_name(self.prefix.name + ".json")

    def output(self, split: str, suffix: str) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.{split}{suffix}")

    def is_done(self) -> bool:
        try:
            summary = json.loads(self.summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return summary.get("inputs") == self.inputs()

    def inputs(self) -> dict:
        return {"source": self.fingerprint, "fraction": self.fraction, "tokenizer": self.tokenizer}


class _SplitWriter:
    """A shard's documents of one split: tokens appended to a temporary file, lengths kept for the index."""

    def __init__(self, task: ShardTask, split: str):
        self.task, self.split = task, split
        self.path, self.tmp = task.output(split, ".bin"), task.output(split, ".bin.tmp")
        with writing(self.path):
            self.file = open(self.tmp, "wb")
        self.lengths: list[np.ndarray] = []

    def add(self, documents: list[list[int]]) -> int:
        """Documents already ending in [SEP] (SentencePiece's end-of-sentence id is [SEP])."""
        if not documents:
            return 0
        lengths = np.fromiter(map(len, documents), dtype=OFFSET_DTYPE, count=len(documents))
        total = int(lengths.sum())
        data = np.fromiter(chain.from_iterable(documents), dtype=TOKEN_DTYPE, count=total).tobytes()
        with writing(self.path, len(data)):
            self.file.write(data)
        self.lengths.append(lengths)
        return total

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def finish(self) -> None:
        with writing(self.path):
            self.file.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, OFFSET_DTYPE)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(OFFSET_DTYPE)
        index, index_tmp = self.task.output(self.split, ".idx.npy"), self.task.output(self.split, ".idx.tmp.npy")
        with writing(index, offsets.nbytes, partial=index_tmp):
            np.save(index_tmp, offsets)
        os.replace(self.tmp, self.path)
        os.replace(index_tmp, index)


def read_documents(source: Path) -> Iterator[tuple[list[str], list, int]]:
    """(texts, ids, UTF-8 bytes of the texts) a record batch at a time; without an id column the text
    names the document."""
    try:
        parquet = pq.ParquetFile(source)
        names = parquet.schema_arrow.names
        if TEXT_COLUMN not in names:
            raise CorpusError(f"{source}: no '{TEXT_COLUMN}' column; is it a shard of `mdeberta corpus prepare`?")
        columns = [TEXT_COLUMN] + ([ID_COLUMN] if ID_COLUMN in names else [])
        for batch in parquet.iter_batches(batch_size=BATCH_DOCUMENTS, columns=columns):
            text_bytes = int(pc.sum(pc.binary_length(batch.column(0).cast(pa.large_binary()))).as_py() or 0)
            texts = [text or "" for text in batch.column(0).to_pylist()]
            yield texts, batch.column(1).to_pylist() if len(columns) > 1 else texts, text_bytes
    except (OSError, pa.ArrowException, ValueError) as err:  # pyarrow's errors for damaged files
        raise CorpusError(f"{source}: cannot read the shard ({err}); rerun the corpus stage") from None


def tokenize_shard(task: ShardTask) -> None:
    """Encode one shard a record batch at a time; its summary, written last, marks it finished."""
    sp: spm.SentencePieceProcessor = _worker["spm"]
    progress = _worker.get("queue")
    writers = {split: _SplitWriter(task, split) for split in ("train", VALID)}
    counts = {"docs": 0, "tokens": 0, "valid_docs": 0, "valid_tokens": 0, "empty_docs": 0, "text_bytes": 0}
    # the training document with the smallest held-out key: its key, and its position among them
    first_key: float | None = None
    first_doc: int | None = None
    try:
        for texts, ids, text_bytes in read_documents(task.source):
            split_docs: dict[str, list[list[int]]] = {"train": [], VALID: []}
            for doc_id, doc in zip(ids, sp.encode(texts, out_type=int, add_eos=True, num_threads=1)):
                if len(doc) == 1:  # [SEP] alone
                    counts["empty_docs"] += 1
                    continue
                key = held_out_key(task.lang, str(doc_id))
                if key >= task.fraction and (first_key is None or key < first_key):
                    first_key, first_doc = key, counts["docs"] + len(split_docs["train"])
                split_docs[VALID if key < task.fraction else "train"].append(doc)
            batch_tokens = 0
            for split, docs in split_docs.items():
                prefix = "valid_" if split == VALID else ""
                tokens = writers[split].add(docs)
                counts[prefix + "docs"] += len(docs)
                counts[prefix + "tokens"] += tokens
                batch_tokens += tokens
            counts["text_bytes"] += text_bytes
            if progress is not None:
                progress.put((text_bytes, len(texts), batch_tokens))
        for writer in writers.values():
            writer.finish()
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    write_json_atomic(task.summary, {"inputs": task.inputs(), **counts, "first_key": first_key, "first_doc": first_doc})


# --- the whole corpus ------------------------------------------------------------------------------

def tokenize_corpus(corpus: Path, tokenizer: Path, out: Path, *, langs: list[str] | None = None,
                    validation_fraction: float = 0.005, workers: int = 0, progress: bool = True) -> TokenInventory:
    """Token streams of every (requested) language of ``corpus``; reuses ``out`` when it is up to date.

    With more than one worker the workers are spawned processes, so a script calling this needs the
    usual ``if __name__ == "__main__":`` guard (the ``mdeberta`` command has it)."""
    corpus, tokenizer, out = Path(corpus), Path(tokenizer), Path(out)
    if not 0.0 <= validation_fraction < 1.0:
        raise TokenSettingsError(f"validation fraction must be in [0, 1), not {validation_fraction}")
    model = tokenizer / SPM_MODEL
    if not model.is_file():
        raise TokenizerModelError(f"{tokenizer}: no {SPM_MODEL}; pass the output folder of "
                                  "`mdeberta tokenizer train` as the tokenizer")
    shards = language_shards(corpus, langs or [])
    fingerprints = _corpus_fingerprints(corpus, shards)
    tokenizer_print = _tokenizer_fingerprint(model)
    reused = _reusable(out, fingerprints, tokenizer_print, validation_fraction)
    if reused is not None:
        log(f"pretrain: token streams in {out} are up to date with the corpus and tokenizer; not re-tokenizing")
        return reused

    specials = _special_ids(model)
    (out / INVENTORY).unlink(missing_ok=True)
    tasks = [ShardTask(lang, part, print_, out / SHARDS / lang / part.stem, validation_fraction, tokenizer_print)
             for lang, parts in shards.items() for part, print_ in zip(parts, fingerprints[lang])]
    for task in tasks:
        task.prefix.parent.mkdir(parents=True, exist_ok=True)
    _run_tasks([task for task in tasks if not task.is_done()], model, workers or available_cores(), progress)

    (out / VALID).mkdir(parents=True, exist_ok=True)
    languages = {}
    for lang in shards:
        lang_tasks = [task for task in tasks if task.lang == lang]
        languages[lang] = _assemble_language(out, lang, lang_tasks, fingerprints[lang])
    inventory = TokenInventory(out=out, languages=languages, tokenizer=tokenizer_print,
                               validation_fraction=validation_fraction, **specials)
    write_json_atomic(out / INVENTORY, inventory.to_json())
    shutil.rmtree(out / SHARDS, ignore_errors=True)
    return inventory


def corpus_changes(out: Path, corpus: Path, langs: list[str] | None = None) -> list[str]:
    """In words, how ``corpus`` differs from the one the streams in ``out`` were made from: what
    re-tokenizing would change. Empty when ``out`` holds no finished streams."""
    inventory = _finished_inventory(Path(out))
    if inventory is None:
        return []
    corpus = Path(corpus)
    return _shard_changes(inventory, _corpus_fingerprints(corpus, language_shards(corpus, langs or [])))


def vocabulary_size(model: Path) -> int:
    """Ids a model trained with this spm.model has: its pieces and [MASK]."""
    return _special_ids(model)["vocab_size"]


def _corpus_fingerprints(corpus: Path, shards: dict[str, list[Path]]) -> dict[str, list[dict]]:
    return {lang: [_fingerprint(part, corpus) for part in parts] for lang, parts in shards.items()}


def _shard_changes(inventory: TokenInventory, fingerprints: dict) -> list[str]:
    recorded = {lang: row.shards for lang, row in inventory.languages.items()}
    altered = sorted(lang for lang in recorded.keys() & fingerprints.keys() if recorded[lang] != fingerprints[lang])
    added, gone = sorted(fingerprints.keys() - recorded.keys()), sorted(recorded.keys() - fingerprints.keys())
    return [f"{what} {', '.join(langs)}" for what, langs in
            (("shards changed:", altered), ("languages added:", added), ("languages gone:", gone)) if langs]


def _reusable(out: Path, fingerprints: dict, tokenizer_print: dict, fraction: float) -> TokenInventory | None:
    inventory = _finished_inventory(out)
    if inventory is None:
        return None
    same = (inventory.tokenizer == tokenizer_print and inventory.validation_fraction == fraction
            and not _shard_changes(inventory, fingerprints))
    files = all(path.is_file() for lang in inventory.languages for split in ("train", VALID)
                for path in (stream_path(out, lang, split), index_path(out, lang, split)))
    return inventory if same and files else None


def _finished_inventory(out: Path) -> TokenInventory | None:
    try:
        return TokenInventory.load(out)
    except TokenStreamsError:
        return None


def _special_ids(model: Path) -> dict:
    """Ids of the special tokens as the tokenizer stage placed them; [MASK] follows the pieces."""
    try:
        sp = spm.SentencePieceProcessor(model_file=str(model))
    except (RuntimeError, OSError):
        raise TokenizerModelError(f"{model}: not a readable SentencePiece model; train the tokenizer again with "
                                  "`mdeberta tokenizer train`") from None
    ids = {"pad_id": sp.pad_id(), "cls_id": sp.bos_id(), "sep_id": sp.eos_id(), "unk_id": sp.unk_id()}
    missing = [name for name, value in ids.items() if value < 0]
    if missing:
        raise TokenizerModelError(f"{model}: no {', '.join(missing)} piece; train the tokenizer with "
                                  "`mdeberta tokenizer train`, which places [PAD] [CLS] [SEP] [UNK] at ids 0-3")
    pieces = sp.get_piece_size()
    return {**ids, "mask_id": pieces, "vocab_size": pieces + 1}


def _run_tasks(tasks: list[ShardTask], model: Path, workers: int, progress: bool) -> None:
    """Largest shards first, so the last tasks to finish are small ones; a bad shard is reported
    after the others have finished."""
    tasks = sorted(tasks, key=lambda task: task.fingerprint["bytes"], reverse=True)
    if not tasks:
        return
    workers = min(workers, len(tasks))
    bar = _ProgressBar(progress)
    try:
        run = _run_here if workers == 1 else _run_in_processes  # one worker or one shard: no process start-up
        failures = run(tasks, model, workers, bar)
    finally:
        bar.close()
    _raise_first_bug_or_all_bad_shards(failures)


def _run_here(tasks: list[ShardTask], model: Path, workers: int, bar: _ProgressBar) -> list[BaseException]:
    _start_worker(str(model), bar)
    failures = []
    for task in tasks:
        try:
            tokenize_shard(task)
        except UserError as error:
            failures.append(error)
    return failures


def _run_in_processes(tasks: list[ShardTask], model: Path, workers: int, bar: _ProgressBar) -> list[BaseException]:
    context = get_context("spawn")  # never fork a parent that may hold torch's threads
    quiet_after_kill()
    updates = context.Queue()
    failures = []
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker_process,
                             initargs=(str(model), updates)) as pool:
        pending: set[Future] = {pool.submit(tokenize_shard, task) for task in tasks}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(updates, bar)
                failures += [future.exception() for future in done if future.exception()]
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    _drain(updates, bar)
    return failures


def _raise_first_bug_or_all_bad_shards(failures: list[BaseException]) -> None:
    """The other shards are finished and kept, so a rerun after fixing the named ones redoes only those.
    A refused write is not the shard's fault: the first is reported alone."""
    bugs = [error for error in failures if not isinstance(error, UserError) or isinstance(error, WriteError)]
    if bugs:
        raise bugs[0]
    if failures:
        raise CorpusError("; ".join(sorted(map(str, failures))))


def _drain(updates, bar: _ProgressBar) -> None:
    while True:
        try:
            bar.update(*updates.get_nowait())
        except queue.Empty:
            return


class _ProgressBar:
    """Text megabytes per second, with documents and tokens per second beside them."""

    def __init__(self, enabled: bool):
        self.bar = tqdm(desc="pretrain tokenize", unit="B", unit_scale=True, dynamic_ncols=True,
                        disable=None if enabled else True)
        self.started, self.docs, self.tokens = time.time(), 0, 0

    def put(self, update: tuple[int, int, int]) -> None:
        """Same call as the workers' progress queue, for shards tokenized in this process."""
        self.update(*update)

    def update(self, text_bytes: int, docs: int, tokens: int) -> None:
        self.docs += docs
        self.tokens += tokens
        elapsed = max(time.time() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.docs / elapsed:,.0f} docs/s, {self.tokens / elapsed / 1e6:.2f} Mtok/s",
                                 refresh=False)
        self.bar.update(text_bytes)

    def close(self) -> None:
        self.bar.close()


def _assemble_language(out: Path, lang: str, tasks: list[ShardTask], fingerprints: list[dict]) -> LanguageTokens:
    """Concatenate the shards' streams (in shard order) into the language's files."""
    summaries = [json.loads(task.summary.read_text(encoding="utf-8")) for task in tasks]
    row = LanguageTokens(shards=fingerprints)
    for summary in summaries:
        for name in ("docs", "tokens", "valid_docs", "valid_tokens", "empty_docs", "text_bytes"):
            setattr(row, name, getattr(row, name) + summary[name])
    moved = None  # the task holding the document held out because no key fell below the fraction
    if row.valid_docs == 0 and row.docs >= 2 and tasks[0].fraction > 0:
        moved = min((i for i, summary in enumerate(summaries) if summary["first_key"] is not None),
                    key=lambda i: summaries[i]["first_key"])
    train_parts, valid_parts = [], []
    for position, task in enumerate(tasks):
        tokens, offsets = _load_part(task, "train")
        if position == moved:
            kept, held_out = _take_document(tokens, offsets, summaries[position]["first_doc"])
            train_parts += kept
            valid_parts.append(held_out)
            size = len(held_out[0])
            row.docs, row.tokens, row.valid_docs, row.valid_tokens = row.docs - 1, row.tokens - size, 1, size
        else:
            train_parts.append((tokens, offsets))
        valid_parts.append(_load_part(task, VALID))
    _write_stream(out, lang, "train", train_parts)
    _write_stream(out, lang, VALID, valid_parts)
    return row


Part = tuple[np.ndarray, np.ndarray]  # tokens, document offsets from 0


def _take_document(tokens: np.ndarray, offsets: np.ndarray, doc: int) -> tuple[list[Part], Part]:
    """The parts before and after document ``doc``, and the document itself."""
    start, end = int(offsets[doc]), int(offsets[doc + 1])
    kept = [(tokens[:start], offsets[:doc + 1]), (tokens[end:], offsets[doc + 1:] - end)]
    return kept, (tokens[start:end], np.array([0, end - start], OFFSET_DTYPE))


def _load_part(task: ShardTask, split: str) -> Part:
    offsets = np.load(task.output(split, ".idx.npy"))
    path = task.output(split, ".bin")
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r") if offsets[-1] else np.zeros(0, TOKEN_DTYPE)
    return tokens, offsets


def _write_stream(out: Path, lang: str, split: str, parts: list[Part]) -> None:
    """Tokens copied in bounded chunks; the index built straight into its .npy file."""
    bin_path, idx_path = stream_path(out, lang, split), index_path(out, lang, split)
    bin_tmp, idx_tmp = bin_path.with_name(bin_path.name + ".tmp"), idx_path.with_name(idx_path.name + ".tmp.npy")
    docs = sum(len(offsets) - 1 for _, offsets in parts)
    with writing(idx_path, (docs + 1) * np.dtype(OFFSET_DTYPE).itemsize, partial=idx_tmp):
        index = np.lib.format.open_memmap(idx_tmp, mode="w+", dtype=OFFSET_DTYPE, shape=(docs + 1,))
        reserve_disk(idx_tmp)
    index[0] = written = filled = 0
    chunk = 1 << 24
    with writing(bin_path, sum(tokens.nbytes for tokens, _ in parts), partial=bin_tmp), open(bin_tmp, "wb") as stream:
        for tokens, offsets in parts:
            chunks = range(0, len(tokens), chunk)
            stream.writelines(np.asarray(tokens[start:start + chunk]).tobytes() for start in chunks)
            index[filled + 1:filled + len(offsets)] = offsets[1:] + written
            filled += len(offsets) - 1
            written += len(tokens)
    index.flush()
    del index
    os.replace(bin_tmp, bin_path)
    os.replace(idx_tmp, idx_path)
