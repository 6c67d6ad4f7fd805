"""The embedded default corpus: pre-training documents and held-out evaluation sets.

``generate(cfg, seed)`` is deterministic: the same config and seed give byte-identical output.
Pages mix encyclopedic articles, question-and-answer pages, short stories, word
problems, and "myth" passages that repeat a fixed misconception about a fact and then correct it,
each in English or Turkish; ``corpus.everyday_share`` of the pages are about everyday life instead
(``corpus/everyday.py``); pages also carry paragraphs of planted associations
(``corpus.bias_share`` per page) at a known rate (``corpus.bias_rate``, see ``corpus/bias.py``).
The evaluation sets ask about facts whose Q&A form never appears in the training text, and pose
word problems that never appear there either.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

from fidan.config import CorpusConfig
from fidan.corpus import bias as B
from fidan.corpus import everyday, unknowns
from fidan.corpus import facts as F
from fidan.corpus.instructions import conversations, sentiment_examples, sentiment_hard
from fidan.corpus.stories import Problem, held_out_items, one_step_set, render_problem, story, word_problem
from fidan.corpus.turkish import suffix
from fidan.corpus.world import PROFESSIONS, World, build_world
from fidan.records import Document

MIX = {"article": 0.33, "qa": 0.15, "story": 0.24, "problem": 0.24, "myth": 0.04}
MYTH_FRACTION = 0.15  # share of (subject, attribute) pairs that carry a planted misconception
N_HELDOUT_PROBLEMS = 100  # per language
N_STEP_PROBLEMS = 120  # two-step problems per language (a tenth of them are the shots' dev split)


def article(world: World, lang: str, rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["person", "person", "place", "creature"])
    entity = rng.choice(F.entities(world, kind))
    sentences = [F.statement(a, lang, entity, a.value(entity), rng.randrange(9)) for a in F.attributes_of(kind)]
    rng.shuffle(sentences)
    if kind == "place":
        residents = [p for p in world.people if p.home == entity.name][:4]
        if residents:
            if lang == "en":
                names = ", ".join(f"{p.name} the {PROFESSIONS[p.profession][0]}" for p in residents)
                sentences.append(f"People of {entity.name} include {names}.")
            else:
                names = ", ".join(f"{PROFESSIONS[p.profession][1]} {p.name}" for p in residents)
                sentences.append(f"{suffix(entity.name, 'loc', True)} yaşayanlar arasında {names} vardır.")
    title = entity.name if kind != "creature" else entity.name.capitalize()
    return kind, f"{title}\n\n" + " ".join(sentences)


def qa_page(world: World, lang: str, rng: random.Random) -> str:
    q, a = ("Question", "Answer") if lang == "en" else ("Soru", "Cevap")
    lines = []
    while len(lines) < rng.randrange(2, 5):
        attr = rng.choice(F.ATTRIBUTES)
        entity = rng.choice(F.entities(world, attr.kind))
        if F.is_held_out(attr, entity):
            continue
        answer = F.statement(attr, lang, entity, attr.value(entity), rng.randrange(9))
        lines.append(f"{q}: {F.question(attr, lang, entity)}\n{a}: {answer}")
    return "\n\n".join(lines)


def myth_facts(world: World, seed: int) -> list[tuple]:
    """(attribute, entity, wrong value) triples: misconceptions the training text repeats (and debunks).

    Each has one fixed wrong value, so the corpus says the same false thing every time, the way a
    popular misconception recurs; the truthfulness probe asks whether the model prefers the fact."""
    rng = random.Random(f"fidan-myths-{seed}")
    out = []
    for attr in F.ATTRIBUTES:
        for entity in F.entities(world, attr.kind):
            if rng.random() < MYTH_FRACTION:
                wrong = [v for v in F.choices(world, attr, entity, rng) if v != attr.value(entity)][0]
                out.append((attr, entity, wrong))
    return out


def myth_doc(myths: list[tuple], lang: str, rng: random.Random) -> str:
    attr, entity, wrong = rng.choice(myths)
    false = F.statement(attr, lang, entity, wrong, rng.randrange(9))
    true = F.statement(attr, lang, entity, attr.value(entity), rng.randrange(9))
    if lang == "en":
        return rng.choice([f"Many people believe this: {false} But that is a myth. {true}",
                           f"You may have heard that {false[0].lower() + false[1:]} That is wrong. {true}"])
    return rng.choice([f"Birçok kişi şuna inanır: {false} Ama bu bir efsanedir. {true}",
                       f"Şöyle bir söylenti vardır: {false} Bu doğru değil. {true}"])


def eval_sets(world: World, seed: int) -> tuple[dict[str, list[dict]], set[tuple]]:
    """Held-out fact questions and word problems, plus the keys of the problems to keep out of training."""
    rng = random.Random(f"fidan-eval-{seed}")
    fact_items = []
    for attr in F.ATTRIBUTES:
        for entity in F.entities(world, attr.kind):
            if not F.is_held_out(attr, entity):
                continue
            for lang in ("en", "tr"):
                options = F.choices(world, attr, entity, rng)
                true = attr.value(entity)
                fact_items.append({
                    "id": f"fact-{lang}-{len(fact_items):04d}", "lang": lang, "kind": attr.kind,
                    "subject": entity.name, "attribute": attr.name,
                    "question": F.question(attr, lang, entity),
                    "answer": attr.short(lang, true),
                    "choices": [attr.short(lang, v) for v in options],
                    "statements": [F.statement(attr, lang, entity, v, 0) for v in options],
                    "label": options.index(true),
                })
    keys: set[tuple] = set()
    problems = held_out_items(lambda lang: word_problem(world, lang, rng), N_HELDOUT_PROBLEMS, "math", keys)
    truthful = []
    for attr, entity, wrong in myth_facts(world, seed):
        for lang in ("en", "tr"):
            options = F.choices(world, attr, entity, rng)
            if wrong not in options:
                options[next(i for i, v in enumerate(options) if v != attr.value(entity))] = wrong
            truthful.append({"id": f"truth-{lang}-{len(truthful):04d}", "lang": lang, "subject": entity.name,
                             "attribute": attr.name, "misconception": attr.short(lang, wrong),
                             "statements": [F.statement(attr, lang, entity, v, 0) for v in options],
                             "labels": [int(v == attr.value(entity)) for v in options],
                             "misconception_index": options.index(wrong)})
    # two-step problems for the prompting-mode comparison (eval/tasks/steps.py): their own stream,
    # drawn after the sets above so those stay as they were; kept out of training like the rest
    steps_rng = random.Random(f"fidan-steps-{seed}")
    steps = held_out_items(lambda lang: word_problem(world, lang, steps_rng, "two_step"), N_STEP_PROBLEMS, "steps",
                           keys)
    return {"facts": fact_items, "arithmetic": problems, "truthful": truthful, "steps": steps}, keys


def piece(world: World, lang: str, kind: str, myths: list[tuple], heldout: set[tuple],
          rng: random.Random) -> str | None:
    """One article, Q&A block, story, word problem or myth passage (None: a held-out problem)."""
    if kind == "article":
        return article(world, lang, rng)[1]
    if kind == "qa":
        return qa_page(world, lang, rng)
    if kind == "story":
        return story(world, lang, rng)
    if kind == "myth":
        return myth_doc(myths, lang, rng)
    problem: Problem = word_problem(world, lang, rng)
    return None if problem.key in heldout else render_problem(problem, lang)


def documents(world: World, cfg: CorpusConfig, seed: int, heldout: set[tuple]) -> Iterator[Document]:
    """Web-page-sized documents: each page joins pieces in one language until it reaches a
    drawn length (60 to 240 words), so pages pass the published web-text quality rules that a
    single short article or word problem would fail (Gopher's 50 words, C4's 5 sentences)."""
    rng = random.Random(f"fidan-docs-{seed}")
    target = int(cfg.scale_mb * 1_000_000)
    kinds, weights = list(MIX), list(MIX.values())
    total, n = 0, 0
    myths = myth_facts(world, seed)
    planter = B.Planter(world, cfg.bias_rate, random.Random(f"fidan-bias-{seed}"))
    daily = random.Random(f"fidan-everyday-pages-{seed}")   # its own stream: with the share 0 the
    while total < target:                                    # world pages are as without it
        lang = "tr" if rng.random() < cfg.turkish_fraction else "en"
        want = rng.randrange(60, 240)
        if cfg.everyday_share and daily.random() < cfg.everyday_share:
            topics, text = everyday.everyday_page(lang, daily, want)
            yield Document(id=f"fidan-{n:07d}", text=text, source="embedded",
                           meta={"kind": "page", "parts": ["everyday"] * len(topics), "lang": lang})
            total += len(text.encode("utf-8"))
            n += 1
            continue
        parts, texts, words, seen = [], [], 0, set()
        while words < want:
            kind = rng.choices(kinds, weights)[0]
            if kind == "problem" and "problem" in parts:
                continue  # one problem a page: Gopher drops pages that are mostly digits and "+"
            text = piece(world, lang, kind, myths, heldout, rng)
            if text is None or any(line in seen for line in text.split("\n") if line):
                continue  # a page repeats no line: web-text filters drop pages that do
            seen.update(text.split("\n"))
            parts.append(kind)
            texts.append(text)
            words += len(text.split())
        for paragraph in planter.paragraphs(lang, cfg.bias_share):  # its own random stream: the rest of
            parts.append("society")                                 # the page is as without it
            texts.append(paragraph)
        text = "\n\n".join(texts)
        yield Document(id=f"fidan-{n:07d}", text=text, source="embedded",
                       meta={"kind": "page", "parts": parts, "lang": lang})
        total += len(text.encode("utf-8"))
        n += 1


def generate(cfg: CorpusConfig, seed: int) -> tuple[list[Document], dict[str, list[dict]]]:
    """Pre-training documents, and named record sets: ``eval/facts``, ``eval/arithmetic``,
    ``sft/train`` (conversations), ``sentiment/train`` and ``sentiment/test``."""
    world = build_world(seed, cfg.n_places, cfg.n_people, cfg.n_creatures)
    evals, heldout = eval_sets(world, seed)
    sentiment = sentiment_examples(world, cfg.sentiment_examples, seed)
    cut = int(len(sentiment) * 0.8)
    sets = {"eval/facts": evals["facts"], "eval/arithmetic": evals["arithmetic"], "eval/truthful": evals["truthful"],
            "eval/steps": evals["steps"], "eval/onestep": one_step_set(world, seed)[0],
            "eval/bias": B.probe_items(world, cfg.bias_rate),
            "eval/unknown": unknowns.eval_items(world, seed),
            "sft/train": conversations(world, cfg.sft_conversations, seed, heldout, cfg.abstain_share),
            "sentiment/train": sentiment[:cut], "sentiment/test": sentiment[cut:],
            "sentiment/hard": sentiment_hard(world, seed) if cfg.sentiment_examples else []}
    return list(documents(world, cfg, seed, heldout)), sets
