"""DeBERTaV3 sizes as transformers ``DebertaV2Config`` objects.

The shared settings are those of the public DeBERTaV3 checkpoints: relative attention over 256
log-bucketed positions, shared attention keys, c2p + p2c, LayerNorm'd relative embeddings and
no absolute positions added to the input.
"""

from __future__ import annotations

from transformers import DebertaV2Config

from ..errors import UserError
from .choices import DEFAULT_VOCAB_SIZE, SIZES

V3_SHARED = dict(
    relative_attention=True, position_buckets=256, max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
    share_att_key=True, norm_rel_ebd="layer_norm", layer_norm_eps=1e-7, position_biased_input=False,
    type_vocab_size=0, max_position_embeddings=512, hidden_act="gelu", hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, initializer_range=0.02, pad_token_id=0,
)


class UnknownSizeError(UserError, ValueError):
    pass


def size_config(size: str, vocab_size: int = DEFAULT_VOCAB_SIZE, generator: bool = False,
                **overrides) -> DebertaV2Config:
    """The discriminator's (or, with ``generator=True``, the generator's) config of a named size.
    The generator has the discriminator's width and half its depth; ``overrides`` win."""
    if size not in SIZES:
        raise UnknownSizeError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    layers, generator_layers, hidden, heads, ffn = SIZES[size]
    values = dict(V3_SHARED, vocab_size=vocab_size, hidden_size=hidden, num_attention_heads=heads,
                  intermediate_size=ffn, num_hidden_layers=generator_layers if generator else layers)
    values.update(overrides)
    return DebertaV2Config(**values)
