"""An invented world: countries, towns, people and creatures with fixed facts.

Everything is drawn from a seeded random generator, so the same seed always gives the same
world. Names use letters that read the same in English and Turkish; the vocabularies below carry
both languages side by side.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

# (english, turkish) pairs -------------------------------------------------------------------
PROFESSIONS = [("baker", "fırıncı"), ("sailor", "denizci"), ("painter", "ressam"), ("teacher", "öğretmen"),
               ("doctor", "doktor"), ("farmer", "çiftçi"), ("musician", "müzisyen"), ("weaver", "dokumacı"),
               ("fisher", "balıkçı"), ("potter", "çömlekçi"), ("clockmaker", "saatçi"), ("beekeeper", "arıcı")]
COLOURS = [("red", "kırmızı"), ("blue", "mavi"), ("green", "yeşil"), ("yellow", "sarı"), ("purple", "mor"),
           ("orange", "turuncu"), ("white", "beyaz"), ("black", "siyah"), ("grey", "gri"), ("brown", "kahverengi")]
PRODUCTS = [("copper bells", "bakır çanlar"), ("blue cheese", "mavi peynir"), ("wool carpets", "yün halılar"),
            ("glass lamps", "cam lambalar"), ("honey", "bal"), ("olive oil", "zeytinyağı"),
            ("paper kites", "kâğıt uçurtmalar"), ("salt", "tuz"), ("silk", "ipek"), ("clocks", "saatler"),
            ("wooden boats", "ahşap tekneler"), ("apples", "elmalar"), ("figs", "incirler"), ("tea", "çay")]
FOODS = [("seeds", "tohum"), ("fish", "balık"), ("leaves", "yaprak"), ("honey", "bal"), ("mushrooms", "mantar"),
         ("insects", "böcek"), ("roots", "kök"), ("fruit", "meyve"), ("grass", "ot")]
LEGS = [(2, "two", "iki"), (4, "four", "dört"), (6, "six", "altı"), (8, "eight", "sekiz")]
FIRST_NAMES = ["Ayla", "Deniz", "Emre", "Selin", "Can", "Mira", "Arda", "Lena", "Omar", "Nora", "Kaan", "Elif",
               "Tomas", "Yara", "Umut", "Sara", "Bora", "Ada", "Levent", "Iris", "Mert", "Nina", "Oren", "Defne",
               "Pelin", "Rafi", "Sena", "Timur", "Vera", "Zeki", "Lara", "Kerem"]

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "tr", "st"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["", "", "", "n", "r", "l", "s", "m", "k"]


@dataclass(frozen=True)
class Place:
    name: str
    country: str
    population: int
    founded: int
    river: str
    product: int      # index into PRODUCTS


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    profession: int   # index into PROFESSIONS
    home: str         # a Place name
    born: int
    colour: int       # index into COLOURS

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass(frozen=True)
class Creature:
    name: str
    colour: int
    habitat: str      # a Place name
    food: int         # index into FOODS
    legs: int         # index into LEGS


@dataclass
class World:
    countries: list[str]
    rivers: list[str]
    places: list[Place]
    people: list[Person]
    creatures: list[Creature]

    def place(self, name: str) -> Place:
        return next(p for p in self.places if p.name == name)


def _word(rng: random.Random, syllables: int) -> str:
    parts = []
    for i in range(syllables):
        coda = rng.choice(_CODAS) if i == syllables - 1 else rng.choice(["", "", "n", "r", "l"])
        parts.append(rng.choice(_ONSETS) + rng.choice(_VOWELS) + coda)
    return "".join(parts).capitalize()


def _names(rng: random.Random, n: int, syllables: tuple[int, ...], taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        w = _word(rng, rng.choice(syllables))
        if w not in taken and len(w) >= 4:
            taken.add(w)
            out.append(w)
    return out


def build_world(seed: int, n_places: int = 24, n_people: int = 48, n_creatures: int = 16) -> World:
    rng = random.Random(f"fidan-world-{seed}")
    taken: set[str] = set(FIRST_NAMES)
    countries = _names(rng, 4, (3,), taken)
    rivers = _names(rng, 6, (2,), taken)
    places = [Place(name=n, country=rng.choice(countries), population=rng.randrange(8, 900) * 100,
                    founded=rng.randrange(1100, 1900), river=rng.choice(rivers),
                    product=rng.randrange(len(PRODUCTS)))
              for n in _names(rng, n_places, (2, 3), taken)]
    surnames = _names(rng, n_people, (2, 3), taken)
    people = [Person(first=rng.choice(FIRST_NAMES), last=s, profession=rng.randrange(len(PROFESSIONS)),
                     home=rng.choice(places).name, born=rng.randrange(1940, 2005),
                     colour=rng.randrange(len(COLOURS)))
              for s in surnames]
    creatures = [Creature(name=n.lower(), colour=rng.randrange(len(COLOURS)), habitat=rng.choice(places).name,
                          food=rng.randrange(len(FOODS)), legs=rng.randrange(len(LEGS)))
                 for n in _names(rng, n_creatures, (2,), taken)]
    return World(countries, rivers, places, people, creatures)
