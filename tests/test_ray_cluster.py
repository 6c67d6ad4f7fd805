"""The data stage's Ray executor on a real Ray cluster started with ``ray start --head``.

``tests/test_cleaning.py`` checks the executor with the local cluster ``ray.init`` starts on its
own; this test is what a user with a cluster does: a head node on loopback, started by the
``ray`` command, and ``--data.ray_address`` pointing at it. The cleaned output must be the same
bytes as the local worker processes'.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, micro_config
from fidan.pipeline import run_stage
from fidan.rundir import RunDir

ray = pytest.importorskip("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> list[str]:
    exe = Path(sys.executable).with_name("ray")
    return [str(exe)] if exe.exists() else [shutil.which("ray") or "ray"]


@pytest.fixture
def head_node(tmp_path):
    """A one-node Ray cluster on loopback; its workers import this checkout's fidan."""
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    temp = Path("/tmp") / f"ray-{port}"   # Ray's socket paths must stay short
    start = subprocess.run(
        [*_ray_cli(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, capture_output=True, text=True, timeout=180)
    if start.returncode != 0:
        pytest.skip(f"ray start --head failed here: {start.stderr.strip()[-300:]}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([*_ray_cli(), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _digests(run_path: Path) -> dict[str, str]:
    clean = run_path / "data" / "clean"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(clean.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_ray_cluster_started_with_ray_start_gives_byte_identical_output(tmp_path, head_node):
    from fidan.config import CorpusConfig
    from fidan.corpus.generate import generate
    from fidan.corpus.web import noisy_web
    pages, sets = generate(CorpusConfig(scale_mb=0.4), 11)    # the embedded crawl, with its planted copies
    stream, _ = noisy_web(pages, sets, 11)
    source = tmp_path / "web.jsonl"
    source.write_text("".join(json.dumps({"id": d.id, "text": d.text}, ensure_ascii=False) + "\n" for d in stream))
    common = [f"data.source={source}", "data.shard_docs=40", "data.workers=2"]
    local = micro_config(tmp_path, "local", *common)
    cluster = micro_config(tmp_path, "cluster", *common, "data.executor=ray", f"data.ray_address={head_node}")
    for cfg in (local, cluster):
        run_stage(cfg, RunDir.for_config(cfg), "data")
    stats = json.loads((tmp_path / "cluster" / "data" / "stats.json").read_text())
    assert stats["shards"] >= 5 and stats["steps"]["near_dedup"]["dropped"]
    assert not ray.is_initialized()          # the stage disconnected from the cluster it did not start
    local_files, cluster_files = _digests(tmp_path / "local"), _digests(tmp_path / "cluster")
    assert local_files and local_files == cluster_files
