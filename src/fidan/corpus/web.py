"""A noisy web crawl built around the clean pages, with every fault labelled.

Real crawls are mostly not usable text. ``noisy_web`` takes the clean pages of the embedded
corpus and returns the stream a crawler would have produced: the clean pages, some of them
wrapped in navigation and cookie notices, some carrying personal data (emails, phone numbers,
IP addresses, IBANs, Turkish identity numbers) or a copied evaluation question; plus exact and
near copies of pages (edited until word 5-gram Jaccard similarity is between 0.8 and 1), keyword
spam, error pages, and pages in German, French, Spanish and Italian.

Two mixes (``corpus.realism``): ``demo`` keeps the crawl mostly clean pages (cleaning keeps about
three quarters of the documents, so a small demo has text to train on); ``web`` surrounds the
same clean pages with the junk a real crawl is made of, in the proportions that published
pipelines report removing (RefinedWeb, FineWeb: language filtering takes about half of the
documents, quality and repetition rules and deduplication most of the rest), so cleaning keeps
10-20% of the documents. It adds two kinds of junk page: listings (menus, product lists, link
lists: lines without sentences) and template pages (one boilerplate paragraph repeated). In both
mixes ``corpus.scale_mb`` is the size of the clean pages: the web mix's crawl is several times
larger, and what survives cleaning is the same amount of text.

The second return value is the ground truth, one record per document: its label, language, and
what was planted. The cleaning stage never reads it; ``fidan.data.groundtruth`` scores the
stage's output against it, so precision and recall are measured rather than assumed.
"""
from __future__ import annotations

import random

from fidan.config import MAX_NOISE
from fidan.errors import FidanError
from fidan.records import Document
from fidan.text import jaccard

# Shares of the number of clean pages; "noise" in the config scales them all.
FAULTS = {"exact_dup": 0.08, "near_dup": 0.08, "boilerplate": 0.06, "pii": 0.05, "contaminated": 0.03,
          "spam": 0.05, "short": 0.05, "foreign": 0.06, "listing": 0.0, "template": 0.0}
# The web mix: for each clean page about 5.5 junk documents (so 15% of the crawl is worth keeping),
# of which foreign-language pages are the largest part, and most kept pages carry navigation.
WEB_FAULTS = {"exact_dup": 0.6, "near_dup": 0.5, "boilerplate": 0.3, "pii": 0.05, "contaminated": 0.03,
              "spam": 0.4, "short": 0.5, "foreign": 2.6, "listing": 0.5, "template": 0.3}
MIXES = {"demo": FAULTS, "web": WEB_FAULTS}
MIN_EACH = 4

NAV = {
    "en": ["Home | About us | Products | Contact | Login", "Skip to main content",
           "Menu Search Sign in Register", "Share on Facebook Twitter WhatsApp"],
    "tr": ["Ana Sayfa | Hakkımızda | Ürünler | İletişim | Giriş", "İçeriğe geç",
           "Menü Ara Giriş yap Kayıt ol", "Paylaş Facebook Twitter WhatsApp"],
}
FOOTER = {
    "en": ["This site uses cookies to improve your experience. Read our cookie policy.",
           "By using this site you agree to our terms of use and privacy policy.",
           "Copyright 2024 All rights reserved", "Please enable JavaScript to view the comments."],
    "tr": ["Bu site deneyiminizi iyileştirmek için çerezleri kullanır. Çerez politikamızı okuyun.",
           "Siteyi kullanarak kullanım koşullarını ve gizlilik politikasını kabul etmiş olursunuz.",
           "Telif hakkı 2024 Tüm hakları saklıdır", "Yorumları görmek için JavaScript'i etkinleştirin."],
}
SPAM_WORDS = {
    "en": ["cheap", "flights", "hotels", "best", "price", "casino", "bonus", "free", "spins", "buy", "now",
           "discount", "watches", "loans", "online", "deal", "win", "click"],
    "tr": ["ucuz", "uçak", "bileti", "otel", "en", "iyi", "fiyat", "bahis", "bonus", "bedava", "indirim",
           "saat", "kredi", "hemen", "kazan", "tıkla", "kampanya", "fırsat"],
}
SHORT = {"en": ["Page not found.", "404 Not Found", "Coming soon!", "Log in to continue.", "Loading...",
                "This page has moved.", "Access denied."],
         "tr": ["Sayfa bulunamadı.", "404 Bulunamadı", "Çok yakında!", "Devam etmek için giriş yapın.",
                "Yükleniyor...", "Bu sayfa taşındı.", "Erişim reddedildi."]}
