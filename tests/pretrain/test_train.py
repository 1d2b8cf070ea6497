"""The pretraining loop: finite losses, exact resume and what refuses one, signals, metrics, torchrun,
export and Table 1."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import safetensors.torch
import torch
import transformers

from mdeberta import model as ours
from mdeberta.cli import main
from mdeberta.pretrain.analyze import embedding_statistics
from mdeberta.pretrain.checkpoint import CheckpointError, latest_checkpoint, load_model, trained_world_size
from mdeberta.distributed import World
from mdeberta.pretrain.export import export_checkpoint
from mdeberta.pretrain.settings import PretrainSettings
from mdeberta.pretrain.stage import ChangedInputsError, run_pretraining
from mdeberta.pretrain import metrics as metrics_module
from mdeberta.pretrain import train as train_module
from mdeberta.pretrain.train import NonFiniteLossError, Pretrainer
from mdeberta.settings import SettingsError
from tests.tokenizer.conftest import sample_documents, write_shard

from .conftest import train_tokenizer, write_corpus

SETTINGS = PretrainSettings(size="tiny", batch_size=4, micro_batch_size=2, max_seq_length=32, max_steps=4,
                            warmup_steps=2, learning_rate=1e-3, log_every=1, eval_every=0, eval_sequences=4,
                            checkpoint_every=100, keep_checkpoints=10)
REPO = Path(__file__).resolve().parents[2]


def train(tokens: Path, tokenizer: Path, out: Path, **changes) -> int:
    return Pretrainer(replace(SETTINGS, **changes), tokens, tokenizer, out, World(), progress=False).train()


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(checkpoint / "model.safetensors"))


def signal_after(monkeypatch, steps: int, signum=signal.SIGTERM, times: int = 1) -> None:
    """Sends ``signum`` to this process once ``steps`` steps are done, as a cluster's preemption would."""
    original = Pretrainer._step

    def step_then_signal(self, model, step, batch, interval):
        result = original(self, model, step, batch, interval)
        if step + 1 == steps:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return result

    monkeypatch.setattr(Pretrainer, "_step", step_then_signal)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_few_steps_give_finite_losses_and_a_checkpoint(tokens, tokenizer, tmp_path):
    assert train(tokens, tokenizer, tmp_path, eval_every=2) == 0
    train_records = [r for r in records(tmp_path) if "loss" in r]
    valid_records = [r for r in records(tmp_path) if "valid_loss" in r]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4]
    assert [r["step"] for r in valid_records] == [2, 4]
    for record in train_records:
        assert all(math.isfinite(record[key]) for key in ("loss", "mlm_loss", "rtd_loss", "generator_grad_norm",
                                                          "discriminator_grad_norm"))  # gdes: decoupled updates
        assert 0 < record["masked_fraction"] < 0.2 and record["replaced_fraction"] <= record["masked_fraction"]
        assert record["tokens_per_s"] > 0
    # transformers' schedule: warm-up from 0 over 2 steps, then linear decay to 0 at step 4.
    assert [r["lr"] for r in train_records] == pytest.approx([0.0, 5e-4, 1e-3, 5e-4])
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    assert checkpoint.name == "step-4"
    assert {"model.safetensors", "model.json", "training_state.pt", "data_state.json", "settings.json",
            "tokenizer"} <= {p.name for p in checkpoint.iterdir()}
    assert train(tokens, tokenizer, tmp_path) == 0  # finished: a rerun does nothing
    assert len(records(tmp_path)) == 6


