"""Our forward against transformers' on the same random weights (fp32, dropout off)."""

import pytest
import torch
import transformers

from mdeberta import model as ours
from mdeberta.model.attention import log_bucket, relative_index

from .conftest import assert_trains_like_eager, padded_batch, tiny_config

LENGTHS = [7, 128, 300, 600]  # 600 > position_buckets (256)
BACKENDS = ["eager", "sdpa", "compact", "fused", "flex"]
CPU_TRAINING = [name for name in BACKENDS if name != "flex"]  # FlexAttention has no CPU backward

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


@pytest.mark.parametrize("backend", CPU_TRAINING)
@pytest.mark.parametrize("length", [128, 600])
def test_input_gradients_match_transformers(backend, length):
    assert_input_gradients_match(*twins(None, backend), *padded_batch(length))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("terms", [["c2p"], ["p2c"]])
def test_one_position_term_matches_transformers(backend, terms):
    """Configs with c2p or p2c alone: outputs, and input gradients where the backend trains here."""
    reference, mine = twins(None, backend, pos_att_type=terms)
    ids, mask = padded_batch(40)
    with torch.no_grad():
        expected, got = (model(ids, attention_mask=mask).last_hidden_state for model in (reference, mine))
    assert (got - expected).abs().max() <= 1e-5
    if backend in CPU_TRAINING:
        assert_input_gradients_match(reference, mine, ids, mask)


def assert_input_gradients_match(reference, mine, ids, mask):
    embeds = reference.embeddings.word_embeddings(ids).detach()
    weights = torch.randn(*ids.shape, reference.config.hidden_size, generator=torch.Generator().manual_seed(1))
    grads = []
    for model in (reference, mine):
        x = embeds.clone().requires_grad_(True)
        (model(inputs_embeds=x, attention_mask=mask).last_hidden_state * weights).sum().backward()
        grads.append(x.grad)
    expected, got = grads
    assert (got - expected).abs().max() / expected.abs().max() <= 1e-4


@pytest.mark.parametrize("backend", ["sdpa", "compact", "fused"])
def test_backends_agree_with_eager_in_training_with_dropout_off(backend):
    """Outputs and every parameter's gradient (position tables, projections, LayerNorms).

    Fully padded query rows attend uniformly in every backend; the reference's masked_fill gives
    their scores no gradient, and so does compact, but SDPA's math path lets one through. No
    training loss reads padded rows, so for sdpa the loss here leaves them out."""
    _, model = twins(None, "eager")
    ids, mask = padded_batch(64)
    weights = torch.randn(*ids.shape, model.config.hidden_size)  # a squared LayerNorm output has ~no gradient
    if backend == "sdpa":
        weights *= mask[..., None]
    assert_trains_like_eager(model.train(), backend, ids, mask, weights)


def test_auto_takes_fused_or_compact_for_cpu_training_and_sdpa_otherwise(monkeypatch):
    from mdeberta.model import fused_kernel
    from mdeberta.model.attention import pick_backend

    leaf = torch.zeros(2, requires_grad=True)
    assert pick_backend("auto", leaf) == ("fused" if fused_kernel.load() is not None else "compact")
    assert pick_backend("auto", leaf.double()) == "compact"  # the kernel is float32 only
    monkeypatch.setattr(fused_kernel, "load", lambda: None)
    assert pick_backend("auto", leaf) == "compact"
    with torch.no_grad():
        assert pick_backend("auto", leaf * 2) == "sdpa"
    assert pick_backend("auto", torch.zeros(2)) == "sdpa"
    assert pick_backend("eager", leaf) == "eager"


def test_dropout_signs_rate_and_reproducibility():
    from mdeberta.model.attention.compact import dropout_signs

    torch.manual_seed(3)
    signs, rate = dropout_signs((64, 1000), 0.1, "cpu")
    assert signs.dtype == torch.float32 and signs.shape == (64, 1000)
    assert rate == round(0.1 * 65536) / 65536
    assert (signs != 0).all()  # every element has a definite sign, also after rounding to bf16
    assert (dropout_signs((64, 1000), 0.1, "cpu", torch.bfloat16)[0] != 0).all()
    dropped = (signs < 0).sum().item()  # binomial(64,000, 0.1): sd 76, so 6 sd either side
    assert abs(dropped - 6400) < 6 * 76
    torch.manual_seed(3)
    assert torch.equal(dropout_signs((64, 1000), 0.1, "cpu")[0], signs)
    assert not (dropout_signs((1000,), 0.0, "cpu")[0] < 0).any()
    assert (dropout_signs((1000,), 1.0, "cpu")[0] < 0).all()


