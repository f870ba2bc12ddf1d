import gzip
import json

import pytest

from xlgen.data import DataError, Document, data_hash, find_split, read_documents, write_jsonl


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_plain_and_gzip_jsonl(tmp_path):
    docs = [Document("a", "hello world", ("x", "y z")), Document("b", "second", ("x",))]
    write_jsonl(docs, tmp_path / "d.jsonl")
    write_jsonl(docs, tmp_path / "d.jsonl.gz")
    assert read_documents(tmp_path / "d.jsonl") == docs
    assert read_documents(tmp_path / "d.jsonl.gz") == docs
    with gzip.open(tmp_path / "d.jsonl.gz", "rt") as f:
        assert json.loads(f.readline())["labels"] == ["x", "y z"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "1", "labels": ["a"]}', "missing field 'text'"),
        ('{"id": "1", "text": "t"}', "missing field 'labels'"),
        ('{"id": "1", "text": "   ", "labels": ["a"]}', "empty text"),
        ('{"id": "1", "text": "t", "labels": "a"}', "must be a list of strings"),
        ('{"id": "1", "text": "t", "labels": []}', "no labels"),
        ('{"id": "1", "text": 5, "labels": ["a"]}', "must be a string"),
        ('{"id": "1", "text": "t", "labels": ["a"]', "not valid JSON"),
        ('["a"]', "expected a JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", ['{"id": "0", "text": "fine", "labels": ["a"]}', line])
    with pytest.raises(DataError) as e:
        read_documents(path)
    assert f"{path}:2" in str(e.value)
    assert message in str(e.value)


def test_empty_missing_and_duplicate(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no documents"):
        read_documents(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="no such file"):
        read_documents(tmp_path / "missing.jsonl")
    dup = _write(tmp_path / "dup.jsonl", ['{"id": "1", "text": "a", "labels": ["x"]}'] * 2)
    with pytest.raises(DataError, match="duplicate document id"):
        read_documents(dup)


def test_unlabeled_pool_allowed_when_asked(tmp_path):
    path = _write(tmp_path / "pool.jsonl", ['{"id": "p1", "text": "no labels here"}'])
    assert read_documents(path, require_labels=False) == [Document("p1", "no labels here", ())]


def test_xmc_raw_layout(tmp_path):
    (tmp_path / "train_raw_texts.txt").write_text("first doc\nsecond doc\n")
    (tmp_path / "train_labels.txt").write_text("a b\nc\n")
    docs = read_documents(find_split(tmp_path, "train"))
    assert [d.labels for d in docs] == [("a", "b"), ("c",)]
    (tmp_path / "train_labels.txt").write_text("a b\n")
    with pytest.raises(DataError, match="1 label lines but"):
        read_documents(tmp_path / "train_raw_texts.txt")
    (tmp_path / "train_labels.txt").write_text("a b\n\n")
    with pytest.raises(DataError, match="train_labels.txt:2: no labels"):
        read_documents(tmp_path / "train_raw_texts.txt")


def test_find_split_says_what_it_looked_for(tmp_path):
    with pytest.raises(DataError, match="no dev split"):
        find_split(tmp_path, "dev")


def test_data_hash_changes_with_content():
    a = [Document("1", "t", ("x",))]
    b = [Document("1", "t", ("y",))]
    assert data_hash(a) == data_hash(list(a))
    assert data_hash(a) != data_hash(b)