FOREIGN = {
    "de": (["Der Bauer", "Die Lehrerin", "Mein Nachbar", "Das Kind", "Unsere Familie", "Der alte Fischer"],
           ["kauft jeden Morgen frisches Brot", "geht am Wochenende gern in den Wald",
            "erzählt gern Geschichten über die Stadt", "arbeitet seit vielen Jahren im Hafen",
            "hat gestern einen langen Brief geschrieben", "wohnt in einem kleinen Haus am Fluss"],
           ["und trinkt danach einen Kaffee", "weil das Wetter heute schön ist", "obwohl es schon spät ist",
            "mit seinen besten Freunden", "bevor die Sonne untergeht"]),
    "fr": (["Le boulanger", "La maîtresse", "Mon voisin", "L'enfant", "Notre famille", "Le vieux pêcheur"],
           ["achète du pain frais chaque matin", "aime se promener dans la forêt le dimanche",
            "raconte des histoires sur la ville", "travaille au port depuis longtemps",
            "a écrit une longue lettre hier soir", "habite dans une petite maison près de la rivière"],
           ["et boit ensuite un café", "parce qu'il fait beau aujourd'hui", "bien qu'il soit déjà tard",
            "avec ses meilleurs amis", "avant le coucher du soleil"]),
    "es": (["El panadero", "La maestra", "Mi vecino", "El niño", "Nuestra familia", "El viejo pescador"],
           ["compra pan fresco cada mañana", "pasea por el bosque los domingos",
            "cuenta historias sobre la ciudad", "trabaja en el puerto desde hace años",
            "escribió una carta muy larga ayer", "vive en una casa pequeña junto al río"],
           ["y después toma un café", "porque hoy hace buen tiempo", "aunque ya es muy tarde",
            "con sus mejores amigos", "antes de que se ponga el sol"]),
    "it": (["Il fornaio", "La maestra", "Il mio vicino", "Il bambino", "La nostra famiglia", "Il vecchio pescatore"],
           ["compra il pane fresco ogni mattina", "passeggia nel bosco la domenica",
            "racconta storie sulla città", "lavora al porto da molti anni",
            "ha scritto una lunga lettera ieri sera", "abita in una piccola casa vicino al fiume"],
           ["e poi beve un caffè", "perché oggi fa bel tempo", "anche se è già tardi",
            "con i suoi migliori amici", "prima del tramonto"]),
}
PII_SENTENCES = {
    "en": ["For questions, write to {email} or call {phone}.", "The server answered from {ip} last night.",
           "Donations go to the account {iban}, thank you.", "Her identity number {tckn} was on the form."],
    "tr": ["Sorularınız için {email} adresine yazın ya da {phone} numarasını arayın.",
           "Sunucu dün gece {ip} adresinden yanıt verdi.", "Bağışlar için hesap numarası {iban}, teşekkürler.",
           "Formda kimlik numarası {tckn} yazıyordu."],
}
LISTING = {
    "en": (["Cheap", "New", "Classic", "Leather", "Wool", "Cotton", "Kids'", "Men's", "Women's", "Sale:"],
           ["running shoes", "winter coat", "backpack", "sunglasses", "phone case", "desk lamp", "tea set",
            "bicycle helmet", "rain boots", "travel mug"],
           ["Add to cart", "In stock", "Free shipping", "Compare", "Out of stock", "Only 3 left"],
           "Home > Shop > {}"),
    "tr": (["Ucuz", "Yeni", "Klasik", "Deri", "Yün", "Pamuklu", "Çocuk", "Erkek", "Kadın", "İndirimli"],
           ["koşu ayakkabısı", "kışlık mont", "sırt çantası", "güneş gözlüğü", "telefon kılıfı",
            "masa lambası", "çay takımı", "bisiklet kaskı", "yağmur botu", "termos bardak"],
           ["Sepete ekle", "Stokta", "Ücretsiz kargo", "Karşılaştır", "Tükendi", "Son 3 ürün"],
           "Ana Sayfa > Mağaza > {}"),
}
TEMPLATE = {
    "en": ["Welcome to our website. We are glad to have you here and hope you enjoy your visit.",
           "Our team works every day to bring you the best service in the region at a fair price.",
           "Contact us today and one of our friendly staff members will answer all of your questions.",
           "Thank you for choosing us. We look forward to hearing from you again very soon."],
    "tr": ["Web sitemize hoş geldiniz. Sizi burada görmekten mutluluk duyuyor ve iyi vakit geçirmenizi dileriz.",
           "Ekibimiz size bölgedeki en iyi hizmeti uygun fiyata sunmak için her gün çalışıyor.",
           "Bugün bizimle iletişime geçin, güler yüzlü çalışanlarımız bütün sorularınızı yanıtlasın.",
           "Bizi seçtiğiniz için teşekkür ederiz. Sizden yeniden haber almayı dört gözle bekliyoruz."],
}
FIRST = ["ayla", "deniz", "emre", "selin", "mira", "arda", "lena", "omar", "nora", "kaan", "elif", "tomas"]
DOMAINS = ["example.com", "ornek.com.tr", "posta.net", "mail.org"]


