"""`fidan data` with worker processes: a SIGKILL of the command leaves no worker behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) and st[1] == pid and st[0] != "Z":
            out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")  # a zombie holds no memory; it waits to be reaped


def test_sigkill_of_fidan_data_takes_its_workers_with_it(tmp_path):
    args = [sys.executable, "-m", "fidan.cli", "data", f"--run.root={tmp_path}", "--run.name=killed",
            "--corpus.scale_mb=0.6", "--corpus.n_places=24", "--corpus.n_people=48", "--corpus.n_creatures=16",
            "--data.shard_docs=40", "--data.workers=2"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    work = tmp_path / "killed" / ".staging" / "data" / "work"   # a running stage writes here
    try:
        deadline = time.time() + 180
        workers: list[int] = []
        while time.time() < deadline and proc.poll() is None:
            workers = [c for c in _children(proc.pid) if "multiprocessing" in _cmdline(c)]
            if len([w for w in workers if "spawn_main" in _cmdline(w)]) >= 2 and list(work.glob("shard-*.json")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "fidan data finished before it could be killed; give it more data"
        assert len([w for w in workers if "spawn_main" in _cmdline(w)]) >= 2
        os.kill(proc.pid, signal.SIGKILL)  # the command only, not its process group
        proc.wait()
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        left = [w for w in workers if _alive(w)]
        assert not left, f"workers outlived the killed command: {[(w, _cmdline(w)) for w in left]}"
        assert not (tmp_path / "killed" / "data" / "stats.json").exists()  # it really was killed mid-way
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left, so the test run does not leak it
        except ProcessLookupError:
            pass


def test_token_shards_are_the_same_bytes_with_any_number_of_encoders(prepared_run, tmp_path):
    """The tokens stage's encoding in 2 worker processes (small batches, so several are in flight
    at once) writes the same .bin and .idx bytes as one process, and the stage's own run agrees."""
    from fidan.data.shards import encode_split
    from fidan.tokenizer.bpe import FidanTokenizer
    _, run = prepared_run
    tok_path = run.path / "tokenizer" / "tokenizer.json"
    tok = FidanTokenizer.load(tok_path)
    train = run.path / "data" / "clean" / "train.parquet"
    one = encode_split(tok, train, tmp_path / "one", workers=1, batch=7)
    two = encode_split(tok, train, tmp_path / "two", workers=2, tokenizer_path=tok_path, batch=7)
    assert one == two and one[2] > 4 * 7 * 2
    stage = run.path / "data" / "tokens" / "train"
    for suffix in (".bin", ".idx"):
        a = (tmp_path / "one").with_suffix(suffix).read_bytes()
        assert a == (tmp_path / "two").with_suffix(suffix).read_bytes() == stage.with_suffix(suffix).read_bytes()
    assert len((tmp_path / "one").with_suffix(".idx").read_bytes()) == 8 * one[2]
