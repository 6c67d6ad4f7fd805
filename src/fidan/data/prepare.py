"""The data stage: collect documents, clean them, split them into train and validation.

Outputs (in ``runs/<name>/data/``):

- ``clean/train.parquet``, ``clean/val.parquet``: the kept documents (id, source, text, meta)
- ``stats.json``: documents and bytes in and out of every cleaning step, drops by reason with
  examples, personal data found, source problems; for the embedded corpus also the scores
  against the hidden ground truth (``truth.jsonl``)
- ``work/``: per-shard intermediate files, which let a killed run resume (see ``executor``)
- for the embedded corpus: the held-out evaluation sets (``eval/*.jsonl``), instruction-tuning
  conversations (``sft/train.jsonl``) and labelled sentiment sentences (``sentiment/*.jsonl``)
"""
from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fidan import atomic
from fidan.config import Config
from fidan.context import StageContext
from fidan.data import steps as S
from fidan.data.decontam import build_index, eval_texts_from_file
from fidan.data.executor import (
    SplitWriter,
    deduplicate,
    finished,
    in_validation,
    run_local,
    run_ray,
    settings_hash,
    shard_name,
    shards,
)
from fidan.data.groundtruth import check as bars_met
from fidan.data.groundtruth import score
from fidan.data.parquet import write_documents
from fidan.data.report import drops_line, print_table
from fidan.data.sources import SourceReport, read_documents
from fidan.errors import FidanError
from fidan.progress import Progress
from fidan.records import Document


class TooFewKept(FidanError):
    """Cleaning left too little for a train and a validation split; carries what each step did."""

    def __init__(self, message: str, steps: dict, kept: int):
        super().__init__(message)
        self.steps, self.kept = steps, kept


def collect(cfg: Config, report: SourceReport) -> tuple[Iterator[Document], dict[str, list[dict]], list[dict]]:
    """(document stream, named record sets, ground truth); only the embedded corpus has the last two."""
    if cfg.data.source == "embedded":
        from fidan.corpus.generate import generate
        from fidan.corpus.web import noisy_web
        pages, sets = generate(cfg.corpus, cfg.run.seed)
        stream, truth = noisy_web(pages, sets, cfg.run.seed, cfg.corpus.noise, cfg.corpus.realism)
        return iter(stream), sets, truth
    docs = read_documents(cfg.data.source, cfg.data.text_field, cfg.data.on_error, report)
    return docs, {}, []


def split(docs: list[Document], mode: str, val_fraction: float) -> tuple[list[Document], list[Document]]:
    """``tail``: the last ``val_fraction`` of the text (by characters) is validation, cutting one
    document in two if needed; the standard split for a single long text. ``tails``: the last
    ``val_fraction`` of every document (cut at a line or word boundary), for few or very unequal
    documents. ``hash``: whole documents go to validation by a hash of their id. ``auto``: ``tail``
    for one document, else ``hash`` (the data stage picks ``tails`` when hashing does not fit, see
    :func:`choose_split`)."""
    if mode == "auto":
        mode = "tail" if len(docs) == 1 else "hash"
    if mode == "hash":
        train = [d for d in docs if not in_validation(d.id, val_fraction)]
        val = [d for d in docs if in_validation(d.id, val_fraction)]
    elif mode == "tails":
        train, val = [], []
        for d in docs:
            k = tail_cut(d.text, val_fraction)
            if 0 < k < len(d.text):
                train.append(Document(d.id, d.text[:k], d.source, {**d.meta, "part": "head"}))
                val.append(Document(d.id + "#tail", d.text[k:], d.source, {**d.meta, "part": "tail"}))
            else:
                train.append(d)
    else:
        total = sum(len(d.text) for d in docs)
        cut = int(total * (1 - val_fraction))
        train, val, seen = [], [], 0
        for d in docs:
            if seen + len(d.text) <= cut:
                train.append(d)
            elif seen >= cut:
                val.append(d)
            else:
                k = cut - seen
                train.append(Document(d.id, d.text[:k], d.source, {**d.meta, "part": "head"}))
                val.append(Document(d.id + "#tail", d.text[k:], d.source, {**d.meta, "part": "tail"}))
            seen += len(d.text)
    if not train or not val:
        side = "training" if not train else "validation"
        fix = ("--data.split=tails to split inside documents" if mode == "hash" else
               "lower --data.val_fraction" if not train else "raise --data.val_fraction")
        chars = sum(len(d.text) for d in docs)
        raise FidanError(f"the {mode} split left an empty {side} set ({len(train)} training and {len(val)} validation "
                         f"documents from {len(docs)} kept by cleaning, {chars:,} characters); "
                         f"add text, loosen --data.steps (or --data.profile), or {fix}")
    return train, val


