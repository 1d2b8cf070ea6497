"""The tokenizer stage: corpus shards -> language-balanced sample -> spm.model -> transformers files.

Everything is written into ``<out>/_work`` first and moved into ``<out>`` when complete, the
manifest last, so an interrupted run never leaves a folder that looks finished.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Callable

from ..console import log
from ..corpora.contract import require_finished_corpus
from ..locking import output_lock
from ..manifest import MANIFEST, file_stamp, is_complete, write_json_atomic, write_manifest
from ..settings import output_settings
from ..stage import Stage
from .card import write_model_card
from .hf_files import write_hf_files
from .report import fit_table, write_report
from .sampling import SamplePlan, draw_sample, plan_sample
from .settings import TokenizerSettings
from .train import check_memory, train_sentencepiece

WORK = "_work"
OUTPUTS = ("spm.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
           "sample_stats.json", "report.json", "report.md", "README.md", "spm_train.log")


def load_fast_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


class TokenizerStage(Stage):
    name = "tokenizer"

    def __init__(self, settings: TokenizerSettings, corpus: str | Path, out: str | Path, progress: bool = True,
                 echo: Callable[[str], None] = print):
        self.settings = settings
        self.corpus = Path(corpus)
        self.folder = Path(out)
        self.reads = (self.corpus,)
        self.work = self.folder / WORK
        self.progress = progress
        self.echo = echo

    @cached_property
    def plan(self) -> SamplePlan:
        require_finished_corpus(self.corpus)
        return plan_sample(self.corpus, self.settings.langs, self.settings.alpha, self.settings.sentences,
                           self.progress)

    @cached_property
    def inputs(self) -> list[dict]:
        """The fingerprints of the corpus files the sample is drawn from."""
        files = [part for parts in self.plan.shards.values() for part in parts]
        stats = self.corpus / "stats.json"
        files += [stats] if stats.is_file() else []
        return [{"path": str(f.relative_to(self.corpus)), **file_stamp(f)}
                for f in files]

    @cached_property
    def output_settings(self) -> dict:
        return {**output_settings(self.settings), "langs": list(self.plan.shards)}

    def complete(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    def begun(self) -> bool:
        return False  # every run starts over in its work folder

    def up_to_date(self) -> bool:
        return is_complete(self.folder, self.inputs, self.output_settings)

    def run(self, force: bool = False) -> int:
        plan = self.plan  # the corpus is read before the output folder is taken
        with output_lock(self.folder):
            return self._run(plan, force)

    def _run(self, plan: SamplePlan, force: bool) -> int:
        started = time.time()
        if not force and self.up_to_date():
            log(f"tokenizer: {self.folder} is up to date with this corpus and these settings; nothing to do "
                 "(--force redoes it)")
            return 0
        check_memory(plan.expected_characters(), plan.lines, self.settings.max_memory)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        (self.folder / MANIFEST).unlink(missing_ok=True)

        sampled = plan.describe()
        log(f"tokenizer: {sampled}")
        sample = draw_sample(plan, self.settings.seed, self.settings.max_sentence_length,
                             self.settings.report_lines, self.progress)
        check_memory(sample.characters, plan.lines, self.settings.max_memory)
        result = train_sentencepiece(sample.lines, sample.characters, self.settings, self.work, self.progress,
                                     warn=log)
        mask_id = write_hf_files(self.work / "spm.model", self.work, self.settings.model_max_length)
        sample_stats = {**sample.to_json(), "sampled": sampled, "alpha": self.settings.alpha,
                        "seed": self.settings.seed, "pieces": result.pieces, "mask_id": mask_id,
                        "threads": result.threads, "train_extremely_large_corpus": result.extremely_large_corpus}
        write_json_atomic(self.work / "sample_stats.json", sample_stats)
        table = fit_table(load_fast_tokenizer(self.work), sample.report_lines)
        fit_markdown = write_report(self.work, {str(self.folder): table},
                                    f"up to {self.settings.report_lines} lines per language from {self.corpus}, "
                                    "drawn apart from the training sample")
        write_model_card(self.work, corpus=self.corpus, settings=self.settings, sample_stats=sample_stats,
                         pieces=result.pieces, mask_id=mask_id, fit_markdown=fit_markdown.split("\n\n")[0])
        self._publish()
        write_json_atomic(self.folder / "settings.json", asdict(self.settings))
        write_manifest(self.folder, "tokenizer", self.inputs, self.output_settings, started,
                       outputs={"pieces": result.pieces, "mask_id": mask_id, "languages": list(plan.shards),
                                "sample_lines": len(sample.lines)},
                       packages=("sentencepiece", "tokenizers", "transformers"))
        shutil.rmtree(self.work, ignore_errors=True)
        self.echo(self._summary(sample_stats, table))
        return 0

    def _publish(self) -> None:
        for name in OUTPUTS:
            os.replace(self.work / name, self.folder / name)

    def _summary(self, sample_stats: dict, table) -> str:
        shown = table.drop(index="all")[["lines", "unit", "fertility", "byte_rate"]].astype({"lines": int})
        return (f"tokenizer: {sample_stats['pieces']:,} pieces + [MASK] = {sample_stats['mask_id']} from "
                f"{sample_stats['lines']:,} sample lines in {len(shown)} languages -> {self.folder}\n"
                + shown.to_markdown(floatfmt=".3f"))
