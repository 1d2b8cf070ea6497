"""Readers of the three sources: same tables, labels mapped by name, clear errors."""

from __future__ import annotations

import shutil

import pytest

from mdeberta.corpora.languages import XNLI_LANGUAGES
from mdeberta.xnli.data import XnliDataError, label_ids, open_source, read_split
from tests.xnli.conftest import SIZES, pairs, write_saved_datasets, xnli_config

EXPECTED_IDS = {"entailment": 0, "neutral": 1, "contradiction": 2}


@pytest.mark.parametrize("source", ["releases", "saved", "hub"])
def test_every_language_and_split(source, request):
    reader = open_source(str(request.getfixturevalue(source)))
    for lang in XNLI_LANGUAGES:
        for split, size in SIZES.items():
            table = read_split(reader, split, lang)
            expected = pairs(lang, split)
            assert list(table.columns) == ["premise", "hypothesis", "label"]
            assert len(table) == size
            assert table.premise.tolist() == expected.premise.tolist()  # the lone '"' survives
            assert table.hypothesis.tolist() == expected.hypothesis.tolist()
            assert table.label.tolist() == [EXPECTED_IDS[name] for name in expected.label]


def test_hub_failures_are_one_line(hub, monkeypatch):
    with pytest.raises(XnliDataError, match=r"could not load facebook/xnli config 'xx' split 'test' with datasets: "
                                            r"ValueError: BuilderConfig 'xx' not found"):
        read_split(open_source(hub), "test", "xx")
    with pytest.raises(XnliDataError, match=r"could not load someone/xnli config 'sw' split 'validation' with "
                                            r"datasets: FileNotFoundError: Dataset 'someone/xnli' doesn't exist"):
        read_split(open_source("someone/xnli"), "dev", "sw")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'facebook/xnli' on the Hub (LocalEntryNotFoundError)\ndetails")

    monkeypatch.setattr("datasets.load_dataset", offline)
    with pytest.raises(XnliDataError, match=r"ConnectionError: Couldn't reach 'facebook/xnli' on the Hub "
                                            r"\(LocalEntryNotFoundError\)$"):
        read_split(open_source(hub), "train", "en")


def test_limit_takes_the_first_pairs(releases):
    table = read_split(open_source(str(releases)), "test", "th", limit=4)
    assert table.premise.tolist() == pairs("th", "test").premise.tolist()[:4]


def test_labels_mapped_by_name_not_index(tmp_path):
    """XTREME orders the classes contradiction, entailment, neutral; the ids must not follow it."""
    root = write_saved_datasets(tmp_path, langs=["de"], names=("contradiction", "entailment", "neutral"))
    table = read_split(open_source(str(root)), "dev", "de")
    assert table.label.tolist() == [EXPECTED_IDS[name] for name in pairs("de", "dev").label]


def test_label_names():
    assert label_ids(["entailment", "Neutral", "contradictory", "contradiction "], "x") == [0, 1, 2, 2]
    with pytest.raises(XnliDataError, match=r"f.tsv, row 2: label '-'"):
        label_ids(["neutral", "-"], "f.tsv")


def test_unlabelled_pair_is_refused(tmp_path):
    """-1 is datasets' "no label": indexing the class names with it would make it contradiction."""
    import datasets

    config = xnli_config("de")
    table = config["validation"].to_pandas()
    table.loc[4, "label"] = -1
    config["validation"] = datasets.Dataset.from_pandas(table, features=config["validation"].features,
                                                        preserve_index=False)
    config.save_to_disk(str(tmp_path / "de"))
    with pytest.raises(XnliDataError, match=r"de \[validation\], row 5: label id -1 is none of the dataset's "
                                            r"classes \(0 entailment, 1 neutral, 2 contradiction\)"):
        read_split(open_source(str(tmp_path)), "dev", "de")


def test_missing_training_file_is_named(releases, tmp_path):
    copy = shutil.copytree(releases, tmp_path / "copy")
    (copy / "XNLI-MT-1.0" / "multinli" / "multinli.train.ur.tsv").unlink()
    with pytest.raises(XnliDataError, match=r"expected .*XNLI-MT-1.0/multinli/multinli.train.ur.tsv"):
        read_split(open_source(str(copy)), "train", "ur")


def test_missing_language_in_evaluation_file(tmp_path):
    from tests.xnli.conftest import write_releases

    root = write_releases(tmp_path, langs=["en", "fr"])
    with pytest.raises(XnliDataError, match=r"xnli.test.tsv has no rows for language 'sw'"):
        read_split(open_source(str(root)), "test", "sw")


def test_missing_saved_language_and_bad_data(saved, tmp_path):
    partial = shutil.copytree(saved / "en", tmp_path / "partial" / "en")
    with pytest.raises(XnliDataError, match=r"expected .*partial/hi, a folder saved with datasets"):
        read_split(open_source(str(partial.parent)), "dev", "hi")
    with pytest.raises(XnliDataError, match="not a folder holding XNLI-1.0"):
        open_source(str(tmp_path / "nowhere"))


def test_bad_label_in_training_file(releases, tmp_path):
    copy = shutil.copytree(releases, tmp_path / "copy")
    path = copy / "XNLI-MT-1.0" / "multinli" / "multinli.train.fr.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tmaybe"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(XnliDataError, match=r"multinli.train.fr.tsv, row 3: label 'maybe'"):
        read_split(open_source(str(copy)), "train", "fr")


def test_malformed_line_is_named(releases, tmp_path):
    """A stray tab (one field too many) or a cut line (too few): the file and line, not a pandas
    traceback nor text shifted into the next column."""
    copy = shutil.copytree(releases, tmp_path / "copy")
    train = copy / "XNLI-MT-1.0" / "multinli" / "multinli.train.fr.tsv"
    lines = train.read_text(encoding="utf-8").splitlines()
    lines[4] = lines[4].replace(" ", "\t", 1)
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(XnliDataError, match=r"multinli.train.fr.tsv, line 5: 4 tab-separated fields where the "
                                            r"header has 3; fix or remove that line"):
        read_split(open_source(str(copy)), "train", "fr")
    test = copy / "XNLI-1.0" / "xnli.test.tsv"
    lines = test.read_text(encoding="utf-8").splitlines()
    lines[7] = lines[7].rsplit("\t", 2)[0]
    test.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(XnliDataError, match=r"xnli.test.tsv, line 8: 17 tab-separated fields where the header has 19"):
        read_split(open_source(str(copy)), "test", "en")


def test_windows_line_ends(releases, tmp_path):
    copy = shutil.copytree(releases, tmp_path / "copy")
    dev = copy / "XNLI-1.0" / "xnli.dev.tsv"
    dev.write_bytes(dev.read_bytes().replace(b"\n", b"\r\n"))
    table = read_split(open_source(str(copy)), "dev", "el")
    assert table.hypothesis.tolist() == pairs("el", "dev").hypothesis.tolist()
    assert table.label.tolist() == [EXPECTED_IDS[name] for name in pairs("el", "dev").label]


def test_bundled_demo_sample_reads_in_every_language():
    from tests.conftest import ROOT

    reader = open_source(str(ROOT / "eval" / "sample"))
    for lang in XNLI_LANGUAGES:
        for split, size in (("train", 9), ("dev", 3), ("test", 6)):
            table = read_split(reader, split, lang)
            assert len(table) == size and sorted(table.label.value_counts().tolist()) == [size // 3] * 3
            assert table.premise.str.len().min() > 5 and table.hypothesis.str.len().min() > 3
