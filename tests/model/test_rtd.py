"""Replaced token detection: corruption, losses and the three embedding-sharing modes."""

import pytest
import torch
import transformers

import mdeberta.model.rtd as rtd_module
from mdeberta.model import RTDModel
from mdeberta.model.rtd import GradientDisentangledEmbedding, choose_masked_positions

from .conftest import VOCAB, tiny_config

MASK = VOCAB - 1
SPECIAL = (0, 1, 2)


def rtd_model(sharing="gdes", **kwargs):
    torch.manual_seed(0)
    return RTDModel(tiny_config(), tiny_config(num_hidden_layers=1), mask_token_id=MASK, sharing=sharing,
                    special_token_ids=SPECIAL, **kwargs)


def batch(rows=4, length=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, MASK, (rows, length), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2  # [CLS] ... [SEP]
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


def word_table(rtd, side):
    return getattr(rtd, side).deberta.embeddings.word_embeddings


def embedding_grads(rtd, loss):
    rtd.zero_grad()
    loss.backward(retain_graph=True)
    generator_table = word_table(rtd, "generator").weight
    discriminator_table = word_table(rtd, "discriminator")
    own = discriminator_table.delta if isinstance(discriminator_table, GradientDisentangledEmbedding) \
        else discriminator_table.weight
    return (None if generator_table.grad is None else generator_table.grad.clone(),
            None if own.grad is None else own.grad.clone())


def test_gdes_rtd_loss_never_reaches_the_generator_embeddings():
    rtd = rtd_model("gdes")
    ids, mask = batch()
    out = rtd(ids, mask, generator=torch.Generator().manual_seed(1))
    mlm_grad, _ = embedding_grads(rtd, out.mlm_loss)
    total_grad, delta_grad = embedding_grads(rtd, out.loss)
    assert torch.equal(total_grad, mlm_grad)  # lambda * L_RTD adds exactly nothing to E_G
    assert delta_grad is not None and delta_grad.abs().sum() > 0
    rtd_only, _ = embedding_grads(rtd, out.rtd_loss)
    assert rtd_only is None or rtd_only.abs().sum() == 0


def test_es_generator_embeddings_learn_from_both_losses():
    rtd = rtd_model("es")
    assert word_table(rtd, "discriminator") is word_table(rtd, "generator")
    out = rtd(*batch(), generator=torch.Generator().manual_seed(1))
    mlm_grad, _ = embedding_grads(rtd, out.mlm_loss)
    total_grad, _ = embedding_grads(rtd, out.loss)
    assert not torch.allclose(total_grad, mlm_grad)


def test_nes_keeps_separate_tables():
    rtd = rtd_model("nes")
    generator_table, discriminator_table = word_table(rtd, "generator"), word_table(rtd, "discriminator")
    assert generator_table.weight is not discriminator_table.weight
    out = rtd(*batch(), generator=torch.Generator().manual_seed(1))
    rtd_only_generator, rtd_only_discriminator = embedding_grads(rtd, out.rtd_loss)
    assert rtd_only_generator is None or rtd_only_generator.abs().sum() == 0
    assert rtd_only_discriminator.abs().sum() > 0


def test_gdes_starts_equal_and_exports_the_merged_table(tmp_path):
    rtd = rtd_model("gdes")
    table = word_table(rtd, "discriminator")
    assert torch.equal(table.weight, word_table(rtd, "generator").weight)  # E_D == E_G at start
    with torch.no_grad():
        table.delta.normal_()
    merged = rtd.discriminator_embeddings()["deberta.embeddings.word_embeddings.weight"]
    assert torch.equal(merged, word_table(rtd, "generator").weight + table.delta)
    rtd.export_discriminator(tmp_path / "discriminator")
    rtd.export_generator(tmp_path / "generator")
    exported = transformers.AutoModel.from_pretrained(tmp_path / "discriminator")
    assert torch.equal(exported.embeddings.word_embeddings.weight, merged)
    generator = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "generator")
    assert torch.equal(generator.deberta.embeddings.word_embeddings.weight, word_table(rtd, "generator").weight)


def test_exported_discriminator_matches_ours_in_transformers(tmp_path):
    rtd = rtd_model("gdes")
    with torch.no_grad():
        word_table(rtd, "discriminator").delta.normal_(std=0.02)
    rtd.export_discriminator(tmp_path)
    exported = transformers.AutoModel.from_pretrained(tmp_path).eval()
    ids, mask = batch()
    rtd.eval()
    with torch.no_grad():
        expected = rtd.discriminator.deberta(ids, mask).last_hidden_state
        got = exported(ids, attention_mask=mask).last_hidden_state
    assert (got - expected).abs().max() <= 1e-5


def test_masking_rate_and_special_tokens():
    ids, mask = batch(rows=8, length=200)
    maskable = mask.bool() & ~torch.isin(ids, torch.tensor(SPECIAL))
    chosen = choose_masked_positions(maskable, 0.15, torch.Generator().manual_seed(0))
    assert not (chosen & ~maskable).any()  # specials and padding never masked
    expected = torch.round(maskable.sum(-1) * 0.15)
    assert torch.equal(chosen.sum(-1).float(), expected)


def test_correct_guess_is_labelled_original(monkeypatch):
    """With replacements forced to the original token, nothing counts as replaced."""

    rtd = rtd_model()
    ids, mask = batch()
    seen = {}

    def echo_originals(logits, temperature, generator, excluded):
        return seen["originals"]

    original_masked_logits = rtd.generator.masked_logits

    def record(input_ids, attention_mask, masked_positions):
        seen["originals"] = ids[masked_positions]
        return original_masked_logits(input_ids, attention_mask, masked_positions)

    monkeypatch.setattr(rtd_module, "sample_replacements", echo_originals)
    monkeypatch.setattr(rtd.generator, "masked_logits", record)
    out = rtd(ids, mask)
    assert out.masked > 0 and out.replaced == 0


