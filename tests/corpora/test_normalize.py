import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from mdeberta.corpora.normalize import normalize_paragraphs


def test_nfc_and_whitespace():
    paragraphs, removed = normalize_paragraphs("Cafe\u0301  au\tlait\u00a0noir \n\n  second   line ")
    assert paragraphs == ["Café au lait noir", "second line"]
    assert removed == 0


def test_controls_and_zero_width_removed_but_joiners_kept():
    text = "zero\u200bwidth\x00 bom\ufeff soft\u00adhyphen \u200e mi\u200cxed \U0001F469\u200d\U0001F4BB"
    paragraphs, removed = normalize_paragraphs(text)
    assert paragraphs == ["zerowidth bom softhyphen mi\u200cxed \U0001F469\u200d\U0001F4BB"]
    assert removed == 5
    stripped, _ = normalize_paragraphs(text, strip_joiners=True)
    assert "\u200c" not in stripped[0] and "\u200d" not in stripped[0]


def test_line_separators_become_paragraph_breaks():
    paragraphs, _ = normalize_paragraphs("one\r\ntwo\rthree\u2028four\u2029five\x85six\x0bseven")
    assert paragraphs == ["one", "two", "three", "four", "five", "six", "seven"]


def test_zero_width_between_letter_and_mark_composes():
    assert normalize_paragraphs("e\u200b\u0301")[0] == ["\u00e9"]


def test_lone_surrogates_removed():
    paragraphs, _ = normalize_paragraphs("broken \ud800 escape")
    assert paragraphs == ["broken escape"]
    paragraphs[0].encode("utf-8")


@given(st.text())
def test_never_raises_and_is_idempotent(text):
    paragraphs, _ = normalize_paragraphs(text)
    again, removed = normalize_paragraphs("\n".join(paragraphs))
    assert again == paragraphs and removed == 0
    for paragraph in paragraphs:
        assert paragraph and paragraph == paragraph.strip() and "  " not in paragraph
        assert unicodedata.is_normalized("NFC", paragraph)
        assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in paragraph)
        paragraph.encode("utf-8")