@pytest.mark.parametrize("update", ["decoupled", "joint"])
def test_stopping_and_resuming_gives_the_same_parameters(tokens, tokenizer, tmp_path, monkeypatch, update):
    train(tokens, tokenizer, tmp_path / "straight", max_steps=6, update=update)
    with monkeypatch.context() as patch:
        signal_after(patch, 3)
        assert train(tokens, tokenizer, tmp_path / "resumed", max_steps=6, update=update) == 143
    assert latest_checkpoint(tmp_path / "resumed/checkpoints").name == "step-3"
    with (tmp_path / "resumed/metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": 4, "lo')  # a record cut short by the kill
    assert train(tokens, tokenizer, tmp_path / "resumed", max_steps=6, update=update) == 0
    straight, resumed = weights(tmp_path / "straight/checkpoints/step-6"), weights(tmp_path / "resumed/checkpoints/step-6")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert [r["step"] for r in records(tmp_path / "resumed") if "loss" in r] == [1, 2, 3, 4, 5, 6]
    data = json.loads((tmp_path / "resumed/checkpoints/step-6/data_state.json").read_text())
    assert data["batches"] == 6


def generator_weights(out: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in weights(latest_checkpoint(out / "checkpoints")).items() if k.startswith("generator.")}


def test_decoupled_updates_train_the_generator_on_its_loss_alone(tokens, tokenizer, tmp_path, monkeypatch):
    """Under GDES with decoupled updates the generator's weights after 3 steps do not depend on
    lambda, and the discriminator's update leaves E_G as it was; under joint updates (one loss, one
    clip) they depend on lambda."""
    apply = Pretrainer._apply
    checked = []

    def discriminator_leaves_e_g(self, update):
        table = self.model.generator.deberta.embeddings.word_embeddings.weight
        before = table.detach().clone()
        result = apply(self, update)
        if update.name == "discriminator":
            checked.append(torch.equal(table, before))
        return result

    monkeypatch.setattr(Pretrainer, "_apply", discriminator_leaves_e_g)
    generators = {}
    for update in ("decoupled", "joint"):
        for rtd_weight in (50.0, 5.0):
            out = tmp_path / f"{update}-{rtd_weight}"
            assert train(tokens, tokenizer, out, max_steps=3, update=update, rtd_weight=rtd_weight) == 0
            generators[update, rtd_weight] = generator_weights(out)
    assert checked == [True] * 6
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(generators["decoupled", 50.0], generators["decoupled", 5.0])
    assert not same(generators["joint", 50.0], generators["joint", 5.0])


def test_update_settings_that_do_not_fit_are_refused():
    with pytest.raises(SettingsError, match="sharing es .* trains with update joint"):
        replace(SETTINGS, sharing="es", update="decoupled")
    with pytest.raises(SettingsError, match="generator_learning_rate applies to decoupled updates"):
        replace(SETTINGS, update="joint", generator_learning_rate=1e-4)
    assert replace(SETTINGS, sharing="es").decoupled is False and SETTINGS.decoupled is True


def test_a_generator_learning_rate_of_its_own(tokens, tokenizer, tmp_path):
    assert train(tokens, tokenizer, tmp_path, max_steps=3, generator_learning_rate=2e-3) == 0
    logged = [r for r in records(tmp_path) if "loss" in r]
    assert [r["generator_lr"] for r in logged] == pytest.approx([0.0, 1e-3, 2e-3])
    assert [r["lr"] for r in logged] == pytest.approx([0.0, 5e-4, 1e-3])


def test_a_checkpoint_from_before_decoupled_updates_resumes_only_as_joint(tokens, tokenizer, tmp_path):
    """Written with one 'optimizer' and no 'update' setting: it continues joint, and refuses decoupled."""
    train(tokens, tokenizer, tmp_path, max_steps=1, update="joint")
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    state["optimizer"], state["scheduler"] = state.pop("optimizers")["model"], state.pop("schedulers")["model"]
    torch.save(state, checkpoint / "training_state.pt")
    saved = json.loads((checkpoint / "settings.json").read_text())
    del saved["update"], saved["generator_learning_rate"]
    (checkpoint / "settings.json").write_text(json.dumps(saved))
    (checkpoint / "complete.json").unlink()  # nor did checkpoints carry a record of their files
    with pytest.raises(SettingsError, match="update: joint -> auto"):
        train(tokens, tokenizer, tmp_path, max_steps=2)
    assert train(tokens, tokenizer, tmp_path, max_steps=2, update="joint") == 0


def damage(path: Path, how: str) -> None:
    if how == "truncate":  # a copy cut short, a full disk
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    else:
        path.write_text(how)


@pytest.mark.parametrize("name, how", [("model.safetensors", "truncate"), ("training_state.pt", "truncate"),
                                       ("data_state.json", "{bad")])
def test_a_damaged_newest_checkpoint_is_reported_and_the_one_before_used(tokens, tokenizer, tmp_path, capsys,
                                                                         name, how):
    """It stopped resuming with a traceback (SafetensorError, PytorchStreamReader, JSONDecodeError)."""
    assert train(tokens, tokenizer, tmp_path, max_steps=2, checkpoint_every=1) == 0
    damage(tmp_path / "checkpoints/step-2" / name, how)
    (tmp_path / "checkpoints/step-7.tmp").mkdir()  # left by a run killed while saving
    capsys.readouterr()
    assert train(tokens, tokenizer, tmp_path, max_steps=3, checkpoint_every=1) == 0
    error = capsys.readouterr().err
    assert f"step-2 is damaged ({name} " in error and "(step 1)" in error
    assert not (tmp_path / "checkpoints/step-7.tmp").exists()
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-3"


def test_with_every_checkpoint_damaged_one_line_says_what_to_do(tokens, tokenizer, tmp_path):
    assert train(tokens, tokenizer, tmp_path, max_steps=1) == 0
    damage(tmp_path / "checkpoints/step-1/model.safetensors", "truncate")
    with pytest.raises(CheckpointError, match="every checkpoint in .* is damaged .*; delete .* to train from the start"):
        train(tokens, tokenizer, tmp_path, max_steps=2)


def test_export_and_analyze_refuse_a_damaged_checkpoint_in_one_line(tokens, tokenizer, tmp_path, capsys):
    assert train(tokens, tokenizer, tmp_path, max_steps=1) == 0
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    damage(checkpoint / "model.safetensors", "truncate")
    capsys.readouterr()
    for argv in (["pretrain", "export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "hf")],
                 ["pretrain", "analyze", "--checkpoint", str(checkpoint), "--tokens", str(tokens)]):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert "is damaged: model.safetensors has" in error and error.count("\n") == 1
    assert not (tmp_path / "hf").exists()


def test_changed_settings_are_not_resumed(tokens, tokenizer, tmp_path):
    train(tokens, tokenizer, tmp_path, max_steps=1)
    with pytest.raises(SettingsError, match="sharing: gdes -> es"):
        train(tokens, tokenizer, tmp_path, max_steps=2, sharing="es")


def test_validation_size_and_precision_may_change_on_resume(tokens, tokenizer, tmp_path):
    train(tokens, tokenizer, tmp_path, max_steps=1)
    assert train(tokens, tokenizer, tmp_path, max_steps=2, eval_sequences=2, precision="fp32") == 0
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-2"


def test_another_micro_batch_size_is_not_resumed(tokens, tokenizer, tmp_path):
    """Masks are drawn per micro-batch: resuming with other micro-batches would silently change them."""
    train(tokens, tokenizer, tmp_path, max_steps=1)
    with pytest.raises(SettingsError, match="micro_batch_size: 2 -> 1"):
        train(tokens, tokenizer, tmp_path, max_steps=2, micro_batch_size=1)


def test_a_run_with_checkpoints_refuses_another_corpus_or_tokenizer_before_touching_its_folder(tokenizer, tmp_path):
    """Re-tokenizing would replace the streams the checkpoints' data position points into."""
    corpus, out = write_corpus(tmp_path / "corpus"), tmp_path / "run"
    settings = replace(SETTINGS, max_steps=1, validation_fraction=0.2, tokenize_workers=1)
    assert run_pretraining(settings, corpus, tokenizer, out, progress=False) == 0
    kept = {path: path.stat().st_mtime_ns for path in (out / "tokens/tokens.json", out / "settings.json")}
    other_tokenizer = train_tokenizer(tmp_path / "other-tokenizer", vocab_size=500)
    with pytest.raises(ChangedInputsError, match=r"another tokenizer \(401 ids; .* has 501\); .* another --out"):
        run_pretraining(replace(settings, max_steps=2), corpus, other_tokenizer, out, progress=False)
    write_shard(corpus, "fr", sample_documents("fr")[:2], part=1)
    with pytest.raises(ChangedInputsError, match=r"another corpus \(shards changed: fr\)"):
        run_pretraining(replace(settings, max_steps=2), corpus, tokenizer, out, progress=False)
    with pytest.raises(SettingsError, match="sharing: gdes -> es"):
        run_pretraining(replace(settings, max_steps=2, sharing="es"), corpus, tokenizer, out, progress=False)
    assert kept == {path: path.stat().st_mtime_ns for path in kept}


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_loadable_checkpoint_after_the_current_step(tokens, tokenizer, tmp_path, monkeypatch,
                                                                    signum, status):
    signal_after(monkeypatch, 2, signum)
    assert train(tokens, tokenizer, tmp_path, max_steps=50, eval_every=2) == status
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    assert checkpoint.name == "step-2"
    assert not [r for r in records(tmp_path) if "valid_loss" in r]  # the grace period is not spent validating
    assert isinstance(load_model(checkpoint), ours.RTDModel)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_repeated_sigterm_still_saves_a_checkpoint(tokens, tokenizer, tmp_path, monkeypatch):
    """Under Slurm with torchrun a process gets SIGTERM twice: from Slurm and from torchrun."""
    signal_after(monkeypatch, 2, signal.SIGTERM, times=2)
    assert train(tokens, tokenizer, tmp_path, max_steps=50) == 143
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-2"


def test_a_second_ctrl_c_stops_at_once(tokens, tokenizer, tmp_path, monkeypatch):
    signal_after(monkeypatch, 2, signal.SIGINT, times=2)
    with pytest.raises(KeyboardInterrupt):
        train(tokens, tokenizer, tmp_path, max_steps=50)
    assert latest_checkpoint(tmp_path / "checkpoints") is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_compile_reaches_every_layer_of_both_encoders(tokens, tokenizer, tmp_path, monkeypatch):
    """The generator's Enhanced Mask Decoder runs its encoder's layers itself, so they are compiled one
    by one. torch.compile is replaced by a pass-through that counts calls (compiling takes minutes)."""
    calls = Counter()

    def counting_compile(call, *args, **kwargs):
        def compiled(*inputs, **options):
            calls[call.__self__] += 1
            return call(*inputs, **options)
        return compiled

    monkeypatch.setattr(torch, "compile", counting_compile)
    pretrainer = Pretrainer(replace(SETTINGS, max_steps=1, compile=True, enhanced_mask_decoder=True), tokens,
                            tokenizer, tmp_path, World(), progress=False)
    assert pretrainer.train() == 0
    generator, discriminator = (side.deberta.encoder.layer for side in (pretrainer.model.generator,
                                                                        pretrainer.model.discriminator))
    assert all(calls[layer] > 0 for layer in [*generator, *discriminator])
    assert calls[generator[-1]] == 2 * calls[discriminator[0]]  # per forward: the decoder's two passes


@dataclass(frozen=True)
class RecordingWorld(World):
    """One process that notes which kind of barrier each wait used."""
    waits: list = field(default_factory=list)

    def barrier(self) -> None:
        self.waits.append("barrier")

    def wait_for_main(self) -> None:
        self.waits.append("patient")


def test_other_processes_wait_for_a_checkpoint_with_the_patient_barrier(tokens, tokenizer, tmp_path):
    """Writing a large checkpoint to a network filesystem can outlast the collective timeout."""
    world = RecordingWorld()
    settings = replace(SETTINGS, max_steps=2, checkpoint_every=1, eval_every=0)
    assert Pretrainer(settings, tokens, tokenizer, tmp_path, world, progress=False).train() == 0
    assert world.waits == ["patient", "barrier", "patient"]  # step 1 saved; step 2 validated, then saved


def test_a_signal_during_the_last_step_finishes_the_run(tokens, tokenizer, corpus_dir, tmp_path, monkeypatch):
    """A requeued job would have nothing left to do: the run ends as finished, with its manifest."""
    os.symlink(tokens, tmp_path / "tokens")  # up to date: not tokenized again
    signal_after(monkeypatch, 3)
    settings = replace(SETTINGS, max_steps=3, validation_fraction=0.2, tokenize_workers=1)
    assert run_pretraining(settings, corpus_dir, tokenizer, tmp_path, progress=False) == 0
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-3"
    assert (tmp_path / "manifest.json").is_file()


def poison_step(monkeypatch, index: int, heal: bool = False) -> None:
    """Step ``index`` (0-based) gets a NaN loss; from then on every step does, unless ``heal``."""
    original = Pretrainer._step

    def poisoned(self, model, step, batch, interval):
        bias = self.model.discriminator.mask_predictions.classifier.bias
        if step != index:
            return original(self, model, step, batch, interval)
        saved = bias.detach().clone()
        with torch.no_grad():
            bias.fill_(float("nan"))
        result = original(self, model, step, batch, interval)
        if heal:
            with torch.no_grad():
                bias.copy_(saved)
        return result

    monkeypatch.setattr(Pretrainer, "_step", poisoned)


@pytest.mark.parametrize("update, norm", [("decoupled", "discriminator grad norm nan"), ("joint", "grad norm nan")])
def test_a_nonfinite_loss_stops_naming_the_step_or_is_skipped(tokens, tokenizer, tmp_path, monkeypatch, update, norm):
    poison_step(monkeypatch, 1)
    with pytest.raises(NonFiniteLossError, match=f"step 2: .*{norm}.*; no checkpoint was written yet"):
        train(tokens, tokenizer, tmp_path / "stop", update=update)
    with pytest.raises(NonFiniteLossError, match="step 2: .*; the last checkpoint, step-1, is intact"):
        train(tokens, tokenizer, tmp_path / "stop-after-a-checkpoint", checkpoint_every=1, update=update)
    # 3 of 4 steps skipped: past max_skipped_share (10%), the finished run is an error, not a success
    with pytest.raises(NonFiniteLossError, match="3 of 4 steps \\(75%\\) were skipped .* more than max_skipped_share"):
        train(tokens, tokenizer, tmp_path / "skip", on_nonfinite="skip", update=update)
    assert [r["skipped_steps"] for r in records(tmp_path / "skip") if "loss" in r] == [0, 1, 2, 3]
    assert records(tmp_path / "skip")[-2]["loss"] is None  # nothing left to average: null, strict JSON
    assert train(tokens, tokenizer, tmp_path / "tolerated", on_nonfinite="skip", update=update,
                 max_skipped_share=0.8) == 0


def test_skipped_steps_stay_out_of_the_means_and_are_counted_across_a_resume(tokens, tokenizer, tmp_path,
                                                                             monkeypatch, capsys):
    poison_step(monkeypatch, 1, heal=True)
    signal_after(monkeypatch, 3)
    assert train(tokens, tokenizer, tmp_path, on_nonfinite="skip", log_every=2, max_skipped_share=0.5) == 143
    monkeypatch.undo()
    capsys.readouterr()
    assert train(tokens, tokenizer, tmp_path, on_nonfinite="skip", log_every=2, max_skipped_share=0.5) == 0
    assert "warning: 1 of 4 steps (25%) were skipped" in capsys.readouterr().err
    logged = [r for r in records(tmp_path) if "loss" in r]
    assert [(r["step"], r["skipped_steps"]) for r in logged] == [(2, 1), (4, 1)]
    assert all(math.isfinite(r[key]) for r in logged for key in ("loss", "mlm_loss", "rtd_loss", "rtd_auc"))


def test_tokens_per_s_leaves_out_validation_and_checkpoints(tokens, tokenizer, tmp_path, monkeypatch):
    """On a clock that a step moves by 1 s and a validation or checkpoint by 100 s."""
    clock = [0.0]
    for module in (train_module, metrics_module):  # the loop and its interval statistics
        monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    for name, seconds in (("_step", 1.0), ("_validate", 100.0), ("_save", 100.0)):
        def timed(self, *args, _original=getattr(Pretrainer, name), _seconds=seconds):
            clock[0] += _seconds
            return _original(self, *args)
        monkeypatch.setattr(Pretrainer, name, timed)
    train(tokens, tokenizer, tmp_path, log_every=2, eval_every=1, checkpoint_every=1)
    sequence_tokens = SETTINGS.batch_size * SETTINGS.max_seq_length
    assert [r["tokens_per_s"] for r in records(tmp_path) if "loss" in r] == [sequence_tokens, sequence_tokens]


def test_export_loads_in_transformers_with_our_outputs(tokens, tokenizer, tmp_path):
    train(tokens, tokenizer, tmp_path / "run", max_steps=2)
    checkpoint = latest_checkpoint(tmp_path / "run/checkpoints")
    folders = export_checkpoint(checkpoint, tmp_path / "hf")
    rtd = load_model(checkpoint).eval()
    ids = torch.randint(4, 400, (2, 20))
    ids[:, 0], ids[:, -1] = 1, 2
    mask = torch.ones_like(ids)
    with torch.no_grad():
        discriminator = transformers.AutoModel.from_pretrained(folders["discriminator"]).eval()
        got = discriminator(ids, attention_mask=mask).last_hidden_state
        expected = rtd.discriminator.deberta(ids, mask).last_hidden_state
        assert (got - expected).abs().max() <= 1e-5
        generator, loading = transformers.AutoModelForMaskedLM.from_pretrained(folders["generator"],
                                                                             output_loading_info=True)
        # transformers has no Enhanced Mask Decoder: it matches our generator's plain masked-LM pass.
        plain = rtd.generator(ids, attention_mask=mask).logits
        assert (generator.eval()(ids, attention_mask=mask).logits - plain).abs().max() <= 1e-5
    assert not loading["missing_keys"] and not loading["unexpected_keys"]
    saved = safetensors.torch.load_file(str(folders["generator"] / "model.safetensors"))
    assert not [name for name in saved if "position_embeddings" in name]  # only the decoder reads it
    assert (folders["discriminator"] / "spm.model").is_file() and (folders["generator"] / "spm.model").is_file()
    embeddings = rtd.discriminator_embeddings()["deberta.embeddings.word_embeddings.weight"]
    assert torch.equal(discriminator.embeddings.word_embeddings.weight, embeddings)


@pytest.mark.parametrize("sharing, tables", [("gdes", ["E_G", "E_D", "E_delta"]), ("es", ["E_G"]),
                                             ("nes", ["E_G", "E_D"])])
def test_table_1_statistics_per_sharing_mode(tokens, tokenizer, tmp_path, sharing, tables):
    train(tokens, tokenizer, tmp_path, max_steps=2, sharing=sharing)
    table = embedding_statistics(latest_checkpoint(tmp_path / "checkpoints"), pairs=2000, tokens_dir=tokens)
    assert list(table.table) == tables
    assert table.avg_cosine.between(-1, 1).all() and (table.pairs > 0).all()


def test_analyze_refuses_a_tokens_folder_without_streams(tokens, tokenizer, tmp_path, capsys):
    """A mistyped --tokens would otherwise draw from every id, silently."""
    train(tokens, tokenizer, tmp_path / "run", max_steps=1)
    checkpoint = latest_checkpoint(tmp_path / "run/checkpoints")
    capsys.readouterr()
    assert main(["pretrain", "analyze", "--checkpoint", str(checkpoint), "--tokens", str(tmp_path / "typo")]) == 2
    error = capsys.readouterr().err
    assert "typo: no tokens.json" in error and error.count("\n") == 1


@pytest.mark.parametrize("update", ["decoupled", "joint"])
def test_two_processes_under_torchrun_match_one(tokens, tokenizer, corpus_dir, tmp_path, update):
    """gloo on CPU, same global batch (4 = 2 processes x 1 micro-batch of 2, against 2 micro-batches
    in one process): the same sequences and masks, gradients averaged in another order."""
    common = ["pretrain", "run", "--corpus", str(corpus_dir), "--tokenizer", str(tokenizer), "--size", "tiny",
              "--update", update,
              "--batch-size", "4", "--micro-batch-size", "2", "--max-seq-length", "32", "--max-steps", "3",
              "--warmup-steps", "2", "--learning-rate", "1e-3", "--eval-every", "0", "--validation-fraction", "0.2",
              "--tokenize-workers", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for out in ("one", "two"):
        (tmp_path / out).mkdir()
        os.symlink(tokens, tmp_path / out / "tokens")  # reused: same corpus and tokenizer
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mdeberta"]
    done = subprocess.run(launch + common + ["--out", str(tmp_path / "two")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(common + ["--out", str(tmp_path / "one")]) == 0
    one, two = weights(tmp_path / "one/checkpoints/step-3"), weights(tmp_path / "two/checkpoints/step-3")
    assert max((one[k] - two[k]).abs().max().item() for k in one) <= 1e-5
    assert [trained_world_size(tmp_path / out / "checkpoints/step-3") for out in ("one", "two")] == [1, 2]


def test_cli_errors_are_one_line(tmp_path, capsys):
    status = main(["pretrain", "run", "--corpus", str(tmp_path / "missing"), "--tokenizer", str(tmp_path),
                   "--out", str(tmp_path / "out"), "--size", "tiny"])
    assert status == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["pretrain", "export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "hf")]) == 2
    assert "not a pretraining checkpoint" in capsys.readouterr().err
