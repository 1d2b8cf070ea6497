"""Exact deduplication at growing sizes, through the corpus stage's own dedup code.

    python benchmarks/dedup_scale.py --keys 10M,100M,400M [--tasks P] [--duplicates 0.2] --json OUT
    python benchmarks/dedup_scale.py --keys 1M,10M --datatrove-keys 1M,10M --json OUT   # against datatrove

Generated keys: documents of 5 paragraphs; each paragraph key (and each document hash) repeats an
earlier one with probability --duplicates, else is new. ``keys`` counts paragraph keys; the
documents add a fifth as many. The three steps of ``mdeberta.corpora.dedup`` run as the stage runs
them: sorting each shard's keys, the P dedup tasks (one process each, one at a time, so that each
task's peak memory is its own), and the write phase's lookup of every shard's repeats. ``seconds``
is their sum (one core; generating the keys is not counted), ``keys_per_s_per_core`` = keys /
seconds, ``peak_rss_bytes`` the largest dedup task's peak resident memory, ``bytes_per_key_held``
that peak less an idle process's, over the keys a task holds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

import numpy as np

from mdeberta.corpora import dedup

PARAGRAPHS_PER_DOC = 5


def parse_count(text: str) -> int:
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}
    text = text.strip().upper()
    return int(float(text[:-1]) * scale[text[-1]]) if text[-1] in scale else int(text)


def mix64(ids: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64's finaliser: distinct ids -> distinct, uniformly spread 64-bit keys."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(salt)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class KeyStream:
    """Ids that repeat an earlier one (uniformly chosen) with probability ``share``, else new."""

    def __init__(self, share: float, rng: np.random.Generator, salt: int):
        self.share, self.rng, self.salt, self.issued = share, rng, salt, 0

    def take(self, count: int) -> np.ndarray:
        repeat = self.rng.random(count) < self.share
        ids = np.empty(count, np.int64)
        new = count - int(repeat.sum())
        ids[~repeat] = self.issued + np.arange(new)
        ids[repeat] = self.rng.integers(0, max(self.issued + new, 1), int(repeat.sum()))
        self.issued += new
        return mix64(ids, self.salt)


def _sort_keys(folder: Path, keys: int, shards: int, share: float, out) -> None:
    """Child process: generates each shard's keys and runs the stage's per-shard sort on them."""
    rng = np.random.default_rng(0)
    paragraphs, documents = KeyStream(share, rng, 1), KeyStream(share, rng, 2)
    per_shard = keys // shards // PARAGRAPHS_PER_DOC * PARAGRAPHS_PER_DOC
    sorting = 0.0
    for shard in range(shards):
        paragraph_keys = paragraphs.take(per_shard)
        doc_keys = documents.take(per_shard // PARAGRAPHS_PER_DOC)
        started = time.perf_counter()
        dedup.write_sorted_keys(folder / f"{shard}.paragraphs.npy", paragraph_keys, shard)
        dedup.write_sorted_keys(folder / f"{shard}.documents.npy", doc_keys, shard)
        sorting += time.perf_counter() - started
    out.put((sorting, per_shard * shards))


def _task(folder: Path, shards: int, task: int, tasks: int, out) -> None:
    """Child process: one dedup task over both kinds of keys; its time, repeats and peak memory."""
    started, repeats = time.perf_counter(), 0
    for kind in ("documents", "paragraphs"):
        found = dedup.find_repeats([folder / f"{s}.{kind}.npy" for s in range(shards)], task, tasks)
        dedup.write_repeats(folder / f"{kind}-{task}.npy", found)
        repeats += len(found)
    out.put((time.perf_counter() - started, repeats, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def _lookup(folder: Path, shards: int, tasks: int, per_shard: int, out) -> None:
    """Child process: the write phase's reading of every shard's decisions."""
    started = time.perf_counter()
    for kind, count in (("documents", per_shard // PARAGRAPHS_PER_DOC), ("paragraphs", per_shard)):
        files = [folder / f"{kind}-{task}.npy" for task in range(tasks)]
        for shard in range(shards):
            dedup.repeats_in_shard(files, shard, count)
    out.put(time.perf_counter() - started)


def _datatrove(folder: Path, keys: int, shards: int, share: float, tasks: int, out) -> None:
    """Child process: datatrove's exact dedup (signature per shard, then the finder tasks) on the
    same keys, each a document whose text is the key in decimal (datatrove hashes the content);
    making the Document objects is not timed."""
    from datatrove.data import Document
    from datatrove.pipeline.dedup import ExactDedupConfig, ExactDedupSignature, ExactFindDedups

    def content(document: Document) -> bytes:  # its default hash, xxhash64, takes bytes
        return document.text.encode()

    config = ExactDedupConfig(content_getter=content)
    signature = ExactDedupSignature(str(folder / "signatures"), config, finder_workers=tasks)
    rng = np.random.default_rng(0)
    paragraphs, documents = KeyStream(share, rng, 1), KeyStream(share, rng, 2)
    per_shard = keys // shards // PARAGRAPHS_PER_DOC * PARAGRAPHS_PER_DOC
    seconds = 0.0
    for shard in range(shards):
        values = np.concatenate([paragraphs.take(per_shard), documents.take(per_shard // PARAGRAPHS_PER_DOC)])
        docs = [Document(text=str(value), id=str(row)) for row, value in enumerate(values.tolist())]
        started = time.perf_counter()
        signature.run(iter(docs), rank=shard)
        seconds += time.perf_counter() - started
    finder = ExactFindDedups(str(folder / "signatures"), str(folder / "duplicates"), config)
    for task in range(tasks):
        started = time.perf_counter()
        finder.run(rank=task, world_size=tasks)
        seconds += time.perf_counter() - started
    out.put((seconds, per_shard * shards, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def measure_datatrove(keys: int, tasks: int, shards: int, share: float, workdir: Path) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="dedup-datatrove-", dir=workdir))
    try:
        seconds, keys, peak = in_child(_datatrove, folder, keys, shards, share, tasks)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"contender": "datatrove", "keys": keys, "tasks": tasks, "seconds": round(seconds, 2),
            "keys_per_s_per_core": round(keys / seconds), "peak_rss_bytes": peak}


def _idle(out) -> None:
    out.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def in_child(target, *args):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not process.is_alive():
                sys.exit(f"{target.__name__} failed with exit code {process.exitcode}")
    process.join()
    return result


def measure(keys: int, tasks: int, shards: int, share: float, workdir: Path, idle_rss: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="dedup-scale-", dir=workdir))
    try:
        sorting, keys = in_child(_sort_keys, folder, keys, shards, share)
        finding, repeats, peak = 0.0, 0, 0
        for task in range(tasks):
            seconds, found, rss = in_child(_task, folder, shards, task, tasks)
            finding, repeats, peak = finding + seconds, repeats + found, max(peak, rss)
        lookup = in_child(_lookup, folder, shards, tasks, keys // shards)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = sorting + finding + lookup
    held = keys * (1 + 1 / PARAGRAPHS_PER_DOC) / tasks
    return {"contender": "mdeberta", "keys": keys, "tasks": tasks, "seconds": round(seconds, 2), "keys_per_s_per_core": round(keys / seconds),
            "peak_rss_bytes": peak, "bytes_per_key_held": round((peak - idle_rss) / held, 2),
            "steps_seconds": {"sort": round(sorting, 2), "find": round(finding, 2), "lookup": round(lookup, 2)},
            "repeat_share": round(repeats / (keys * (1 + 1 / PARAGRAPHS_PER_DOC)), 4)}


def median_record(rounds: list[dict]) -> dict:
    """The round of median time, with the largest peak memory of all rounds."""
    record = dict(sorted(rounds, key=lambda r: r["seconds"])[len(rounds) // 2])
    record["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in rounds)
    if "bytes_per_key_held" in record:
        record["bytes_per_key_held"] = max(r["bytes_per_key_held"] for r in rounds)
    record["rounds_seconds"] = [r["seconds"] for r in rounds]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", default="10M,100M,400M", help="paragraph keys per run, comma-separated (K/M/B)")
    parser.add_argument("--tasks", type=int, default=1, help="dedup tasks (shares of the key space)")
    parser.add_argument("--shards", type=int, default=16, help="input shards the keys are spread over")
    parser.add_argument("--duplicates", type=float, default=0.2, help="share of keys that repeat an earlier one")
    parser.add_argument("--rounds", type=int, default=1, help="runs per size: the record has their median time "
                        "and largest memory")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the key files go (16 bytes a key)")
    parser.add_argument("--datatrove-keys", default="", help="sizes to run datatrove's exact dedup at too "
                        "(its signatures are Python objects: keep them small)")
    parser.add_argument("--json", required=True, help="where the records go")
    args = parser.parse_args()
    idle_rss = in_child(_idle)
    workdir, records = Path(args.workdir), []
    runs = [(measure, keys, (idle_rss,)) for keys in map(parse_count, args.keys.split(","))]
    runs += [(measure_datatrove, keys, ()) for keys in map(parse_count, filter(None, args.datatrove_keys.split(",")))]
    for run, keys, extra in runs:
        rounds = [run(keys, args.tasks, args.shards, args.duplicates, workdir, *extra) for _ in range(args.rounds)]
        record = median_record(rounds)
        print(json.dumps(record), flush=True)
        records.append(record)
    Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    print(f"idle process: {idle_rss / 2**20:.0f} MiB; written to {args.json}")


if __name__ == "__main__":
    main()
