"""The sandbox contains hostile code, and HumanEval's own solutions pass through it.

The basic checks run in both sandboxes: bubblewrap (skipped, with the reason, where it cannot run)
and the plain-subprocess fallback that only ``--eval.unsafe_code=true`` allows. The hostile
suite is tests/test_sandbox_hostile.py.
"""
import os
import socket
import threading

import pytest

from conftest import shared_file
from fidan.config import build_config
from fidan.eval import sandbox
from fidan.eval.sandbox import Limits, SandboxUnavailable, run_python, run_tests
from fidan.eval.tasks import code
from fidan.eval.tasks.code import check, evaluate, load_humaneval, pass_at_k

FAST = Limits(timeout_s=3, memory_mb=256, processes=32)
REASON = sandbox.unavailable()
needs_bwrap = pytest.mark.skipif(REASON is not None, reason=f"no OS sandbox here: {REASON}")


@pytest.fixture(params=[pytest.param(False, id="bwrap", marks=needs_bwrap), pytest.param(True, id="unsafe")])
def unsafe(request, monkeypatch):
    """False: the bubblewrap sandbox. True: the fallback, as if bubblewrap were missing."""
    if request.param:
        monkeypatch.setattr(sandbox, "unavailable", lambda: "bwrap pretended missing")
    return request.param


def test_ordinary_code_passes_and_failure_fails(unsafe):
    out = run_python("print(sum(range(10)))", FAST, unsafe=unsafe)
    assert out.passed and out.stdout.strip() == "45" and out.isolated is not unsafe
    out = run_python("assert 1 + 1 == 3", FAST, unsafe=unsafe)
    assert out.status == "failed" and "AssertionError" in out.stderr


def test_infinite_loop_is_stopped(unsafe):
    out = run_python("while True:\n    pass\n", Limits(timeout_s=1.5), unsafe=unsafe)
    assert out.status == "timeout" and out.seconds < 5


def test_fork_bomb_is_contained(unsafe):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    out = run_python(code, Limits(timeout_s=2, processes=16), unsafe=unsafe, audit_hook=False)
    assert not out.passed
    assert _workers() == []  # nothing it forked survives the run


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\x00", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _workers() -> list[str]:
    """Processes still running sandbox_runner.py (supervisor or worker)."""
    return [p for p in os.listdir("/proc") if p.isdigit() and "def worker(answers_fd)" in _cmdline(p)
            and _state(p) not in "ZX"]


def _state(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def test_memory_hog_is_refused(unsafe):
    out = run_python("x = bytearray(2 * 1024 ** 3)\nprint('allocated')", FAST, unsafe=unsafe)
    assert not out.passed and "allocated" not in out.stdout and "MemoryError" in out.stderr


def test_files_outside_the_working_folder_are_safe(tmp_path, unsafe):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep")
    code = (f"import os, shutil\n"
            f"for attempt in (lambda: os.remove({str(victim)!r}), lambda: open({str(victim)!r}, 'w').write('x'),\n"
            f"                lambda: shutil.rmtree({str(tmp_path)!r})):\n"
            f"    try:\n        attempt()\n    except Exception as e:\n        print(type(e).__name__)\n"
            f"open('inside.txt', 'w').write('fine')\nprint('inside ok')\n")
    out = run_python(code, FAST, unsafe=unsafe)
    assert victim.read_text() == "keep"
    assert out.stdout.count("PermissionError") == 3 and "inside ok" in out.stdout


def test_network_is_unreachable(unsafe):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            f"    print('connected')\nexcept Exception as e:\n    print('blocked', type(e).__name__)\n")
    out = run_python(code, FAST, unsafe=unsafe)
    server.close()
    assert "blocked" in out.stdout and not accepted


def test_exit_status_is_not_the_score(unsafe):
    prompt, test = "def f(x):\n", "def check(c):\n    assert c(2) == 4\n"
    assert run_tests(prompt, "    return 2 * x\n", test, "f", FAST, unsafe=unsafe).passed
    for forged in ("    return x\nimport os\nos._exit(0)\n", "    raise SystemExit(0)\n",
                   "    return x\nprint('passed')\n"):
        out = run_tests(prompt, forged, test, "f", FAST, unsafe=unsafe)
        assert out.status == "failed", forged


def test_without_isolation_code_is_refused_unless_unsafe(monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "unavailable", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(SandboxUnavailable, match=r"bwrap\) is not installed.*--eval\.unsafe_code=true"):
        run_python("print(1)", FAST)
    problem = {"task_id": "t", "prompt": "def f(x):\n", "test": "def check(c):\n    assert c(1) == 1\n",
               "entry_point": "f"}
    with pytest.raises(SandboxUnavailable):
        check(problem, "    return x\n", FAST)
    result = evaluate([problem], [["    return x\n"]])  # what the eval stage calls: skipped, with the reason
    assert "pass@1" not in result and "bwrap) is not installed" in result["skipped"]
    assert "--eval.unsafe_code=true" in capsys.readouterr().out
    monkeypatch.setattr(code, "unsafe_code", True)  # what --eval.unsafe_code=true sets through the harness
    result = evaluate([problem], [["    return x\n"]])
    assert result["pass@1"] == 1.0 and result["sandbox"] == "unsafe subprocess"


def test_unsafe_code_is_an_eval_setting():
    assert build_config(None, None, []).eval.unsafe_code is False
    assert build_config(None, None, ["eval.unsafe_code=true"]).eval.unsafe_code is True


def test_pass_at_k_estimator():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - (3 * 2) / (5 * 4))


@needs_bwrap
@pytest.mark.slow
def test_humaneval_canonical_solutions_all_pass_and_wrong_ones_fail():
    problems = load_humaneval(shared_file("HumanEval.jsonl.gz"))
    assert len(problems) == 164
    result = evaluate(problems, [[p["canonical_solution"]] for p in problems])
    failed = [r["task_id"] for r in result["problems"] if not r["passed"]]
    assert failed == [] and result["pass@1"] == 1.0 and result["sandbox"] == "bubblewrap"
    wrong = evaluate(problems[:10], [["    return None\n"] for _ in range(10)])
    assert wrong["pass@1"] == 0.0
    assert not check(problems[0], "    while True: pass\n", Limits(timeout_s=2)).passed


@pytest.mark.slow
def test_humaneval_through_the_unsafe_fallback(monkeypatch):
    monkeypatch.setattr(sandbox, "unavailable", lambda: "bwrap pretended missing")
    problems = load_humaneval(shared_file("HumanEval.jsonl.gz"))[:20]
    assert evaluate(problems, [[p["canonical_solution"]] for p in problems], unsafe=True)["pass@1"] == 1.0


@pytest.mark.slow
def test_without_isolation_the_eval_stage_runs_and_records_why_code_was_skipped(pretrained_copy, monkeypatch):
    import json

    from fidan.pipeline import run_stage
    monkeypatch.setattr(sandbox, "unavailable", lambda: "bubblewrap (bwrap) is not installed")
    cfg, run = pretrained_copy
    cfg.eval.limit, cfg.eval.math_limit, cfg.eval.redteam, cfg.eval.bias = 4, 1, False, False
    run_stage(cfg, run, "eval")
    world_code = json.loads((run.path / "eval" / "pretrain.json").read_text())["world_code"]
    assert "pass@1" not in world_code and "bwrap) is not installed" in world_code["skipped"]
