import pytest

from mdeberta.corpora.charclass import word_count
from mdeberta.corpora.filters import ParagraphFilter
from mdeberta.corpora.settings import CorpusSettings


@pytest.fixture
def rules():
    return ParagraphFilter(CorpusSettings())


@pytest.mark.parametrize("paragraph, reason", [
    ("Home | Contact", "line_too_short"),
    ("Accueil | Recettes | Qui sommes-nous | Contact", "line_navigation"),
    ("Startseite » Rezepte » Kuchen » Apfelkuchen mit Streuseln", "line_navigation"),
    ("Prices rose 3% this year | the bakery explains why it had no choice but to follow", None),
    ("Article 3", "line_too_short"),
    ("12.05.2023 | 14:30 | #4471 | +++ 0800-555-0199", "line_few_letters"),
    ("★★★★★ ===== >>>>>", "line_few_letters"),
    ("We use cookies to improve your experience. By continuing you accept our cookie policy.", "line_boilerplate"),
    ("Nous utilisons des cookies pour améliorer votre expérience de navigation.", "line_boilerplate"),
    ("Please enable JavaScript in your browser to view this page.", "line_boilerplate"),
    ("x" * 10_001, "line_too_long"),
    ("These chocolate chip cookies are crispy outside and soft inside.", None),
    ("The council will discuss the new bus routes next Tuesday.", None),
])
def test_paragraph_rules(rules, paragraph, reason):
    assert rules.paragraph_reason(paragraph) == reason


@pytest.mark.parametrize("paragraph", [
    "人人有权享有生命、自由和人身安全。",  # Chinese: no spaces at all
    "ทุกคนมีสิทธิในชีวิต เสรีภาพ และความมั่นคงแห่งบุคคล",  # Thai: spaces between phrases only
    "すべての人は、生命、自由及び身体の安全に対する権利を有する。",  # Japanese
    "सभी को जीवन, स्वाधीनता और वैयक्तिक सुरक्षा का अधिकार है।",  # Devanagari vowel signs are marks
    "Каждый человек имеет право на жизнь, на свободу и на личную неприкосновенность.",
])
def test_real_sentences_of_every_script_pass(rules, paragraph):
    assert rules.paragraph_reason(paragraph) is None


def test_unspaced_scripts_count_half_a_word_per_character():
    assert word_count("人人有权享有生命") == 4
    assert word_count("第三条") == 1.5
    assert word_count("Home | Contact 2023") == 2
    assert word_count("日本語の文章です。This is English.") == 8 / 2 + 3


def test_document_rules(rules):
    assert rules.document_reason([]) == "doc_empty"
    assert rules.document_reason(["Lorem ipsum dolor sit amet, consectetur adipiscing elit."]) == "doc_lorem_ipsum"
    assert rules.document_reason(["Short one here."]) == "doc_too_short"
    assert rules.document_reason(["人人有权享有生命、自由和人身安全。"]) is None


def test_settings_change_the_rules():
    loose = ParagraphFilter(CorpusSettings(min_line_words=1, min_letter_ratio=0.0, boilerplate=[]))
    assert loose.paragraph_reason("Home | Contact") is None
    assert loose.paragraph_reason("Please enable JavaScript now.") is None


def test_bad_boilerplate_pattern_is_a_clear_error():
    with pytest.raises(ValueError, match="boilerplate: invalid regular expression"):
        ParagraphFilter(CorpusSettings(boilerplate=["(unclosed"]))
