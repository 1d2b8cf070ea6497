"""`mdeberta xnli run`: read XNLI, fine-tune per seed, predict every dev/test set, write the report.

Layout of ``--out`` (both settings may share one folder; the report then shows both):
  <setting>/seed-<s>/best/          the selected checkpoint (transformers folder + tokenizer)
  <setting>/seed-<s>/state.pt       resume state, removed when the seed is done
  predictions/<setting>/seed-<s>/   run.json + {dev,test}/<lang>.csv (what the report is built from)
  results.csv|json|md, xnli.png, manifest.json
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..console import log
from ..errors import UserError
from ..locking import output_lock
from ..manifest import MANIFEST, file_stamp, is_complete, package_versions, write_json_atomic, write_manifest
from ..settings import output_settings
from ..stage import Stage, StageError, Status
from ..trackers import NONE, Trackers
from .batching import Encoded, concat, encode
from .data import LABELS, open_source, read_split
from .report import PREDICTIONS, run_info_path, write_predictions, write_report
from ..distributed import World, close_world, init_world
from .settings import XnliSettings
from .train import (BEST, STATE, ResumeMismatchError, accuracy, evaluation_bar, fine_tune, predict,
                    saved_identity)

EVALUATED = ("dev", "test")
WEIGHTS = (".safetensors", ".bin")


class ModelLoadError(UserError):
    pass


def load_classifier(name: str, attention: str = "auto", runtime: World | None = None):
    """Our encoder with a 3-way head, from any deberta-v2 folder or hub name; labels by name.

    transformers' multi-line load report is replaced by one line: a pretrained encoder always
    lacks the new head, which is worth a note, not a warning."""
    from transformers.utils import logging as hf_logging

    from .. import model as models

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        classifier, info = models.from_pretrained(
            name, head="classification", attention=attention, num_labels=len(LABELS), output_loading_info=True,
            id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"--model {name}: cannot load a deberta-v2 model ({str(err).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    _log_loading_info(name, info)
    return classifier


def _log_loading_info(name: str, info: dict) -> None:
    notes = []
    if info["missing_keys"]:
        heads = sorted({key.split(".")[0] for key in info["missing_keys"]})
        notes.append(f"newly initialised: {', '.join(heads)} ({len(info['missing_keys'])} tensors)")
    if info["unexpected_keys"]:
        notes.append(f"{len(info['unexpected_keys'])} weights not used (e.g. {sorted(info['unexpected_keys'])[0]})")
    if info["mismatched_keys"]:
        notes.append(f"{len(info['mismatched_keys'])} weights of another shape, newly initialised")
    if notes:
        log(f"xnli: loaded {name}; {'; '.join(notes)}")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(f"--model {name}: no tokenizer found beside the model "
                             f"({str(err).splitlines()[0]})") from None


def model_fingerprint(model: str) -> str | dict:
    """What a run was fine-tuned from, by content: a folder re-exported under the same name counts as
    another model, and one folder named two ways (``run/model``, ``/abs/run/model``) as the same.
    The hash of config.json and the stamp of each weights file; a hub name stays a name."""
    folder = Path(model)
    if not (folder / "config.json").is_file():
        return model
    weights = sorted(path for path in folder.iterdir() if path.suffix in WEIGHTS)
    return {"config_sha256": hashlib.sha256((folder / "config.json").read_bytes()).hexdigest(),
            **{path.name: file_stamp(path) for path in weights}}


def _data_name(data: str) -> str:
    """A local folder by its absolute path, so that two spellings of it compare equal."""
    return str(Path(data).resolve()) if Path(data).exists() else data


class XnliRun:
    def __init__(self, settings: XnliSettings, model: str, data: str, out: str | Path, progress: bool = True):
        self.settings = settings
        self.model = model
        self.data = data
        self.out = Path(out)
        self.progress = progress
        self.inputs = json.loads(json.dumps({"model": model_fingerprint(model), "data": _data_name(data)}))
        # What a resume state must match; the seed list may grow between reruns.
        trained_with = {k: v for k, v in output_settings(settings).items() if k != "seeds"}
        self.identity = {**self.inputs, "settings": trained_with}

    def _workdir(self, seed: int) -> Path:
        return self.out / self.settings.setting / f"seed-{seed}"

    def _seed_done(self, seed: int) -> bool:
        """A finished seed is kept only if it was trained as this run would train it."""
        path = run_info_path(self.out, self.settings.setting, seed)
        if not path.is_file():
            return False
        info = json.loads(path.read_text(encoding="utf-8"))
        done = {**info.get("inputs", {}), "settings": {k: v for k, v in info["settings"].items() if k != "seeds"}}
        if done != json.loads(json.dumps(self.identity)):
            raise ResumeMismatchError(f"{path}: seed {seed} was finished with another model, data or settings; "
                                      "use another --out, or --force to redo it")
        return True

    def up_to_date(self) -> bool:
        """Finished from this model and data with these settings."""
        return is_complete(self.out, [self.inputs], output_settings(self.settings))

    def made_from_other_inputs(self) -> bool:
        """Whether ``out`` holds a finished run or seed, or a seed's resume state, made from another
        model or data (a model re-exported since, say): the pipeline's xnli stage then redoes the run,
        where this command itself refuses to mix them (``--force`` redoes it)."""
        manifest = self.out / MANIFEST
        recorded = json.loads(manifest.read_text(encoding="utf-8"))["inputs"] if manifest.is_file() else []
        recorded += [json.loads(info.read_text(encoding="utf-8")).get("inputs")
                     for info in (self.out / PREDICTIONS / self.settings.setting).glob("seed-*/run.json")]
        recorded += [{key: saved_identity(state).get(key) for key in self.inputs}
                     for state in (self.out / self.settings.setting).glob(f"seed-*/{STATE}")]
        return any(inputs != self.inputs for inputs in recorded)

    def run(self, force: bool = False) -> int:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # one bar per weight file read or written
        started = time.time()
        inputs = [self.inputs]
        settings = output_settings(self.settings)
        with output_lock(self.out):
            runtime = init_world(self.settings.precision)
            try:
                return self._run(runtime, inputs, settings, started, force)
            finally:
                close_world(runtime)

    def _run(self, runtime: World, inputs: list[dict], settings: dict, started: float, force: bool) -> int:
        if not force and self.up_to_date():
            log(f"xnli: {self.out} is up to date with this model, data and these settings; nothing to do "
                 "(--force redoes it)")
            return 0
        if runtime.is_main:
            if force:
                self._clear()
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / MANIFEST).unlink(missing_ok=True)
        runtime.barrier()

        tokenizer = load_tokenizer(self.model)
        train, evaluation = self._read(tokenizer, runtime)
        selection_sets = {lang: evaluation["dev", lang] for lang in self.settings.train_languages}
        for seed in self.settings.seeds:
            if self._seed_done(seed):
                log(f"xnli: seed {seed} already finished; kept")
                continue
            self._run_seed(seed, tokenizer, train, selection_sets, evaluation, runtime)
        if runtime.is_main:
            write_report([self.out], self.out)
            write_manifest(self.out, "xnli", inputs, settings, started,
                           outputs={"train_pairs": len(train), "seeds": self.settings.seeds},
                           packages=("torch", "transformers", "datasets"))
            log(f"xnli: report in {self.out / 'results.md'} and {self.out / 'xnli.png'}")
        runtime.barrier()
        return 0

    def _clear(self) -> None:
        shutil.rmtree(self.out / self.settings.setting, ignore_errors=True)
        shutil.rmtree(self.out / PREDICTIONS / self.settings.setting, ignore_errors=True)

    def _read(self, tokenizer, runtime: World) -> tuple[Encoded, dict[tuple[str, str], Encoded]]:
        """Training pairs (English, or the union of every language's) and every dev/test set."""
        reader = open_source(self.data)
        s = self.settings
        tables = {(split, lang): read_split(reader, split, lang, s.max_eval_examples)
                  for split in EVALUATED for lang in s.languages}
        train_tables = [read_split(reader, "train", lang, s.max_train_examples) for lang in s.train_languages]
        log(f"xnli: {sum(map(len, train_tables)):,} training pairs ({', '.join(s.train_languages)}), "
             f"{sum(map(len, tables.values())):,} dev/test pairs; tokenizing")
        train = concat([encode(tokenizer, table, s.max_length) for table in train_tables])
        evaluation = {key: encode(tokenizer, table, s.max_length) for key, table in tables.items()}
        return train, evaluation

    def _trackers(self, seed: int, workdir: Path, runtime: World) -> Trackers:
        """One tracker run per seed, named OUT/<setting>/seed-<s> after its folder; process 0 reports."""
        report_to = self.settings.report_to if runtime.is_main else [NONE]
        name = f"{self.out.resolve().name}/{self.settings.setting}/seed-{seed}"
        config = {**asdict(self.settings), "seed": seed, "model": self.model, "data": self.data}
        return Trackers(report_to, workdir, name, config, group=self.out.resolve().name)

    def _run_seed(self, seed: int, tokenizer, train: Encoded, selection_sets: dict, evaluation: dict,
                  runtime: World) -> None:
        started = time.time()
        workdir = self._workdir(seed)
        workdir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)  # the new classification head's initial weights
        classifier = load_classifier(self.model, self.settings.attention, runtime)
        if len(tokenizer) > classifier.config.vocab_size:
            raise ModelLoadError(f"--model {self.model}: the tokenizer has {len(tokenizer):,} tokens but the model "
                                 f"embeds only {classifier.config.vocab_size:,}")
        if len(tokenizer) < classifier.config.vocab_size // 2:
            # transformers falls back to a near-empty tokenizer when a folder has none: all [UNK].
            raise ModelLoadError(f"--model {self.model}: its tokenizer has only {len(tokenizer):,} tokens for "
                                 f"{classifier.config.vocab_size:,} embedding rows; put the tokenizer files "
                                 "(spm.model, tokenizer.json, tokenizer_config.json) beside the model")
        identity = {**self.identity, "seed": seed}
        with self._trackers(seed, workdir, runtime) as trackers:
            selection = fine_tune(classifier, tokenizer, train, selection_sets, self.settings, seed, workdir,
                                  runtime, identity, self.progress, trackers)

        best = load_classifier(str(workdir / BEST), self.settings.attention, runtime).to(runtime.device)
        pad_id = tokenizer.pad_token_id or 0
        scores = {}
        with evaluation_bar(evaluation.values(), f"seed {seed}: dev and test", runtime, self.progress) as bar:
            for (split, lang), data in evaluation.items():
                predictions = predict(best, data, self.settings.eval_batch_size, runtime, pad_id, bar)
                scores[split, lang] = accuracy(predictions, data.labels)
                if runtime.is_main:
                    write_predictions(self.out, self.settings.setting, seed, split, lang, data.labels, predictions)
        if runtime.is_main:
            info = {"model": self.model, "data": self.data, "inputs": self.inputs,
                    "setting": self.settings.setting, "seed": seed,
                    "best_step": selection.best_step, "best_score": selection.best_score,
                    "steps": selection.history[-1]["step"], "train_pairs": len(train),
                    "history": selection.history, "settings": output_settings(self.settings),
                    "elapsed_s": round(time.time() - started, 1), "versions": package_versions("torch", "transformers")}
            write_json_atomic(run_info_path(self.out, self.settings.setting, seed), info)
            (workdir / STATE).unlink(missing_ok=True)
            test = [scores["test", lang] for lang in self.settings.languages]
            log(f"xnli: seed {seed}: best step {selection.best_step}, test accuracy mean over "
                 f"{len(test)} languages {100 * sum(test) / len(test):.2f}")
        runtime.barrier()


