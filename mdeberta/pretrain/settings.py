"""Settings of the pretraining stage (the ``[pretrain]`` section of a recipe).

The defaults are the paper-scale mDeBERTaV3-base run (REFERENCE §1-2): base size, 8192 x 512-token
sequences per step, 500k steps, warm-up 10k, lr 6e-4, RTD weight 50, GDES.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import SHARING, SIZES, TRAINING_BACKENDS
from ..settings import SettingsError, setting
from ..trackers import REPORT_TO_HELP, check_report_to

PRECISIONS = ("auto", "bf16", "fp32")
NONFINITE = ("stop", "skip")
UPDATES = ("auto", "decoupled", "joint")



@dataclass
class PretrainSettings:
    size: str = setting("base", "model size (tiny is for CPU tests)", choices=tuple(SIZES), group="model")
    generator_layers: int = setting(0, "generator depth (0: half the discriminator's, as DeBERTaV3)",
                                    group="model", metavar="N")
    vocab_size: int = setting(0, "embedding rows (0: the tokenizer's ids + [MASK], rounded up to a multiple "
                              "of 128; rows past the tokenizer are never predicted)", group="model", metavar="N")
    sharing: str = setting("gdes", "embedding sharing: es (one table), nes (separate tables), gdes "
                           "(E_D = sg(E_G) + E_delta)", choices=SHARING, group="model")
    rtd_weight: float = setting(50.0, "lambda in L_MLM + lambda * L_RTD", group="model", metavar="LAMBDA")
    mask_rate: float = setting(0.15, "share of tokens masked for the generator", group="model", metavar="RATE")
    temperature: float = setting(1.0, "softmax temperature of the generator's samples", group="model", metavar="T")
    enhanced_mask_decoder: bool = setting(True, "generator decodes with the Enhanced Mask Decoder", group="model")
    attention: str = setting("auto", "attention backend (auto: fused for CPU training, sdpa elsewhere)",
                             choices=("auto", *TRAINING_BACKENDS), group="model", affects_output=False)

    langs: list[str] = setting([], "corpus languages to train on (default: all)", group="data", metavar="A,B,...")
    alpha: float = setting(0.3, "language sampling exponent: q_i proportional to p_i^alpha", group="data")
    max_seq_length: int = setting(512, "tokens per training sequence, [CLS] and [SEP] included", group="data",
                                  metavar="TOKENS")
    validation_fraction: float = setting(0.005, "share of each language's documents held out for validation",
                                         group="data", metavar="SHARE")
    tokenize_workers: int = setting(0, "processes tokenizing the corpus (0: one per core)", group="data",
                                    affects_output=False, metavar="N")

    batch_size: int = setting(8192, "sequences per optimizer step, over all GPUs and accumulation steps",
                              group="optimisation", metavar="SEQUENCES")
    micro_batch_size: int = setting(32, "sequences per forward pass on one device (accumulation makes up the "
                                    "rest); masks, samples and dropout are drawn per micro-batch, so a run "
                                    "resumes only with the same one", group="optimisation", metavar="SEQUENCES")
    max_steps: int = setting(500_000, "optimizer steps", group="optimisation", metavar="N")
    learning_rate: float = setting(6e-4, "peak learning rate", group="optimisation", metavar="LR")
    warmup_steps: int = setting(10_000, "linear warm-up steps, then linear decay to 0", group="optimisation",
                                metavar="N")
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases and LayerNorm)", group="optimisation")
    adam_betas: list[float] = setting([0.9, 0.98], "AdamW betas", group="optimisation", metavar="B1,B2")
    adam_eps: float = setting(1e-6, "AdamW epsilon", group="optimisation", metavar="EPS")
    update: str = setting("auto", "decoupled: the generator steps on L_MLM, then the discriminator on lambda "
                          "L_RTD, each with its own clipping and AdamW (the paper's NES and GDES); joint: one step "
                          "on L_MLM + lambda L_RTD (ES); auto: joint for es, decoupled otherwise", choices=UPDATES,
                          group="optimisation")
    generator_learning_rate: float = setting(0.0, "peak learning rate of the generator under decoupled updates "
                                             "(0: learning_rate)", group="optimisation", metavar="LR")
    grad_clip: float = setting(1.0, "gradient norm clipping, of each model on its own under decoupled updates "
                               "(0: off)", group="optimisation", metavar="NORM")
    seed: int = setting(0, "seed of the initial weights, the data order, masking and sampling", group="optimisation")

    precision: str = setting("auto", "auto: bf16 autocast on CUDA, fp32 on CPU", choices=PRECISIONS,
                             group="execution")
    compile: bool = setting(False, "torch.compile the layers of the generator and discriminator encoders", group="execution",
                            affects_output=False)
    log_every: int = setting(50, "steps between log lines and metrics.jsonl records", group="execution",
                             affects_output=False, metavar="STEPS")
    eval_every: int = setting(1000, "steps between validations on the held-out slice (0: only at the end)",
                              group="execution", affects_output=False, metavar="STEPS")
    eval_sequences: int = setting(256, "held-out sequences per validation", group="execution", metavar="N")
    checkpoint_every: int = setting(1000, "steps between checkpoints (one is also written at the end and on "
                                    "SIGTERM/SIGINT)", group="execution", affects_output=False, metavar="STEPS")
    keep_checkpoints: int = setting(3, "checkpoints kept (the oldest are deleted)", group="execution",
                                    affects_output=False, metavar="K")
    on_nonfinite: str = setting("stop", "a NaN/inf loss or gradient: stop with an error, or skip the step",
                                choices=NONFINITE, group="execution", affects_output=False)
    max_skipped_share: float = setting(0.1, "with on_nonfinite = skip: a run that skipped more than this share of "
                                       "its steps ends with an error (exit 1) instead of success; a healthy run "
                                       "skips a handful of steps, one that skips a tenth is diverging",
                                       group="execution", affects_output=False, metavar="SHARE")
    report_to: list[str] = setting([], REPORT_TO_HELP, group="execution", affects_output=False, metavar="NAME,...")

    def __post_init__(self):
        positive = ("max_seq_length", "batch_size", "micro_batch_size", "max_steps", "log_every",
                    "checkpoint_every", "keep_checkpoints", "eval_sequences")
        for name in positive:
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_seq_length < 8:
            raise SettingsError(f"max_seq_length must be at least 8, got {self.max_seq_length}")
        if not 0 < self.mask_rate < 1:
            raise SettingsError(f"mask_rate must be in (0, 1), got {self.mask_rate}")
        if not 0 <= self.validation_fraction < 1:
            raise SettingsError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.temperature <= 0:
            raise SettingsError(f"temperature must be > 0, got {self.temperature}")
        if self.update == "decoupled" and self.sharing == "es":
            raise SettingsError("sharing es (one embedding table for both models) trains with update joint: "
                                "decoupled updates would step the shared table twice")
        if self.generator_learning_rate and not self.decoupled:
            raise SettingsError("generator_learning_rate applies to decoupled updates; set update = decoupled or "
                                "leave it at 0")
        try:
            self.adam_betas = [float(beta) for beta in self.adam_betas]
        except ValueError:
            self.adam_betas = []
        if len(self.adam_betas) != 2:
            raise SettingsError(f"adam_betas takes two numbers such as 0.9,0.98, got {self.adam_betas}")
        check_report_to(self.report_to)

    @property
    def decoupled(self) -> bool:
        """Two updates a step, the generator's then the discriminator's."""
        return self.update == "decoupled" or self.update == "auto" and self.sharing != "es"