def tail_cut(text: str, val_fraction: float) -> int:
    """Where the ``tails`` split cuts a document: ``val_fraction`` from its end, at a boundary."""
    return boundary(text, int(len(text) * (1 - val_fraction)))


def boundary(text: str, cut: int, window: int = 400) -> int:
    """A cut near ``cut`` at the end of a line (else after a space) within ``window`` characters
    before it, so a validation tail starts at a line or word; ``cut`` itself when there is none."""
    if cut <= 0 or cut >= len(text):
        return cut
    lo = max(1, cut - window)
    for mark in ("\n", " "):
        at = text.rfind(mark, lo, cut)
        if at >= 0:
            return at + 1
    return cut


def choose_split(mode: str, docs: int, val_docs: int, total_bytes: int, val_bytes: int,
                 val_fraction: float) -> tuple[str, str]:
    """The split to use and, when it is not the one asked for or it misfits, why: ``auto`` keeps
    whole documents (``hash``) only when that puts between half and twice ``val_fraction`` of the
    text in validation and leaves both sides non-empty; otherwise it splits inside documents
    (``tails``; ``tail`` for a single document)."""
    if docs == 0:   # nothing to split: the writer says what cleaning left
        return ("hash" if mode == "auto" else mode), ""
    share = val_bytes / max(1, total_bytes)
    fits = 0 < val_docs < docs and val_fraction / 2 <= share <= 2 * val_fraction
    said = (f"keeping whole documents (--data.split=hash) would put {val_docs} of {docs} documents, "
            f"{share:.1%} of the text, in validation (asked: {val_fraction:.0%})")
    if mode == "auto":
        if docs == 1:
            return "tail", ""
        if fits:
            return "hash", ""
        return "tails", (f"split: {said}; splitting inside documents instead: the last {val_fraction:.0%} of "
                         "each is validation (--data.split=tails)")
    if mode == "hash" and not fits:
        return "hash", f"split: warning: {said}; --data.split=auto or tails splits inside documents"
    return mode, ""


def _nbytes(docs: list[Document]) -> int:
    return sum(len(d.text.encode("utf-8")) for d in docs)


def decontam_texts(cfg: Config, sets: dict[str, list[dict]]) -> list[str]:
    """Evaluation prompts to keep out of training: the run's own eval sets and any given files.
    Fact statements and answers are not included: the facts themselves are meant to be learned."""
    texts = [item["question"] for name in ("eval/facts", "eval/arithmetic") for item in sets.get(name, [])]
    for path in (p.strip() for p in cfg.data.decontam_files.split(",")):
        if path:
            texts.extend(eval_texts_from_file(path))
    return texts


def settings_for(cfg: Config) -> S.Settings:
    d = cfg.data
    return S.Settings(steps=S.parse_steps(d.steps), languages=[x.strip() for x in d.languages.split(",") if x.strip()],
                      lang_threshold=d.lang_threshold, ngram=d.minhash_ngram, bands=d.minhash_bands,
                      rows=d.minhash_rows, decontam_mode=d.decontam_mode, seed=cfg.run.seed, profile=d.profile)


