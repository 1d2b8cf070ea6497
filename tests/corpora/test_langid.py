from mdeberta.corpora.langid import LanguageIdentifier


def test_batch_call_gives_the_single_call_answers():
    lid = LanguageIdentifier()
    lines = ["Bonjour tout le monde, comment allez-vous ?", "", "人人有权享有生命", "Der schnelle braune Fuchs", "x" * 5000]
    assert lid.predict_many(lines) == [lid.predict(line) for line in lines]
    assert lid.predict_many([]) == []
