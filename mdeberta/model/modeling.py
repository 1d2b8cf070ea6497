"""The deberta-v2 encoder as DeBERTaV3 uses it, with transformers' parameter names.

Module and parameter names mirror transformers' ``DebertaV2Model``, ``DebertaV2ForMaskedLM`` and
``DebertaV2ForSequenceClassification``, and the classes extend transformers' ``PreTrainedModel``,
so ``from_pretrained``/``save_pretrained`` read and write the same folders in both directions.
The forward pass is this project's own: relative positions are bucketed once per length,
attention runs through a selectable backend (see the ``attention`` package), and the LM head can be
evaluated at chosen positions only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput, SequenceClassifierOutput
from transformers.models.deberta_v2.modeling_deberta_v2 import DebertaV2PreTrainedModel

from .attention import DisentangledSelfAttention, relative_index
from .dropout import Dropout


class UnsupportedConfigError(ValueError):
    pass


def check_supported(config) -> None:
    """Features of older deberta-v2 checkpoints this encoder does not implement."""
    if not getattr(config, "relative_attention", False):
        raise UnsupportedConfigError("relative_attention=False is not supported (DeBERTaV3 always uses it)")
    if getattr(config, "conv_kernel_size", 0) > 0:
        raise UnsupportedConfigError("the convolution layer of deberta-v2-xlarge/xxlarge (conv_kernel_size > 0) "
                                     "is not supported; DeBERTaV3 checkpoints do not use it")


class DenseResidualNorm(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): the attention output and FFN output blocks."""

    def __init__(self, config, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class DebertaV2Attention(nn.Module):
    def __init__(self, config, backend: str):
        super().__init__()
        self.self = DisentangledSelfAttention(config, backend)
        self.output = DenseResidualNorm(config, config.hidden_size)

    def forward(self, hidden_states, mask, rel_index, rel_embeddings, query_states=None):
        context = self.self(hidden_states, mask, rel_index, rel_embeddings, query_states)
        return self.output(context, hidden_states if query_states is None else query_states)


class DebertaV2Intermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class DebertaV2Layer(nn.Module):
    def __init__(self, config, backend: str):
        super().__init__()
        self.attention = DebertaV2Attention(config, backend)
        self.intermediate = DebertaV2Intermediate(config)
        self.output = DenseResidualNorm(config, config.intermediate_size)

    def forward(self, hidden_states, mask, rel_index, rel_embeddings, query_states=None):
        attended = self.attention(hidden_states, mask, rel_index, rel_embeddings, query_states)
        return self.output(self.intermediate(attended), attended)


class DebertaV2Embeddings(nn.Module):
    """Word embeddings (+ absolute positions only when ``position_biased_input``), LayerNorm,
    padding zeroed. ``absolute_positions=True`` keeps a position table even when it is not
    added to the input: the generator's Enhanced Mask Decoder reads it."""

    def __init__(self, config, absolute_positions: bool = False):
        super().__init__()
        embedding_size = getattr(config, "embedding_size", None) or config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, embedding_size, padding_idx=config.pad_token_id)
        self.position_biased_input = getattr(config, "position_biased_input", True)
        self.position_embeddings = (nn.Embedding(config.max_position_embeddings, embedding_size)
                                    if self.position_biased_input or absolute_positions else None)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, embedding_size)
                                      if config.type_vocab_size > 0 else None)
        self.embed_proj = (nn.Linear(embedding_size, config.hidden_size, bias=False)
                           if embedding_size != config.hidden_size else None)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, attention_mask, inputs_embeds=None, token_type_ids=None, position_ids=None):
        embeddings = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if self.position_biased_input:
            embeddings = embeddings + self.position_embeddings(self.position_ids(embeddings, position_ids))
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros(embeddings.shape[:-1], dtype=torch.long, device=embeddings.device)
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        if self.embed_proj is not None:
            embeddings = self.embed_proj(embeddings)
        embeddings = self.LayerNorm(embeddings) * attention_mask.unsqueeze(-1).to(embeddings.dtype)
        return self.dropout(embeddings)

    @staticmethod
    def position_ids(embeddings, position_ids=None):
        if position_ids is not None:
            return position_ids
        return torch.arange(embeddings.shape[1], device=embeddings.device).unsqueeze(0)