def tc_kimlik(rng: random.Random) -> str:
    """A Turkish identity number with valid check digits (the 10th and 11th)."""
    d = [rng.randrange(1, 10)] + [rng.randrange(10) for _ in range(8)]
    d.append(((d[0] + d[2] + d[4] + d[6] + d[8]) * 7 - (d[1] + d[3] + d[5] + d[7])) % 10)
    d.append(sum(d) % 10)
    return "".join(map(str, d))


def iban_tr(rng: random.Random) -> str:
    """A Turkish IBAN (TR + 2 check digits + 22 digits) with a valid mod-97 checksum, in groups of 4."""
    bban = "".join(str(rng.randrange(10)) for _ in range(22))
    check = 98 - int(bban + "2927" + "00") % 97  # T=29, R=27
    raw = f"TR{check:02d}{bban}"
    return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def phone(rng: random.Random) -> str:
    n = lambda k: "".join(str(rng.randrange(10)) for _ in range(k))
    return rng.choice([f"+90 5{n(2)} {n(3)} {n(2)} {n(2)}",
                       f"0{rng.choice(['212', '312', '232'])} {n(3)} {n(2)} {n(2)}",
                       f"+1 ({rng.randrange(201, 990)}) {n(3)}-{n(4)}", f"+44 20 {n(4)} {n(4)}"])


def planted_pii(rng: random.Random) -> dict[str, str]:
    return {"email": f"{rng.choice(FIRST)}.{rng.choice(FIRST)}{rng.randrange(100)}@{rng.choice(DOMAINS)}",
            "phone": phone(rng),
            "ip": ".".join(str(rng.randrange(1, 255)) for _ in range(4)),
            "iban": iban_tr(rng), "tckn": tc_kimlik(rng)}


