"""The data-cleaning chain: each rule on its own, then the whole stage against the planted faults."""
from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, micro_config, shared_file
from fidan.corpus.web import iban_tr, tc_kimlik
from fidan.data import quality as Q
from fidan.data.decontam import build_index, decontaminate, eval_texts_from_file
from fidan.data.language import identify
from fidan.data.normalize import normalize
from fidan.data.pii import iban_valid, scrub, tckn_valid
from fidan.data.sources import SourceReport, read_documents, read_hf
from fidan.errors import FidanError
from fidan.pipeline import run_stage
from fidan.rundir import RunDir
from fidan.text import jaccard

EN_PAGE = ("The old baker of the town opens his shop at five in the morning and bakes bread for everyone. "
           "People come from the villages near the river to buy his bread, and they often stay to talk. "
           "He has worked there for thirty years, and his daughter now helps him with the ovens. "
           "In the evening he walks to the harbour with his dog and watches the boats come in. "
           "On Sundays the shop is closed, and the baker visits his brother in the next valley.")
TR_PAGE = ("Kasabanın yaşlı fırıncısı dükkânını sabah beşte açar ve herkes için ekmek pişirir. "
           "Nehir kıyısındaki köylerden insanlar ekmek almaya gelir ve çoğu zaman sohbet etmek için kalır. "
           "Otuz yıldır orada çalışıyor ve kızı artık fırınlarda ona yardım ediyor. "
           "Akşamları köpeğiyle limana yürür ve gelen tekneleri izler. "
           "Pazar günleri dükkân kapalıdır ve fırıncı bir sonraki vadideki kardeşini ziyaret eder. "
           "Bu kasabada herkes onu tanır ve çok sever, çünkü ekmeği gerçekten çok lezzetlidir ve ucuzdur.")


def test_normalize_composes_unicode_and_tidies_whitespace():
    text = "Du\u0308nya\u00a0 \u200bgu\u0308zel\r\n\r\n\r\n\r\nİkinci   satır  \t\n"
    assert normalize(text) == "Dünya güzel\n\nİkinci satır"


def test_clean_pages_pass_every_rule_set_in_both_languages():
    for page, lang in ((EN_PAGE, "en"), (TR_PAGE, "tr")):
        text, reason, removed = Q.c4(page, lang)
        assert reason is None and removed == 0 and text == page
        assert Q.gopher_repetition(page) is None
        assert Q.gopher_quality(page, lang) is None
        assert Q.fineweb(page) is None


def test_gopher_rules_name_what_is_wrong():
    assert Q.gopher_quality("Too short to be a page.", "en") == "gopher:too_few_words"
    assert Q.gopher_quality(" ".join(["zzz qqq vvv"] * 30), "en") == "gopher:few_stop_words"
    assert Q.gopher_quality(EN_PAGE + " #tag" * 20, "en") == "gopher:symbol_ratio"
    assert Q.gopher_quality(" ".join(["1234 5678 and the 9012 3456"] * 12), "en") == "gopher:non_alpha_words"
    # Turkish text has Turkish stop words, not English ones: the English list would drop it.
    assert Q.gopher_quality(TR_PAGE, "en") == "gopher:few_stop_words" and Q.gopher_quality(TR_PAGE, "tr") is None
    spam = " ".join(["buy cheap watches online today"] * 20)
    assert Q.gopher_repetition(spam).startswith("gopher:")
    assert Q.gopher_repetition("\n".join([EN_PAGE, "Same line here.", "Same line here.", "Same line here."])) == \
        "gopher:dup_lines"


def test_c4_removes_boilerplate_lines_and_keeps_the_content():
    page = "Home | About | Contact\n" + EN_PAGE + "\nThis site uses cookies. Read our cookie policy.\nShare"
    text, reason, removed = Q.c4(page, "en")
    assert reason is None and removed == 3 and text == EN_PAGE
    turkish = TR_PAGE + "\nBu site çerezleri kullanır, çerez politikamızı okuyun."
    assert Q.c4(turkish, "tr")[0] == TR_PAGE
    assert Q.c4(EN_PAGE + " Lorem ipsum dolor sit amet.", "en")[1] == "c4:lorem_ipsum"
    assert Q.c4("var x = {a: 1};\n" + EN_PAGE, "en")[1] == "c4:curly_bracket"
    assert Q.c4("One sentence only. Two.", "en")[1] == "c4:too_few_sentences"


