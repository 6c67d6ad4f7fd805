"""A finished shard or stage output is reused only for the inputs it was made from: another
source file, edited content or another corpus setting is cleaned afresh."""
import json

import pyarrow.parquet as pq

from conftest import micro_config
from fidan.pipeline import run_stage
from fidan.rundir import RunDir


def _ids(run: RunDir) -> set[str]:
    return {i for split in ("train", "val")
            for i in pq.read_table(run.path / "data" / "clean" / f"{split}.parquet").column("id").to_pylist()}


def _docs(path, prefix: str, n: int = 12) -> None:
    words = "the river town baker market bridge song garden winter lantern".split()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(words[(i + j) % len(words)] for j in range(40)) + f". {prefix} story {i} ends here."
            f.write(json.dumps({"id": f"{prefix}-{i}", "text": text}) + "\n")


def test_another_source_is_never_resumed_from_the_old_shards(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _docs(a, "alpha")
    _docs(b, "beta")
    common = ["data.steps=normalize,exact_dedup", "data.workers=1", "data.split=hash", "data.val_fraction=0.25"]
    run = RunDir.for_config(micro_config(tmp_path / "runs", "mine", f"data.source={a}", *common))
    run_stage(micro_config(tmp_path / "runs", "mine", f"data.source={a}", *common), run, "data")
    assert all("alpha" in i for i in _ids(run))
    run_stage(micro_config(tmp_path / "runs", "mine", f"data.source={b}", *common), run, "data")
    assert _ids(run) and all("beta" in i for i in _ids(run))
    stats = json.loads((run.path / "data" / "stats.json").read_text())
    assert stats["resumed_shards"] == 0
    _docs(b, "gamma")   # the same path, new content
    run_stage(micro_config(tmp_path / "runs", "mine", f"data.source={b}", *common), run, "data")
    assert all("gamma" in i for i in _ids(run))


def test_another_corpus_setting_is_generated_and_cleaned_afresh(tmp_path):
    noisy = micro_config(tmp_path, "world", "data.workers=1")
    run = RunDir.for_config(noisy)
    run_stage(noisy, run, "data")
    before = (run.path / "data" / "clean" / "train.parquet").read_bytes()
    calmer = micro_config(tmp_path, "world", "data.workers=1", "corpus.noise=0.5")
    run_stage(calmer, run, "data")
    stats = json.loads((run.path / "data" / "stats.json").read_text())
    assert stats["resumed_shards"] == 0
    assert (run.path / "data" / "clean" / "train.parquet").read_bytes() != before
    run_stage(calmer, run, "data")    # the same inputs again: every shard is reused
    assert json.loads((run.path / "data" / "stats.json").read_text())["resumed_shards"] == stats["shards"]
