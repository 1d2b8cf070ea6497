"""Our forward against transformers' on the same random weights (fp32, dropout off)."""

import pytest
import torch
import transformers

from mdeberta import model as ours
from mdeberta.model.attention import log_bucket, relative_index

from .conftest import padded_batch, tiny_config

LENGTHS = [7, 128, 300, 600]  # 600 > position_buckets (256)
BACKENDS = ["eager", "sdpa"]

PAIRS = {
    None: (transformers.DebertaV2Model, lambda out: out.last_hidden_state),
    "mlm": (transformers.DebertaV2ForMaskedLM, lambda out: out.logits),
    "classification": (transformers.DebertaV2ForSequenceClassification, lambda out: out.logits),
}


def twins(head, backend, **overrides):
    torch.manual_seed(0)
    config = tiny_config(**overrides)
    reference = PAIRS[head][0](config).eval()
    mine = ours.build(config, head=head, attention=backend).eval()
    mine.load_state_dict(reference.state_dict(), strict=True)
    return reference, mine


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("head", PAIRS, ids=lambda h: h or "encoder")
@pytest.mark.parametrize("length", LENGTHS)
def test_outputs_match_transformers(head, backend, length):
    reference, mine = twins(head, backend)
    ids, mask = padded_batch(length)
    select = PAIRS[head][1]
    with torch.no_grad():
        expected, got = select(reference(ids, attention_mask=mask)), select(mine(ids, attention_mask=mask))
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("legacy", [True, False])
def test_both_lm_head_layouts(legacy):
    reference, mine = twins("mlm", "sdpa", legacy=legacy)
    ids, mask = padded_batch(32)
    with torch.no_grad():
        assert (mine(ids, attention_mask=mask).logits - reference(ids, attention_mask=mask).logits).abs().max() <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("length", [128, 600])
def test_input_gradients_match_transformers(backend, length):
    reference, mine = twins(None, backend)
    ids, mask = padded_batch(length)
    embeds = reference.embeddings.word_embeddings(ids).detach()
    weights = torch.randn(*ids.shape, reference.config.hidden_size, generator=torch.Generator().manual_seed(1))
    grads = []
    for model in (reference, mine):
        x = embeds.clone().requires_grad_(True)
        (model(inputs_embeds=x, attention_mask=mask).last_hidden_state * weights).sum().backward()
        grads.append(x.grad)
    expected, got = grads
    assert (got - expected).abs().max() / expected.abs().max() <= 1e-4


def test_backends_agree_in_training_with_dropout_off():
    _, eager = twins(None, "eager")
    ids, mask = padded_batch(64)
    eager.train()
    expected = eager(ids, attention_mask=mask).last_hidden_state
    ours.set_attention(eager, "sdpa")
    assert (eager(ids, attention_mask=mask).last_hidden_state - expected).abs().max() <= 1e-5


def test_training_works_after_inference_mode_at_the_same_length():
    _, model = twins(None, "sdpa")
    ids, mask = padded_batch(16)
    with torch.inference_mode():
        model(ids, attention_mask=mask)  # fills the per-length caches
    model.train()
    model(ids, attention_mask=mask).last_hidden_state.sum().backward()
    assert model.embeddings.word_embeddings.weight.grad is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_dropout_is_applied_in_training_only(backend):
    torch.manual_seed(0)
    model = ours.build(tiny_config(attention_probs_dropout_prob=0.5), attention=backend)
    ids, mask = padded_batch(16)
    model.train()
    first, second = (model(ids, attention_mask=mask).last_hidden_state for _ in range(2))
    assert not torch.allclose(first, second)
    model.eval()
    first, second = (model(ids, attention_mask=mask).last_hidden_state for _ in range(2))
    assert torch.equal(first, second)


def test_relative_index_matches_transformers_buckets():
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    length, buckets, max_position = 700, 256, 640
    rows = torch.arange(length)
    expected = make_log_bucket_position(rows[:, None] - rows[None, :], buckets, max_position)
    expected = torch.clamp(expected.long() + buckets, 0, 2 * buckets - 1)
    assert torch.equal(relative_index(length, buckets, buckets, max_position, "cpu"), expected)
    assert log_bucket(torch.tensor([0, 5, -5, 128, -600]), buckets, max_position).tolist()[:4] == [0, 5, -5, 128]


def test_unknown_backend_and_unsupported_config_are_refused():
    with pytest.raises(ValueError, match="unknown attention backend 'flash'; choose one of auto, eager, sdpa"):
        ours.build("tiny", attention="flash", vocab_size=50)
    with pytest.raises(ValueError, match="conv_kernel_size"):
        ours.build(tiny_config(conv_kernel_size=3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 kernels)")
@pytest.mark.parametrize("length", [128, 600])
def test_backends_agree_in_bf16_on_cuda(length):
    """bf16 keeps 8 bits of mantissa: after two layers the backends agree to a few 1e-2."""
    reference, mine = twins(None, "sdpa")
    ids, mask = (t.cuda() for t in padded_batch(length))
    mine = mine.cuda().to(torch.bfloat16)
    with torch.no_grad():
        expected = reference.cuda()(ids, attention_mask=mask).last_hidden_state
        fast = mine(ids, attention_mask=mask).last_hidden_state.float()
        ours.set_attention(mine, "eager")
        slow = mine(ids, attention_mask=mask).last_hidden_state.float()
    assert (fast - slow).abs().max() <= 5e-2
    assert (fast - expected).abs().max() <= 1e-1
