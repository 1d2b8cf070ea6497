"""The plan a fine-tuning run tells before its first step, against its settings."""

from __future__ import annotations

from pathlib import Path

from mdeberta.distributed import World
from mdeberta.plan import format_plan
from mdeberta.xnli.batching import encode, length_grouped_batches
from mdeberta.xnli.data import open_source, read_split
from mdeberta.xnli.settings import XnliSettings
from mdeberta.xnli.stage import load_classifier, load_tokenizer
from mdeberta.xnli.train import fine_tune, fine_tuning_plan


def test_the_plan_has_the_figures_of_the_settings(tiny_model, tmp_path):
    model = load_classifier(str(tiny_model))
    settings = XnliSettings(batch_size=8, epochs=2)
    first_epoch = length_grouped_batches([5] * 20, 8, seed=1, epoch=0)  # 20 pairs: batches of 8, 8 and 4
    plan = fine_tuning_plan(model, first_epoch, 6, settings, World(size=2), tmp_path, done=2)
    assert (plan.batch, plan.micro_batch, plan.micro_batches, plan.processes) == (8, 4, 1, 2)
    assert (plan.steps, plan.total, plan.done, plan.out) == (6, 40, 2, tmp_path)  # 2 epochs of 20 pairs
    size = plan.models["classifier"]
    assert size.parameters == sum(p.numel() for p in model.parameters())
    assert size.embeddings == sum(p.numel() for p in model.deberta.embeddings.parameters()) > 0
    text = format_plan(plan, "xnli seed 1")
    assert "8 pairs: 1 micro-batch of 4 pairs on each of 2 processes" in text and "6 steps, 40 pairs" in text
    assert "resuming after step 2: 4 to go" in text


def test_fine_tuning_tells_its_plan_and_pace_once(tiny_model, releases, tmp_path, capsys):
    tokenizer, model = load_tokenizer(str(tiny_model)), load_classifier(str(tiny_model))
    reader = open_source(str(releases))
    train = encode(tokenizer, read_split(reader, "train", "en", 16), 64)
    dev = {"en": encode(tokenizer, read_split(reader, "dev", "en", 4), 64)}
    settings = XnliSettings(batch_size=4, epochs=1, warmup=0, eval_every=100, eval_batch_size=4)
    fine_tune(model, tokenizer, train, dev, settings, seed=1, workdir=Path(tmp_path), runtime=World(), identity={},
              progress=False)
    err = capsys.readouterr().err
    assert err.count("xnli seed 1: plan") == 1 and "4 steps, 16 pairs" in err
    assert err.count(" a step (1 step after the first); 2 steps left") == 1
