"""The fused backend's C++ kernel against compact's PyTorch code, and the mask-free hidden dropout."""

import logging

import pytest
import torch

from mdeberta.model import fused_kernel
from mdeberta.model.attention.compact import CompactAttention, probabilities, softmax_backward
from mdeberta.model.attention.fused import FusedAttention, kernel_layout, kernel_probabilities



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
    pos_key, pos_query = leaf(heads, span, 8), leaf(heads, span, 8)
    index_shape = (batch, 1, queries, keys) if per_batch_index else (queries, keys)
    index = torch.randint(0, span, index_shape, generator=generator)
    mask = torch.rand(batch, 1, queries, keys, generator=generator) > 0.2
    mask[0, 0, -1] = False
    return (q, k, v, pos_key, pos_query), index, mask


@pytest.mark.parametrize("queries,keys,per_batch_index", [(7, 7, False), (40, 300, True), (33, 33, False)])
def test_kernel_matches_compact_forward_and_backward(kernel, queries, keys, per_batch_index):
    leaves, index, mask = attention_inputs(3, 2, queries, keys, 13, per_batch_index)
    weights = torch.randn(3, 2, queries, 8)
    results = []
    for attend in (CompactAttention.apply, lambda *inputs: FusedAttention.apply(*inputs, kernel)):
        context = attend(*leaves, index, mask, 4.0, 0.0)
        for leaf in leaves:
            leaf.grad = None
        (context * weights).sum().backward()
        results.append((context.detach(), [leaf.grad.clone() for leaf in leaves]))
    (expected, expected_grads), (got, got_grads) = results
    assert (got - expected).abs().max() <= 1e-5
    for name, want, have in zip(("q", "k", "v", "pos_key", "pos_query"), expected_grads, got_grads):
        assert (have - want).abs().max() <= 1e-5 * want.abs().max() + 1e-7, name


def test_kernel_dropout_is_the_reference_math_with_the_mask_in_its_signs(kernel):
    (q, k, _, pos_key, pos_query), index, mask = attention_inputs(3, 2, 40, 300, 13, True)
    q, k, pos_key, pos_query = (t.detach() for t in (q, k, pos_key, pos_query))
    c2p, p2c = q @ pos_key.transpose(-1, -2), pos_query @ k.transpose(-1, -2)
    layout = kernel_layout(index, mask, 3, 40, 300)
    full, *_ = probabilities(q, k, c2p, p2c, index, mask, 4.0, 0.0)
    torch.manual_seed(5)
    probs, kept, keep_scale = kernel_probabilities(kernel, q, k, c2p, p2c, *layout, 4.0, 0.25)
    dropped = torch.signbit(probs)
    assert (probs.abs() - full).abs().max() <= 1e-6
    assert torch.equal(kept, torch.where(dropped, 0.0, probs.abs()))
    assert abs(dropped.float().mean().item() - 0.25) < 0.01 and keep_scale == 1 / (1 - 0.25)
    torch.manual_seed(5)
    assert torch.equal(kernel_probabilities(kernel, q, k, c2p, p2c, *layout, 4.0, 0.25)[0], probs)

    # backward from the same signed probabilities: PyTorch's steps against the kernel's one pass
    grad = torch.randn_like(probs)
    expected = grad.clone()
    softmax_backward(expected, probs, mask, dropout=True)
    got = grad.clone()
    tables = kernel.score_gradients(got.view(-1, 40, 300), probs.view(-1, 40, 300), layout[0], 2, layout[1],
                                    13, True, True)
    assert (got - expected).abs().max() <= 1e-6
    full_index = index.expand(3, 2, 40, 300)
    for table, dim, shape in zip(tables, (-1, -2), (c2p.shape, p2c.shape)):
        reference = expected.new_zeros(shape).scatter_add_(dim, full_index, expected)
        assert (table.view(shape) - reference).abs().max() <= 1e-5


def test_hidden_dropout_draws_a_mask_once_and_redraws_it_in_backward(kernel):
    from mdeberta.model.dropout import Dropout

    layer = Dropout(0.2).train()
    x = torch.randn(3, 50, 37, requires_grad=True)
    torch.manual_seed(2)
    y = layer(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.2) < 0.01
    assert torch.allclose(y[kept], x[kept] / (1 - round(0.2 * 65536) / 65536))
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad != 0, kept)  # the same mask, redrawn from the seed
    torch.manual_seed(2)
    assert torch.equal(layer(x), y)
    assert not torch.equal(layer(x), y)
    assert torch.equal(layer.eval()(x), x)


def test_a_failed_build_warns_and_falls_back(monkeypatch, caplog):
    from torch.utils import cpp_extension

    def no_compiler(**_):
        raise RuntimeError("Error building extension\ng++: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with caplog.at_level(logging.WARNING):
        assert fused_kernel.load.__wrapped__() is None
    assert "g++: command not found" in caplog.text and "compact backend" in caplog.text
