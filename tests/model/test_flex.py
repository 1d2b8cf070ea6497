"""The flex backend (FlexAttention): where it runs, where it refuses, and the Enhanced Mask Decoder.
Its outputs against transformers' are in test_forward_matches_transformers, with every other backend."""

import pytest
import torch

from mdeberta import model as ours
from mdeberta.model.attention import FlexUnsupportedError
from mdeberta.model.rtd import choose_masked_positions

from .conftest import assert_trains_like_eager, padded_batch, tiny_config
from .test_rtd import batch, rtd_model


def test_flex_refuses_training_with_attention_dropout():
    model = ours.build(tiny_config(attention_probs_dropout_prob=0.1), attention="flex").train()
    ids, mask = padded_batch(16)
    with pytest.raises(FlexUnsupportedError, match="attention_probs_dropout_prob=0.1: choose another backend"):
        model(ids, attention_mask=mask)


def test_flex_refuses_to_train_on_cpu():
    model = ours.build(tiny_config(), attention="flex").train()
    ids, mask = padded_batch(16)
    with pytest.raises(FlexUnsupportedError, match="cannot train on CPU"):
        model(ids, attention_mask=mask)
    with torch.no_grad():  # inference in train mode (no dropout configured) is fine
        assert model(ids, attention_mask=mask).last_hidden_state.isfinite().all()


def test_flex_decodes_masked_positions_like_eager():
    """The masked-only Enhanced Mask Decoder gives each row its own query positions (a per-batch index)."""
    generator = rtd_model(enhanced_mask_decoder=True).eval().generator
    ids, mask = batch()
    masked = choose_masked_positions(mask.bool() & (ids > 2), 0.15, torch.Generator().manual_seed(0))
    logits = {}
    for name in ("eager", "flex"):
        ours.set_attention(generator, name)
        with torch.no_grad():
            logits[name] = generator.masked_logits(ids, mask, masked)
    assert (logits["flex"] - logits["eager"]).abs().max() <= 1e-5


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_gradients_through_flexattentions_reference_backward(monkeypatch):
    """The CUDA kernel's backward is not available here; FlexAttention's eager reference backward
    (the same score_mod graph, differentiated by PyTorch) is, once its CPU guard is lifted: every
    parameter's gradient, position tables included, matches eager's."""
    import torch.nn.attention.flex_attention as flex_module

    from mdeberta.model.attention import flex

    if not hasattr(flex_module, "_validate_device"):
        pytest.skip("this torch has no FlexAttention CPU guard to lift")
    monkeypatch.setattr(flex_module, "_validate_device", lambda *tensors: None)
    monkeypatch.setattr(flex, "trains_on", lambda device: True)
    monkeypatch.setattr(flex, "compiled_flex_attention", lambda device_type: flex_module.flex_attention)
    torch.manual_seed(0)
    model = ours.build(tiny_config(), attention="eager").train()
    ids, mask = padded_batch(64)
    weights = torch.randn(*ids.shape, model.config.hidden_size) * mask[..., None]  # padded rows left out
    assert_trains_like_eager(model, "flex", ids, mask, weights)