def clean(cfg: Config, out: Path, stream: Iterator[Document], sets: dict,
          keep_texts: bool = False, inputs_key: str = "") -> tuple[dict, dict, dict, dict]:
    """Run the chain over the stream; returns (counters, splits, info, final texts). The detected
    languages (in info) and final texts are only gathered with ``keep_texts``, for scoring the
    embedded sample: for real input they would grow with it. A finished shard is reused only
    when its tag matches: the cleaning settings, the decontamination index and ``inputs_key``
    (the stage hash, which covers the sources' content and the corpus settings)."""
    settings = settings_for(cfg)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    index = None
    if "decontam" in settings.steps:
        texts = decontam_texts(cfg, sets)
        if texts:
            index = build_index(texts, cfg.data.decontam_n, cfg.data.decontam_min_words)
    tag = settings_hash(settings, index, inputs_key)
    index_path = work / "decontam_index.json"
    if index is not None:
        atomic.write_json(index_path, index.to_json())
    results: dict[int, dict] = {}
    n_shards = 0

    def todo() -> Iterator[tuple[int, list[tuple]]]:
        nonlocal n_shards
        for i, docs in enumerate(shards(stream, cfg.data.shard_docs)):
            n_shards = i + 1
            done = finished(work, i, tag)
            if done is not None:
                results[i] = {**done, "resumed": True}
                continue
            yield i, docs

    def args(i: int, docs: list[tuple]) -> tuple:
        return i, docs, str(work), settings, str(index_path) if index is not None else None, tag

    workers = cfg.data.workers or os.cpu_count() or 1
    runner = (run_ray(todo(), args, workers, cfg.data.ray_address) if cfg.data.executor == "ray"
              else run_local(todo(), args, workers))
    with Progress(desc="cleaning", unit="shards") as bar:
        for result in runner:
            results[result["shard"]] = result
            bar.update()
    for stale in sorted(work.glob("shard-*.json")):
        if int(stale.name[6:11]) >= n_shards:  # shards of a previous, larger input
            for suffix in (".json", ".parquet", ".log.parquet"):
                shard_name(work, int(stale.name[6:11])).with_suffix(suffix).unlink(missing_ok=True)
    if n_shards == 0:
        raise FidanError(f"{cfg.data.source}: no documents found")
    counters: dict = {}
    for i in range(n_shards):
        S.merge(counters, results[i]["counters"])
    verdicts, dedup = deduplicate(work, n_shards, "exact_dedup" in settings.steps, "near_dedup" in settings.steps)
    for name in ("exact_dedup", "near_dedup"):
        if name in settings.steps:
            counters[name] = S.new_counter()
    kept_total = sum(int((v[0] < 0).sum()) for v in verdicts)
    mode, why = choose_split(cfg.data.split, kept_total, *_hash_split(work, n_shards, verdicts, cfg.data.val_fraction),
                             cfg.data.val_fraction)
    if why:
        print(f"  {why}")
    cut = functools.partial(tail_cut, val_fraction=cfg.data.val_fraction) if mode == "tails" else None
    writer = SplitWriter(out / "clean", cfg.data.val_fraction, cut) if mode in ("hash", "tails") else None
    collected: list[Document] = []
    langs: dict[str, str | None] = {}
    final: dict[str, str] = {}
    offsets = np.cumsum([0] + [len(v[0]) for v in verdicts])

    def id_at(position: int) -> str:
        shard = int(np.searchsorted(offsets, position, side="right")) - 1
        ids = pq.read_table(shard_name(work, shard).with_suffix(".parquet"), columns=["id"]).column("id")
        return ids[position - int(offsets[shard])].as_py()

    for i in range(n_shards):
        table = pq.read_table(shard_name(work, i).with_suffix(".parquet"))
        if keep_texts:
            log = pq.read_table(shard_name(work, i).with_suffix(".log.parquet"), columns=["id", "lang"])
            langs.update(zip(log.column("id").to_pylist(), log.column("lang").to_pylist()))
        verdict, kind = verdicts[i]
        ids = table.column("id").to_pylist()
        texts = table.column("text").to_pylist()
        for row, (doc_id, text) in enumerate(zip(ids, texts)):
            for name, k in (("exact_dedup", 1), ("near_dedup", 2)):
                if name not in counters or (k == 2 and kind[row] == 1):
                    continue
                c = counters[name]
                c["docs_in"] += 1
                c["bytes_in"] += len(text.encode("utf-8"))
                if kind[row] == k:
                    reason = "duplicate" if k == 1 else "near_duplicate"
                    wanted = len(c["examples"].get(reason, [])) < S.EXAMPLES
                    detail = f"copy of {id_at(int(verdict[row]))}" if wanted else ""
                    S.record_drop(c, reason, Document(doc_id, text, "", {}), detail)
                else:
                    c["docs_out"] += 1
                    c["bytes_out"] += len(text.encode("utf-8"))
        keep = table.filter(verdict < 0)
        if writer is not None:
            writer.write(keep)
        else:
            for row in keep.to_pylist():
                collected.append(Document(row["id"], row["text"], row["source"], json.loads(row["meta"])))
        if keep_texts:
            final.update(zip(keep.column("id").to_pylist(), keep.column("text").to_pylist()))
    counters = {name: counters[name] for name in settings.steps if name in counters}
    try:
        if writer is not None:
            splits = writer.close()
        else:
            if not collected:
                raise FidanError("cleaning kept no documents; loosen --data.steps")
            train, val = split(collected, mode, cfg.data.val_fraction)
            write_documents(out / "clean" / "train.parquet", train)
            write_documents(out / "clean" / "val.parquet", val)
            splits = {"train": {"documents": len(train), "bytes": _nbytes(train)},
                      "val": {"documents": len(val), "bytes": _nbytes(val)}}
    except FidanError as e:
        raise TooFewKept(str(e), counters, kept_total) from None
    info = {"kept_documents": kept_total, "split": mode, "shards": n_shards,
            "resumed_shards": sum(1 for r in results.values() if r.get("resumed")),
            "dedup": dedup}
    return counters, splits, {"langs": langs, **info}, final