class XnliStage(Stage):
    """The XNLI settings of a recipe, each fine-tuned from one exported model in ``<out>/<setting>/``
    (an ``mdeberta xnli run`` each), and one report over them all in ``<out>``."""
    name = "xnli"

    def __init__(self, settings: list[XnliSettings], model: str | Path, data: str, out: str | Path,
                 progress: bool = True):
        self.settings = settings  # one per XNLI setting
        self.discriminator = Path(model) / "discriminator"
        self.data = data
        self.folder = Path(out)
        self.reads = (Path(model), data)
        self.progress = progress

    @property
    def report(self) -> Path:
        return self.folder / "results.md"

    def _runs(self) -> list[XnliRun]:
        """Made when asked: each fingerprints the model as it is now."""
        return [XnliRun(settings, str(self.discriminator), self.data, self.folder / settings.setting, self.progress)
                for settings in self.settings]

    def complete(self) -> bool:
        return self.report.is_file() and all((self.folder / s.setting / MANIFEST).is_file() for s in self.settings)

    def up_to_date(self) -> bool:
        return all(run.up_to_date() for run in self._runs())

    def run(self, *, force: bool = False) -> int:
        if not (self.discriminator / "config.json").is_file():
            raise StageError(f"{self.discriminator}: no exported model; run the export stage first")
        report_changes = force or self.status() is not Status.FINISHED
        runs = self._runs()
        for run in runs:
            stale = not force and run.made_from_other_inputs()
            if stale:
                log(f"xnli: {run.out} was fine-tuned from another model or data; redoing it")
            status = run.run(force=force or stale)
            if status:
                return status
        if report_changes:
            write_report([run.out for run in runs], self.folder)  # all settings in one table and chart
        return 0
