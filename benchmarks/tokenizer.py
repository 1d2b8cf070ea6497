"""Tokenizer stage benchmarks on this machine.

(a) Time and peak memory of `mdeberta tokenizer train` for a 250,000-piece vocabulary (the default
    `--vocab-size`, without `--allow-smaller-vocab`: the run fails if the sample cannot fill it) at
    two sample sizes (`--sentences`). Each run is the stage's own command in a fresh process, so its
    peak RSS is the stage's alone; the SentencePiece trainer's part of the time is read from the
    timestamps of its log.

    The corpus is generated, in the corpus stage's layout (`<lang>/part-00000.parquet`, column
    `text`): 30 "languages", one per script (Latin, Latin-1/Extended-A, Cyrillic, Greek, Arabic,
    Hebrew, Syriac, Armenian, Georgian, Devanagari, Bengali, Gurmukhi, Gujarati, Tamil, Telugu,
    Kannada, Malayalam, Sinhala, Thai, Lao, Tibetan, Myanmar, Khmer, Ethiopic, Cherokee, Mongolian,
    Hiragana, Katakana, Han, Hangul). Each language has about 1,500 syllables of 1-3 random letters
    of its script and a lexicon of 100,000 distinct words of 1-4 of those syllables; words are drawn
    with Zipf-Mandelbrot frequencies, f(rank) ~ 1 / (rank + 2.7), the shortest words being the most
    frequent; a line is 5-25 words joined by spaces. A unigram vocabulary is mostly whole words seen
    at least twice plus frequent syllables, so it is the number of such words that decides how many
    pieces a sample supports: the earlier generator (15 scripts, 40,000 words, Zipf 1.1) filled only
    83K-125K pieces at 100K-300K lines.
(b) Encoding throughput of the larger sample's tokenizer in MB of UTF-8 text per second, on 60,000
    further generated lines of the same languages: the transformers fast tokenizer on batches, raw
    SentencePiece (one process, its own threads), and raw SentencePiece in a process pool.

    python benchmarks/tokenizer.py [--lines 500000 2000000] [--out /tmp/tokbench] [--lock FILE]

`--lock FILE` runs each heavy step under `flock FILE` (one at a time on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SCRIPTS = {
    "latin": (0x61, 0x7A), "latin-ext": (0xC0, 0x17F), "cyrillic": (0x430, 0x45F), "greek": (0x3B1, 0x3C9),
    "arabic": (0x627, 0x64A), "hebrew": (0x5D0, 0x5EA), "syriac": (0x710, 0x72F), "armenian": (0x561, 0x586),
    "georgian": (0x10D0, 0x10F0), "devanagari": (0x905, 0x939), "bengali": (0x985, 0x9B9),
    "gurmukhi": (0xA05, 0xA39), "gujarati": (0xA85, 0xAB9), "tamil": (0xB85, 0xBB9), "telugu": (0xC05, 0xC39),
    "kannada": (0xC85, 0xCB9), "malayalam": (0xD05, 0xD39), "sinhala": (0xD85, 0xDC6), "thai": (0xE01, 0xE2E),
    "lao": (0xE81, 0xEAE), "tibetan": (0xF40, 0xF6C), "myanmar": (0x1000, 0x102A), "khmer": (0x1780, 0x17B3),
    "ethiopic": (0x1200, 0x1350), "cherokee": (0x13A0, 0x13F4), "mongolian": (0x1820, 0x1877),
    "hiragana": (0x3041, 0x3096), "katakana": (0x30A1, 0x30FA), "han": (0x4E00, 0x5FFF), "hangul": (0xAC00, 0xB7FF),
}
SYLLABLES = 1500
LEXICON = 100_000
ZIPF_SHIFT = 2.7  # Mandelbrot's q: flattens the head of the distribution
ZIPF_EXPONENT = 1.0
VOCAB_SIZE = 250_000


def lexicons(seed: int = 0) -> dict[str, list[str]]:
    """Each language's words, most frequent first (the shortest words are the most frequent)."""
    rng = random.Random(seed)
    out = {}
    for name, (low, high) in SCRIPTS.items():
        alphabet = [chr(c) for c in range(low, high + 1)]
        syllables = sorted({"".join(rng.choices(alphabet, k=rng.randint(1, 3))) for _ in range(SYLLABLES)})
        words: set[str] = set()
        while len(words) < LEXICON:
            words.add("".join(rng.choices(syllables, k=rng.choice((1, 2, 2, 3, 3, 4)))))
        out[name] = sorted(sorted(words), key=lambda w: (len(w), rng.random()))
    return out


def generate_lines(words: list[str], lines: int, rng: np.random.Generator) -> list[str]:
    """``lines`` lines of 5-25 words drawn with Zipf-Mandelbrot frequencies from ``words``."""
    weights = 1.0 / (np.arange(len(words)) + ZIPF_SHIFT) ** ZIPF_EXPONENT
    cumulative = np.cumsum(weights)
    cumulative /= cumulative[-1]
    lengths = rng.integers(5, 26, lines)
    tokens = np.asarray(words, dtype=object)[np.searchsorted(cumulative, rng.random(int(lengths.sum())))].tolist()
    ends = np.cumsum(lengths).tolist()
    return [" ".join(tokens[end - n:end]) for n, end in zip(lengths.tolist(), ends)]