def test_fineweb_rules():
    assert Q.fineweb("\n".join([EN_PAGE, "A line that the page repeats.", "A line that the page repeats."])) == \
        "fineweb:duplicate_line_chars"
    assert Q.fineweb("\n".join(f"item {i} here." for i in range(40))) == "fineweb:short_lines"
    assert Q.fineweb("\n".join(f"word{i} more words without an end mark" for i in range(20))) == \
        "fineweb:line_punctuation"


def test_pii_is_replaced_only_when_its_checksum_is_valid():
    import random
    rng = random.Random(0)
    for _ in range(50):
        assert tckn_valid(tc_kimlik(rng)) and iban_valid(iban_tr(rng).replace(" ", ""))
    good_id, good_iban = tc_kimlik(rng), iban_tr(rng)
    bad_id = good_id[:-1] + str((int(good_id[-1]) + 1) % 10)
    text = (f"Write to ayla.kaya@ornek.com.tr or call +90 532 123 45 67. Server 192.168.10.4 answered. "
            f"IBAN {good_iban}. Kimlik {good_id}, not {bad_id}. Founded in 1525, population 33400, 27 + 36 = 63.")
    out, found = scrub(text)
    assert dict(found) == {"EMAIL": 1, "PHONE": 1, "IP": 1, "IBAN": 1, "TCKN": 1}
    for secret in ("ayla.kaya@ornek.com.tr", "+90 532", "192.168.10.4", good_iban, good_id):
        assert secret not in out
    assert "1525" in out and "33400" in out and "27 + 36 = 63" in out
    assert bad_id in out and out.count("<TCKN>") == 1  # an invalid identity number is not called one


def test_language_identification():
    assert identify(EN_PAGE)[0] == "en" and identify(TR_PAGE)[0] == "tr"
    assert identify("Der alte Fischer wohnt in einem kleinen Haus am Fluss und trinkt Kaffee.")[0] == "de"
    _, prob = identify(TR_PAGE)
    assert 0.9 < prob <= 1.0


def test_decontamination_against_gsm8k():
    texts = eval_texts_from_file(shared_file("gsm8k_test.jsonl"))
    assert len(texts) == 1319
    index = build_index(texts, n=13)
    question = texts[7]
    doc = EN_PAGE + "\n\n" + question + "\n\n" + TR_PAGE
    cut, hits = decontaminate(doc, index, "cut")
    assert hits and question not in cut and EN_PAGE in cut and TR_PAGE in cut
    assert decontaminate(doc, index, "drop") == (None, hits)
    assert len(question.split()) >= 13
    twelve = " ".join(question.split()[:12])  # shorter than 13 words: not an overlap
    assert decontaminate(EN_PAGE + " " + twelve, index, "cut")[1] == 0
    assert decontaminate(EN_PAGE, index, "cut") == (EN_PAGE, 0)


def test_sources_read_parquet_warc_and_local_hf(tmp_path):
    table = pa.table({"id": ["a", "b", "c"], "body": ["first doc", None, "third doc"]})
    pq.write_table(table, tmp_path / "docs.parquet")
    report = SourceReport()
    docs = list(read_documents(str(tmp_path / "docs.parquet"), "body", "skip", report))
    assert [(d.id, d.text, d.meta["row"]) for d in docs] == [("a", "first doc", 1), ("c", "third doc", 3)]
    assert "docs.parquet: row 2" in report.problems[0]
    with pytest.raises(FidanError, match="no 'text' column"):
        list(read_documents(str(tmp_path / "docs.parquet")))
    hf = list(read_hf("parquet", "body", data_files=str(tmp_path / "docs.parquet"), on_error="skip"))
    assert [d.text for d in hf] == ["first doc", "third doc"] and hf[0].id == "a"

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter
    html = (f"<html><head><title>t</title><script>var a = 1;</script></head><body><nav>Home | About</nav>"
            f"<article><p>{EN_PAGE}</p><p>{TR_PAGE}</p></article><footer>Copyright</footer></body></html>")
    with open(tmp_path / "crawl.warc.gz", "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, body, kind in (("http://a.example/", html, "text/html"),
                                ("http://a.example/x.png", "PNG", "image/png")):
            headers = StatusAndHeaders("200 OK", [("Content-Type", kind)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body.encode()),
                                                          http_headers=headers))
    docs = list(read_documents(str(tmp_path / "crawl.warc.gz")))
    assert len(docs) == 1 and docs[0].meta["url"] == "http://a.example/"
    assert "baker" in docs[0].text and "fırıncı" in docs[0].text and "var a" not in docs[0].text