def _hash_split(work: Path, n_shards: int, verdicts: list, val_fraction: float) -> tuple[int, int, int]:
    """What the hash split would do with the kept documents: (validation documents, bytes, validation bytes)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    val_docs = total = val_bytes = 0
    for i in range(n_shards):
        table = pq.read_table(shard_name(work, i).with_suffix(".parquet"), columns=["id", "text"])
        keep = table.filter(pa.array(verdicts[i][0] < 0))
        sizes = pc.binary_length(pc.cast(keep.column("text"), pa.binary())).to_numpy(zero_copy_only=False)
        in_val = np.array([in_validation(x, val_fraction) for x in keep.column("id").to_pylist()], dtype=bool)
        val_docs += int(in_val.sum())
        total += int(sizes.sum())
        val_bytes += int(sizes[in_val].sum()) if len(sizes) else 0
    return val_docs, total, val_bytes


def check(cfg: Config) -> None:
    """Validation before work: the cleaning steps must exist."""
    S.parse_steps(cfg.data.steps)


def run(ctx: StageContext) -> dict:
    cfg, out = ctx.cfg, ctx.out
    report = SourceReport()
    stream, sets, truth = collect(cfg, report)
    for name, items in sets.items():
        atomic.write_text(out / f"{name}.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items))
    if truth:
        atomic.write_text(out / "truth.jsonl", "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in truth))
    stream = _measured(stream, meter := {"documents": 0, "bytes": 0})
    try:
        counters, splits, info, final = clean(cfg, out, stream, sets, keep_texts=bool(truth), inputs_key=ctx.hash)
    except TooFewKept as e:  # say which step dropped what before failing
        print_table({"source": cfg.data.source, "input": meter, "steps": e.steps, "kept_documents": e.kept})
        for p in report.problems[:10]:
            print(f"  skipped: {p}")
        raise FidanError(f"{e} (documents dropped by step: {drops_line(e.steps)})") from None
    langs = info.pop("langs")
    if not sets:   # your own text: conversations and held-out questions made from it
        sets = own_text_sets(cfg, out)
    stats = {
        "source": cfg.data.source,
        "input": meter,
        "output": splits,
        "kept": {"documents": round(info["kept_documents"] / max(1, meter["documents"]), 4),
                 "bytes": round(sum(s["bytes"] for s in splits.values()) / max(1, meter["bytes"]), 4)},
        "steps": counters,
        **info,
        "skipped": len(report.problems),
        "problems": report.problems[:50],
        "record_sets": {k: len(v) for k, v in sets.items()},
    }
    if truth:
        scores = score(truth, final, langs)
        # a bar with nothing to measure (corpus.noise=0 plants no duplicates) is neither met nor missed
        met = {name: ok for name, ok in bars_met(scores).items() if scores[name]["total"]}
        stats["ground_truth"] = {"scores": scores, "bars_met": met}
    atomic.write_json(out / "stats.json", stats)
    print_table(stats)
    for p in report.problems[:10]:
        print(f"  skipped: {p}")
    summary = {"in_docs": meter["documents"], "train_docs": splits["train"]["documents"],
               "val_docs": splits["val"]["documents"], "kept_bytes": f"{stats['kept']['bytes']:.1%}",
               "train_MB": round(splits["train"]["bytes"] / 1e6, 2), "skipped": len(report.problems)}
    if truth:
        bars = stats["ground_truth"]["bars_met"]
        summary["bars_met"] = f"{sum(bars.values())}/{len(bars)}"
    return summary


SYNTH_READ_CHARS = 20_000_000   # text read to make instruction data from (the first documents of each split)


def _documents(path: Path, limit: int) -> list[Document]:
    from fidan.data.parquet import read_documents as read_parquet
    out, chars = [], 0
    for doc in read_parquet(path):
        out.append(doc)
        chars += len(doc.text)
        if chars >= limit:
            break
    return out


def own_text_sets(cfg: Config, out: Path) -> dict[str, list[dict]]:
    """SFT conversations from the training split and held-out questions from the validation split
    (``data/synth.py``), written where the embedded world writes its own."""
    from fidan.data.language import identify
    from fidan.data.synth import synthesise
    if not cfg.data.synth_conversations and not cfg.data.synth_heldout:   # asked for none: read nothing
        sets: dict[str, list[dict]] = {"sft/train": [], "eval/text": []}
        for name in sets:
            atomic.write_text(out / f"{name}.jsonl", "")
        return sets
    train = _documents(out / "clean" / "train.parquet", SYNTH_READ_CHARS)
    val = _documents(out / "clean" / "val.parquet", SYNTH_READ_CHARS // 10)
    lang_of = lambda d: d.meta.get("lang") or identify(d.text)[0]
    sets = synthesise(train, val, cfg.data.synth_conversations, cfg.data.synth_heldout, cfg.run.seed, lang_of)
    for name, items in sets.items():
        atomic.write_text(out / f"{name}.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items))
    kinds = Counter(c["kind"] for c in sets["sft/train"])
    made = ", ".join(f"{k} {n:,}" for k, n in kinds.most_common())
    print(f"  instruction data from your text: {len(sets['sft/train']):,} conversations ({made}) in "
          f"data/sft/train.jsonl; {len(sets['eval/text']):,} held-out questions from validation documents in "
          "data/eval/text.jsonl (more with --data.synth_conversations / --data.synth_heldout)")
    return sets


def _measured(stream: Iterator[Document], meter: dict) -> Iterator[Document]:
    for doc in stream:
        meter["documents"] += 1
        meter["bytes"] += len(doc.text.encode("utf-8"))
        yield doc