def _near_copy(text: str, rng: random.Random, vocab: list[str]) -> tuple[str, float]:
    """Edit a few words (swap, drop or insert) while the 5-gram Jaccard similarity stays >= 0.8."""
    lines = [line.split(" ") for line in text.split("\n")]
    best, best_j = text, 1.0
    for _ in range(rng.randrange(1, 6)):
        i = rng.randrange(len(lines))
        if not lines[i] or not lines[i][0]:
            continue
        j = rng.randrange(len(lines[i]))
        if not any(ch.isalnum() for ch in lines[i][j]):
            continue   # "*" or "=": the word shingles do not see it, so editing it would copy exactly
        op = rng.random()
        if op < 0.5:
            lines[i][j] = rng.choice(vocab)
        elif op < 0.75 and len(lines[i]) > 1:
            del lines[i][j]
        else:
            lines[i].insert(j, rng.choice(vocab))
        candidate = "\n".join(" ".join(w) for w in lines)
        score = jaccard(text, candidate)
        if score < 0.8:
            break
        best, best_j = candidate, score
    return best, best_j


def _foreign(lang: str, rng: random.Random) -> str:
    subjects, verbs, tails = FOREIGN[lang]
    paragraphs = []
    for _ in range(rng.randrange(2, 4)):
        paragraphs.append(" ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(tails)}."
                                   for _ in range(rng.randrange(3, 6))))
    return "\n\n".join(paragraphs)


def _spam(lang: str, rng: random.Random) -> str:
    words = SPAM_WORDS[lang]
    if rng.random() < 0.5:
        return "\n".join(" ".join(rng.choices(words, k=rng.randrange(4, 9))) for _ in range(rng.randrange(6, 20)))
    phrase = " ".join(rng.sample(words, 3))
    return " ".join(f"{phrase.capitalize()} {rng.choice(words)}." for _ in range(rng.randrange(15, 40)))


def _listing(lang: str, rng: random.Random) -> str:
    """A shop or link page: a breadcrumb and product lines, none of them a sentence."""
    adjectives, products, actions, crumb = LISTING[lang]
    lines = [crumb.format(rng.choice(products).capitalize())]
    for _ in range(rng.randrange(8, 25)):
        price = f"{rng.randrange(5, 500)}.{rng.randrange(100):02d}"
        lines.append(f"{rng.choice(adjectives)} {rng.choice(products)} {price} {rng.choice(actions)}")
    return "\n".join(lines)


def _template(lang: str, rng: random.Random) -> str:
    """A page made from a site template: the same paragraph (or two) pasted several times."""
    block = " ".join(rng.sample(TEMPLATE[lang], rng.randrange(2, 5)))
    return "\n\n".join([block] * rng.randrange(3, 7))


def _contamination(item: dict, lang: str) -> tuple[str, str]:
    """(paragraph to plant, the evaluation text that must not survive)."""
    if "solution" in item:
        return f"{item['question']}\n{item['solution']}", item["question"]
    q, a = ("Question", "Answer") if lang == "en" else ("Soru", "Cevap")
    return f"{q}: {item['question']}\n{a}: {item['answer']}", item["question"]


