import gzip
import json
import lzma

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mdeberta.corpora.readers import InputError, discover_inputs, read_documents


def texts(path, **kwargs):
    [shard] = discover_inputs([str(path)])
    return list(read_documents(shard, **kwargs))


def test_cc100_text_plain_gz_xz(tmp_path):
    content = "first paragraph\nsecond paragraph\n\nnext document\n\n\n\nlast document"
    (tmp_path / "a.txt").write_text(content, encoding="utf-8")
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write(content)
    with lzma.open(tmp_path / "c.txt.xz", "wt", encoding="utf-8") as f:
        f.write(content)
    expected = ["first paragraph\nsecond paragraph", "next document", "last document"]
    for name in ("a.txt", "b.txt.gz", "c.txt.xz"):
        assert [d.text for d in texts(tmp_path / name)] == expected


def test_folders_are_expanded_in_sorted_order(tmp_path):
    for name in ("b.txt", "a.jsonl", "sub/c.txt.xz", "notes.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    shards = discover_inputs([str(tmp_path)])
    assert [(s.path.split("/")[-1], s.kind) for s in shards] == [("a.jsonl", "jsonl"), ("b.txt", "text"), ("c.txt.xz", "text")]
    assert [s.index for s in shards] == [0, 1, 2]


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(("valid text here " * 20).encode() + b"\xff\xfe broken \xc3 bytes\n\nok\n")
    docs = texts(path)
    assert docs[0].invalid_bytes == 3 and "\ufffd" in docs[0].text
    assert docs[1].invalid_bytes == 0


def test_huge_line_is_skipped_while_reading(tmp_path):
    path = tmp_path / "huge.txt"
    path.write_text("before\n" + "x" * 50_000 + "\nafter\n\nnext\n", encoding="utf-8")
    docs = texts(path, max_line_chars=1000)
    assert docs[0].text == "before\nafter" and docs[0].overlong_chars == (50_000,)
    assert docs[1].text == "next"


def test_document_of_one_huge_line(tmp_path):
    path = tmp_path / "one-line.txt"
    path.write_text("y" * 200_000, encoding="utf-8")
    [doc] = texts(path, max_line_chars=1000)
    assert doc.text == "" and doc.overlong_chars == (200_000,)


def test_jsonl_with_custom_field_and_bad_records(tmp_path):
    path = tmp_path / "docs.jsonl"
    records = [{"content": "one"}, {"content": None}, {"content": "two"}]
    path.write_text("\n".join(map(json.dumps, records)) + "\n{broken json\n", encoding="utf-8")
    docs = texts(path, text_field="content")
    assert [(d.text, d.drop_reason) for d in docs] == [
        ("one", None), ("", "missing_text_field"), ("two", None), ("", "unreadable_record")]


def test_jsonl_without_the_field_names_the_setting(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"body": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"docs.jsonl:1: no string field 'text' \(record has: body\); set --text-field"):
        texts(path)


def test_parquet(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["a", None, "b"], "url": ["u1", "u2", "u3"]}), path)
    assert [(d.text, d.drop_reason) for d in texts(path)] == [("a", None), ("", "missing_text_field"), ("b", None)]
    with pytest.raises(InputError, match="no column 'body' .*columns: text, url"):
        texts(path, text_field="body")


def test_saved_hf_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["hello", "world"]}).save_to_disk(str(tmp_path / "ds"))
    shards = discover_inputs([str(tmp_path / "ds")])
    assert [s.kind for s in shards] == ["hf"]
    assert [d.text for d in read_documents(shards[0])] == ["hello", "world"]
    split = discover_inputs([], hf_dataset=str(tmp_path / "ds"))
    assert split == shards


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "input not found"),
    (lambda p: p.write_bytes(b""), None),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10), "binary data"),
    (lambda p: p.write_bytes(bytes(range(128, 256)) * 100), "not UTF-8 text"),
])
def test_bad_text_inputs(tmp_path, make, message):
    path = tmp_path / "input.txt"
    make(path)
    if message is None:  # an empty file reads as no documents; the stage reports it
        assert texts(path) == []
        return
    with pytest.raises(InputError, match=message) as err:
        texts(path)
    assert "input.txt" in str(err.value)


@pytest.mark.parametrize("suffix, opener", [(".txt.xz", lzma.open), (".txt.gz", gzip.open)])
def test_truncated_archives(tmp_path, suffix, opener):
    full = tmp_path / f"full{suffix}"
    with opener(full, "wt", encoding="utf-8") as f:
        f.write("a paragraph of text\n\n" * 20_000)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError, match=rf"cut{suffix}: damaged or truncated {suffix[-2:]} file"):
        texts(cut)


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x00")
    with pytest.raises(InputError, match="unsupported input type"):
        discover_inputs([str(path)])
