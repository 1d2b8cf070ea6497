"""``mdeberta pretrain run``: tokenize the corpus once, then train (or continue training)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from ..distributed import close_world, init_world
from ..manifest import write_json_atomic, write_manifest
from ..recipe import output_settings
from .settings import PretrainSettings
from .tokens import tokenize_corpus
from .train import Pretrainer


def run_pretraining(settings: PretrainSettings, corpus: Path, tokenizer: Path, out: Path, resume: bool = False,
                    progress: bool = True) -> int:
    started = time.time()
    out = Path(out)
    world = init_world(settings.precision)
    try:
        tokens = out / "tokens"
        if world.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / "settings.json", asdict(settings))
            tokenize_corpus(Path(corpus), Path(tokenizer), tokens, langs=settings.langs or None,
                            validation_fraction=settings.validation_fraction, workers=settings.tokenize_workers,
                            progress=progress)
        world.wait_for_main()
        status = Pretrainer(settings, tokens, Path(tokenizer), out, world, progress).train(resume)
        if status == 0 and world.is_main:
            inputs = [{"corpus": str(corpus), "tokenizer": str(tokenizer)}]
            write_manifest(out, "pretrain", inputs, output_settings(settings), started,
                           outputs={"checkpoints": "checkpoints", "metrics": "metrics.jsonl", "tokens": "tokens"},
                           packages=("torch", "transformers", "sentencepiece"))
        return status
    finally:
        close_world(world)