def test_compact_dropout_is_the_reference_math_with_its_mask(monkeypatch):
    """With the mask fixed, compact's output and gradients equal softmax -> masked_fill -> / (1 - p) -> x V."""
    from mdeberta.model.attention import compact

    torch.manual_seed(0)
    shape = (2, 3, 9, 9)
    drop = torch.rand(shape) < 0.3
    monkeypatch.setattr(compact, "dropout_signs",
                        lambda s, p, device, dtype: (torch.where(drop, -1.0, 1.0).to(dtype), 0.3))
    q, k, v = (torch.randn(2, 3, 9, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    pos_key, pos_query = (torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    index = torch.randint(0, 6, (9, 9))
    mask = torch.ones(2, 1, 9, 9, dtype=torch.bool)
    mask[1, :, :, 6:] = False
    mask[1, :, 7:, :] = False
    got = compact.CompactAttention.apply(q, k, v, pos_key, pos_query, index, mask, 2.0, 0.3)
    full = index.expand(2, 3, 9, 9)
    c2p, p2c = q @ pos_key.transpose(-1, -2), pos_query @ k.transpose(-1, -2)  # p2c: positions x keys
    scores = q @ k.transpose(-1, -2) / 2.0 + c2p.gather(-1, full) + p2c.gather(-2, full)
    probs = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), -1)
    expected = probs.masked_fill(drop, 0.0) / 0.7 @ v
    assert torch.allclose(got, expected, atol=1e-12)
    weights = torch.randn_like(expected)
    grads = [torch.autograd.grad((out * weights).sum(), (q, k, v, pos_key, pos_query)) for out in (got, expected)]
    for mine, reference in zip(*grads):
        assert torch.allclose(mine, reference, atol=1e-10)


def test_compact_keeps_less_for_backward_than_sdpa():
    """Per layer, PyTorch's math path also keeps the dropped [B, H, L, L] probabilities (fp32)."""
    model = ours.build(tiny_config(attention_probs_dropout_prob=0.1), attention="sdpa").train()
    ids = torch.randint(4, 100, (2, 128))
    saved = {}
    for backend in ("sdpa", "compact"):
        ours.set_attention(model, backend)
        total = 0

        def count(tensor):
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
            model(ids).last_hidden_state
        saved[backend] = total
    heads, layers = model.config.num_attention_heads, model.config.num_hidden_layers
    assert saved["sdpa"] - saved["compact"] >= layers * 2 * heads * 128 * 128 * 4


def test_training_works_after_inference_mode_at_the_same_length():
    _, model = twins(None, "sdpa")
    ids, mask = padded_batch(16)
    with torch.inference_mode():
        model(ids, attention_mask=mask)  # fills the per-length caches
    model.train()
    model(ids, attention_mask=mask).last_hidden_state.sum().backward()
    assert model.embeddings.word_embeddings.weight.grad is not None


@pytest.mark.parametrize("backend", CPU_TRAINING)
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


def test_the_backend_table_has_the_names_the_cli_offers():
    """The CLI lists ``choices.BACKENDS`` without importing torch; each name must have a module."""
    from mdeberta.model.attention import BACKEND_MODULES

    assert tuple(BACKEND_MODULES) == ours.BACKENDS


def test_unknown_backend_and_unsupported_config_are_refused():
    with pytest.raises(ValueError, match="unknown attention backend 'flash'; choose one of auto, eager, sdpa, compact, fused, flex"):
        ours.build("tiny", attention="flash", vocab_size=50)
    with pytest.raises(ValueError, match="conv_kernel_size"):
        ours.build(tiny_config(conv_kernel_size=3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bf16 kernels)")
@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("length", [128, 600])
def test_backends_agree_in_bf16_on_cuda(backend, length):
    """bf16 keeps 8 bits of mantissa: after two layers the backends agree to a few 1e-2."""
    reference, mine = twins(None, backend)
    ids, mask = (t.cuda() for t in padded_batch(length))
    mine = mine.cuda().to(torch.bfloat16)
    with torch.no_grad():
        expected = reference.cuda()(ids, attention_mask=mask).last_hidden_state
        fast = mine(ids, attention_mask=mask).last_hidden_state.float()
        ours.set_attention(mine, "eager")
        slow = mine(ids, attention_mask=mask).last_hidden_state.float()
    assert (fast - slow).abs().max() <= 5e-2
    assert (fast - expected).abs().max() <= 1e-1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the CUDA kernels' backward)")
@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_cuda_backends_train_like_eager(backend):
    """fp32 on CUDA, dropout off: every parameter's gradient as eager's (padded rows left out of the loss)."""
    _, model = twins(None, "eager")
    model = model.cuda().train()
    ids, mask = (t.cuda() for t in padded_batch(128))
    weights = torch.randn(*ids.shape, model.config.hidden_size, device="cuda") * mask[..., None]
    # TF32 may be on for CUDA matmuls
    assert_trains_like_eager(model, backend, ids, mask, weights, output_tolerance=1e-4, gradient_tolerance=1e-3)


@pytest.mark.parametrize("backend", ["eager", "sdpa", "compact"])
def test_a_layer_traces_without_graph_breaks(backend):
    """``--compile`` compiles each layer; a graph break would split it and leave Python between the pieces."""
    model = ours.build(tiny_config(), attention=backend).train()
    ids = torch.randint(4, 100, (2, 16))
    hidden = model.embeddings(ids, torch.ones_like(ids))
    index, rel_embeddings = model.encoder.relative_positions(16, "cpu")
    explained = torch._dynamo.explain(model.encoder.layer[0])(hidden, None, index, rel_embeddings)
    assert explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.parametrize("backend", ["compact", "fused"])
def test_attention_dropout_of_one_drops_everything_without_dividing_by_zero(backend):
    """nn.Dropout(1.0) gives zeros; so does the attention of these backends, with finite gradients."""
    from mdeberta.model.attention.compact import CompactAttention

    q, k, v = (torch.randn(2, 2, 9, 4, requires_grad=True) for _ in range(3))
    index = torch.zeros(9, 9, dtype=torch.long)
    tables = torch.randn(2, 1, 4, requires_grad=True), torch.randn(2, 1, 4, requires_grad=True)
    model = ours.build(tiny_config(attention_probs_dropout_prob=1.0), attention=backend).train()
    ids, mask = padded_batch(20)
    model(ids, attention_mask=mask).last_hidden_state.sum().backward()
    assert all(p.grad.isfinite().all() for p in model.parameters() if p.grad is not None)
    context = CompactAttention.apply(q, k, v, *tables, index, None, 2.0, 1.0)
    assert torch.equal(context, torch.zeros_like(context))
