import gzip
import json

import pytest

from conftest import micro_config, shared_file
from fidan.data.parquet import read_documents as read_parquet
from fidan.data.prepare import split
from fidan.data.sources import SourceReport, read_documents
from fidan.errors import FidanError
from fidan.pipeline import run_stage
from fidan.rundir import RunDir


def test_tiny_shakespeare_standard_split(tmp_path):
    path = shared_file("tinyshakespeare.txt")
    text = path.read_text(encoding="utf-8")
    cfg = micro_config(tmp_path, "shakes", f"data.source={path}", "data.steps=")
    run = RunDir.for_config(cfg)
    summary = run_stage(cfg, run, "data")
    train = list(read_parquet(run.path / "data/clean/train.parquet"))
    val = list(read_parquet(run.path / "data/clean/val.parquet"))
    n = len(text)
    assert train[0].text == text[:int(n * 0.9)] and val[0].text == text[int(n * 0.9):]
    assert summary["val_docs"] == 1 and len(text.encode()) == 1_115_394


def test_jsonl_with_text_field_and_provenance(tmp_path):
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"id": "a", "body": "Merhaba dünya"}) + "\n\n")
        f.write(json.dumps({"body": "Hello"}) + "\n")
    docs = list(read_documents(str(path), text_field="body"))
    assert [d.text for d in docs] == ["Merhaba dünya", "Hello"]
    assert docs[0].id == "a" and docs[1].meta["line"] == 3 and docs[1].source == str(path)


def test_folder_is_searched(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("one")
    (tmp_path / "y.md").write_text("two")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    assert sorted(d.text for d in read_documents(str(tmp_path))) == ["one", "two"]


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", b"  \n", r"empty\.txt: file is empty"),
    ("bin.txt", b"abc\x00\x01\x02", r"bin\.txt: looks like a binary file"),
    ("bad.txt", b"line one\nline two \xff\xfe\n", r"bad\.txt:2: invalid UTF-8"),
    ("rows.jsonl", b'{"text": "ok"}\n{"text": "broken\n', r"rows\.jsonl:2: "),
    ("rows2.jsonl", b'{"text": "ok"}\n{"title": "x"}\n', r"rows2\.jsonl:2: no 'text' field"),
    ("rows3.jsonl", b'{"text": 5}\n', r"rows3\.jsonl:1: field 'text' is not a string"),
])
def test_bad_input_names_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FidanError, match=message):
        list(read_documents(str(path)))


def test_truncated_gzip(tmp_path):
    data = gzip.compress(("hello world\n" * 1000).encode())
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(FidanError, match=r"cut\.txt\.gz: damaged gzip"):
        list(read_documents(str(path)))


def test_skip_mode_keeps_good_documents_and_reports_bad_ones(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a"}\nnot json\n{"text": "b"}\n')
    (tmp_path / "empty.txt").write_text("")
    report = SourceReport()
    docs = list(read_documents(f"{good},{tmp_path / 'empty.txt'}", on_error="skip", report=report))
    assert [d.text for d in docs] == ["a", "b"]
    assert len(report.problems) == 2 and "good.jsonl:2" in report.problems[0]


def test_missing_source_and_unsupported_type(tmp_path):
    with pytest.raises(FidanError, match="no such file"):
        list(read_documents(str(tmp_path / "nope.txt")))
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    with pytest.raises(FidanError, match="unsupported file type"):
        list(read_documents(str(tmp_path / "x.pdf")))


def test_hash_split_keeps_whole_documents():
    from fidan.records import Document
    docs = [Document(f"d{i}", f"text {i}", "x") for i in range(200)]
    train, val = split(docs, "auto", 0.1)
    assert len(train) + len(val) == 200 and 5 < len(val) < 40
    assert not {d.id for d in train} & {d.id for d in val}
    with pytest.raises(FidanError, match="empty"):
        split(docs[:1], "hash", 0.1)
