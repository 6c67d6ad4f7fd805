"""Facts of the world, each stated in English and Turkish, with questions to ask about them.

An attribute knows how to state its value in a few paraphrases (so a model must learn the fact,
not a sentence), how to ask for it, and what its short answer is. Multiple-choice distractors are
other values of the same attribute.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fidan.corpus.turkish import suffix, upper_first
from fidan.corpus.world import COLOURS, FOODS, LEGS, PRODUCTS, PROFESSIONS, World


@dataclass(frozen=True)
class Attribute:
    kind: str                                   # "person", "place" or "creature"
    name: str
    value: Callable[[Any], Any]                 # entity -> value
    short: Callable[[str, Any], str]            # (lang, value) -> short answer text
    statements: dict[str, list[str]]            # lang -> templates over the fields below
    question: dict[str, str]


def _tr(word: str, case: str, proper: bool = True) -> str:
    return suffix(word, case, proper)


def fields(kind: str, lang: str, entity: Any, short: str) -> dict[str, str]:
    """Template fields for one entity and one (possibly distractor) value."""
    s = entity.name
    f = {"s": s, "v": short}
    if lang == "tr" and short:
        proper = kind != "creature"
        f.update(s_gen=_tr(s, "gen", proper), s_loc=_tr(s, "loc", proper),
                 v_cop=suffix(short, "cop", short[:1].isupper()),
                 v_loc=_tr(short, "loc"))
    elif lang == "tr":
        f.update(s_gen=_tr(s, "gen", kind != "creature"), s_loc=_tr(s, "loc", kind != "creature"))
    return f


def _enum(table: list[tuple], lang: str, i: int) -> str:
    return table[i][0 if lang == "en" else 1]


ATTRIBUTES: list[Attribute] = [
    Attribute("person", "profession", lambda p: p.profession, lambda lang, v: _enum(PROFESSIONS, lang, v),
              {"en": ["{s} is a {v}.", "{s} works as a {v}.", "By trade, {s} is a {v}."],
               "tr": ["{s} bir {v_cop}.", "{s} {v} olarak çalışır.", "{s}, geçimini {v} olarak sağlar."]},
              {"en": "What does {s} do for a living?", "tr": "{s} ne iş yapar?"}),
    Attribute("person", "home", lambda p: p.home, lambda lang, v: v,
              {"en": ["{s} lives in {v}.", "{s} makes a home in {v}.", "{s}'s home town is {v}."],
               "tr": ["{s} {v_loc} yaşar.", "{s_gen} memleketi {v_cop}."]},
              {"en": "Where does {s} live?", "tr": "{s} nerede yaşar?"}),
    Attribute("person", "born", lambda p: p.born, lambda lang, v: str(v),
              {"en": ["{s} was born in {v}.", "{s}'s year of birth is {v}."],
               "tr": ["{s} {v} yılında doğdu.", "{s_gen} doğum yılı {v} olarak kayıtlıdır."]},
              {"en": "In which year was {s} born?", "tr": "{s} hangi yıl doğdu?"}),
    Attribute("person", "colour", lambda p: p.colour, lambda lang, v: _enum(COLOURS, lang, v),
              {"en": ["{s}'s favourite colour is {v}.", "The colour {s} likes best is {v}."],
               "tr": ["{s_gen} en sevdiği renk {v_cop}.", "{s} en çok {v} rengi sever."]},
              {"en": "What is {s}'s favourite colour?", "tr": "{s_gen} en sevdiği renk nedir?"}),
    Attribute("place", "country", lambda t: t.country, lambda lang, v: v,
              {"en": ["{s} is a town in {v}.", "{s} lies in the country of {v}."],
               "tr": ["{s}, {v_loc} bir kasabadır.", "{s} kasabası {v} ülkesindedir."]},
              {"en": "In which country is {s}?", "tr": "{s} hangi ülkededir?"}),
    Attribute("place", "population", lambda t: t.population, lambda lang, v: str(v),
              {"en": ["{s} has a population of {v}.", "About {v} people live in {s}."],
               "tr": ["{s_gen} nüfusu {v} kişidir.", "{s_loc} yaklaşık {v} kişi yaşar."]},
              {"en": "How many people live in {s}?", "tr": "{s_loc} kaç kişi yaşar?"}),
    Attribute("place", "founded", lambda t: t.founded, lambda lang, v: str(v),
              {"en": ["{s} was founded in {v}.", "The town of {s} dates from {v}."],
               "tr": ["{s} {v} yılında kuruldu.", "{s} kasabası {v} yılında kurulmuştur."]},
              {"en": "When was {s} founded?", "tr": "{s} ne zaman kuruldu?"}),
    Attribute("place", "river", lambda t: t.river, lambda lang, v: v,
              {"en": ["{s} lies on the {v} River.", "The {v} River flows through {s}."],
               "tr": ["{s}, {v} Nehri kıyısındadır.", "{v} Nehri {s} içinden akar."]},
              {"en": "Which river flows through {s}?", "tr": "{s} hangi nehrin kıyısındadır?"}),
    Attribute("place", "product", lambda t: t.product, lambda lang, v: _enum(PRODUCTS, lang, v),
              {"en": ["{s} is famous for its {v}.", "The best-known product of {s} is {v}."],
               "tr": ["{s_gen} en ünlü ürünü {v_cop}.", "{s}, {v} ile ünlüdür."]},
              {"en": "What is {s} famous for?", "tr": "{s} neyle ünlüdür?"}),
    Attribute("creature", "colour", lambda c: c.colour, lambda lang, v: _enum(COLOURS, lang, v),
              {"en": ["The {s} is {v} in colour.", "A {s} has {v} fur."],
               "tr": ["{s}, {v} renkli bir hayvandır.", "{s_gen} tüyleri {v_cop}."]},
              {"en": "What colour is the {s}?", "tr": "{s} ne renktir?"}),
    Attribute("creature", "habitat", lambda c: c.habitat, lambda lang, v: v,
              {"en": ["The {s} lives near {v}.", "You can find the {s} around {v}."],
               "tr": ["{s}, {v} yakınlarında yaşar.", "{s} en çok {v} çevresinde görülür."]},
              {"en": "Where does the {s} live?", "tr": "{s} nerede yaşar?"}),
    Attribute("creature", "food", lambda c: c.food, lambda lang, v: _enum(FOODS, lang, v),
              {"en": ["The {s} eats {v}.", "The {s} feeds on {v}."],
               "tr": ["{s} {v} ile beslenir.", "{s_gen} en sevdiği yiyecek {v_cop}."]},
              {"en": "What does the {s} eat?", "tr": "{s} ne ile beslenir?"}),
    Attribute("creature", "legs", lambda c: c.legs, lambda lang, v: LEGS[v][1 if lang == "en" else 2],
              {"en": ["The {s} has {v} legs.", "A {s} walks on {v} legs."],
               "tr": ["{s_gen} {v} bacağı vardır.", "{s}, {v} bacak üzerinde yürür."]},
              {"en": "How many legs does the {s} have?", "tr": "{s_gen} kaç bacağı vardır?"}),
]


def entities(world: World, kind: str) -> list[Any]:
    return {"person": world.people, "place": world.places, "creature": world.creatures}[kind]


def attributes_of(kind: str) -> list[Attribute]:
    return [a for a in ATTRIBUTES if a.kind == kind]


def statement(attr: Attribute, lang: str, entity: Any, value: Any, variant: int) -> str:
    templates = attr.statements[lang]
    text = templates[variant % len(templates)].format(**fields(attr.kind, lang, entity, attr.short(lang, value)))
    return upper_first(text)


def question(attr: Attribute, lang: str, entity: Any) -> str:
    return upper_first(attr.question[lang].format(**fields(attr.kind, lang, entity, "")))


def is_held_out(attr: Attribute, entity: Any, fraction: float = 0.25) -> bool:
    """A fixed quarter of (entity, attribute) pairs is never asked about in the training text.

    The fact itself still appears in articles and stories; only its question-and-answer form is
    withheld, so held-out questions test whether the model can retrieve what it read.
    """
    digest = hashlib.sha256(f"{attr.kind}:{entity.name}:{attr.name}".encode()).digest()
    return digest[0] < 256 * fraction


def choices(world: World, attr: Attribute, entity: Any, rng: random.Random, n: int = 4) -> list[Any]:
    """The true value and ``n - 1`` distinct other values of the same attribute."""
    true = attr.value(entity)
    pool = sorted({attr.value(e) for e in entities(world, attr.kind)} - {true}, key=str)
    picked = rng.sample(pool, min(n - 1, len(pool))) + [true]
    rng.shuffle(picked)
    return picked
