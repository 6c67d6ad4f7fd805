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


def test_one_large_file_and_a_few_small_ones_split_inside_documents(tmp_path, capsys):
    import shutil
    folder = tmp_path / "texts"
    folder.mkdir()
    shutil.copy(shared_file("tinyshakespeare.txt"), folder / "shakespeare.txt")
    for i, topic in enumerate(("gardens", "rivers", "bridges")):
        (folder / f"note{i}.txt").write_text("\n".join(f"Note {j} on {topic}: the {topic} of the town were "
                                                       f"measured again in year {1900 + j}." for j in range(60)))
    cfg = micro_config(tmp_path / "runs", "mine", f"data.source={folder}", "data.steps=normalize")
    run = RunDir.for_config(cfg)
    run_stage(cfg, run, "data")
    said = capsys.readouterr().out
    train = list(read_parquet(run.path / "data/clean/train.parquet"))
    val = list(read_parquet(run.path / "data/clean/val.parquet"))
    share = sum(len(d.text) for d in val) / sum(len(d.text) for d in train + val)
    assert 0.05 <= share <= 0.2                       # never most of the text in validation
    assert len(train) == len(val) == 4 and {d.id + "#tail" for d in train} == {d.id for d in val}
    for head in train:   # each document's tail is its validation part, cut at a line or word
        tail = next(d for d in val if d.id == head.id + "#tail")
        assert head.text[-1] in " \n" and 0.05 < len(tail.text) / len(head.text + tail.text) < 0.15
    assert "--data.split=tails" in said and "in validation (asked: 10%)" in said
    assert json.loads((run.path / "data/stats.json").read_text())["split"] == "tails"
    # asked for whole documents, it keeps them but says what that does and what fixes it
    cfg = micro_config(tmp_path / "runs", "mine", f"data.source={folder}", "data.steps=normalize", "data.split=hash")
    run_stage(cfg, run, "data")
    assert "warning: keeping whole documents" in capsys.readouterr().out


def test_the_streamed_tails_split_writes_what_the_in_memory_split_makes(tmp_path):
    import functools

    import pyarrow as pa

    from fidan.data.executor import SplitWriter
    from fidan.data.parquet import SCHEMA
    from fidan.data.prepare import tail_cut
    from fidan.records import Document
    docs = [Document(f"d{i}", " ".join(f"word{j}" for j in range(40 + 7 * i)), "s", {"lang": "en"}) for i in range(9)]
    docs.append(Document("short", "x", "s", {}))   # too short to cut: all of it trains
    want_train, want_val = split(docs, "tails", 0.1)
    writer = SplitWriter(tmp_path, 0.1, functools.partial(tail_cut, val_fraction=0.1))
    for part in (docs[:4], docs[4:]):   # two tables, as the cleaning shards arrive
        writer.write(pa.table({"id": [d.id for d in part], "source": [d.source for d in part],
                               "text": [d.text for d in part], "meta": [json.dumps(d.meta) for d in part]},
                              schema=SCHEMA))
    counts = writer.close()
    got_train, got_val = list(read_parquet(tmp_path / "train.parquet")), list(read_parquet(tmp_path / "val.parquet"))
    assert got_train == want_train and got_val == want_val and len(got_val) == 9
    assert counts["val"] == {"documents": 9, "bytes": sum(len(d.text.encode()) for d in want_val)}
    writer = SplitWriter(tmp_path / "none", 0.1, functools.partial(tail_cut, val_fraction=0.1))
    writer.write(pa.table({"id": ["a"], "source": ["s"], "text": ["x"], "meta": ["{}"]}, schema=SCHEMA))
    with pytest.raises(FidanError, match="1 training and 0 validation.*raise --data.val_fraction"):
        writer.close()
    assert not list((tmp_path / "none").glob("*.parquet*"))   # nothing half-written is left


def test_split_choice_and_its_messages():
    from fidan.data.prepare import choose_split
    from fidan.records import Document
    assert choose_split("auto", 5000, 500, 10**7, 10**6, 0.1) == ("hash", "")
    mode, why = choose_split("auto", 5, 2, 1_160_000, 1_150_000, 0.1)
    assert mode == "tails" and "99.1% of the text" in why
    assert choose_split("auto", 4, 0, 1000, 0, 0.1)[0] == "tails"      # validation would be empty
    assert choose_split("auto", 1, 0, 1000, 0, 0.1)[0] == "tail"
    with pytest.raises(FidanError, match="raise --data.val_fraction"):
        split([Document("a", "x", "s"), Document("b", "y", "s")], "tails", 0.1)   # nothing long enough to cut


def test_too_little_text_for_the_model_stops_with_the_numbers():
    from fidan.train.pretrain import enough_tokens
    with pytest.raises(FidanError, match=r"2,495 tokens for a model of 5.00M parameters \(0.0005 tokens per "
                                         r"parameter.*read it 6567 times.*--train.min_tokens_per_param=0"):
        enough_tokens(2495, 5_000_000, 0.01, 16 * 256, 4000)
    assert "0.1 tokens per parameter" in enough_tokens(500_000, 5_000_000, 0.01, 16 * 256, 1000)
