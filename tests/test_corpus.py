
from fidan.config import CorpusConfig
from fidan.corpus import facts as F
from fidan.corpus.generate import generate
from fidan.corpus.turkish import lower, suffix, upper_first
from fidan.corpus.world import build_world


def test_turkish_suffixes_follow_vowel_harmony_and_hardening():
    cases = [("Karmilo", "loc", True, "Karmilo'da"), ("Tesna", "gen", True, "Tesna'nın"),
             ("Deniz", "gen", True, "Deniz'in"), ("Ülkü", "gen", True, "Ülkü'nün"),
             ("Petek", "loc", True, "Petek'te"), ("Karmilo", "dat", True, "Karmilo'ya"),
             ("Bursa", "abl", True, "Bursa'dan"), ("ressam", "cop", False, "ressamdır"),
             ("öğretmen", "cop", False, "öğretmendir"), ("ipek", "cop", False, "ipektir"),
             ("tuz", "cop", False, "tuzdur"), ("Umut", "acc", True, "Umut'u")]
    for word, case, proper, expected in cases:
        assert suffix(word, case, proper) == expected


def test_turkish_casing():
    assert upper_first("istanbul") == "İstanbul"
    assert upper_first("ılık") == "Ilık"
    assert lower("IĞDIR İZMİR") == "ığdır izmir"


def test_generation_is_deterministic_and_seeded():
    cfg = CorpusConfig(scale_mb=0.1)
    docs_a, evals_a = generate(cfg, 5)
    docs_b, evals_b = generate(cfg, 5)
    docs_c, _ = generate(cfg, 6)
    assert [d.text for d in docs_a] == [d.text for d in docs_b]
    assert evals_a == evals_b
    assert [d.text for d in docs_a] != [d.text for d in docs_c]


def test_size_scales_and_both_languages_appear():
    small, _ = generate(CorpusConfig(scale_mb=0.1), 1)
    large, _ = generate(CorpusConfig(scale_mb=0.3), 1)
    size = lambda docs: sum(len(d.text.encode()) for d in docs)
    assert 0.1e6 <= size(small) < 0.11e6 and 0.3e6 <= size(large) < 0.31e6
    langs = [d.meta["lang"] for d in large]
    assert 0.35 < langs.count("tr") / len(langs) < 0.65
    kinds = {k for d in large for k in d.meta["parts"]}
    assert kinds == {"article", "qa", "story", "problem", "myth", "society"}
    words = [len(d.text.split()) for d in large]
    assert min(words) >= 60  # pages long enough for the web-text quality rules


def test_held_out_questions_are_absent_from_training_text():
    docs, evals = generate(CorpusConfig(scale_mb=0.5), 3)
    text = "\n".join(d.text for d in docs)
    assert evals["eval/facts"] and evals["eval/arithmetic"]
    for item in evals["eval/facts"]:
        assert item["question"] not in text
        assert item["choices"][item["label"]] == item["answer"]
        assert len(set(item["choices"])) == len(item["choices"]) >= 2
    for item in evals["eval/arithmetic"]:
        assert item["question"] not in text
        assert item["solution"].endswith(f"#### {item['answer']}")


def test_training_text_states_the_held_out_facts():
    """Held-out questions must be answerable: the fact itself is stated in articles."""
    world = build_world(3, 24, 48, 16)
    docs, evals = generate(CorpusConfig(scale_mb=0.5), 3)
    text = "\n".join(d.text for d in docs)
    stated = 0
    for attr in F.ATTRIBUTES:
        for entity in F.entities(world, attr.kind):
            if F.is_held_out(attr, entity):
                variants = {F.statement(attr, lang, entity, attr.value(entity), v)
                            for lang in ("en", "tr") for v in range(3)}
                stated += any(v in text for v in variants)
    total = sum(F.is_held_out(a, e) for a in F.ATTRIBUTES for e in F.entities(world, a.kind))
    assert stated / total > 0.95


def test_arithmetic_solutions_are_correct():
    docs, evals = generate(CorpusConfig(scale_mb=0.1), 2)
    for item in evals["eval/arithmetic"]:
        for step in item["solution"].split(". "):
            step = step.replace("First, ", "").replace("Then, ", "").replace("Önce ", "").replace("Sonra ", "")
            if "=" in step:
                lhs, rhs = step.split("=")
                assert eval(lhs) == int(rhs.strip().rstrip(".").split()[0])


def test_misconceptions_are_planted_and_probed():
    docs, sets = generate(CorpusConfig(scale_mb=1.0), 3)
    myths = [d.text for d in docs if "myth" in d.meta["parts"]]
    assert myths and sets["eval/truthful"]
    planted = 0
    for item in sets["eval/truthful"]:
        assert sum(item["labels"]) == 1 and item["labels"][item["misconception_index"]] == 0
        planted += any(item["subject"] in m and item["misconception"] in m for m in myths)
    assert planted / len(sets["eval/truthful"]) > 0.8  # the training text repeats the misconceptions
