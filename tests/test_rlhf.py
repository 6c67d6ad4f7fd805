"""RLHF: preference pairs, the reward model, PPO, DPO and GRPO."""
import json
import multiprocessing as mp

import pytest

from conftest import shared_file
from fidan.errors import FidanError
from fidan.rlhf import preferences


def test_hh_rlhf_transcripts_load():
    report = preferences.load(shared_file("hh_rlhf_harmless_test.jsonl.gz"))
    assert len(report.pairs) + len(report.problems) == 2312
    assert len(report.pairs) >= 2300, report.problems[:3]
    pair = report.pairs[0]
    assert pair.prompt[0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}
    assert [m["role"] for m in pair.prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert pair.chosen.startswith("No, sorry!") and pair.chosen != pair.rejected and pair.source == "hh-rlhf"
    for problem in report.problems:  # pairs whose transcripts differ earlier than the last turn
        assert "hh_rlhf_harmless_test.jsonl.gz:" in problem and "final assistant turn" in problem


def _writer(path, n, tag):
    for i in range(n):
        preferences.append(path, preferences.record(f"{tag} {i}", "a" * 500, "b" * 500, "a", "test"))


def test_appends_from_two_processes_never_interleave(tmp_path):
    path = tmp_path / "prefs.jsonl"
    procs = [mp.get_context("fork").Process(target=_writer, args=(path, 100, t)) for t in ("x", "y")]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    report = preferences.load(path, on_error="fail")
    assert len(report.pairs) == 200
    assert {p.prompt_text for p in report.pairs} == {f"{t} {i}" for t in "xy" for i in range(100)}


def test_a_line_cut_short_is_reported_and_the_next_append_starts_clean(tmp_path):
    path = tmp_path / "prefs.jsonl"
    preferences.append(path, preferences.record("q1", "good", "bad", "a", "test"))
    with open(path, "a") as f:
        f.write('{"prompt": "q2", "chosen": "go')   # a writer killed mid-line
    preferences.append(path, preferences.record("q3", "x", "y", "b", "test"))
    report = preferences.load(path)
    assert [(p.prompt_text, p.chosen) for p in report.pairs] == [("q1", "good"), ("q3", "y")]
    assert len(report.problems) == 1 and f"{path}:2:" in report.problems[0]
    with pytest.raises(FidanError, match=r"prefs.jsonl:2: not valid JSON"):
        preferences.load(path, on_error="fail")


@pytest.mark.parametrize("record, words", [
    ({"prompt": "q", "chosen": "a"}, "missing 'rejected'"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "'prompt' must be"),
    ({"prompt": "q", "chosen": ["a"], "rejected": "b"}, "must be strings"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: yo\n\nAssistant: b"}, "final assistant turn"),
])
def test_bad_pairs_name_file_and_line(tmp_path, record, words):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "ok", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps(record) + "\n")
    report = preferences.load(path)
    assert len(report.pairs) == 1 and report.problems[0].startswith(f"{path}:2: ") and words in report.problems[0]
