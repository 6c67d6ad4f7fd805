"""Validation before work: every number has its range on the field, checked when the config is
built; bad input files end in one-line errors (or skips); a data run that keeps nothing still says
which step dropped what. Property-based tests throw generated configs and files at the real CLI."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import os
import random
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import MICRO
from fidan.cli import main
from fidan.config import MAX_NOISE, Config, build_config
from fidan.corpus.web import noisy_web
from fidan.data import sources
from fidan.data.sources import SourceReport, read_documents
from fidan.errors import FidanError
from fidan.records import Document, Problems, read_jsonl

GOOD = ("The old fisherman walks along the river every morning and tells the children long stories "
        "about the town, the market and the boats. ")


def numeric_fields(section=None, where=""):
    """(dotted key, field, value) of every int or float setting, sub-tables included."""
    section = section if section is not None else Config()
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            yield from numeric_fields(value, key)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield key, f, value


NUMERIC = sorted((k, type(v)) for k, _, v in numeric_fields())


def value_of(cfg, dotted):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_every_numeric_setting_declares_its_range():
    missing = [k for k, f, _ in numeric_fields() if "check" not in f.metadata]
    assert not missing, f"numeric settings without a range (setting(..., check=...)): {missing}"
    assert {"model.n_head", "sft.lora.rank", "rlhf.ppo.gamma", "data.minhash_ngram"} <= {k for k, _ in NUMERIC}
    # the defaults pass their own ranges
    build_config()


@pytest.mark.parametrize("override, message", [
    ("train.lr=nan", "bad value for 'train.lr': nan (must be a finite number > 0)"),
    ("train.lr=-1", "bad value for 'train.lr': -1.0 (must be a finite number > 0)"),
    ("train.lr=inf", "'train.lr': inf"),
    ("data.minhash_ngram=0", "bad value for 'data.minhash_ngram': 0 (must be an integer >= 1)"),
    ("data.minhash_ngram=-3", "'data.minhash_ngram': -3"),
    ("data.decontam_n=0", "'data.decontam_n': 0"),
    ("model.n_head=0", "'model.n_head': 0"),
    ("data.workers=-1", "'data.workers': -1"),
    ("data.lang_threshold=-1", "'data.lang_threshold': -1.0 (must be a finite number in [0, 1])"),
    ("corpus.noise=8", "'corpus.noise': 8.0 (must be a finite number in [0, 5])"),
    ("corpus.noise=-0.5", "'corpus.noise'"),
    ("data.val_fraction=1", "'data.val_fraction': 1.0 (must be a finite number in (0, 1))"),
    ("sft.lora.rank=0", "'sft.lora.rank'"),
    ("rlhf.ppo.gamma=1.5", "'rlhf.ppo.gamma'"),
    ("rlhf.grpo.group=1", "'rlhf.grpo.group'"),
    ("reward.harmful_share=1", "'reward.harmful_share'"),
    ("train.beta2=1", "'train.beta2'"),
    ("sample.top_p=0", "'sample.top_p'"),
    ("run.seed=-1", "'run.seed'"),
    ("tokenizer.vocab_size=10", "'tokenizer.vocab_size'"),
    ("model.norm_eps=0", "'model.norm_eps'"),
    ("train.lr=1e999999", "'train.lr': inf"),
])
def test_out_of_range_settings_are_refused_by_name(override, message):
    with pytest.raises(FidanError) as e:
        build_config(None, None, [override])
    assert message in str(e.value)


def test_cross_field_rules_stay():
    with pytest.raises(FidanError, match="divisible by model.n_head"):
        build_config(None, None, ["model.d_model=250", "model.n_head=4"])
    with pytest.raises(FidanError, match="must be even"):
        build_config(None, None, ["model.d_model=12", "model.n_head=4", "model.n_kv_head=4"])


def test_a_huge_toml_integer_for_a_float_is_a_clean_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = " + "9" * 400 + "\n")
    with pytest.raises(FidanError, match="'train.lr'.*too large"):
        build_config(None, str(path))


def test_toml_with_invalid_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[train]\nlr = 1e-3\n# caf\xe9\n")
    with pytest.raises(FidanError, match=r"bad\.toml: not valid UTF-8"):
        build_config(None, str(path))
    assert main(["data", f"--config={path}", f"--run.root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fidan: error: {path}: not valid UTF-8 (byte 23); save the config file as UTF-8"]
    deep = tmp_path / "deep.toml"
    deep.write_text("[train]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(FidanError, match="nested too deep"):
        build_config(None, str(deep))


def test_a_bad_setting_fails_before_any_work(tmp_path, capsys):
    assert main(["data", f"--run.root={tmp_path}", "--run.name=r", "--data.minhash_ngram=0"]) == 2
    assert "fidan: error: bad value for 'data.minhash_ngram'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "data").exists()


# ---------------------------------------------------------------------------------------------
# Generated configs

WILD = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([0, -1, 1, 2, 2**31, 2**32, 2**64, 0.5, 1.0, -0.0, 5e-324, 1e308, float("nan"), float("inf")]),
)


def _text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _toml(value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return _text(value)


def _check_accepted(cfg: Config, given_values: dict) -> None:
    """Invariants written out by hand, independent of the range metadata under test."""
    for key, _, value in numeric_fields(cfg):
        if isinstance(value, float):
            assert math.isfinite(value), key
    for key, value in given_values.items():
        assert value_of(cfg, key) == value
    m, t, d = cfg.model, cfg.train, cfg.data
    assert m.n_head >= 1 and m.n_kv_head >= 1 and m.d_model % m.n_head == 0 and m.n_head % m.n_kv_head == 0
    assert t.lr > 0 and t.steps >= 1 and t.batch_size >= 1 and 0 <= t.beta1 < 1 and 0 <= t.beta2 < 1
    assert d.minhash_ngram >= 1 and d.decontam_n >= 1 and d.workers >= 0 and d.shard_docs >= 1
    assert 0 <= d.lang_threshold <= 1 and 0 < d.val_fraction < 1
    assert 0 <= cfg.corpus.noise <= MAX_NOISE and cfg.corpus.scale_mb > 0
    assert cfg.tokenizer.vocab_size >= 300 and 0 <= cfg.run.seed < 2**32
    assert 0 <= cfg.reward.harmful_share < 1 and cfg.rlhf.grpo.group >= 2 and 0 < cfg.sample.top_p <= 1


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from([k for k, _ in NUMERIC]), WILD, min_size=1, max_size=4))
def test_generated_overrides_give_a_clean_error_or_a_valid_config(values):
    try:
        cfg = build_config(None, None, [f"{k}={_text(v)}" for k, v in values.items()])
    except FidanError as e:
        assert "\n" not in str(e)
        return
    types = dict(NUMERIC)
    _check_accepted(cfg, {k: types[k](v) for k, v in values.items()})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([k for k, _ in NUMERIC]), WILD, min_size=1, max_size=4))
def test_generated_config_files_give_a_clean_error_or_a_valid_config(values):
    tables: dict[str, list[str]] = {}
    for key, value in values.items():
        table, name = key.rsplit(".", 1)
        tables.setdefault(table, []).append(f"{name} = {_toml(value)}")
    text = "".join(f"[{t}]\n" + "\n".join(lines) + "\n" for t, lines in tables.items())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(text)
        try:
            cfg = build_config(None, str(path))
        except FidanError as e:
            assert "\n" not in str(e)
            return
    types = dict(NUMERIC)
    _check_accepted(cfg, {k: types[k](v) for k, v in values.items()})


# ---------------------------------------------------------------------------------------------
# The embedded crawl's noise, and a data run that keeps nothing

def _pages(n: int) -> list[Document]:
    return [Document(f"p{i}", f"{GOOD}\n\nPage {i} " + GOOD, "embedded", {"lang": "en"}) for i in range(n)]


@pytest.mark.parametrize("realism", ["demo", "web"])
@pytest.mark.parametrize("n", [1, 3, 12, 40])
def test_noise_up_to_its_maximum_keeps_clean_pages_to_copy(n, realism):
    stream, truth = noisy_web(_pages(n), {}, 1, MAX_NOISE, realism)
    clean = [t for t in truth if t["label"] == "clean"]
    assert clean and len(stream) > n
    assert all(t["of"] in {c["id"] for c in clean} for t in truth if t["label"] in ("exact_dup", "near_dup"))
    assert noisy_web([], {}, 1, 1.0, realism) == ([], [])
    with pytest.raises(FidanError, match="corpus.noise"):
        noisy_web(_pages(n), {}, 1, MAX_NOISE + 1, realism)
    with pytest.raises(FidanError, match="corpus.realism"):
        noisy_web(_pages(n), {}, 1, 1.0, "webby")


@pytest.mark.parametrize("value", ["7", "1e9", "nan", "-1"])
def test_noise_out_of_range_is_one_line_naming_the_setting(value, tmp_path, capsys):
    assert main(["data", f"--run.root={tmp_path}", "--run.name=loud", f"--corpus.noise={value}"]) != 0
    err = capsys.readouterr().err.strip()
    assert "corpus.noise" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_noise_zero_plants_nothing_and_the_data_stage_reports(tmp_path, capsys):
    stream, truth = noisy_web(_pages(20), {}, 1, 0.0)
    assert len(stream) == 20 and {t["label"] for t in truth} == {"clean"}
    assert main(["data", *[f"--{o}" for o in MICRO], f"--run.root={tmp_path}", "--run.name=quiet",
                 "--corpus.noise=0", "--data.workers=1"]) == 0
    out = capsys.readouterr().out
    assert "against the hidden ground truth" in out and "MISSED" not in out.split("clean_wrongly")[0]
    stats = json.loads((tmp_path / "quiet" / "data" / "stats.json").read_text())
    bars = stats["ground_truth"]["bars_met"]
    assert "exact_dup_removed" not in bars and "clean_wrongly_dropped" in bars  # nothing planted, nothing to score


def test_a_run_that_keeps_nothing_still_shows_each_steps_drops(tmp_path, capsys):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": f"{GOOD * 3} number {i}"}) + "\n" for i in range(30)))
    assert main(["data", f"--run.root={tmp_path}", "--run.name=none", f"--data.source={src}",
                 "--data.languages=xx", "--data.workers=1"]) == 2
    captured = capsys.readouterr()
    table = [line.split() for line in captured.out.splitlines()]
    language = next(row for row in table if row and row[0] == "language")
    assert language[1:3] == ["30", "0"]
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fidan: error: cleaning left 0 training")
    assert "dropped by step: language 30" in err[0]
    assert not (tmp_path / "none" / "data" / "clean" / "train.parquet").exists()


# ---------------------------------------------------------------------------------------------
# Bad lines and unreadable files

DEEP = "[" * 100_000 + "]" * 100_000
BAD_LINES = {
    "deep": (DEEP, "nested too deep"),
    "deep_field": ('{"text": "x", "meta": ' + DEEP + "}", "nested too deep"),
    "surrogate": ('{"text": "abc \\ud800 def"}', "lone surrogate"),
    "surrogate_id": ('{"text": "' + GOOD + '", "id": "\\udfff"}', "lone surrogate"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_jsonl_lines_fail_with_file_and_line_or_are_skipped(tmp_path, kind):
    line, why = BAD_LINES[kind]
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": GOOD}) + "\n" + line + "\n" + json.dumps({"text": GOOD + "!"}) + "\n")
    with pytest.raises(FidanError, match=rf"d\.jsonl:2: .*{why}"):
        list(read_documents(str(path)))
    report = SourceReport()
    docs = list(read_documents(str(path), on_error="skip", report=report))
    assert [d.meta["line"] for d in docs] == [1, 3]
    assert len(report.problems) == 1 and why in report.problems[0]
    problems = Problems()
    assert [n for n, _ in read_jsonl(path, "skip", problems)] == [1, 3] and why in problems.items[0]
    with pytest.raises(FidanError, match=rf"d\.jsonl:2: .*{why}"):
        list(read_jsonl(path))


def test_a_valid_surrogate_pair_is_kept(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "smile \\ud83d\\ude00 ' + GOOD + '"}\n')
    assert "\U0001F600" in next(read_documents(str(path))).text
    assert "\U0001F600" in next(read_jsonl(path))[1]["text"]


@pytest.mark.parametrize("suffix", [".jsonl", ".txt", ".parquet", ".warc"])
def test_an_unreadable_file_is_one_line(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"d{suffix}"
    path.write_bytes(b"x")
    other = tmp_path / "ok.jsonl"
    other.write_text(json.dumps({"text": GOOD}) + "\n")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    real_open = open
    monkeypatch.setattr(sources, "open", lambda p, *a, **k: refuse() if Path(p) == path else real_open(p, *a, **k),
                        raising=False)
    monkeypatch.setattr(Path, "read_bytes", lambda self: refuse())
    monkeypatch.setattr(pq, "ParquetFile", lambda p, *a, **k: refuse())
    with pytest.raises(FidanError, match=rf"d\{suffix}: cannot read the file \(Permission denied"):
        list(read_documents(str(path)))
    report = SourceReport()
    docs = list(read_documents(f"{path},{other}", on_error="skip", report=report))
    assert len(docs) == 1 and "Permission denied" in report.problems[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_file_without_read_permission(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": GOOD}) + "\n")
    path.chmod(0)
    assert main(["data", f"--run.root={tmp_path}", f"--data.source={path}", "--data.workers=1"]) == 2
    assert "cannot read the file (Permission denied" in capsys.readouterr().err


def test_damaged_parquet_rows_are_one_line(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": [GOOD + str(i) for i in range(3000)]}), path, row_group_size=500)
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 2000] = os.urandom(2000)
    path.write_bytes(bytes(data))
    try:
        list(read_documents(str(path)))
    except FidanError as e:
        assert "d.parquet" in str(e)


# ---------------------------------------------------------------------------------------------
# Generated malformed files through the real command line

@functools.cache
def pages() -> list[str]:
    """Real web-page-sized texts (the embedded corpus), distinct, so that some survive cleaning."""
    from fidan.config import CorpusConfig
    from fidan.corpus.generate import generate
    docs, _ = generate(CorpusConfig(scale_mb=0.04, n_places=8, n_people=12, n_creatures=6, sft_conversations=0,
                                    sentiment_examples=0), 7)
    return [d.text for d in docs]


PAGE = st.integers(0, 10_000).map(lambda i: pages()[i % len(pages())])
LINE = st.one_of(
    PAGE.map(lambda t: json.dumps({"text": t})),
    PAGE.map(lambda t: json.dumps({"text": t}, ensure_ascii=False)),
    st.builds(lambda t, s: json.dumps({"text": t + s, "id": s}), PAGE, st.text(max_size=20)),
    st.text(max_size=60),
    st.binary(max_size=60),
    st.sampled_from([DEEP, '{"text": "\\ud800"}', '{"text": 3}', '{"txt": "a"}', "[1, 2]", "null", "NaN",
                     '{"text": "' + GOOD + '", "id": 1}', '{"text": "' + GOOD + '", "id": [[[[]]]]}',
                     '{"text": "' + GOOD + '", "id": "\\udc80"}', "\x00\x00", '{"text": "a"', "{}"]),
)


def _write_jsonl(path: Path, lines: list) -> None:
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")) + b"\n")


def _write_parquet(path: Path, rows: list, column: str, cut: float | None) -> None:
    pq.write_table(pa.table({column: pa.array(rows)}), path)
    if cut is not None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * cut)])


def _fidan_data(root: Path, source: Path, on_error: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["data", *[f"--{o}" for o in MICRO], f"--run.root={root}", "--run.name=gen",
                   f"--data.source={source}", f"--data.on_error={on_error}", "--data.workers=1"])
    return rc, err.getvalue()


def _assert_clean_outcome(rc: int, err: str, root: Path) -> None:
    assert "Traceback" not in err
    event(f"exit {rc}")
    if rc == 2:
        lines = [line for line in err.splitlines() if line.startswith("fidan: error: ")]
        assert len(lines) == 1, err
        return
    assert rc == 0, err
    clean = root / "gen" / "data" / "clean"
    texts = pq.read_table(clean / "train.parquet").column("text").to_pylist() + \
        pq.read_table(clean / "val.parquet").column("text").to_pylist()
    assert texts and all(isinstance(t, str) and t.encode("utf-8") for t in texts)
    assert json.loads((root / "gen" / "data" / "stats.json").read_text())["output"]["train"]["documents"] > 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINE, min_size=0, max_size=30), st.sampled_from(["fail", "skip"]), st.booleans())
def test_generated_jsonl_gives_a_clean_error_or_valid_output(lines, on_error, gzipped):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "in.jsonl"
        _write_jsonl(source, lines)
        if gzipped:  # gzipped, and perhaps cut short
            import gzip
            data = gzip.compress(source.read_bytes())
            source.unlink()
            source = root / "in.jsonl.gz"
            source.write_bytes(data[: max(1, len(data) - random.Random(len(lines)).randrange(0, 20))])
        rc, err = _fidan_data(root, source, on_error)
        _assert_clean_outcome(rc, err, root)


CELL = st.one_of(st.none(), st.text(max_size=30), PAGE, PAGE, st.builds(lambda t, s: t + s, PAGE, st.text(max_size=20)))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(CELL, min_size=5, max_size=30), st.lists(st.integers(-2**63, 2**63 - 1), max_size=5),
                 st.lists(st.binary(max_size=20), max_size=5)),
       st.sampled_from(["text", "text", "body"]), st.one_of(st.none(), st.none(), st.floats(0.05, 0.95)),
       st.sampled_from(["fail", "skip"]))
def test_generated_parquet_gives_a_clean_error_or_valid_output(rows, column, cut, on_error):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "in.parquet"
        _write_parquet(source, rows, column, cut)
        rc, err = _fidan_data(root, source, on_error)
        _assert_clean_outcome(rc, err, root)
