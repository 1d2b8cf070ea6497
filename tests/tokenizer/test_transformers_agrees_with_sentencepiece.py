"""transformers loads the tokenizer folder and gives exactly SentencePiece's ids and text."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm
import transformers
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from mdeberta.tokenizer.hf_files import MASK, SPECIAL_IDS
from tests.conftest import SAMPLE
from tests.tokenizer.conftest import VOCAB, sample_documents

SPECIAL_STRINGS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")

HARD_TEXTS = {
    "amharic": "ሁሉም ሰዎች ሲወለዱ ነጻና በክብርና በመብትም እኩልነት ያላቸው ናቸው።",
    "armenian": "Բոլոր մարդիկ ծնվում են ազատ ու հավասար իրենց արժանապատվությամբ ու իրավունքներով։",
    "bengali": "সমস্ত মানুষ স্বাধীনভাবে সমান মর্যাদা এবং অধিকার নিয়ে জন্মগ্রহণ করে।",
    "emoji": "Family 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵, skin tones 👍🏽 and keycaps 1️⃣ 🫠",
    "zwj_zwnj": "می\u200cخواهم क्\u200dष क\u200dष a\u200cb\u200dc \u200c\u200d",
    "controls": "bell\x07 nul\x00 esc\x1b del\x7f c1\x85\x9f end\x01",
    "mixed_scripts": "Das Café 東京 Москва القاهرة मुंबई กรุงเทพ Αθήνα İstanbul Hà Nội 123",
    "spaces_tabs": "  leading\t\ttabs   and    runs of spaces\u3000ideographic\u00a0nbsp  trailing   ",
    "newlines": "line one\nline two\r\nline three\n\n",
    "byte_piece_spelled": "<0x41> and <0xE2><0x82> in text",
    "combining": "e\u0301\u0323 ＇\u0364 ﬁ\u0301 ﺍ\u064e Å \u0301start",
    "only_spaces": "   ",
    "empty": "",
    "long_line": "word " * 6000 + "ሰላም" * 2000,
}


@pytest.fixture(scope="module")
def sp(trained):
    return spm.SentencePieceProcessor(model_file=str(trained / "spm.model"))


@pytest.fixture(scope="module")
def fast(trained):
    return AutoTokenizer.from_pretrained(str(trained))


def xnli_texts() -> dict[str, str]:
    """A few paragraphs of real text in each of the 15 XNLI languages (the bundled sample)."""
    return {path.stem: "\n".join(sample_documents(path.stem)[:3]) for path in sorted(SAMPLE.glob("*.txt"))}


def assert_agrees(tokenizer, sp, text: str) -> None:
    pieces = sp.encode(text)
    assert tokenizer(text)["input_ids"] == [SPECIAL_IDS["[CLS]"], *pieces, SPECIAL_IDS["[SEP]"]]
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == sp.decode(pieces)


def test_special_ids_and_mask_after_the_pieces(trained, sp, fast):
    assert sp.get_piece_size() == VOCAB
    assert [sp.id_to_piece(i) for i in range(4)] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    assert (fast.pad_token_id, fast.cls_token_id, fast.sep_token_id, fast.unk_token_id) == (0, 1, 2, 3)
    assert fast.mask_token_id == VOCAB == fast.convert_tokens_to_ids(MASK)
    assert len(fast) == VOCAB + 1
    model = json.loads((trained / "tokenizer.json").read_text())["model"]
    assert model["type"] == "Unigram" and model["byte_fallback"] is True
    assert sum(sp.is_byte(i) for i in range(VOCAB)) == 256


@pytest.mark.parametrize("lang", sorted(p.stem for p in SAMPLE.glob("*.txt")))
def test_xnli_languages(fast, sp, lang):
    assert_agrees(fast, sp, xnli_texts()[lang])


@pytest.mark.parametrize("name", sorted(HARD_TEXTS))
def test_hard_text(fast, sp, name):
    assert_agrees(fast, sp, HARD_TEXTS[name])


def test_unseen_scripts_are_spelled_in_bytes_not_unknown(fast, sp):
    ids = fast(HARD_TEXTS["amharic"], add_special_tokens=False)["input_ids"]
    assert fast.unk_token_id not in ids and any(sp.is_byte(i) for i in ids)
    assert fast.decode(ids) == HARD_TEXTS["amharic"]


def test_pairs_and_batches(fast, sp):
    first, second = xnli_texts()["en"], xnli_texts()["zh"]
    assert fast(first, second)["input_ids"] == [1, *sp.encode(first), 2, *sp.encode(second), 2]
    texts = list(xnli_texts().values()) + list(HARD_TEXTS.values())
    assert fast(texts)["input_ids"] == [[1, *ids, 2] for ids in sp.encode(texts)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60))
def test_arbitrary_unicode(fast, sp, text):
    assume(not any(token in text for token in SPECIAL_STRINGS))
    assert_agrees(fast, sp, text)


def test_special_token_strings_in_text(fast, sp):
    """transformers turns "[MASK]" in text into the mask token (what fill-mask needs); with
    split_special_tokens=True it is plain text, as in SentencePiece."""
    text = "Paris is the [MASK] of France."
    assert fast.mask_token_id in fast(text)["input_ids"]
    assert fast(text, split_special_tokens=True)["input_ids"] == [1, *sp.encode(text), 2]


def test_slow_class(trained, sp):
    """transformers 5 has no separate slow DeBERTa-v2 tokenizer: use_fast=False returns the same
    tokenizers-backed class, checked here all the same. Its generic SentencePiece-backed class
    wraps spm.model directly and must agree too."""
    slow = AutoTokenizer.from_pretrained(str(trained), use_fast=False)
    texts = list(xnli_texts().values()) + [t for t in HARD_TEXTS.values() if t.strip()]
    if getattr(slow, "is_fast", True):
        assert int(transformers.__version__.split(".")[0]) >= 5
    for text in texts:
        assert_agrees(slow, sp, text)
    backend = getattr(transformers, "SentencePieceBackend", None) or getattr(
        __import__("transformers.tokenization_utils_sentencepiece", fromlist=["x"]), "SentencePieceBackend", None)
    if backend is None:
        pytest.skip("this transformers has no SentencePiece-backed tokenizer class")
    wrapped = backend(vocab_file=str(trained / "spm.model"), unk_token="[UNK]")
    for text in texts:
        assert wrapped.convert_tokens_to_ids(wrapped.tokenize(text)) == sp.encode(text)


def test_save_and_load_round_trip(fast, sp, tmp_path):
    fast.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again.mask_token_id == VOCAB and again.cls_token_id == 1
    for text in [*xnli_texts().values(), *HARD_TEXTS.values()]:
        assert_agrees(again, sp, text)
