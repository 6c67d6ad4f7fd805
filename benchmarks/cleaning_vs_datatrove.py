"""fidan's data stage against datatrove (Hugging Face's cleaning library) on the same crawl.

Both sides get the same jsonl crawl (the embedded noisy-web generator, as `data_clean.py`
writes it), cut into as many files as there are workers (datatrove parallelises by file), and
run the comparable filters with the same number of worker processes:

- fidan: `fidan data --data.profile=web --data.steps=c4,gopher_repetition,gopher_quality,fineweb,near_dedup
  --data.synth_conversations=0 --data.synth_heldout=0` (no SFT data made from the kept text)
- datatrove: GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter, FineWebQualityFilter,
  then its four MinHash stages (signatures, buckets, clusters, filter), 14 buckets x 8 hashes of
  word 5-grams (FineWeb's setting, as fidan's), on a LocalPipelineExecutor.

Language identification is off on both sides (datatrove's fastText model is a download). Each
side runs as its own subprocess; runs are paired and interleaved (the order alternates each
repeat), so both see the same load; the load average is recorded beside every run, and the peak
resident memory of each run's whole process tree is sampled from /proc every 0.2 s.

    pip install 'fidan[bench]'
    python benchmarks/cleaning_vs_datatrove.py --mb 25 --repeats 3 --workers 2
    python benchmarks/cleaning_vs_datatrove.py --mb 25 --repeats 1 --full   # also fidan's whole chain
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_clean import timed, write_crawl  # noqa: E402

FIDAN_STEPS = "c4,gopher_repetition,gopher_quality,fineweb,near_dedup"


def split_crawl(path: Path, folder: Path, parts: int) -> tuple[int, int]:
    """Cut a jsonl crawl into ``parts`` consecutive files; returns (documents, text bytes)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(lines) // parts)
    for k in range(parts):
        (folder / f"part-{k:03d}.jsonl").write_text("".join(lines[k * size:(k + 1) * size]), encoding="utf-8")
    return len(lines), sum(len(json.loads(x)["text"].encode("utf-8")) for x in lines)


def run_fidan(source: Path, root: Path, name: str, workers: int, full: bool) -> dict:
    cmd = [sys.executable, "-m", "fidan.cli", "data", f"--run.root={root}", f"--run.name={name}",
           f"--data.source={source}", f"--data.workers={workers}", "--data.profile=web"]
    if not full:   # the comparable filters, and no instruction data made from the kept text (datatrove makes none)
        cmd += [f"--data.steps={FIDAN_STEPS}", "--data.synth_conversations=0", "--data.synth_heldout=0"]
    r = timed(cmd)
    stats = json.loads((root / name / "data" / "stats.json").read_text())
    r["kept_documents"] = stats["kept_documents"]
    return r


def run_datatrove(source: Path, work: Path, workers: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--datatrove-child", str(source), str(work),
           "--workers", str(workers)]
    r = timed(cmd)
    kept = 0
    for f in sorted((work / "final").glob("*.jsonl*")):
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            kept += sum(1 for _ in fh)
    r["kept_documents"] = kept
    return r


def datatrove_child(source: Path, work: Path, workers: int) -> None:
    """The datatrove side, in its own process: FineWeb's filters and MinHash recipe, language ID off."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, hash_config=HashConfig(precision=64))
    tasks = len(list(source.glob("*.jsonl")))
    logs = str(work / "logs")

    def executor(name: str, pipeline: list, n: int, after=None) -> LocalPipelineExecutor:
        return LocalPipelineExecutor(pipeline=pipeline, tasks=n, workers=min(workers, n),
                                     logging_dir=f"{logs}/{name}", depends=after)

    filters = executor("filters", [
        JsonlReader(str(source), text_key="text", id_key="id"),
        GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter(),
        JsonlWriter(str(work / "filtered"), compression=None),
        MinhashDedupSignature(output_folder=str(work / "signatures"), config=config),
    ], tasks)
    buckets = executor("buckets", [
        MinhashDedupBuckets(input_folder=str(work / "signatures"), output_folder=str(work / "buckets"),
                            config=config)], config.num_buckets, filters)
    clusters = executor("clusters", [
        MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove_ids"),
                            config=config)], 1, buckets)
    final = executor("final", [
        JsonlReader(str(work / "filtered"), text_key="text", id_key="id"),
        MinhashDedupFilter(input_folder=str(work / "remove_ids")),
        JsonlWriter(str(work / "final"), compression=None),
    ], tasks, clusters)
    final.run()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=25.0, help="crawl size in MB")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="also time fidan's whole default chain once")
    ap.add_argument("--datatrove-child", nargs=2, metavar=("SOURCE", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.datatrove_child:
        datatrove_child(Path(args.datatrove_child[0]), Path(args.datatrove_child[1]), args.workers)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_crawl(tmp / "crawl.jsonl", args.mb)
        docs, nbytes = split_crawl(tmp / "crawl.jsonl", tmp / "crawl", args.workers)
        print(json.dumps({"crawl_MB": round(nbytes / 1e6, 1), "documents": docs, "files": args.workers,
                          "generate_s": round(time.perf_counter() - t0, 1)}), flush=True)
        sides = {"fidan": lambda k: run_fidan(tmp / "crawl", tmp / "runs", f"f{k}", args.workers, False),
                 "datatrove": lambda k: run_datatrove(tmp / "crawl", tmp / f"dt{k}", args.workers)}
        # paired and interleaved: fidan first in even repeats, datatrove first in odd ones
        runs = [(k, name) for k in range(args.repeats) for name in (list(sides)[::-1] if k % 2 else list(sides))]
        if args.full:
            sides["fidan (whole chain)"] = lambda k: run_fidan(tmp / "crawl", tmp / "runs", f"full{k}",
                                                               args.workers, True)
            runs.append((0, "fidan (whole chain)"))
        results: dict[str, list[dict]] = {name: [] for name in sides}
        for k, name in runs:
            r = sides[name](k)
            r.pop("log")
            r["docs_per_s"] = round(docs / r["seconds"])
            r["MB_per_s"] = round(nbytes / 1e6 / r["seconds"], 2)
            results[name].append(r)
            print(json.dumps({"repeat": k, "side": name, **r}), flush=True)
        for k in range(args.repeats):
            f, d = results["fidan"][k], results["datatrove"][k]
            print(f"repeat {k}: fidan {f['docs_per_s']} docs/s, {f['MB_per_s']} MB/s, kept {f['kept_documents']}, "
                  f"{f['peak_rss_MB']} MB | datatrove {d['docs_per_s']} docs/s, {d['MB_per_s']} MB/s, kept "
                  f"{d['kept_documents']}, {d['peak_rss_MB']} MB | ratio {d['seconds'] / f['seconds']:.2f}x")


if __name__ == "__main__":
    main()
