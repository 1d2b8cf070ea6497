"""The fused backend's C++ kernel against compact's PyTorch code: same dropout lanes, same math."""

import logging

import pytest
import torch

from mdeberta import model as ours
from mdeberta.model import fused_kernel
from mdeberta.model.attention import _CompactAttention

from .conftest import padded_batch, tiny_config


@pytest.fixture
def kernel():
    built = fused_kernel.load()
    if built is None:
        pytest.skip("the fused attention kernel could not be built here (no C++ compiler or ninja)")
    return built


def attention_inputs(batch, heads, queries, keys, span, per_batch_index):
    """Random inputs of one attention call; the index is [Lq, Lk], or [B, 1, Lq, Lk] as the
    Enhanced Mask Decoder gives it (each row's own queries), and some query rows are fully padded."""
    generator = torch.Generator().manual_seed(queries * 31 + keys)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator).requires_grad_(True)

    q, k, v = leaf(batch, heads, queries, 8), leaf(batch, heads, keys, 8), leaf(batch, heads, keys, 8)
    c2p, p2c = leaf(batch, heads, queries, span), leaf(batch, heads, span, keys)
    index_shape = (batch, 1, queries, keys) if per_batch_index else (queries, keys)
    index = torch.randint(0, span, index_shape, generator=generator)
    mask = torch.rand(batch, 1, queries, keys, generator=generator) > 0.2
    mask[0, 0, -1] = False
    return (q, k, v, c2p, p2c), index, mask


@pytest.mark.parametrize("queries,keys,per_batch_index", [(7, 7, False), (40, 300, True), (33, 33, False)])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_kernel_matches_compact_forward_and_backward(kernel, queries, keys, per_batch_index, dropout):
    leaves, index, mask = attention_inputs(3, 2, queries, keys, 13, per_batch_index)
    weights = torch.randn(3, 2, queries, 8)
    results = []
    for use in (None, kernel):
        torch.manual_seed(5)  # the same dropout lanes for both
        context = _CompactAttention.apply(*leaves, index, mask, 4.0, dropout, use)
        for leaf in leaves:
            leaf.grad = None
        (context * weights).sum().backward()
        results.append((context.detach(), [leaf.grad.clone() for leaf in leaves]))
    (expected, expected_grads), (got, got_grads) = results
    assert (got - expected).abs().max() <= 1e-5
    for name, want, have in zip(("q", "k", "v", "c2p", "p2c"), expected_grads, got_grads):
        assert (have - want).abs().max() <= 1e-5 * want.abs().max() + 1e-7, name


def test_fused_model_matches_compact_in_training_with_dropout(kernel):
    torch.manual_seed(0)
    model = ours.build(tiny_config(attention_probs_dropout_prob=0.1), attention="compact").train()
    ids, mask = padded_batch(300)
    weights = torch.randn(*ids.shape, model.config.hidden_size)  # a squared LayerNorm output has ~no gradient
    results = []
    for backend in ("compact", "fused"):
        ours.set_attention(model, backend)
        model.zero_grad()
        torch.manual_seed(1)
        hidden = model(ids, attention_mask=mask).last_hidden_state
        (hidden * weights).sum().backward()
        results.append((hidden.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (expected, expected_grads), (got, got_grads) = results
    assert (got - expected).abs().max() <= 1e-5
    for name, grad in expected_grads.items():
        assert (got_grads[name] - grad).abs().max() <= 1e-4 * grad.abs().max() + 1e-7, name


def test_a_failed_build_warns_and_falls_back(monkeypatch, caplog):
    from torch.utils import cpp_extension

    def no_compiler(**_):
        raise RuntimeError("Error building extension\ng++: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with caplog.at_level(logging.WARNING):
        assert fused_kernel.load.__wrapped__() is None
    assert "g++: command not found" in caplog.text and "compact backend" in caplog.text
