"""Two processes (gloo on CPU, as torchrun would start them) against one: evaluation gives the
same predictions, and a few fine-tuning steps the same weights; the processes draw different
dropout.

Dropout is off in the checkpoint both start from, so the two runs do the same arithmetic but for
the order of a few sums (each process pads its half of a batch to its own longest pair, and DDP
averages the halves' gradients): the weights are compared within 1e-5, the predictions exactly.
"""

from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tqdm import tqdm

from mdeberta.distributed import World, close_world, init_world
from mdeberta.xnli.batching import concat, encode
from mdeberta.xnli.data import open_source, read_split
from mdeberta.xnli.settings import XnliSettings
from mdeberta.xnli.stage import load_classifier, load_tokenizer
from mdeberta.xnli.train import fine_tune, predict, seed_dropout

WORLD = 2
SETTINGS = XnliSettings(batch_size=8, epochs=1.5, warmup=0, lr=1e-3, eval_every=1, eval_batch_size=8)


def without_dropout(tiny_model: Path, folder: Path) -> Path:
    """The classifier both runs start from: the same head weights, dropout off."""
    torch.manual_seed(0)
    classifier = load_classifier(str(tiny_model))
    classifier.config.hidden_dropout_prob = classifier.config.attention_probs_dropout_prob = 0.0
    classifier.save_pretrained(folder)
    load_tokenizer(str(tiny_model)).save_pretrained(folder)
    return folder


def evaluate_then_fine_tune(folder: Path, data: dict, workdir: Path, runtime: World) -> dict:
    tokenizer = load_tokenizer(str(folder))
    model = load_classifier(str(folder)).to(runtime.device)
    with tqdm(total=len(data["evaluation"]), file=io.StringIO()) as bar:
        predictions = predict(model, data["evaluation"], SETTINGS.eval_batch_size, runtime, tokenizer.pad_token_id,
                              bar)
    selection = fine_tune(model, tokenizer, data["train"], data["dev"], SETTINGS, seed=1, workdir=workdir,
                          runtime=runtime, identity={}, progress=False)
    return {"predictions": predictions, "history": selection.history, "counted": bar.n,
            "weights": {name: value.detach().clone() for name, value in model.state_dict().items()},
            "next_draw": torch.rand(4)}  # where the last step left this process' generator


def _process(rank: int, folder: Path, data: dict, out: Path) -> None:
    """One of the processes torchrun would start: its environment, then the stage's runtime."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out / 'store'}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=120))
    runtime = init_world("fp32")
    try:
        torch.save(evaluate_then_fine_tune(folder, data, out / "work", runtime), out / f"result-{rank}.pt")
    finally:
        close_world(runtime)


@pytest.fixture(scope="module")
def pairs(tiny_model, releases, tmp_path_factory) -> tuple[Path, dict]:
    folder = without_dropout(tiny_model, tmp_path_factory.mktemp("classifier"))
    tokenizer = load_tokenizer(str(folder))
    reader = open_source(str(releases))

    def encoded(split, lang, limit=0):
        return encode(tokenizer, read_split(reader, split, lang, limit), SETTINGS.max_length)

    data = {"train": encoded("train", "en", 16), "dev": {"en": encoded("dev", "en"), "fr": encoded("dev", "fr")},
            # 135 pairs in 17 batches: the processes get unequal numbers of batches
            "evaluation": concat([encoded("test", lang) for lang in ("en", "ar", "th", "zh", "sw") * 3])}
    return folder, data


def test_two_processes_match_one(pairs, tmp_path):
    folder, data = pairs
    mp.spawn(_process, args=(folder, data, tmp_path), nprocs=WORLD, join=True)
    two, second = (torch.load(tmp_path / f"result-{rank}.pt", weights_only=False) for rank in range(WORLD))
    (tmp_path / "alone").mkdir()
    one = evaluate_then_fine_tune(folder, data, tmp_path / "alone", World())

    assert two["predictions"] == one["predictions"]
    assert two["counted"] == one["counted"] == 135  # the progress bar counts both processes' pairs
    assert [e["step"] for e in two["history"]] == [e["step"] for e in one["history"]] == [1, 2, 3]
    for ours, alone in zip(two["history"], one["history"]):  # a near-tie may flip one dev pair at most
        assert ours["dev"] == pytest.approx(alone["dev"], abs=1 / 6 + 1e-9)
    for name, value in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(second["weights"][name], two["weights"][name], rtol=0, atol=0, msg=name)
    assert not torch.equal(two["next_draw"], second["next_draw"])  # each process seeds dropout by its rank
    assert torch.equal(two["next_draw"], one["next_draw"])  # process 0 draws as a single process does


def test_dropout_seed_differs_by_process_and_step():
    def mask(seed, step, rank):
        seed_dropout(seed, step, rank)
        return torch.nn.functional.dropout(torch.ones(256), 0.5) == 0

    assert torch.equal(mask(1, 7, 0), mask(1, 7, 0))  # a resumed run redraws the same masks
    assert not torch.equal(mask(1, 7, 0), mask(1, 7, 1))
    assert not torch.equal(mask(1, 7, 0), mask(1, 8, 0))
    assert not torch.equal(mask(1, 7, 0), mask(2, 7, 0))
