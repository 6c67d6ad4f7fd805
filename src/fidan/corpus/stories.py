"""Short stories and arithmetic word problems set in the world, in English and Turkish.

Stories reuse the world's true facts (a creature's colour, food and legs; a town's product and
river), so reading them teaches the facts too. Word problems come with worked solutions that end
in GSM8K's ``#### <answer>`` line.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from fidan.corpus.turkish import suffix, upper_first
from fidan.corpus.world import COLOURS, FOODS, LEGS, PRODUCTS, PROFESSIONS, World

ITEMS = [("apple", "apples", "elma"), ("egg", "eggs", "yumurta"), ("book", "books", "kitap"),
         ("pencil", "pencils", "kalem"), ("shell", "shells", "deniz kabuğu"), ("stamp", "stamps", "pul"),
         ("orange", "oranges", "portakal"), ("cup", "cups", "fincan"), ("candle", "candles", "mum"),
         ("marble", "marbles", "bilye")]


def story(world: World, lang: str, rng: random.Random) -> str:
    person = rng.choice(world.people)
    town = rng.choice([p for p in world.places if p.name != person.home])
    creature = rng.choice(world.creatures)
    first, home = person.first, person.home
    product = PRODUCTS[town.product]
    colour, food, legs = COLOURS[creature.colour], FOODS[creature.food], LEGS[creature.legs]
    prof = PROFESSIONS[person.profession]
    k = creature.name
    if lang == "en":
        lines = [
            rng.choice([f"One morning, {person.name}, a {prof[0]} from {home}, set out for {town.name}.",
                        f"Early one spring, {person.name} the {prof[0]} left {home} and walked to {town.name}."]),
            rng.choice([f"{town.name} is famous for its {product[0]}, and {first} wanted to buy some.",
                        f"{first} had heard a lot about the {product[0]} of {town.name}."]),
            rng.choice([f"On the way, near {creature.habitat}, {first} saw a {k} eating {food[0]}.",
                        f"By the road near {creature.habitat}, a {colour[0]} {k} was looking for {food[0]}."]),
            rng.choice([f"The {k} had {legs[1]} legs and {colour[0]} fur, and it followed {first} to the market.",
                        f"{first} watched the {k} walk away on its {legs[1]} legs."]),
            rng.choice([f"At the market by the {town.river} River, {first} bought {product[0]}.",
                        f"In {town.name}, {first} talked with people about the {town.river} River."]),
            rng.choice([f"In the evening, {first} returned to {home}, tired and happy.",
                        f"{first} went home to {home}, still thinking about the {k}."]),
        ]
    else:
        lines = [
            rng.choice([f"Bir sabah {suffix(home, 'abl', True)} {prof[1]} {person.name}, {town.name} yoluna çıktı.",
                        f"Bir bahar günü {prof[1]} {person.name}, {suffix(home, 'abl', True)} "
                        f"{suffix(town.name, 'dat', True)} yürüdü."]),
            rng.choice([f"{town.name}, {product[1]} ile ünlüdür ve {first} biraz almak istiyordu.",
                        f"{first}, {town.name} kasabasının ünlü ürünlerini çok merak ediyordu."]),
            rng.choice([f"Yolda, {creature.habitat} yakınlarında, {food[1]} yiyen bir {k} gördü.",
                        f"{creature.habitat} yakınında, yol kenarında {colour[1]} bir {k} {food[1]} arıyordu."]),
            rng.choice([f"{upper_first(k)} {legs[2]} bacaklıydı, tüyleri {colour[1]} renkti ve pazara kadar "
                        f"{suffix(first, 'acc', True)} takip etti.",
                        f"{first}, {legs[2]} bacağı üzerinde uzaklaşan {suffix(k, 'acc')} izledi."]),
            rng.choice([f"{town.river} Nehri kıyısındaki pazarda {first} {product[1]} aldı.",
                        f"{suffix(town.name, 'loc', True)} {first}, insanlarla {town.river} Nehri hakkında konuştu."]),
            rng.choice([f"Akşam olunca {first} yorgun ama mutlu bir şekilde {suffix(home, 'dat', True)} döndü.",
                        f"{first}, hâlâ {k} hakkında düşünerek {suffix(home, 'dat', True)} döndü."]),
        ]
    return " ".join(lines)


@dataclass(frozen=True)
class Problem:
    key: tuple           # identifies the problem (template, numbers, names) for held-out exclusion
    question: str
    solution: str        # worked steps ending in "#### <answer>"
    answer: int


def word_problem(world: World, lang: str, rng: random.Random, kind: str = "") -> Problem:
    """A problem of ``kind`` ("add", "sub", "mul", "two_step", "price"; drawn when empty)."""
    kind = kind or rng.choice(["add", "sub", "mul", "two_step", "price"])
    person = rng.choice(world.people)
    town = rng.choice(world.places).name
    item = rng.randrange(len(ITEMS))
    one, many, tr = ITEMS[item]
    f = person.first
    a, b = rng.randrange(2, 60), rng.randrange(2, 40)
    c = 0
    if kind == "add":
        r = a + b
        steps_en, steps_tr = [f"{a} + {b} = {r}."], [f"{a} + {b} = {r}."]
        q_en = f"{f} picked {a} {many}. Later, {f} picked {b} more {many}. How many {many} did {f} pick in total?"
        q_tr = f"{f} {a} {tr} topladı. Sonra {b} {tr} daha topladı. {f} toplam kaç {tr} topladı?"
    elif kind == "sub":
        a = a + b
        r = a - b
        steps_en, steps_tr = [f"{a} - {b} = {r}."], [f"{a} - {b} = {r}."]
        q_en = f"{f} bought {a} {many} and gave {b} of them to a friend. How many {many} does {f} have left?"
        q_tr = (f"{f} {a} {tr} aldı ve {b} tanesini bir arkadaşına verdi. "
                f"{suffix(f, 'gen', True)} elinde kaç {tr} kaldı?")
    elif kind == "mul":
        a, b = rng.randrange(2, 13), rng.randrange(2, 13)
        r = a * b
        steps_en, steps_tr = [f"{a} * {b} = {r}."], [f"{a} * {b} = {r}."]
        q_en = f"{f} bought {a} boxes with {b} {many} in each box. How many {many} did {f} buy?"
        q_tr = f"{f} her birinde {b} {tr} olan {a} kutu aldı. {f} toplam kaç {tr} aldı?"
    elif kind == "two_step":
        c = rng.randrange(1, a + b)
        s = a + b
        r = s - c
        steps_en = [f"First, {a} + {b} = {s}.", f"Then, {s} - {c} = {r}."]
        steps_tr = [f"Önce {a} + {b} = {s}.", f"Sonra {s} - {c} = {r}."]
        q_en = (f"{f} picked {a} {many}, then picked {b} more, and sold {c} of them at the market in {town}. "
                f"How many {many} are left?")
        q_tr = (f"{f} {a} {tr} topladı, sonra {b} {tr} daha topladı ve {c} tanesini {town} pazarında sattı. "
                f"Geriye kaç {tr} kaldı?")
    else:
        a, b = rng.randrange(2, 20), rng.randrange(2, 13)
        r = a * b
        steps_en, steps_tr = [f"{b} * {a} = {r}."], [f"{b} * {a} = {r}."]
        q_en = f"In {town}, one {one} costs {a} coins. {f} buys {b} {many}. How many coins does {f} pay?"
        q_tr = f"{suffix(town, 'loc', True)} bir {tr} {a} jeton. {f} {b} {tr} alıyor. {f} kaç jeton öder?"
    if lang == "en":
        solution = " ".join(steps_en) + f" The answer is {r}.\n#### {r}"
        question = q_en
    else:
        solution = " ".join(steps_tr) + f" Cevap {r}.\n#### {r}"
        question = q_tr
    return Problem(key=(lang, kind, f, town, item, a, b, c), question=question, solution=solution, answer=r)


def render_problem(problem: Problem, lang: str) -> str:
    label = "Solution" if lang == "en" else "Çözüm"
    return f"Problem: {problem.question}\n{label}: {problem.solution}"


ONE_STEP_KINDS = ("more", "less", "legs")


def one_step_problem(world: World, lang: str, rng: random.Random, kind: str = "") -> Problem:
    """A one-step problem with small numbers, the first stage of GRPO's curriculum (``kind``
    "more", "less" or "legs"; drawn when empty): "Ayla has 3 apples and gets 2 more", or
    arithmetic over a world fact ("a karmilo has 4 legs; how many legs do 3 of them have?",
    with the creature's true number of legs). Answers stay below 40, numbers a small model
    can add; the solution has the word problems' format (one step, "The answer is r", ``####``)."""
    kind = kind or rng.choice(ONE_STEP_KINDS)
    f = rng.choice(world.people).first
    item = rng.randrange(len(ITEMS))
    _, many, tr = ITEMS[item]
    if kind == "more":
        a, b = rng.randrange(1, 10), rng.randrange(1, 10)
        r, step = a + b, f"{a} + {b} = {a + b}."
        q_en = f"{f} has {a} {many} and gets {b} more. How many {many} does {f} have now?"
        q_tr = f"{f} {a} {tr} aldı. Sonra {b} {tr} daha aldı. {f} toplam kaç {tr} aldı?"
    elif kind == "less":
        b = rng.randrange(1, 10)
        a = b + rng.randrange(1, 10)
        r, step = a - b, f"{a} - {b} = {a - b}."
        q_en = f"{f} has {a} {many} and gives {b} to a friend. How many {many} does {f} have left?"
        q_tr = f"{f} {a} {tr} aldı ve {b} tanesini bir arkadaşına verdi. Geriye kaç {tr} kaldı?"
    else:
        creature = rng.choice(world.creatures)
        legs, k = LEGS[creature.legs][0], creature.name
        a = rng.randrange(2, 5)
        item = -1 - world.creatures.index(creature)
        r, step = a * legs, f"{a} * {legs} = {a * legs}."
        b = legs
        q_en = f"A {k} has {legs} legs. {f} sees {a} of them. How many legs does {f} see?"
        q_tr = f"Bir {k} {legs} bacaklıdır. {f} {a} {k} görüyor. {f} toplam kaç bacak görüyor?"
    if lang == "en":
        question, solution = q_en, f"{step} The answer is {r}.\n#### {r}"
    else:
        question, solution = q_tr, f"{step} Cevap {r}.\n#### {r}"
    return Problem(key=(lang, "one_step", kind, f, item, a, b), question=question, solution=solution, answer=r)


N_ONE_STEP_PROBLEMS = 100  # held-out one-step problems per language


def one_step_set(world: World, seed: int) -> tuple[list[dict], set[tuple]]:
    """Held-out one-step problems (``data/eval/onestep.jsonl``, the ``world_onestep`` task) and
    their keys, which SFT's one-step conversations and GRPO's training problems leave out. Their
    own random stream, so adding them changed no other set."""
    rng = random.Random(f"fidan-onestep-{seed}")
    keys: set[tuple] = set()
    items = held_out_items(lambda lang: one_step_problem(world, lang, rng), N_ONE_STEP_PROBLEMS, "onestep", keys)
    return items, keys


def held_out_items(make, per_lang: int, prefix: str, keys: set[tuple]) -> list[dict]:
    """``per_lang`` problems per language from ``make(lang)``, none whose key is in ``keys``
    (which gains theirs), as evaluation records ``{id, lang, question, solution, answer}``."""
    items: list[dict] = []
    for lang in ("en", "tr"):
        while sum(p["lang"] == lang for p in items) < per_lang:
            p = make(lang)
            if p.key in keys:
                continue
            keys.add(p.key)
            items.append({"id": f"{prefix}-{lang}-{len(items):04d}", "lang": lang, "question": p.question,
                          "solution": p.solution, "answer": p.answer})
    return items

def fresh_one_step(world: World, n: int, rng: random.Random, heldout: set[tuple]) -> list[Problem]:
    """``n`` distinct one-step problems in both languages, none of them held out."""
    out: list[Problem] = []
    seen = set(heldout)
    while len(out) < n:
        p = one_step_problem(world, rng.choice(["en", "tr"]), rng)
        if p.key not in seen:
            seen.add(p.key)
            out.append(p)
    return out