def test_replaced_labels_follow_the_samples():
    rtd = rtd_model(temperature=1.0)
    out = rtd(*batch(), generator=torch.Generator().manual_seed(3))
    # An untrained generator almost never guesses right over 119 tokens.
    assert 0 < out.replaced <= out.masked
    assert out.masked >= out.replaced >= out.masked - 3


def test_samples_follow_the_generator_softmax():
    logits = torch.tensor([[2.0, 0.0, -1.0, float("-inf"), 1.0]]).repeat(40_000, 1)
    draws = rtd_module.sample_replacements(logits, temperature=2.0, generator=torch.Generator().manual_seed(0))
    observed = torch.bincount(draws, minlength=5).double()
    expected = torch.softmax(logits[0] / 2.0, -1).double() * len(draws)
    assert observed[3] == 0  # zero probability, never drawn
    seen = expected > 0
    chi_square = float(((observed[seen] - expected[seen]) ** 2 / expected[seen]).sum())
    assert chi_square < 18.5  # 3 degrees of freedom, p = 0.0003


def test_padded_vocabulary_is_never_sampled(monkeypatch):
    rtd = rtd_model(real_vocab_size=40)
    ids, mask = batch()
    seen = {}
    original = rtd_module.sample_replacements

    def record(logits, temperature, generator, excluded):
        seen["columns"] = logits.shape[-1]
        return original(logits, temperature, generator, excluded)

    monkeypatch.setattr(rtd_module, "sample_replacements", record)
    rtd(ids % 40, mask)
    assert seen["columns"] == 40


def test_the_generator_never_samples_special_tokens_but_unk(monkeypatch):
    """ELECTRA's generator does not emit [PAD] [CLS] [SEP] [MASK]; [UNK] stands for real text."""
    unk = 3
    torch.manual_seed(0)
    rtd = RTDModel(tiny_config(), tiny_config(num_hidden_layers=1), mask_token_id=MASK, special_token_ids=(*SPECIAL, unk),
                   unk_token_id=unk)
    favoured = torch.tensor([*SPECIAL, unk, MASK])
    original = rtd.generator.masked_logits

    def specials_first(input_ids, attention_mask, masked_positions):
        logits = original(input_ids, attention_mask, masked_positions)
        return logits.index_fill(-1, favoured, 50.0)  # every other id is e^-50 less likely

    monkeypatch.setattr(rtd.generator, "masked_logits", specials_first)
    seen = {}
    rtd.discriminator.register_forward_pre_hook(lambda module, args: seen.update(corrupted=args[0]))
    ids, mask = batch()
    out = rtd(ids, mask, generator=torch.Generator().manual_seed(0))
    replaced = seen["corrupted"] != ids
    assert int(replaced.sum()) == int(out.masked) > 0
    assert (seen["corrupted"][replaced] == unk).all()


def test_excluded_ids_are_never_drawn():
    logits = torch.zeros(10_000, 6)
    logits[:, 0] = logits[:, 5] = 20.0
    draws = rtd_module.sample_replacements(logits, generator=torch.Generator().manual_seed(0),
                                           excluded=torch.tensor([0, 5]))
    assert set(draws.tolist()) == {1, 2, 3, 4}


def test_lm_head_runs_only_at_masked_positions():
    rtd = rtd_model()
    rows = []
    head = rtd.generator.lm_head
    handle = head.register_forward_hook(lambda module, inputs, output: rows.append(output.shape[0]))
    ids, mask = batch()
    out = rtd(ids, mask)
    handle.remove()
    assert rows == [int(out.masked)]


@pytest.mark.parametrize("emd", [True, False])
def test_generator_decodes_masked_positions_like_a_full_pass(emd):
    """The masked-only Enhanced Mask Decoder equals decoding every position and then selecting."""
    rtd = rtd_model(enhanced_mask_decoder=emd).eval()
    generator = rtd.generator
    ids, mask = batch()
    masked = choose_masked_positions(mask.bool() & (ids > 2), 0.15, torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = generator.masked_logits(ids, mask, masked)
        if emd:
            encoder, embeddings = generator.deberta.encoder, generator.deberta.embeddings
            hidden = encoder(embeddings(ids, mask), mask, num_layers=len(encoder.layer) - 1).last_hidden_state
            from mdeberta.model.modeling import pairwise_mask

            length = ids.shape[1]
            queries = hidden + embeddings.position_embeddings.weight[:length]
            rel_index, rel_embeddings = encoder.relative_positions(length, "cpu")
            for _ in range(2):
                queries = encoder.layer[-1](hidden, pairwise_mask(mask), rel_index, rel_embeddings,
                                            query_states=queries)
            expected = generator.logits(queries[masked])
        else:
            expected = generator(ids, attention_mask=mask).logits[masked]
    assert (got - expected).abs().max() <= 1e-5


def test_sharing_needs_equal_widths():
    with pytest.raises(ValueError, match="same width"):
        RTDModel(tiny_config(), tiny_config(hidden_size=16), mask_token_id=MASK, sharing="gdes")
    with pytest.raises(ValueError, match="unknown embedding sharing 'half'"):
        RTDModel(tiny_config(), tiny_config(), mask_token_id=MASK, sharing="half")
