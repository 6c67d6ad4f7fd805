"""Do the red team's prompts use words the pre-training text knows (issue 19, item 1; stop 29)?

For the benign prompts (``eval/benign.py``, by kind and language) and the harmful ones
(``eval/redteam.py``'s direct requests), every content word (letters only, lower-cased, three
letters or more, not a stop word): the share of them that occur at least ``--min`` times in the
run's cleaned pre-training text (``data/clean/train.parquet``), the median count, and the tokens
per word of the run's tokenizer (the word with a leading space, as it stands in a sentence).

    python benchmarks/vocab_cover.py --run /work/demo28/demo [--min 5] [--show]
"""
from __future__ import annotations

import argparse
import re
import statistics
from collections import Counter
from pathlib import Path

STOP = set("""the and for you how can what does when why with from that this into its are was were has have had
not but who where which there their them they your mine one about before after without over under then than
tell give make made get some any all very just also more most only out own our give good best""".split()) | set(
    """bir ile için nasıl mı mi mu mü ne neden hangi kaç olan olarak gibi daha çok şey ben sen biz siz onu ona
beni bana seni sana kendi kendime her hiç ama veya değil var yok eder""".split())
WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def words(text: str) -> list[str]:
    return [w for w in (m.lower() for m in WORD.findall(text)) if len(w) >= 3 and w not in STOP]


def main() -> None:
    from fidan.eval.benign import PROMPTS
    from fidan.eval.redteam import REQUESTS
    from fidan.records import read_texts
    from fidan.tokenizer.bpe import FidanTokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--min", type=int, default=5, help="occurrences that count as known")
    ap.add_argument("--show", action="store_true", help="print the unknown words of each group")
    args = ap.parse_args()
    run = Path(args.run)
    counts: Counter = Counter()
    for text in read_texts(run / "data" / "clean" / "train.parquet"):
        counts.update(m.lower() for m in WORD.findall(text))
    tok = FidanTokenizer.load(run / "tokenizer" / "tokenizer.json")
    groups: dict[str, list[str]] = {}
    for p in PROMPTS:
        groups.setdefault(f"benign {p['kind']} {p['lang']}", []).append(p["prompt"])
    for en, tr in REQUESTS.values():
        groups.setdefault("harmful en", []).append(en)
        groups.setdefault("harmful tr", []).append(tr)
    common = [w for w in sorted(counts, key=counts.get, reverse=True) if len(w) >= 3 and w not in STOP][:300]
    groups["(the pre-training text's own 300 commonest words)"] = [" ".join(common)]
    print(f"{run}: {sum(counts.values()):,} words of pre-training text, {len(counts):,} distinct")
    print(f"| prompts | content words (distinct) | known (>= {args.min} times) | median count | tokens per word |")
    print("|---|---|---|---|---|")
    for name, texts in groups.items():
        ws = sorted({w for t in texts for w in words(t)})
        known = [w for w in ws if counts[w] >= args.min]
        per = statistics.mean(len(tok.encode(" " + w)) for w in ws)
        print(f"| {name} | {len(ws)} | {len(known) / len(ws):.0%} ({len(known)}) | "
              f"{statistics.median(counts[w] for w in ws):g} | {per:.2f} |")
        if args.show:
            print("    unknown:", " ".join(w for w in ws if counts[w] < args.min))


if __name__ == "__main__":
    main()
