"""Weights move between this project and transformers in both directions, unchanged."""

import pytest
import torch
import transformers

from mdeberta import model as ours

from .conftest import padded_batch, tiny_config

CLASSES = {None: transformers.DebertaV2Model, "mlm": transformers.DebertaV2ForMaskedLM,
           "classification": transformers.DebertaV2ForSequenceClassification}


def outputs(model, ids, mask):
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


@pytest.mark.parametrize("head", CLASSES, ids=lambda h: h or "encoder")
def test_ours_saved_loads_in_transformers(tmp_path, head):
    torch.manual_seed(0)
    mine = ours.build(tiny_config(num_labels=3), head=head).eval()
    mine.save_pretrained(tmp_path)
    theirs = CLASSES[head].from_pretrained(tmp_path).eval()
    ids, mask = padded_batch(40)
    assert (outputs(theirs, ids, mask) - outputs(mine, ids, mask)).abs().max() <= 1e-5


@pytest.mark.parametrize("head", CLASSES, ids=lambda h: h or "encoder")
def test_transformers_saved_loads_in_ours(tmp_path, head):
    torch.manual_seed(0)
    theirs = CLASSES[head](tiny_config(num_labels=3)).eval()
    theirs.save_pretrained(tmp_path)
    mine = ours.from_pretrained(str(tmp_path), head=head, attention="sdpa").eval()
    ids, mask = padded_batch(40)
    assert (outputs(mine, ids, mask) - outputs(theirs, ids, mask)).abs().max() <= 1e-5


def test_auto_model_reads_our_folder(tmp_path):
    ours.build(tiny_config(), head="mlm").save_pretrained(tmp_path)
    assert type(transformers.AutoModelForMaskedLM.from_pretrained(tmp_path)).__name__ == "DebertaV2ForMaskedLM"


def test_masked_positions_restrict_the_lm_head():
    torch.manual_seed(0)
    mlm = ours.build(tiny_config(), head="mlm").eval()
    ids, mask = padded_batch(20)
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[0, [2, 5]] = True
    masked[2, 9] = True
    with torch.no_grad():
        full = mlm(ids, attention_mask=mask).logits
        only = mlm(ids, attention_mask=mask, masked_positions=masked).logits
    assert only.shape == (3, mlm.config.vocab_size)
    assert torch.allclose(only, full[masked], atol=1e-6)


def test_sizes():
    assert ours.size_config("base").num_hidden_layers == 12
    assert ours.size_config("base", generator=True).num_hidden_layers == 6
    assert ours.size_config("xsmall").hidden_size == 384
    assert ours.size_config("large", vocab_size=128100).vocab_size == 128100
    with pytest.raises(ValueError, match="unknown model size 'huge'; choose one of tiny, xsmall, small, base, large"):
        ours.size_config("huge")
    with pytest.raises(ValueError, match="unknown head 'qa'"):
        ours.build("tiny", head="qa", vocab_size=50)


def test_from_pretrained_passes_transformers_arguments(tmp_path):
    transformers.DebertaV2Model(tiny_config()).save_pretrained(tmp_path)
    classifier = ours.from_pretrained(str(tmp_path), head="classification", num_labels=3, dtype=torch.bfloat16)
    assert classifier.classifier.out_features == 3
    assert classifier.deberta.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    assert classifier.deberta.encoder.layer[0].attention.self.backend == "auto"  # decided per call