def pairwise_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] (or [B, L, L]) 0/1 -> bool [B, 1, L, L]: i may attend to j when both are real tokens."""
    mask = attention_mask.bool()
    if mask.dim() == 2:
        return (mask[:, :, None] & mask[:, None, :]).unsqueeze(1)
    return mask.unsqueeze(1)


class DebertaV2Encoder(nn.Module):
    def __init__(self, config, backend: str):
        super().__init__()
        self.layer = nn.ModuleList([DebertaV2Layer(config, backend) for _ in range(config.num_hidden_layers)])
        max_relative = config.max_relative_positions
        self.max_relative_positions = max_relative if max_relative >= 1 else config.max_position_embeddings
        self.position_buckets = getattr(config, "position_buckets", -1)
        self.span = self.position_buckets if self.position_buckets > 0 else self.max_relative_positions
        self.rel_embeddings = nn.Embedding(2 * self.span, config.hidden_size)
        norms = [x.strip() for x in getattr(config, "norm_rel_ebd", "none").lower().split("|")]
        if "layer_norm" in norms:
            self.LayerNorm = nn.LayerNorm(config.hidden_size, config.layer_norm_eps)
        self._index_cache: dict = {}

    def relative_positions(self, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The [L, L] index into the relative table and the LayerNorm'd rows it uses.

        Short sequences use only the rows of distances below their length (255 of 512 at
        L = 128), so the position GEMMs run over those rows alone."""
        key = (length, str(device))
        if key not in self._index_cache:
            # Built outside inference mode: a cached inference tensor could not be saved for a later backward.
            with torch.inference_mode(False):
                index = relative_index(length, self.span, self.position_buckets, self.max_relative_positions,
                                       device)
                low, high = int(index.min()), int(index.max()) + 1
                self._index_cache[key] = (index - low, slice(low, high))
        index, rows = self._index_cache[key]
        table = self.rel_embeddings.weight[rows]
        return index, (self.LayerNorm(table) if hasattr(self, "LayerNorm") else table)

    def forward(self, hidden_states, attention_mask, output_hidden_states=False, num_layers=None):
        """Runs the first ``num_layers`` layers (all by default): the generator's Enhanced Mask
        Decoder re-runs the last one itself."""
        mask = None if bool(attention_mask.all()) else pairwise_mask(attention_mask)
        rel_index, rel_embeddings = self.relative_positions(hidden_states.shape[1], hidden_states.device)
        all_states = [hidden_states] if output_hidden_states else None
        for layer in self.layer[:num_layers]:
            hidden_states = layer(hidden_states, mask, rel_index, rel_embeddings)
            if output_hidden_states:
                all_states.append(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states,
                               hidden_states=tuple(all_states) if output_hidden_states else None)


class DebertaV2Model(DebertaV2PreTrainedModel):
    def __init__(self, config, attention: str = "auto", absolute_positions: bool = False):
        super().__init__(config)
        check_supported(config)
        self.embeddings = DebertaV2Embeddings(config, absolute_positions)
        self.encoder = DebertaV2Encoder(config, attention)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, output_hidden_states=False, return_dict=True, **_):
        shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        device = (input_ids if input_ids is not None else inputs_embeds).device
        if attention_mask is None:
            attention_mask = torch.ones(shape, dtype=torch.long, device=device)
        embedded = self.embeddings(input_ids, attention_mask, inputs_embeds, token_type_ids, position_ids)
        return self.encoder(embedded, attention_mask, output_hidden_states)


