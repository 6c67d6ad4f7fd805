"""Everyday-life pages in the pre-training text (``corpus.everyday_share``, issue 19 item 1, stop 29):
they are drawn at the share asked, in both languages, survive the cleaning stage, and hold no
evaluation prompt nor a run of six words of one."""
import pytest

from conftest import micro_config
from fidan.config import CorpusConfig
from fidan.corpus import everyday
from fidan.corpus.generate import documents
from fidan.corpus.world import build_world
from fidan.eval import benign, redteam
from fidan.pipeline import run_stage
from fidan.records import read_texts
from fidan.rundir import RunDir
from fidan.text import shingles

pytestmark = pytest.mark.usefixtures("one_thread")


def _pages(share: float, scale: float = 0.3) -> list:
    cfg = CorpusConfig(scale_mb=scale, everyday_share=share, n_places=8, n_people=12, n_creatures=6)
    return list(documents(build_world(0, cfg.n_places, cfg.n_people, cfg.n_creatures), cfg, 0, set()))


def test_everyday_pages_come_at_their_share_in_both_languages_and_leave_the_world_pages_alone():
    off, on = _pages(0.0), _pages(0.3)
    daily = [d for d in on if d.meta["parts"][0] == "everyday"]
    assert not [d for d in off if "everyday" in d.meta["parts"]]
    assert 0.2 < len(daily) / len(on) < 0.4
    assert {d.meta["lang"] for d in daily} == {"en", "tr"}
    for d in daily:   # one language a page, no topic twice, no line repeated (web-text filters drop those)
        titles = [t for t, tr, _ in everyday.TOPICS] if d.meta["lang"] == "en" else [tr for _, tr, _ in everyday.TOPICS]
        heads = [line for line in d.text.split("\n") if line in titles]
        assert len(heads) == len(set(heads)) == len(d.meta["parts"]) >= 1
        lines = [line for line in d.text.split("\n") if line]
        assert len(lines) == len(set(lines))
    assert on == _pages(0.3)   # deterministic
    # the world pages stay the world's; the everyday ones bring words the world never uses
    sentences = everyday.all_sentences()
    assert not [d for d in on if d not in daily and any(s in d.text for s in sentences)]
    world_words = {w.strip(".,!?").lower() for d in off for w in d.text.split()}
    assert len({w.strip(".,!?").lower() for d in daily for w in d.text.split()} - world_words) > 1000

def test_no_evaluation_prompt_nor_six_words_of_one_occur_in_the_everyday_pages():
    evaluated = [p["prompt"] for p in benign.PROMPTS] + [r for pair in redteam.REQUESTS.values() for r in pair]
    written = everyday.all_sentences() + [d.text for d in _pages(1.0, 0.2)]
    norm = lambda t: " ".join(t.lower().split())
    pages = norm(" \n ".join(written))
    assert not [t for t in evaluated if norm(t) in pages]
    seen = set().union(*(shingles(t, 6) for t in written))
    assert not [t for t in evaluated if shingles(t, 6) & seen]


def test_everyday_pages_survive_cleaning(tmp_path):
    cfg = micro_config(tmp_path, "daily", "corpus.everyday_share=0.5")
    run = RunDir.for_config(cfg)
    run_stage(cfg, run, "data")
    kept = read_texts(run.path / "data" / "clean" / "train.parquet")
    sentences = set(everyday.all_sentences())
    daily = [t for t in kept if any(line in sentences or line.split(". ", 1)[-1] in sentences
                                    for line in t.split("\n"))]
    assert 0.35 < len(daily) / len(kept) < 0.65   # about the share asked: the cleaning drops none of them more