def noisy_web(pages: list[Document], evals: dict[str, list[dict]], seed: int,
              noise: float = 1.0, realism: str = "demo") -> tuple[list[Document], list[dict]]:
    """The crawl stream (clean pages plus faults, in crawl order) and its ground truth.

    ``realism`` picks the fault mix (``MIXES``); ``noise`` scales every fault count (0 = none, at
    most ``MAX_NOISE``). However many faults that asks for, at least a quarter of the pages stay
    clean (faults planted inside pages are capped there), since the copies are made of them."""
    if not 0 <= noise <= MAX_NOISE:  # also refuses nan
        raise FidanError(f"corpus.noise must be between 0 and {MAX_NOISE:g}, not {noise}")
    if realism not in MIXES:
        raise FidanError(f"corpus.realism must be one of {', '.join(MIXES)}, not {realism!r}")
    rng = random.Random(f"fidan-web-{seed}")
    n = len(pages)
    if n == 0:
        return [], []
    count = {k: max(MIN_EACH, round(v * n * noise)) if noise > 0 and v > 0 else 0
             for k, v in MIXES[realism].items()}
    docs = [Document(p.id, p.text, p.source, dict(p.meta)) for p in pages]
    truth = {d.id: {"id": d.id, "label": "clean", "lang": d.meta["lang"]} for d in docs}
    # Faults planted inside clean pages: each page gets at most one, and some pages get none.
    inside = count["boilerplate"] + count["pii"] + count["contaminated"]
    order = rng.sample(range(n), min(n - max(1, n // 4), inside) if inside else 0)
    items = {lang: [x for x in evals.get("eval/facts", []) + evals.get("eval/arithmetic", []) if x["lang"] == lang]
             for lang in ("en", "tr")}
    for k, i in enumerate(order):
        doc, lang = docs[i], docs[i].meta["lang"]
        paragraphs = doc.text.split("\n\n")
        if k < count["boilerplate"]:
            nav, foot = rng.sample(NAV[lang], 2), rng.sample(FOOTER[lang], 2)
            doc.text = "\n".join(nav) + "\n\n" + doc.text + "\n\n" + "\n".join(foot)
            truth[doc.id].update(label="boilerplate", planted=nav + foot)
        elif k < count["boilerplate"] + count["pii"]:
            values = planted_pii(rng)
            sentences = [s.format(**values) for s in PII_SENTENCES[lang]]
            paragraphs.insert(rng.randrange(1, len(paragraphs) + 1), " ".join(sentences))
            doc.text = "\n\n".join(paragraphs)
            truth[doc.id].update(label="pii", planted=values)
        elif items[lang]:
            block, needle = _contamination(rng.choice(items[lang]), lang)
            paragraphs.insert(rng.randrange(0, len(paragraphs) + 1), block)
            doc.text = "\n\n".join(paragraphs)
            truth[doc.id].update(label="contaminated", planted=needle)
    # Whole extra documents, placed in the stream after what they copy.
    placed: list[tuple[float, Document]] = [(float(i), d) for i, d in enumerate(docs)]
    vocab = sorted({w for d in docs[:200] for w in d.text.split() if w.isalpha()})
    extra = 0

    def add(text: str, after: int | None, record: dict) -> None:
        nonlocal extra
        doc_id = f"web-{extra:06d}"
        extra += 1
        key = rng.uniform(after + 0.5, n) if after is not None else rng.uniform(-0.5, n)
        placed.append((key, Document(doc_id, text, "embedded-web", {"lang": record["lang"]})))
        truth[doc_id] = {"id": doc_id, **record}

    clean = [i for i in range(n) if truth[docs[i].id]["label"] == "clean"]
    for _ in range(count["exact_dup"]):
        i = rng.choice(clean)
        text = docs[i].text
        if rng.random() < 0.5:  # the same page served with other line ends and spacing
            text = text.replace("\n", "\r\n").replace(". ", ".  ") + "  \n"
        add(text, i, {"label": "exact_dup", "lang": docs[i].meta["lang"], "of": docs[i].id})
    for _ in range(count["near_dup"]):
        i = rng.choice(clean)
        text, score = _near_copy(docs[i].text, rng, vocab)
        label = "near_dup" if text != docs[i].text else "exact_dup"
        add(text, i, {"label": label, "lang": docs[i].meta["lang"], "of": docs[i].id, "jaccard": round(score, 4)})
    for _ in range(count["spam"]):
        lang = rng.choice(["en", "tr"])
        add(_spam(lang, rng), None, {"label": "spam", "lang": lang})
    for _ in range(count["short"]):
        lang = rng.choice(["en", "tr"])
        add(rng.choice(SHORT[lang]), None, {"label": "short", "lang": lang})
    for _ in range(count["foreign"]):
        lang = rng.choice(sorted(FOREIGN))
        add(_foreign(lang, rng), None, {"label": "foreign", "lang": lang})
    for kind, make in (("listing", _listing), ("template", _template)):
        for _ in range(count[kind]):
            lang = rng.choice(["en", "tr"])
            add(make(lang, rng), None, {"label": kind, "lang": lang})
    placed.sort(key=lambda x: x[0])
    stream = [d for _, d in placed]
    return stream, [truth[d.id] for d in stream]
