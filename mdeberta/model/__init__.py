"""DeBERTaV3 models: an encoder that reads and writes transformers' deberta-v2 folders, its
heads, and the RTD generator/discriminator pair with embedding sharing.

    from mdeberta import model
    encoder = model.build("base", vocab_size=251000)                     # random weights
    clf = model.from_pretrained("microsoft/mdeberta-v3-base", head="classification", num_labels=3)
    model.set_attention(clf, "eager")                                     # the reference math

The classes load torch and transformers (seconds and hundreds of MB), so they are imported on
first use: the CLI reads the choices below for every stage, also those that load no model.
"""

from __future__ import annotations

import importlib

from .choices import BACKENDS, DEFAULT_VOCAB_SIZE, SHARING, SIZES, TRAINING_BACKENDS

_LAZY = {"size_config": "config", "resolve_backend": "attention", "DebertaV2Model": "modeling",
         "DebertaV2ForMaskedLM": "modeling", "DebertaV2ForSequenceClassification": "modeling",
         "DebertaV2ForReplacedTokenDetection": "rtd", "Generator": "rtd", "RTDModel": "rtd"}
HEAD_CLASSES = {None: "DebertaV2Model", "mlm": "DebertaV2ForMaskedLM",
                "classification": "DebertaV2ForSequenceClassification",
                "rtd": "DebertaV2ForReplacedTokenDetection"}

__all__ = ["BACKENDS", "DEFAULT_VOCAB_SIZE", "HEAD_CLASSES", "SHARING", "SIZES", "TRAINING_BACKENDS",
           *_LAZY, "build", "from_pretrained", "set_attention"]


def _load(name: str):
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


def __getattr__(name: str):
    if name in _LAZY:
        return _load(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


def _head_class(head):
    if head not in HEAD_CLASSES:
        choices = ", ".join(h for h in HEAD_CLASSES if h)
        raise ValueError(f"unknown head {head!r}; choose one of None, {choices}")
    return _load(HEAD_CLASSES[head])


def build(size_or_config, head: str | None = None, attention: str = "auto",
          vocab_size: int = DEFAULT_VOCAB_SIZE, **config_overrides):
    """A randomly initialised model from a size name (tiny, xsmall, small, base, large) or a
    transformers ``DebertaV2Config``."""
    config = (_load("size_config")(size_or_config, vocab_size, **config_overrides)
              if isinstance(size_or_config, str) else size_or_config)
    return _head_class(head)(config, attention=attention)


def from_pretrained(path_or_name: str, head: str | None = None, attention: str = "auto", **kwargs):
    """Any transformers deberta-v2 folder or hub name; ``kwargs`` go to transformers'
    ``from_pretrained`` (e.g. ``num_labels=3``, ``dtype=torch.bfloat16``)."""
    backend = _load("resolve_backend")(attention)
    return _head_class(head).from_pretrained(path_or_name, attention=backend, **kwargs)


def set_attention(model, backend: str) -> None:
    """Switch every attention layer of ``model`` to ``backend`` (auto, eager, sdpa, compact, fused)."""
    from .attention import DisentangledSelfAttention, resolve_backend

    resolved = resolve_backend(backend)
    for module in model.modules():
        if isinstance(module, DisentangledSelfAttention):
            module.backend = resolved
