"""Tokenizer stage benchmarks on this machine.

(a) Training time and peak memory (RSS of the training process) for a 250,000-piece vocabulary at
    two sample sizes. The corpus is generated: 15 "languages", each a Zipf-distributed lexicon of
    40,000 words built from 3,000 random syllables of its own script (Latin, Cyrillic, Greek,
    Arabic, Devanagari, Thai, Han, ...), sentences of 5-25 words. Varied enough that 250K pieces
    are supported (a natural sample of this size would be too, but none is shipped).
(b) Encoding throughput of the saved tokenizer in MB of UTF-8 text per second: the transformers
    fast tokenizer on batches, raw SentencePiece (one process, its own threads), and raw
    SentencePiece in a process pool.

    python benchmarks/tokenizer.py [--lines 100000 200000] [--out /tmp/tokbench]
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = {"latin": (0x61, 0x7A), "cyrillic": (0x430, 0x44F), "greek": (0x3B1, 0x3C9), "arabic": (0x627, 0x64A),
           "devanagari": (0x915, 0x939), "thai": (0xE01, 0xE2E), "han": (0x4E00, 0x5FFF), "hebrew": (0x5D0, 0x5EA),
           "armenian": (0x561, 0x586), "georgian": (0x10D0, 0x10F0), "hangul": (0xAC00, 0xB7FF),
           "latin2": (0xC0, 0x17F), "bengali": (0x995, 0x9B9), "tamil": (0xB95, 0xBB9), "ethiopic": (0x1200, 0x1350)}


def generate_corpus(lines: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    per_language = lines // len(SCRIPTS)
    out = []
    for low, high in SCRIPTS.values():
        alphabet = [chr(c) for c in range(low, high + 1)]
        syllables = ["".join(rng.choices(alphabet, k=rng.randint(1, 3))) for _ in range(3000)]
        words = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(40_000)]
        cumulative = list(itertools.accumulate(1 / (rank + 1) ** 1.1 for rank in range(len(words))))
        for _ in range(per_language):
            out.append(" ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(5, 25))))
    rng.shuffle(out)
    return out


def train_child(lines: int, out: str) -> None:
    """Runs in a fresh process, so its peak RSS is the trainer's alone."""
    from mdeberta.tokenizer.settings import TokenizerSettings
    from mdeberta.tokenizer.train import train_sentencepiece

    sample = generate_corpus(lines)
    characters = sum(map(len, sample))
    settings = TokenizerSettings(vocab_size=250_000, allow_smaller_vocab=True)
    Path(out).mkdir(parents=True, exist_ok=True)
    started = time.time()
    result = train_sentencepiece(sample, characters, settings, Path(out), progress=False, warn=lambda _: None)
    print(json.dumps({"lines": lines, "characters": characters, "seconds": round(time.time() - started, 1),
                      "pieces": result.pieces,
                      "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))


def bench_training(sizes: list[int], out: Path) -> list[dict]:
    results = []
    for lines in sizes:
        folder = out / f"train-{lines}"
        done = subprocess.run([sys.executable, __file__, "--child", str(lines), str(folder)], check=True,
                              capture_output=True, text=True)
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
    workers = len(__import__("os").sched_getaffinity(0))
    with multiprocessing.get_context("spawn").Pool(workers, _init, (str(folder / "spm.model"),)) as pool:
        pool.map(_encode, batches[:workers])  # warm up the workers
        timed(f"sentencepiece, {workers} processes", lambda: sum(pool.imap_unordered(_encode, batches)))
    return rates


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        train_child(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000, 200_000])
    parser.add_argument("--out", type=Path, default=Path("/tmp/tokbench"))
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} "
          f"cores, python {platform.python_version()}")
    training = bench_training(args.lines, args.out)
    folder = args.out / "hf"
    folder.mkdir(parents=True, exist_ok=True)
    from mdeberta.tokenizer.hf_files import write_hf_files

    model = args.out / f"train-{args.lines[-1]}" / "spm.model"
    (folder / "spm.model").write_bytes(model.read_bytes())
    write_hf_files(folder / "spm.model", folder, 512)
    texts = generate_corpus(60_000, seed=1)
    encoding = bench_encoding(folder, texts)
    print(json.dumps({"training": training, "encoding_mb_per_s": encoding}, indent=1))


if __name__ == "__main__":
    main()
