import pytest
import torch

from mdeberta.model import set_attention, size_config

VOCAB = 120


def tiny_config(**overrides):
    """Dropout off, positions up to 640 so that length 600 exceeds the 256 position buckets."""
    values = dict(vocab_size=VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  max_position_embeddings=640)
    values.update(overrides)
    return size_config("tiny", **values)


def padded_batch(length: int, seed: int = 0):
    """Three rows: full, half padding, two pads at the end."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (3, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, max(1, length // 2):] = 0
    mask[2, max(1, length - 2):] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


@pytest.fixture
def config():
    torch.manual_seed(0)
    return tiny_config()


def assert_trains_like_eager(model, backend, ids, mask, weights, output_tolerance=1e-5, gradient_tolerance=1e-4):
    """One training step of sum(last hidden state x weights) with eager attention and with
    ``backend``: the outputs agree within ``output_tolerance`` and every parameter's gradient
    (position tables, projections, LayerNorms) within ``gradient_tolerance`` of its largest entry."""
    results = []
    for name in ("eager", backend):
        set_attention(model, name)
        model.zero_grad()
        hidden = model(ids, attention_mask=mask).last_hidden_state
        (hidden * weights).sum().backward()
        results.append((hidden.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (expected, expected_grads), (got, got_grads) = results
    assert (got - expected).abs().max() <= output_tolerance
    assert got_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        assert (got_grads[name] - grad).abs().max() <= gradient_tolerance * grad.abs().max() + 1e-7, name
