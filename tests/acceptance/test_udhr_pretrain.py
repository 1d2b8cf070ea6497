"""Acceptance of the pretraining stage on real text: the UDHR in the 15 XNLI languages (not shipped;
skipped when absent). A tiny model is trained five times on the same data and seed: ES (joint
updates), NES and GDES with joint and with decoupled updates; the generator's MLM loss must fall and
the discriminator must beat the all-original baseline (1 - the replaced share). The runs' final
metrics and Table 1 statistics are printed side by side.
"""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from mdeberta.corpora.settings import CorpusSettings
from mdeberta.corpora.stage import CorpusStage
from mdeberta.pretrain.analyze import embedding_statistics
from mdeberta.pretrain.checkpoint import latest_checkpoint
from mdeberta.distributed import World
from mdeberta.pretrain.settings import PretrainSettings
from mdeberta.pretrain.tokens import tokenize_corpus
from mdeberta.pretrain.train import Pretrainer
from mdeberta.tokenizer.settings import TokenizerSettings
from mdeberta.tokenizer.stage import TokenizerStage
from tests.conftest import UDHR
from tests.pretrain.test_train import records

pytestmark = pytest.mark.skipif(not UDHR.is_dir(), reason=f"UDHR sample not found at {UDHR} (set MDEBERTA_UDHR)")

SETTINGS = PretrainSettings(size="tiny", batch_size=16, micro_batch_size=16, max_seq_length=64, max_steps=500,
                            warmup_steps=10, learning_rate=3e-3, log_every=20, eval_every=0, eval_sequences=64,
                            checkpoint_every=1000)


@pytest.fixture
def one_thread():
    """The tiny model's operations are too small to gain from intra-op threads, and their
    synchronisation costs 9x on a busy 2-core machine (11,300 against 1,200 tokens/s measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RUNS = [("es", "joint"), ("nes", "joint"), ("nes", "decoupled"), ("gdes", "joint"), ("gdes", "decoupled")]


def test_udhr_rtd_learns_with_every_sharing_mode_and_update(tmp_path: Path, one_thread):
    corpus, tokenizer, tokens = tmp_path / "corpus", tmp_path / "tokenizer", tmp_path / "tokens"
    corpus_settings = CorpusSettings(inputs=[str(UDHR)], langs=["xnli"], lid_thresholds={"sw": 0.3}, workers=1)
    assert CorpusStage(corpus_settings, corpus, progress=False, echo=lambda _: None).run() == 0
    tokenizer_settings = TokenizerSettings(vocab_size=4000, sentences=6000, allow_smaller_vocab=True)
    assert TokenizerStage(tokenizer_settings, corpus, tokenizer, progress=False, echo=lambda _: None).run() == 0
    tokenize_corpus(corpus, tokenizer, tokens, validation_fraction=0.05, workers=1, progress=False)

    finals, statistics = [], []
    for sharing, update in RUNS:
        out = tmp_path / f"{sharing}-{update}"
        settings = replace(SETTINGS, sharing=sharing, update=update)
        assert Pretrainer(settings, tokens, tokenizer, out, World(), progress=False).train() == 0
        train = [r for r in records(out) if "loss" in r]
        valid = [r for r in records(out) if "valid_loss" in r][-1]
        finals.append({"sharing": sharing, "update": update, "first mlm_loss": train[0]["mlm_loss"], "mlm_loss": train[-1]["mlm_loss"],
                       "mlm_accuracy": train[-1]["mlm_accuracy"], "rtd_loss": train[-1]["rtd_loss"],
                       "rtd_accuracy": train[-1]["rtd_accuracy"], "baseline": 1 - train[-1]["replaced_fraction"],
                       "rtd_auc": train[-1]["rtd_auc"], "valid mlm_loss": valid["valid_mlm_loss"],
                       "valid rtd_accuracy": valid["valid_rtd_accuracy"],
                       "valid baseline": 1 - valid["valid_replaced_fraction"]})
        statistics.append(embedding_statistics(latest_checkpoint(out / "checkpoints"), pairs=20_000,
                                               tokens_dir=tokens).assign(update=update))
    table = pd.DataFrame(finals).set_index(["sharing", "update"])
    print(f"\nUDHR, tiny model, {SETTINGS.max_steps} steps of {SETTINGS.batch_size} x {SETTINGS.max_seq_length} "
          "tokens:\n" + table.to_markdown(floatfmt=".3f"))
    print("\nTable 1 (average cosine similarity of word embeddings):\n"
          + pd.concat(statistics).to_markdown(index=False, floatfmt=".3f"))
    assert (table["mlm_loss"] < table["first mlm_loss"] - 1.0).all(), "the generator learns"
    assert (table["rtd_accuracy"] > table["baseline"]).all(), "the discriminator beats all-original"
