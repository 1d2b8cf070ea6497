import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "corpora" / "sample"
UDHR = Path(os.environ.get("MDEBERTA_UDHR", ROOT.parent / "shared" / "data" / "udhr"))

# Real sentences that lid.176 identifies with confidence, for small hand-made corpora.
SENTENCES = {
    "en": ["The weather in the mountains changed quickly, so we turned back before noon.",
           "Our small bakery opens at seven and sells fresh bread until the evening.",
           "The council will discuss the new bus routes at its meeting next Tuesday."],
    "fr": ["Le marché du samedi attire beaucoup de familles qui viennent acheter des légumes frais.",
           "Nous avons visité le musée de la ville et découvert une exposition sur la photographie.",
           "La bibliothèque municipale propose des ateliers de lecture pour les enfants le mercredi."],
    "de": ["Die Stadtbibliothek bietet jeden Mittwoch Lesestunden für Kinder und Jugendliche an.",
           "Nach dem langen Winter freuen sich alle auf die ersten warmen Tage im Garten.",
           "Der Verein sucht neue Mitglieder, die gerne am Wochenende wandern gehen."],
}


@pytest.fixture(autouse=True, scope="session")
def python_ctrl_c():
    """Python's own Ctrl-C handler, which the signal tests expect: a shell starts a background job
    (and Python then keeps) with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def write_cc100(path: Path, documents: list[list[str]]) -> Path:
    """CC100 format: a paragraph per line, a blank line after each document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\n".join(doc) + "\n\n" for doc in documents), encoding="utf-8")
    return path


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """Three languages, two files each, with a document and a paragraph repeated across files."""
    folder = tmp_path / "raw"
    for lang, sentences in SENTENCES.items():
        first = [sentences, sentences[1:], [sentences[2], sentences[0] + " Again, today."]]
        second = [sentences, [sentences[0].replace("The", "A").replace("Le", "Un"), sentences[1]]]
        write_cc100(folder / f"{lang}-1.txt", first)
        write_cc100(folder / f"{lang}-2.txt", second)
    return folder