def write_corpus(folder: Path, lines_per_language: int, seed: int = 0) -> dict:
    """The generated corpus in the corpus stage's layout; reused when already there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = folder / "generated.json"
    if done.is_file() and json.loads(done.read_text())["lines_per_language"] == lines_per_language:
        return json.loads(done.read_text())
    rng = np.random.default_rng(seed)
    characters = 0
    for lang, words in lexicons(seed).items():
        lines = generate_lines(words, lines_per_language, rng)
        characters += sum(map(len, lines))
        (folder / lang).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"text": lines}), folder / lang / "part-00000.parquet")
    info = {"languages": len(SCRIPTS), "lines_per_language": lines_per_language, "characters": characters}
    done.write_text(json.dumps(info))
    return info


def encoding_texts(lines: int, seed: int = 1) -> list[str]:
    """Further lines of the same languages (same lexicons, another draw)."""
    rng = np.random.default_rng(seed)
    per_language = lines // len(SCRIPTS)
    texts = [line for words in lexicons(0).values() for line in generate_lines(words, per_language, rng)]
    random.Random(seed).shuffle(texts)
    return texts


def train_child(corpus: str, sentences: int, out: str, vocab_size: int) -> None:
    """Runs `mdeberta tokenizer train` in this fresh process, so its peak RSS is the stage's alone."""
    from mdeberta.cli import main as cli

    started = time.time()
    status = cli(["tokenizer", "train", "--corpus", corpus, "--out", out, "--sentences", str(sentences),
                  "--vocab-size", str(vocab_size), "--no-progress", "--force"])
    seconds = time.time() - started
    if status:
        sys.exit(status)
    stats = json.loads((Path(out) / "sample_stats.json").read_text())
    stamps = [float(m[1]) for m in re.finditer(r"^I\d{4} \d\d:\d\d:(\d+\.\d+)",
                                               (Path(out) / "spm_train.log").read_text(), re.M)]
    print(json.dumps({"sentences": sentences, "characters": stats["characters"], "pieces": stats["pieces"],
                      "stage_seconds": round(seconds, 1), "trainer_seconds": round(stamps[-1] - stamps[0], 1),
                      "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))


def bench_training(sizes: list[int], out: Path, lock: list[str], vocab_size: int = VOCAB_SIZE) -> list[dict]:
    corpus = out / "corpus"
    per_language = -(-max(sizes) // len(SCRIPTS)) + 1000  # the report's held-out lines come on top
    subprocess.run([*lock, sys.executable, __file__, "--corpus-child", str(corpus), str(per_language)], check=True)
    results = []
    for sentences in sizes:
        done = subprocess.run([*lock, sys.executable, __file__, "--child", str(corpus), str(sentences),
                               str(out / f"train-{sentences}"), str(vocab_size)],
                              check=True, stdout=subprocess.PIPE, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    return results


_sp = None


def _init(model: str) -> None:
    global _sp
    import sentencepiece as spm

    _sp = spm.SentencePieceProcessor(model_file=model)


def _encode(batch: list[str]) -> int:
    return sum(map(len, _sp.encode(batch)))


def bench_encoding(folder: Path, texts: list[str], batch: int = 1000) -> dict[str, float]:
    import sentencepiece as spm
    from transformers import AutoTokenizer

    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    batches = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    fast = AutoTokenizer.from_pretrained(str(folder))
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    rates = {}

    def timed(name, fn):
        started = time.perf_counter()
        fn()
        rates[name] = round(megabytes / (time.perf_counter() - started), 2)
        print(name, rates[name], "MB/s", flush=True)

    timed("transformers fast, batches of 1000", lambda: [fast(b, add_special_tokens=False) for b in batches])
    timed("sentencepiece, one process", lambda: [sp.encode(b, num_threads=1) for b in batches])
    timed("sentencepiece, batch threads", lambda: [sp.encode(b) for b in batches])
    workers = len(os.sched_getaffinity(0))
    with multiprocessing.get_context("spawn").Pool(workers, _init, (str(folder / "spm.model"),)) as pool:
        pool.map(_encode, batches[:workers])  # warm up the workers
        timed(f"sentencepiece, {workers} processes", lambda: sum(pool.imap_unordered(_encode, batches)))
    return rates


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        train_child(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--corpus-child":
        print(json.dumps(write_corpus(Path(sys.argv[2]), int(sys.argv[3]))), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[500_000, 2_000_000],
                        help="training sample sizes (--sentences of the stage)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tokbench"))
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help="pieces (smaller only for a smoke test)")
    parser.add_argument("--lock", help="run each heavy step under `flock LOCK`")
    args = parser.parse_args()
    lock = ["flock", args.lock] if args.lock else []
    print(f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
          f"python {platform.python_version()}", flush=True)
    training = bench_training(args.lines, args.out, lock, args.vocab_size)
    folder = args.out / f"train-{args.lines[-1]}"
    texts = encoding_texts(60_000)
    if lock:  # the encoding measurements in this process, under the same lock
        import fcntl

        handle = open(args.lock, "a")  # noqa: SIM115 (held until the process ends)
        fcntl.flock(handle, fcntl.LOCK_EX)
    encoding = bench_encoding(folder, texts)
    print(json.dumps({"training": training, "encoding_mb_per_s": encoding}, indent=1))


if __name__ == "__main__":
    main()
