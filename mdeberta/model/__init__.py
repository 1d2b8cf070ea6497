"""DeBERTaV3 models: an encoder that reads and writes transformers' deberta-v2 folders, its
heads, and the RTD generator/discriminator pair with embedding sharing.

    from mdeberta import model
    encoder = model.build("base", vocab_size=251000)                     # random weights
    clf = model.from_pretrained("microsoft/mdeberta-v3-base", head="classification", num_labels=3)
    model.set_attention(clf, "eager")                                     # the reference math
"""

from __future__ import annotations

from transformers import DebertaV2Config

from .attention import BACKENDS, resolve_backend
from .config import DEFAULT_VOCAB_SIZE, SIZES, size_config
from .modeling import DebertaV2ForMaskedLM, DebertaV2ForSequenceClassification, DebertaV2Model
from .rtd import SHARING, DebertaV2ForReplacedTokenDetection, Generator, RTDModel

HEADS = {None: DebertaV2Model, "mlm": DebertaV2ForMaskedLM, "classification": DebertaV2ForSequenceClassification,
         "rtd": DebertaV2ForReplacedTokenDetection}

__all__ = ["BACKENDS", "DEFAULT_VOCAB_SIZE", "HEADS", "SHARING", "SIZES", "DebertaV2ForMaskedLM",
           "DebertaV2ForReplacedTokenDetection", "DebertaV2ForSequenceClassification", "DebertaV2Model",
           "Generator", "RTDModel", "build", "from_pretrained", "set_attention", "size_config"]


def _head_class(head):
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of None, {', '.join(h for h in HEADS if h)}")
    return HEADS[head]


def build(size_or_config: str | DebertaV2Config, head: str | None = None, attention: str = "auto",
          vocab_size: int = DEFAULT_VOCAB_SIZE, **config_overrides):
    """A randomly initialised model from a size name (tiny, xsmall, small, base, large) or a config."""
    config = (size_config(size_or_config, vocab_size, **config_overrides)
              if isinstance(size_or_config, str) else size_or_config)
    return _head_class(head)(config, attention=attention)


def from_pretrained(path_or_name: str, head: str | None = None, attention: str = "auto", **kwargs):
    """Any transformers deberta-v2 folder or hub name; ``kwargs`` go to transformers'
    ``from_pretrained`` (e.g. ``num_labels=3``, ``dtype=torch.bfloat16``)."""
    return _head_class(head).from_pretrained(path_or_name, attention=resolve_backend(attention), **kwargs)


def set_attention(model, backend: str) -> None:
    """Switch every attention layer of ``model`` to ``backend`` (auto, eager, sdpa, compact)."""
    from .attention import DisentangledSelfAttention

    resolved = resolve_backend(backend)
    for module in model.modules():
        if isinstance(module, DisentangledSelfAttention):
            module.backend = resolved
