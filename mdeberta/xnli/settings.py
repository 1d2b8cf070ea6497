"""Settings of the XNLI stage (the ``[xnli]`` section of a recipe).

Defaults are those of the mdeberta-v3-base model card: lr 2e-5, batch 32, 6 epochs, 3000 warmup
steps, pairs cut to 256 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import settings
from ..corpora import XNLI_LANGUAGES
from ..model import TRAINING_BACKENDS
from ..settings import SettingsError
from ..trackers import REPORT_TO_HELP, check_report_to

PROTOCOLS = ("zero-shot", "translate-train-all")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class XnliSettings:
    setting: str = settings.setting("zero-shot", "zero-shot: train on English, select on English dev; "
                                    "translate-train-all: train on all 15 training sets, select on their mean "
                                    "dev accuracy", choices=PROTOCOLS, group="protocol")
    languages: list[str] = settings.setting(list(XNLI_LANGUAGES), "languages evaluated (and, for "
                                            "translate-train-all, trained on)", group="protocol",
                                            metavar="A,B,...")
    seeds: list[int] = settings.setting([1], "one fine-tuning run per seed", group="protocol", cli=False)

    lr: float = settings.setting(2e-5, "peak learning rate (AdamW)", group="training")
    batch_size: int = settings.setting(32, "pairs per optimizer step, over all processes", group="training",
                                       metavar="N")
    epochs: float = settings.setting(6.0, "passes over the training pairs (translate-train-all has 15 times "
                                     "as many per pass)", group="training", metavar="N")
    warmup: float = settings.setting(3000.0, "linear warmup: steps when >= 1, a share of all steps when < 1",
                                     group="training", metavar="STEPS|RATIO")
    weight_decay: float = settings.setting(0.01, "AdamW weight decay (not on biases and LayerNorm)",
                                           group="training")
    max_grad_norm: float = settings.setting(1.0, "gradient clipping norm (0: none)", group="training")
    max_length: int = settings.setting(256, "premise + hypothesis are cut to this many tokens", group="training",
                                       metavar="TOKENS")
    eval_every: int = settings.setting(1000, "evaluate the selection dev sets every N steps (and after the "
                                       "last); the best evaluation's weights are kept", group="training",
                                       metavar="STEPS")
    max_train_examples: int = settings.setting(0, "train on the first N pairs (per language for "
                                               "translate-train-all; 0: all) for quick runs", group="training",
                                               metavar="N")
    max_eval_examples: int = settings.setting(0, "evaluate on the first N pairs of each dev/test set (0: all)",
                                              group="training", metavar="N")

    precision: str = settings.setting("auto", "auto: bf16 autocast on CUDA, fp32 on CPU", choices=PRECISIONS,
                                      group="execution")
    attention: str = settings.setting("auto", "attention backend of the model (auto: fused for CPU training, "
                                      "sdpa elsewhere)", affects_output=False, group="execution",
                                      choices=("auto", *TRAINING_BACKENDS))
    eval_batch_size: int = settings.setting(128, "pairs per evaluation batch and process", affects_output=False,
                                            group="execution", metavar="N")
    report_to: list[str] = settings.setting([], REPORT_TO_HELP, affects_output=False, group="execution",
                                            metavar="NAME,...")

    def __post_init__(self):
        self.seeds = [_as_int("seeds", s) for s in self.seeds]
        unknown = [lang for lang in self.languages if lang not in XNLI_LANGUAGES]
        if unknown:
            raise SettingsError(f"languages: {', '.join(unknown)} not in XNLI ({' '.join(XNLI_LANGUAGES)})")
        if self.setting == "zero-shot" and "en" not in self.languages:
            raise SettingsError("languages: zero-shot trains and selects on English; include 'en'")
        if not self.seeds or not self.languages:
            raise SettingsError("seeds and languages must not be empty")
        for name in ("lr", "batch_size", "epochs", "eval_every", "max_length", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive, got {getattr(self, name)}")
        if self.warmup < 0 or self.max_train_examples < 0 or self.max_eval_examples < 0:
            raise SettingsError("warmup, max_train_examples and max_eval_examples must be >= 0")
        check_report_to(self.report_to)

    @property
    def train_languages(self) -> list[str]:
        return ["en"] if self.setting == "zero-shot" else list(self.languages)

    def warmup_steps(self, total_steps: int) -> int:
        return round(self.warmup * total_steps) if self.warmup < 1 else min(int(self.warmup), total_steps)


def _as_int(name: str, value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}: expected whole numbers, got {value!r}") from None