class LMHeadTransform(nn.Module):
    """dense -> GELU -> LayerNorm; logits against the tied word embeddings + bias."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class LegacyLMHead(nn.Module):
    """transformers' ``cls.predictions`` layout (config.legacy=True, its default)."""

    def __init__(self, config):
        super().__init__()
        self.transform = LMHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states, word_embeddings):
        return F.linear(self.transform(hidden_states), word_embeddings, self.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # transformers' in-memory state dict also lists the tied decoder (word embeddings, bias).
        state_dict.pop(prefix + "decoder.weight", None)
        decoder_bias = state_dict.pop(prefix + "decoder.bias", None)
        if decoder_bias is not None:
            state_dict.setdefault(prefix + "bias", decoder_bias)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class LMHead(LMHeadTransform):
    """transformers' ``lm_predictions.lm_head`` layout (config.legacy=False), as the public
    DeBERTa code names it."""

    def __init__(self, config):
        super().__init__(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states, word_embeddings):
        return F.linear(super().forward(hidden_states), word_embeddings, self.bias)


class _Holder(nn.Module):
    """A named container so parameter paths read ``cls.predictions.*`` / ``lm_predictions.lm_head.*``."""

    def __init__(self, name: str, module: nn.Module):
        super().__init__()
        self.add_module(name, module)


class DebertaV2ForMaskedLM(DebertaV2PreTrainedModel):
    """Masked LM. ``masked_positions`` (bool [B, L]) restricts the LM head to those positions:
    over a 250K vocabulary the head is the largest cost of the model, and only masked
    positions have labels. The logits are then [number of masked positions, vocab]."""

    _tied_weights_keys = None

    def __init__(self, config, attention: str = "auto", absolute_positions: bool = False):
        super().__init__(config)
        self.deberta = DebertaV2Model(config, attention, absolute_positions)
        if getattr(config, "legacy", True):
            self.cls = _Holder("predictions", LegacyLMHead(config))
        else:
            self.lm_predictions = _Holder("lm_head", LMHead(config))
        self.post_init()

    @property
    def lm_head(self) -> nn.Module:
        return self.cls.predictions if hasattr(self, "cls") else self.lm_predictions.lm_head

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (LegacyLMHead, LMHead)):
            nn.init.zeros_(module.bias)

    def logits(self, hidden_states, masked_positions=None):
        if masked_positions is not None:
            hidden_states = hidden_states[masked_positions]
        return self.lm_head(hidden_states, self.deberta.embeddings.word_embeddings.weight)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, masked_positions=None, output_hidden_states=False,
                return_dict=True, **_):
        out = self.deberta(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_hidden_states=output_hidden_states)
        logits = self.logits(out.last_hidden_state, masked_positions)
        loss = None
        if labels is not None:
            targets = labels[masked_positions] if masked_positions is not None else labels.reshape(-1)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class ContextPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        size = getattr(config, "pooler_hidden_size", config.hidden_size)
        self.dense = nn.Linear(size, size)
        self.dropout = nn.Dropout(getattr(config, "pooler_dropout", 0.0))
        self.act = ACT2FN[getattr(config, "pooler_hidden_act", "gelu")]

    def forward(self, hidden_states):
        return self.act(self.dense(self.dropout(hidden_states[:, 0])))


class DebertaV2ForSequenceClassification(DebertaV2PreTrainedModel):
    def __init__(self, config, attention: str = "auto"):
        super().__init__(config)
        self.num_labels = getattr(config, "num_labels", 2)
        self.deberta = DebertaV2Model(config, attention)
        self.pooler = ContextPooler(config)
        self.classifier = nn.Linear(getattr(config, "pooler_hidden_size", config.hidden_size), self.num_labels)
        dropout = getattr(config, "cls_dropout", None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=False, return_dict=True, **_):
        out = self.deberta(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(self.pooler(out.last_hidden_state)))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