def test_truncated_gzip_keeps_the_lines_before_the_break(tmp_path):
    lines = [json.dumps({"text": f"document number {i}"}) for i in range(2000)]
    data = gzip.compress("\n".join(lines).encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    report = SourceReport()
    docs = list(read_documents(str(tmp_path / "cut.jsonl.gz"), on_error="skip", report=report))
    assert 0 < len(docs) < 2000 and docs[-1].text == f"document number {len(docs) - 1}"
    assert "cut.jsonl.gz:" in report.problems[0] and "truncated" in report.problems[0]
    with pytest.raises(FidanError, match="cut.jsonl.gz:[0-9]+: damaged or truncated gzip"):
        list(read_documents(str(tmp_path / "cut.jsonl.gz")))


def test_unknown_step_is_refused(tmp_path):
    from fidan.pipeline import check
    with pytest.raises(FidanError, match="unknown step"):
        check(micro_config(tmp_path, "x", "data.steps=normalize,dedupe"), ["data"])


@pytest.mark.slow
def test_noisy_web_sample_meets_the_bars(tmp_path):
    """Runs the real stage with two worker processes on 0.6 MB of planted faults."""
    cfg = micro_config(tmp_path, "noisy", "corpus.scale_mb=0.6", "corpus.n_places=24", "corpus.n_people=48",
                       "corpus.n_creatures=16", "data.workers=2", "data.shard_docs=150")
    run = RunDir.for_config(cfg)
    run_stage(cfg, run, "data")
    stats = json.loads((run.path / "data" / "stats.json").read_text())
    scores = stats["ground_truth"]["scores"]
    assert stats["shards"] > 2
    assert scores["exact_dup_removed"]["rate"] == 1.0
    assert scores["near_dup_removed"]["rate"] >= 0.95
    assert scores["contamination_removed"]["rate"] == 1.0
    assert scores["pii_replaced"]["rate"] == 1.0 and scores["pii_replaced"]["total"] > 0
    assert scores["clean_wrongly_dropped"]["rate"] <= 0.05
    assert scores["language_correct"]["rate"] >= 0.98
    assert scores["spam_removed"]["rate"] == scores["short_removed"]["rate"] == scores["foreign_removed"]["rate"] == 1.0
    steps = stats["steps"]
    assert list(steps)[0] == "normalize" and list(steps)[-1] == "near_dedup"
    assert steps["near_dedup"]["examples"]["near_duplicate"][0]["detail"].startswith("copy of ")
    for name, c in steps.items():
        assert c["docs_in"] - c["docs_out"] == sum(c["dropped"].values()), name
    assert stats["input"]["documents"] == steps["normalize"]["docs_in"]
    # Near copies really are near: the planted ones were checked against the same shingling.
    truth = [json.loads(x) for x in (run.path / "data" / "truth.jsonl").read_text().splitlines()]
    assert all(0.8 <= t["jaccard"] < 1 for t in truth if t["label"] == "near_dup")


def test_web_realism_keeps_a_real_crawls_share(tmp_path):
    """--corpus.realism=web: cleaning keeps 10-20% of the documents (the share real crawls keep),
    removes the junk it planted, and keeps as much of the clean pages as the demo mix does."""
    cfg = micro_config(tmp_path, "web", "corpus.realism=web", "data.workers=1")
    run = RunDir.for_config(cfg)
    run_stage(cfg, run, "data")
    stats = json.loads((run.path / "data" / "stats.json").read_text())
    scores = stats["ground_truth"]["scores"]
    assert 0.10 <= stats["kept"]["documents"] <= 0.20
    truth = [json.loads(x) for x in (run.path / "data" / "truth.jsonl").read_text().splitlines()]
    labels = {t["label"] for t in truth}
    assert {"listing", "template", "foreign", "spam", "short", "exact_dup", "near_dup"} <= labels
    assert scores["listing_removed"]["rate"] == scores["template_removed"]["rate"] == 1.0
    assert scores["foreign_removed"]["rate"] == scores["spam_removed"]["rate"] == 1.0
    assert scores["junk_removed"]["rate"] >= 0.98 and scores["drop_precision"]["rate"] >= 0.95
    worth = sum(t["label"] in ("clean", "boilerplate", "pii", "contaminated") for t in truth)
    assert stats["kept_documents"] >= 0.85 * worth


def _write_jsonl(path, n_docs: int) -> None:
    from fidan.config import CorpusConfig
    from fidan.corpus.generate import generate
    from fidan.corpus.web import noisy_web
    pages, sets = generate(CorpusConfig(scale_mb=n_docs * 1.3e-3), 11)
    stream, _ = noisy_web(pages, sets, 11)
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text}, ensure_ascii=False) + "\n" for d in stream))


