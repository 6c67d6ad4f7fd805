"""Issue 19, item 1 (stop 29): SFT fact questions spread evenly over the world's subjects
(``sft.subject_facts``)."""
import collections

import pytest

from fidan.corpus import facts as F
from fidan.corpus.instructions import subject_conversations
from fidan.corpus.world import build_world
from fidan.pipeline import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")


def test_subject_facts_ask_every_subject_equally_and_never_a_held_out_pair():
    world = build_world(3, 12, 20, 8)
    subjects = {e.name: [a for a in F.attributes_of(kind) if not F.is_held_out(a, e)]
                for kind in {a.kind for a in F.ATTRIBUTES} for e in F.entities(world, kind)}
    subjects = {name: usable for name, usable in subjects.items() if usable}
    pairs = [(a, e, lang) for a in F.ATTRIBUTES for e in F.entities(world, a.kind) for lang in ("en", "tr")]
    subject_of = {F.question(a, lang, e): e.name for a, e, lang in pairs}
    held_out = {F.question(a, lang, e) for a, e, lang in pairs if F.is_held_out(a, e)}
    made = subject_conversations(world, 3 * len(subjects), 0)
    asked = [m["content"] for c in made for m in c["messages"] if m["role"] == "user"]
    assert held_out and not held_out & set(asked)
    named = collections.Counter(subject_of[q] for q in asked)
    assert set(named) == set(subjects) and set(named.values()) == {3}   # each subject three times
    few = min(subjects, key=lambda name: len(subjects[name]))   # a subject whose pairs are mostly held out
    assert len(subjects[few]) < max(map(len, subjects.values())) and named[few] == 3
    assert made == subject_conversations(world, 3 * len(subjects), 0)   # the same for the same seed


def test_the_sft_stage_adds_the_subject_facts(pretrained_copy, capsys):
    cfg, run = pretrained_copy
    cfg.sft.steps, cfg.sft.eval_items, cfg.sft.subject_facts = 1, 1, 25
    run_stage(cfg, run, "sft")
    assert "+ 25 fact questions spread evenly over the subjects" in capsys.readouterr().out
