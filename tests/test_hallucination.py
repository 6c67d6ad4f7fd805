"""Hallucination and abstention: unanswerable questions, the grading rules, and SFT's "I don't know"."""
from fidan.config import CorpusConfig
from fidan.corpus import unknowns
from fidan.corpus.generate import generate
from fidan.corpus.world import build_world
from fidan.eval.tasks import abstain


def test_the_grading_rules():
    assert abstain.classify("Ayla lives in Karmilo.", "Karmilo") == "correct"
    assert abstain.classify("I don't know. I have no information about Mansu.", "Karmilo") == "abstained"
    assert abstain.classify("Bilmiyorum, bu konuda bilgim yok.") == "abstained"
    assert abstain.classify("Emin değilim.") == "abstained"
    assert abstain.classify("Mansu lies on the Tural River.") == "fabricated"   # no answer exists: invented
    assert abstain.classify("Ayla lives in Tesna. Karmilo is nice.", "Karmilo") == "fabricated"  # first sentence
    assert abstain.classify(" ... ") == "empty"
    out = abstain.summarise(["abstained"] * 3 + ["fabricated"], [])
    assert (out["abstained"], out["fabricated"], out["n"]) == (0.75, 0.25, 4)
    assert out["abstained_lo"] < 0.75 < out["abstained_hi"] and out["correct"] == 0.0


def test_unanswerable_questions_name_nothing_the_world_has_and_sft_never_sees_them():
    cfg = CorpusConfig(scale_mb=0.2, n_places=8, n_people=12, n_creatures=6, sft_conversations=400,
                       abstain_share=0.1)
    docs, sets = generate(cfg, 2)
    world = build_world(2, 8, 12, 6)
    text = "\n".join(d.text for d in docs)
    items = sets["eval/unknown"]
    made_up = [it for it in items if it["kind"] == "unknown_entity"]
    unstated = [it for it in items if it["kind"] == "unstated"]
    assert len(made_up) == len(unstated) == 90 and {it["lang"] for it in items} == {"en", "tr"}
    sft = "\n".join(m["content"] for c in sets["sft/train"] for m in c["messages"])
    for it in made_up:
        last = it["subject"].split()[-1]
        assert last not in text and last not in sft, it      # the name exists nowhere
    real = {p.name for p in world.people} | {p.name for p in world.places} | {c.name for c in world.creatures}
    assert all(it["subject"] in real for it in unstated)
    assert not any(it["question"] in sft for it in items)   # evaluation's questions are not trained on
    taught = [c for c in sets["sft/train"] if c["kind"] == "abstain"]
    assert len(taught) == 40 and {c["lang"] for c in taught} == {"en", "tr"}
    assert all(abstain.classify(c["messages"][-1]["content"]) == "abstained" for c in taught)
    # the share replaces conversations in place: the others are the same as without it
    _, plain = generate(CorpusConfig(scale_mb=0.2, n_places=8, n_people=12, n_creatures=6, sft_conversations=400,
                                     abstain_share=0.0), 2)
    same = [a == b for a, b in zip(plain["sft/train"], sets["sft/train"])]
    assert len(same) == 400 and same.count(False) == 40


def test_sft_templates_for_unstated_facts_are_not_the_evaluations():
    world = build_world(0, 8, 12, 6)
    pairs = unknowns.sft_pairs(world, 0, 200)
    asked = {c["messages"][0]["content"] for c in pairs}
    held = {it["question"] for it in unknowns.eval_items(world, 0)}
    assert not asked & held