def _kept(run_path) -> list[str]:
    return sorted(pq.read_table(run_path / "data" / "clean" / "train.parquet").column("id").to_pylist())


@pytest.mark.slow
def test_a_killed_data_run_resumes_without_redoing_finished_shards(tmp_path):
    source = tmp_path / "web.jsonl"
    _write_jsonl(source, 600)
    args = [sys.executable, "-m", "fidan.cli", "data", f"--run.root={tmp_path}", f"--data.source={source}",
            "--data.shard_docs=40", "--data.workers=1"]
    proc = subprocess.Popen(args + ["--run.name=killed"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    work = tmp_path / "killed" / ".staging" / "data" / "work"   # a running stage writes here
    deadline = time.time() + 120
    while time.time() < deadline and len(list(work.glob("shard-*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in work.glob("shard-*.json")}
    assert len(done) >= 3 and not (tmp_path / "killed" / "data" / "stats.json").exists()
    subprocess.run(args + ["--run.name=killed"], cwd=ROOT, check=True, capture_output=True)
    stats = json.loads((tmp_path / "killed" / "data" / "stats.json").read_text())
    assert stats["resumed_shards"] >= len(done)
    final = tmp_path / "killed" / "data" / "work"   # moved into place, untouched: not redone
    assert all((final / p.name).stat().st_mtime_ns == t for p, t in done.items())
    subprocess.run(args + ["--run.name=whole"], cwd=ROOT, check=True, capture_output=True)
    assert _kept(tmp_path / "killed") == _kept(tmp_path / "whole")


@pytest.mark.slow
def test_ray_executor_gives_the_same_result_as_local_workers(tmp_path):
    pytest.importorskip("ray")
    source = tmp_path / "web.jsonl"
    _write_jsonl(source, 300)
    common = [f"data.source={source}", "data.shard_docs=60", "data.workers=2"]
    local = micro_config(tmp_path, "local", *common)
    ray_cfg = micro_config(tmp_path, "ray", *common, "data.executor=ray")
    for cfg in (local, ray_cfg):
        run_stage(cfg, RunDir.for_config(cfg), "data")
    assert _kept(tmp_path / "local") == _kept(tmp_path / "ray")
    stats = json.loads((tmp_path / "ray" / "data" / "stats.json").read_text())
    assert stats["shards"] >= 5 and stats["steps"]["near_dedup"]["dropped"]


def test_jaccard_of_planted_copies_is_measured_on_words():
    assert jaccard(EN_PAGE, EN_PAGE) == 1.0
    edited = EN_PAGE.replace("thirty", "forty")
    assert 0.8 < jaccard(EN_PAGE, edited) < 1.0


NOTE_TR = """# Köyün Tarihi

Köyümüz, nehrin kıyısında kurulmuş eski bir yerleşim yeridir ve bu yüzden halkı balıkçılıkla geçinir.
Yaşlılar, köyün ilk evlerinin taştan yapıldığını ve çok sağlam olduğunu anlatır.
Eski kayıtlar, köyün üç yüz yıl önce kurulduğunu gösterir ama bu bilgi kesin değildir.

## Nüfus

| yıl | nüfus |
|---|---|
| 1950 | 420 |
| 2000 | 310 |

- Okul 1962 yılında açıldı.
- Cami ile çeşme aynı yıl onarıldı.

Bir türkü:
Nehir akar gider,
Gönül ona bakar,
Bir gün döner gelir,
Sılaya yol akar.

Köprünün {izerine yeni bir korkuluk yapıldı ve çocuklar artık güvenle geçiyor.
Bilgi için muhtarlığa yazın: muhtar@koyumuz.org.tr adresi her gün okunur ve cevap verilir.
Köyde her yıl bir hasat şenliği yapılır, bu şenlikte bütün aileler bir araya gelir ve yemek yer.
"""


def test_books_and_notes_keep_short_lines_headings_tables_and_verse_and_ocr_noise_costs_one_line():
    from fidan.data.steps import Cleaner, Settings
    from fidan.records import Document
    steps = ["normalize", "language", "c4", "gopher_repetition", "gopher_quality", "fineweb", "pii"]

    def cleaned(profile):
        cleaner = Cleaner(Settings(steps=steps, languages=["en", "tr"], lang_threshold=0.65, ngram=5, bands=14,
                                   rows=8, decontam_mode="cut", profile=profile))
        return cleaner.clean(Document("köy.txt", NOTE_TR, "notes/köy.txt", {}))

    doc, reason = cleaned("web")
    assert doc is None and reason == "c4:curly_bracket"        # the web rules drop the whole article
    for profile in ("notes", "books", "auto"):                  # auto: a .txt file is a book
        doc, reason = cleaned(profile)
        assert reason is None, (profile, reason)
        lines = doc.text.split("\n")
        for kept in ("# Köyün Tarihi", "| 1950 | 420 |", "- Okul 1962 yılında açıldı.", "Gönül ona bakar,",
                     "Bir türkü:"):
            assert kept in lines, (profile, kept)
        assert not any("{" in line for line in lines) and "Köprünün" not in doc.text   # only that line went
        assert "muhtar@koyumuz.org.tr" not in doc.text and "Bilgi için muhtarlığa" in doc.text   # PII still scrubbed
        assert doc.meta["profile"] == ("books" if profile == "auto" else profile)


def test_auto_profile_follows_the_source_type():
    from fidan.data.steps import profile_of
    from fidan.records import Document
    kinds = {"crawl.warc.gz": "web", "page.html": "web", "notes/a.md": "notes", "rows.jsonl": "notes",
             "book.txt": "books", "embedded-web": "web", "hf:wikitext": "notes"}
    assert {src: profile_of(Document("x", "t", src, {}), "auto") for src in kinds} == kinds
    assert profile_of(Document("x", "t", "book.txt", {}), "web") == "web"


def test_the_table_shows_an_example_per_reason_and_names_the_setting_when_a_step_takes_most(capsys):
    from fidan.data.report import print_table
    from fidan.data.steps import Cleaner, Settings
    from fidan.records import Document
    text = shared_file("tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000]
    for profile in ("web", "books"):
        cleaner = Cleaner(Settings(steps=["c4"], languages=["en"], lang_threshold=0.65, ngram=5, bands=14, rows=8,
                                   decontam_mode="cut", profile=profile))
        doc, _ = cleaner.clean(Document("shakespeare.txt", text, "shakespeare.txt", {}))
        print_table({"source": "shakespeare.txt", "input": {"documents": 1, "bytes": len(text)},
                     "steps": cleaner.counters, "output": None})
        out = capsys.readouterr().out
        if profile == "web":
            assert 'e.g. line short_line' in out and 'e.g. line no_end_mark' in out
            assert "c4 removed" in out and "--data.profile=books or notes" in out and "web 1" in out
        else:   # a book keeps its verse and speaker lines: nothing to say
            assert doc.text == text.strip() and "removed" not in out and "e.g." not in out
